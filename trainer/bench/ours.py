"""Time our own hot path: on-device data, `train_step`, evaluation, as `trainer.loop` runs them.

The data are random uint8 images of the dataset's shape: a step's cost does not
depend on pixel values, and no download is needed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.config import Config
from trainer.data import DATASETS, DeviceData, Split
from trainer.device import Runtime, resolve_runtime
from trainer.loop import Parts, build_parts, evaluate
from trainer.methods import Batch, images_per_step
from trainer.settings import resolve
from trainer.step import train_step


def synthetic_data(dataset: str, device: torch.device, seed: int = 0) -> DeviceData:
    """Random images and labels with the dataset's shape, class count and split, on `device`."""
    spec = DATASETS[dataset]
    n_train, n_test = spec.train_size, spec.test_size
    rng = np.random.default_rng(seed)
    shape = (spec.channels, spec.size, spec.size)

    def images(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (n, *shape), dtype=np.uint8)).to(device)

    def labels(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, spec.num_classes, n)).to(device)

    labeled = np.arange(0, n_train, 10)  # any split will do for timing
    unlabeled = np.setdiff1d(np.arange(n_train), labeled)
    half = torch.full((spec.channels, 1, 1), 0.5, device=device)
    split = Split(labeled, unlabeled, np.empty(0, np.int64), "random", False)
    return DeviceData(spec, images(n_train), labels(n_train), images(n_test), labels(n_test),
                      split, "synthetic", half, half / 2,
                      torch.empty(0, dtype=torch.long, device=device))


@dataclass
class Trainer:
    """One benchmarked run, built as `trainer.loop.train` builds it."""

    cfg: Config
    runtime: Runtime
    data: DeviceData
    parts: Parts

    def step(self) -> torch.Tensor:
        """One training step on freshly drawn batches, at the peak lr and weight (the
        schedule is host arithmetic and does not change the cost)."""
        return train_step(self.parts.model, self.parts.optimizer, self.cfg, self.draw(),
                          self.cfg.lr, self.cfg.weight, self.parts.beta, self.runtime.autocast)

    def draw(self) -> Batch:
        """The data work of one step alone."""
        return self.parts.next_batch(self.cfg, self.data, self.runtime)


def build(settings: dict[str, Any], data: DeviceData | None = None) -> Trainer:
    """A model, optimizer and data streams for the config `settings` (dataset, method, ...)."""
    cfg = resolve(settings)
    runtime = resolve_runtime(cfg)
    data = data or synthetic_data(cfg.dataset, runtime.device)
    return Trainer(cfg, runtime, data, build_parts(cfg, data, runtime))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], steps: int, device: torch.device) -> float:
    """Seconds per call of fn over `steps` calls, synchronising only at the ends."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def measure(settings: dict[str, Any], steps: int, warmup: int, evaluation: bool = False,
            data: DeviceData | None = None, eval_images: int | None = None) -> dict[str, Any]:
    """ms per step, images/s, the data fraction and peak memory of one method; with
    `evaluation`, also the time of one pass over the test set (eval_s), timed on its first
    `eval_images` images and scaled to all of them when given."""
    t = build(settings, data)
    device = t.runtime.device
    for _ in range(warmup):
        t.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(t.step, steps, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    data_s = timed(t.draw, steps, device)
    eval_s = None
    if evaluation:
        full = len(t.data.test_y)
        n = min(eval_images or full, full)
        part = dataclasses.replace(t.data, test_x=t.data.test_x[:n], test_y=t.data.test_y[:n])
        eval_s = timed(lambda: evaluate(t.parts.model, part, t.runtime), 1, device) * full / n
    return {"method": t.cfg.method, "meta_grad": t.cfg.meta_grad, "ms": 1e3 * step_s,
            "images_per_s": images_per_step(t.cfg) / step_s,
            "data_fraction": min(1.0, data_s / step_s), "eval_s": eval_s,
            "peak_memory_mb": peak, "runtime": t.runtime.describe()}
