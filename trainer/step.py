"""One optimisation step of any method (trainer/methods.py), and the schedules it follows
(docs/algorithm.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainer.methods import METHODS, Batch

if TYPE_CHECKING:
    from trainer.config import Config

# The order of the per-step statistics that the loop accumulates on the device.
STAT_NAMES = ("loss", "main_loss", "cons_loss", "train_accuracy", "pseudo_label_accuracy")


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warm-up to cfg.lr, then times gamma for each milestone passed (the authors' rule)."""
    if step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    return cfg.lr * cfg.gamma ** sum(step > m for m in cfg.milestones)


def consistency_weight(cfg: Config, step: int) -> float:
    """Consistency weight ramped up linearly over the warm-up."""
    return cfg.weight * (min(1.0, step / cfg.warmup) if cfg.warmup else 1.0)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Config, batch: Batch,
               lr: float, weight: float, beta: torch.distributions.Beta | None,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               ) -> torch.Tensor:
    """Update the model once; return the step's STAT_NAMES as one device tensor (no sync).

    The forwards run under `autocast()` (mixed precision); backward and update outside it.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        loss, main, cons, logits_l, pseudo_acc = METHODS[cfg.method].loss(
            model, cfg, batch, lr, weight, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    train_acc = (logits_l.argmax(1) == batch.y_l).float().mean()
    return torch.stack([loss, main, cons, train_acc, pseudo_acc]).detach().float()


__all__ = ["STAT_NAMES", "Batch", "learning_rate", "consistency_weight", "train_step"]
