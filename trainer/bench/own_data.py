"""`python -m trainer.bench.own_data`: a large set of your own, from file to training steps.

Writes a synthetic .npz of --images colour images of --size px (random pixels: loading and a
step cost the same whatever the pixels), then loads it as `python -m trainer --dataset PATH`
does and times a few MetaSemi steps of the network the trainer picks for that size. Prints
where the images were placed (device, or pinned host memory with --host or when the device
cannot hold them), the load time, the process's peak host memory against the images' size,
peak device memory, and ms per step. The default is the 200k-image 96 px set of issue 12.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from trainer.data.fit import estimate_bytes, host_available
from trainer.data.own import load_own_for
from trainer.device import resolve_runtime
from trainer.loop import build_parts
from trainer.methods import images_per_step
from trainer.settings import resolve
from trainer.step import train_step


def write_npz(path: str, images: int, size: int, classes: int, seed: int = 0) -> float:
    """A synthetic NHWC uint8 set with balanced labels at `path`; returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = np.empty((images, size, size, 3), np.uint8)
    for i in range(0, images, 10_000):  # in chunks: no int64 temporary of the whole set
        x[i:i + 10_000] = rng.integers(0, 256, x[i:i + 10_000].shape, dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(images) % classes)
    return time.perf_counter() - t0


def host_rss(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Start VmHWM afresh from the current RSS (Linux 4.0+), so the load's peak is its own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one set; see the module docstring."""
    folder = args.dir or tempfile.mkdtemp(prefix="own-bench-")
    path = os.path.join(folder, f"synthetic-{args.images}x{args.size}.npz")
    wrote = write_npz(path, args.images, args.size, args.classes) if not os.path.exists(
        path) else 0.0
    settings = {"dataset": path, "labels_per_class": args.labels_per_class,
                "device": args.device, "precision": args.precision}
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    cfg = resolve(settings)
    runtime = resolve_runtime(cfg)
    device = runtime.device
    nbytes = estimate_bytes(path)
    reset_peak_rss()
    before = host_rss()
    t0 = time.perf_counter()
    data = load_own_for(cfg, device, storage=torch.device("cpu") if args.host else None)
    loaded = time.perf_counter() - t0
    peak_load = host_rss("VmHWM")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    parts = build_parts(cfg, data, runtime)

    def step() -> None:
        batch = parts.next_batch(cfg, data, runtime)
        train_step(parts.model, parts.optimizer, cfg, batch, cfg.lr, cfg.weight, parts.beta,
                   runtime.autocast)

    step()  # the first step allocates and warms up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_step = (time.perf_counter() - t0) / args.steps
    return {
        "images": args.images, "size": args.size, "architecture": cfg.architecture,
        "batch_size": cfg.batch_size, "device": runtime.describe(),
        "images_on": data.train_x.device.type + (" (pinned)" if data.train_x.is_pinned()
                                                 else ""),
        "estimated_gib": nbytes / 2**30, "host_available_gib": host_available() / 2**30,
        "write_seconds": wrote, "load_seconds": loaded,
        "host_rss_before_load_gib": before / 2**30,
        "host_peak_during_load_gib": peak_load / 2**30,
        # against HOST_COPIES (trainer/data/fit.py), the loader's assumed peak
        "load_peak_over_images": (peak_load - before) / max(nbytes, 1),
        "peak_device_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                            if device.type == "cuda" else None),
        "ms_per_step": 1000 * per_step,
        "images_per_second": images_per_step(cfg) / per_step,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--labels-per-class", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--batch-size", type=int, help="default: the trainer's for this set")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--host", action="store_true",
                   help="keep the images in pinned host memory, as when the GPU is too small")
    p.add_argument("--dir", help="folder for the .npz (default: a new temporary folder); an "
                                 "existing file of the same shape there is reused")
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    figures = bench(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        from trainer.rundir import write_json

        write_json(args.out, figures)


if __name__ == "__main__":
    main()
