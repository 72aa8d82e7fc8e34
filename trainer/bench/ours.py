"""Time our own hot path: on-device data, `train_step`, evaluation, as `trainer.loop` runs them.

The data are random uint8 images of the dataset's shape: a step's cost does not
depend on pixel values, and no download is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.config import Config, resolve
from trainer.data import DATASETS, DeviceData, IndexStream
from trainer.device import Runtime, resolve_runtime
from trainer.loop import draw, evaluate
from trainer.models import build_model
from trainer.step import Batch, train_step

# Training and test set sizes of the datasets benchmarked (CIFAR-10's, digits' split).
SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "svhn": (73_257, 26_032),
         "digits": (1_257, 540)}


def synthetic_data(dataset: str, device: torch.device, seed: int = 0) -> DeviceData:
    """Random images and labels with the dataset's shape, class count and split, on `device`."""
    spec = DATASETS[dataset]
    n_train, n_test = SIZES[dataset]
    rng = np.random.default_rng(seed)
    shape = (spec.channels, spec.size, spec.size)

    def images(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, (n, *shape), dtype=np.uint8)).to(device)

    def labels(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, spec.num_classes, n)).to(device)

    labeled = np.arange(0, n_train, 10)  # any split will do for timing
    unlabeled = np.setdiff1d(np.arange(n_train), labeled)
    half = torch.full((spec.channels, 1, 1), 0.5, device=device)
    return DeviceData(spec, images(n_train), labels(n_train), images(n_test), labels(n_test),
                      labeled, unlabeled, "synthetic", half, half / 2)


@dataclass
class Trainer:
    """Everything one benchmarked run needs, built the way `trainer.loop.train` builds it."""

    cfg: Config
    runtime: Runtime
    data: DeviceData
    step: Callable[[], torch.Tensor]  # one training step on freshly drawn batches
    draw: Callable[[], None]  # the data work of one step alone
    model: torch.nn.Module

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch_size * (1 if self.cfg.method == "supervised" else 2)


def build(settings: dict[str, Any], data: DeviceData | None = None) -> Trainer:
    """A model, optimizer and data streams for the config `settings` (dataset, method, ...)."""
    cfg = resolve(settings)
    runtime = resolve_runtime(cfg)
    data = data or synthetic_data(cfg.dataset, runtime.device)
    torch.manual_seed(cfg.seed)
    spec = data.spec
    model = runtime.prepare_model(build_model(cfg.architecture, spec.channels, spec.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    labeled = IndexStream(data.labeled, cfg.batch_size, cfg.seed, runtime.device)
    unlabeled = IndexStream(data.unlabeled, cfg.batch_size, cfg.seed + 1, runtime.device)
    a = torch.tensor(float(cfg.alpha), device=runtime.device)
    beta = torch.distributions.Beta(a, a)
    semi = cfg.method != "supervised"

    def draw_both() -> tuple:
        x_l, y_l = draw(labeled, data, runtime)
        x_u, y_u = draw(unlabeled, data, runtime) if semi else (None, None)
        return x_l, y_l, x_u, y_u

    def step() -> torch.Tensor:
        # Peak lr and weight: the schedule is host arithmetic and does not change the cost.
        return train_step(model, optimizer, cfg, Batch(*draw_both()), cfg.lr, cfg.weight, beta,
                          runtime.autocast)

    return Trainer(cfg, runtime, data, step, draw_both, model)


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


def measure(settings: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
    """ms per step, images/s, the data fraction, evaluation time and peak memory of one method."""
    t = build(settings)
    device = t.runtime.device
    for _ in range(warmup):
        t.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(t.step, steps, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    data_s = timed(t.draw, steps, device)
    eval_s = timed(lambda: evaluate(t.model, t.data, t.runtime), 1, device)
    return {"method": t.cfg.method, "meta_grad": t.cfg.meta_grad, "ms": 1e3 * step_s,
            "images_per_s": t.images_per_step / step_s,
            "data_fraction": min(1.0, data_s / step_s), "eval_s": eval_s,
            "peak_memory_mb": peak, "runtime": t.runtime.describe()}
