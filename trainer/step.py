"""One optimisation step of each method of the ablation table, and the schedules it follows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import Config
from trainer.device import widen
from trainer.meta import pseudo_labels

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


@dataclass
class Batch:
    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor | None = None
    y_u: torch.Tensor | None = None  # true labels of x_u (-1: unknown): diagnostics only


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
        loss, main, cons, logits_l, pseudo_acc = _losses(model, cfg, batch, lr, weight, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    train_acc = (logits_l.argmax(1) == batch.y_l).float().mean()
    return torch.stack([loss, main, cons, train_acc, pseudo_acc]).detach().float()


def _losses(model: nn.Module, cfg: Config, batch: Batch, lr: float, weight: float,
            beta: torch.distributions.Beta | None):
    """The step's loss, its parts, the labeled logits and the pseudo-label accuracy."""
    x_l, y_l, x_u = batch.x_l, batch.y_l, batch.x_u
    zero = x_l.new_zeros(())

    if cfg.method == "supervised":
        model.train()
        logits_l = widen(model(x_l))
        main = F.cross_entropy(logits_l, y_l)
        loss, cons, pseudo_acc = main, zero, zero
    else:
        # Targets for the unlabeled batch come from the deterministic (eval-mode) network.
        model.eval()
        if cfg.uses_meta:
            y_hat, logits_l = pseudo_labels(model, x_l, y_l, x_u, lr, cfg.epsilon, cfg.meta_grad)
        else:
            with torch.no_grad():
                out = widen(model(torch.cat([x_l, x_u])))
            logits_l, y_hat = out[: len(x_l)], F.softmax(out[len(x_l):], dim=1)
        # Over the images whose label is known: your own unlabeled/ images carry -1.
        known = batch.y_u >= 0
        pseudo_acc = (((y_hat.argmax(1) == batch.y_u) & known).sum()
                      / known.sum().clamp_min(1)).float()

        model.train()
        if cfg.uses_mixup:
            lam = beta.sample((len(x_l),)).to(x_l.device).view(-1, 1)
            x_mix = lam.view(-1, 1, 1, 1) * x_l + (1 - lam.view(-1, 1, 1, 1)) * x_u
            y_mix = lam * F.one_hot(y_l, y_hat.shape[1]).to(y_hat.dtype) + (1 - lam) * y_hat
            main = F.kl_div(F.log_softmax(widen(model(x_mix)), dim=1), y_mix,
                            reduction="batchmean")
        else:
            main = F.cross_entropy(widen(model(x_l)), y_l)
        if cfg.uses_meta:
            cons = (F.softmax(widen(model(x_u)), dim=1) - y_hat).pow(2).sum(1).mean()
            loss = main + weight * cons
        else:
            cons, loss = zero, main

    return loss, main, cons, logits_l, pseudo_acc
