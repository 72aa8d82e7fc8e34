"""`python -m trainer.bench`: time a supervised step and a MetaSemi step side by side.

Both are measured in one process on the same synthetic batches (the step's cost does
not depend on pixel values), so their ratio is robust to a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from trainer.config import resolve
from trainer.loop import resolve_device
from trainer.models import ALIASES, MODELS, build_model
from trainer.step import Batch, consistency_weight, learning_rate, train_step

# Input shape and class count of the dataset each network is normally trained on.
SHAPES = {"digitscnn": ((1, 8, 8), 10, "digits")}
DEFAULT_SHAPE = ((3, 32, 32), 10, "cifar10")


def time_method(arch: str, method: str, batch_size: int, device: torch.device, steps: int,
                warmup: int) -> float:
    """Seconds per training step of `method`, averaged over `steps` after `warmup` steps."""
    (c, h, w), classes, dataset = SHAPES.get(arch, DEFAULT_SHAPE)
    cfg = resolve({"dataset": dataset, "architecture": arch, "method": method,
                   "batch_size": batch_size, "warmup": 0, "device": device.type})
    torch.manual_seed(0)
    model = build_model(arch, c, classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    a = torch.tensor(cfg.alpha, device=device)
    beta = torch.distributions.Beta(a, a)
    batch = Batch(torch.randn(batch_size, c, h, w, device=device),
                  torch.randint(0, classes, (batch_size,), device=device),
                  torch.randn(batch_size, c, h, w, device=device),
                  torch.randint(0, classes, (batch_size,), device=device))
    lr, weight = learning_rate(cfg, 1), consistency_weight(cfg, 1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        train_step(model, opt, cfg, batch, lr, weight, beta)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        stats = train_step(model, opt, cfg, batch, lr, weight, beta)
    stats.sum().item()
    sync()
    return (time.perf_counter() - t0) / steps


def run(arch: str, batch_size: int, device: torch.device, steps: int,
        warmup: int) -> dict[str, float | str | int]:
    """Time supervised and metasemi steps; return ms, images/s and their ratio."""
    sup = time_method(arch, "supervised", batch_size, device, steps, warmup)
    meta = time_method(arch, "metasemi", batch_size, device, steps, warmup)
    return {
        "architecture": arch, "batch_size": batch_size, "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "steps": steps,
        "supervised_ms": 1e3 * sup, "metasemi_ms": 1e3 * meta,
        # A supervised step sees B images, a MetaSemi step B labeled plus B unlabeled.
        "supervised_images_per_s": batch_size / sup,
        "metasemi_images_per_s": 2 * batch_size / meta,
        "meta_over_supervised": meta / sup,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__)
    p.add_argument("-a", "--architecture", default="convlarge",
                   choices=sorted(MODELS) + sorted(ALIASES))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--steps", type=int, default=5, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--batch-size and --steps must be >= 1 and --warmup >= 0")
    arch = ALIASES.get(args.architecture, args.architecture)
    result = run(arch, args.batch_size, resolve_device(args.device), args.steps, args.warmup)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{arch}, batch {args.batch_size}, {result['device']} ({result['device_name']}, "
          f"{result['threads']} threads), torch {result['torch']}, {args.steps} timed steps")
    print(f"{'step':<12}{'ms/step':>10}{'images/s':>12}")
    print(f"{'supervised':<12}{result['supervised_ms']:>10.1f}"
          f"{result['supervised_images_per_s']:>12.1f}")
    print(f"{'metasemi':<12}{result['metasemi_ms']:>10.1f}"
          f"{result['metasemi_images_per_s']:>12.1f}")
    print(f"metasemi / supervised step time: {result['meta_over_supervised']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
