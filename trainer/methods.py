"""The methods of the paper's ablation table, in one registry that every layer reads.

A method is its name, whether it reads unlabeled batches, its two parts (pseudo labels from
the meta step, mix-up of labeled and unlabeled images), and the loss it computes. The
trainer's flags, its step and batches, the study's ablation grid and the report's ablation
rows all come from METHODS. Adding a method is one entry here and its loss function; see
docs/architecture.md. The algorithm itself is in docs/algorithm.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trainer.device import widen
from trainer.meta import pseudo_labels

if TYPE_CHECKING:
    from trainer.config import Config


@dataclass
class Batch:
    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor | None = None
    y_u: torch.Tensor | None = None  # true labels of x_u (-1: unknown): diagnostics only


class Losses(NamedTuple):
    """What a step computes: the loss it minimises, its two parts, the labeled logits (for
    the training accuracy) and the accuracy of the unlabeled batch's targets."""

    loss: torch.Tensor
    main: torch.Tensor
    cons: torch.Tensor
    logits_l: torch.Tensor
    pseudo_acc: torch.Tensor


# loss(model, cfg, batch, lr, weight, beta): lr is the step's learning rate (the meta step's
# virtual update uses it), weight its consistency weight, beta mix-up's Beta(alpha, alpha).
LossFn = Callable[[nn.Module, "Config", Batch, float, float,
                   "torch.distributions.Beta | None"], Losses]


@dataclass(frozen=True)
class Method:
    name: str
    reads_unlabeled: bool  # draws an unlabeled batch each step
    meta: bool  # unlabeled targets from the meta step (the paper's "meta" column)
    mixup: bool  # labeled and unlabeled images mixed (the paper's "mix-up" column)
    loss: LossFn
    about: str  # one line, for --help and the docs


def supervised_loss(model: nn.Module, cfg: Config, batch: Batch, lr: float, weight: float,
                    beta: torch.distributions.Beta | None) -> Losses:
    """Cross-entropy on the labeled batch alone."""
    zero = batch.x_l.new_zeros(())
    model.train()
    logits_l = widen(model(batch.x_l))
    main = F.cross_entropy(logits_l, batch.y_l)
    return Losses(main, main, zero, logits_l, zero)


def semi_supervised_loss(model: nn.Module, cfg: Config, batch: Batch, lr: float,
                         weight: float, beta: torch.distributions.Beta | None) -> Losses:
    """Targets for the unlabeled batch (the meta step's pseudo labels, or the network's own
    predictions), then the labeled loss (mixed with the unlabeled batch under mix-up) plus,
    with the meta step, the weighted consistency loss towards the pseudo labels."""
    method = METHODS[cfg.method]
    x_l, y_l, x_u = batch.x_l, batch.y_l, batch.x_u
    zero = x_l.new_zeros(())
    # Targets for the unlabeled batch come from the deterministic (eval-mode) network.
    model.eval()
    if method.meta:
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
    if method.mixup:
        lam = beta.sample((len(x_l),)).to(x_l.device).view(-1, 1)
        x_mix = lam.view(-1, 1, 1, 1) * x_l + (1 - lam.view(-1, 1, 1, 1)) * x_u
        y_mix = lam * F.one_hot(y_l, y_hat.shape[1]).to(y_hat.dtype) + (1 - lam) * y_hat
        main = F.kl_div(F.log_softmax(widen(model(x_mix)), dim=1), y_mix,
                        reduction="batchmean")
    else:
        main = F.cross_entropy(widen(model(x_l)), y_l)
    if method.meta:
        cons = (F.softmax(widen(model(x_u)), dim=1) - y_hat).pow(2).sum(1).mean()
        return Losses(main + weight * cons, main, cons, logits_l, pseudo_acc)
    return Losses(main, main, zero, logits_l, pseudo_acc)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("supervised", False, meta=False, mixup=False, loss=supervised_loss,
           about="the labeled images alone"),
    Method("mixup", True, meta=False, mixup=True, loss=semi_supervised_loss,
           about="mix-up with the network's own predictions as unlabeled targets"),
    Method("meta", True, meta=True, mixup=False, loss=semi_supervised_loss,
           about="meta-gradient pseudo labels and the consistency loss, no mix-up"),
    Method("metasemi", True, meta=True, mixup=True, loss=semi_supervised_loss,
           about="MetaSemi: meta-gradient pseudo labels, consistency loss and mix-up"),
)}


def with_mixup(name: str) -> str:
    """The method with `name`'s meta part and mix-up on (the authors' --mix-up flag)."""
    meta = METHODS[name].meta
    return next(m.name for m in METHODS.values() if m.meta == meta and m.mixup)


def images_per_step(cfg: Config) -> int:
    """A labeled batch, and an unlabeled one for a method that reads unlabeled data."""
    return cfg.batch_size * (2 if METHODS[cfg.method].reads_unlabeled else 1)
