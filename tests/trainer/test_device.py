"""How a step runs: precision, memory format and compilation change speed, not results."""

import pytest
import torch

from trainer.config import ConfigError
from trainer.device import resolve_runtime
from trainer.models import build_model
from trainer.settings import resolve
from trainer.step import Batch, train_step


def digits_step_setup(**settings):
    cfg = resolve({"dataset": "digits", "method": "metasemi", "device": "cpu", **settings})
    runtime = resolve_runtime(cfg)
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model("digitscnn", 1, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(1)

    def images() -> torch.Tensor:
        return runtime.prepare_input(torch.randn(32, 1, 8, 8, generator=gen))

    def labels() -> torch.Tensor:
        return torch.randint(0, 10, (32,), generator=gen)

    batches = [Batch(images(), labels(), images(), labels()) for _ in range(3)]
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    return cfg, runtime, model, optimizer, batches, beta


def run_steps(**settings):
    cfg, runtime, model, optimizer, batches, beta = digits_step_setup(**settings)
    torch.manual_seed(2)  # the mix-up draws
    stats = [train_step(model, optimizer, cfg, b, 0.1, 1.0, beta, runtime.autocast)
             for b in batches]
    return torch.stack(stats), model


def test_auto_is_plain_fp32_on_the_cpu_and_each_choice_can_be_forced():
    rt = resolve_runtime(resolve({"device": "cpu"}))
    assert (rt.amp_dtype, rt.channels_last, rt.compile) == (None, False, False)
    rt = resolve_runtime(resolve({"device": "cpu", "precision": "bf16",
                                  "memory_format": "channels_last", "compile": True}))
    assert (rt.amp_dtype, rt.channels_last, rt.compile) == (torch.bfloat16, True, True)
    assert "bf16" in rt.describe() and "channels-last" in rt.describe()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_asking_for_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="device: cuda was asked for"):
        resolve_runtime(resolve({"device": "cuda"}))


def test_bad_precision_or_memory_format_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"precision.*'fp16'.*\['auto', 'bf16', 'fp32'\]"):
        resolve({"precision": "fp16"})
    with pytest.raises(ConfigError, match="memory_format"):
        resolve({"memory_format": "nhwc"})
    with pytest.raises(ConfigError, match="compile: must be true or false"):
        resolve({"compile": "yes"})


def test_channels_last_computes_the_same_steps():
    plain, _ = run_steps(memory_format="contiguous")
    last, model = run_steps(memory_format="channels_last")
    assert torch.allclose(plain, last, rtol=1e-4, atol=1e-5)
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_trains_close_to_fp32():
    fp32, _ = run_steps(precision="fp32")
    bf16, model = run_steps(precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    # Losses agree to bf16's precision; parameters stay fp32.
    assert torch.allclose(fp32[:, :3], bf16[:, :3], rtol=0.05, atol=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_compiled_step_computes_what_the_eager_step_computes():
    eager, _ = run_steps()
    compiled, model = run_steps(compile=True)
    assert torch.allclose(eager, compiled, rtol=1e-4, atol=1e-5)
    assert "features.0.weight" in model.state_dict()  # checkpoints keep their keys


# --- on a GPU only (skipped elsewhere; CI has none) -----------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("meta_grad", ["fd", "jvp"])
def test_a_cuda_metasemi_step_never_waits_for_the_device(meta_grad):
    from trainer.bench.ours import build

    t = build({"dataset": "cifar10", "architecture": "convlarge", "method": "metasemi",
               "meta_grad": meta_grad, "device": "cuda", "batch_size": 32})
    assert t.runtime.amp_dtype == torch.bfloat16 and t.runtime.channels_last
    t.step()  # the first draws copy each stream's epoch order to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        stats = [t.step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(stats)).all()


@needs_cuda
def test_on_cuda_bf16_and_channels_last_steps_stay_close_to_fp32():
    from trainer.bench.ours import build, synthetic_data

    data = synthetic_data("digits", torch.device("cuda"))
    runs = {}
    for precision, layout in (("fp32", "contiguous"), ("bf16", "channels_last")):
        t = build({"dataset": "digits", "method": "metasemi", "device": "cuda",
                   "precision": precision, "memory_format": layout}, data=data)
        torch.manual_seed(0)
        runs[precision] = torch.stack([t.step() for _ in range(3)]).cpu()
    assert torch.allclose(runs["fp32"][:, :3], runs["bf16"][:, :3], rtol=0.05, atol=0.02)
