"""A trial with a fraction of a GPU caps its PyTorch allocator at that share of the memory."""

import pytest
import torch

from study.cli import build_parser, options_from_args
from study.driver import trial_base
from study.gpu_share import CONTEXT_MARGIN_BYTES, cap_cuda_memory, memory_fraction
from study.spaces import load_space

GIB = 2**30


def test_the_cap_is_the_share_less_the_context_margin():
    assert memory_fraction(0.25, 80 * GIB) == pytest.approx(
        0.25 - CONTEXT_MARGIN_BYTES / (80 * GIB))
    assert memory_fraction(0.5, 141 * GIB, margin_bytes=0) == 0.5
    # two trials of a half each leave room for both CUDA contexts
    assert 2 * memory_fraction(0.5, 80 * GIB) * 80 * GIB + 2 * CONTEXT_MARGIN_BYTES == \
        pytest.approx(80 * GIB)


@pytest.mark.parametrize("share", [1.0, 2.0])
def test_a_whole_gpu_is_not_capped(share):
    assert memory_fraction(share, 80 * GIB) is None


def test_a_share_smaller_than_the_context_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="gpus_per_trial: a share of 0.01 of a 16.0 GiB GPU.*"
                                         "larger share"):
        memory_fraction(0.01, 16 * GIB)


def test_the_study_passes_a_fractional_share_to_its_trials_unless_turned_off(tmp_path):
    space = load_space("digits")

    def base(*flags, gpu=0.25):
        opts = options_from_args(build_parser().parse_args(
            ["--storage-path", str(tmp_path / "studies"), *flags]))
        return trial_base(opts, space, {"cpu": 1, "gpu": gpu})

    assert base()["gpu_share"] == 0.25
    assert "gpu_share" not in base("--no-gpu-memory-cap")
    assert "gpu_share" not in base(gpu=1.0) and "gpu_share" not in base(gpu=0.0)


def test_without_cuda_nothing_is_capped():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cap_cuda_memory(0.5) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_an_allocation_beyond_the_share_fails_in_that_process():
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from study.gpu_share import cap_cuda_memory\n"
        "cap = cap_cuda_memory(0.25)\n"
        "ok = torch.empty(int(cap * 0.8), dtype=torch.uint8, device='cuda')\n"
        "try:\n"
        "    torch.empty(int(cap * 0.5), dtype=torch.uint8, device='cuda')\n"
        "    print('no error')\n"
        "except torch.OutOfMemoryError:\n"
        "    print('refused beyond the cap')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert "refused beyond the cap" in out.stdout, out.stdout + out.stderr
