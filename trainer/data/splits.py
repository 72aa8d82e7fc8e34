"""The split of a training set: labeled, validation and unlabeled, class-balanced, and the
checks of what a training set can hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trainer.data.builtin import DATASETS
from trainer.methods import METHODS

if TYPE_CHECKING:
    from trainer.config import Config


SPLITS = ("random", "authors")
TRAIN_SIZES = {name: spec.train_size for name, spec in DATASETS.items()}


def check_batch(cfg: Config, labeled: int, unlabeled: int) -> None:
    """Refuse an unlabeled batch larger than the unlabeled pool (ValueError naming batch_size):
    each batch would repeat images, and an empty pool would never fill one."""
    # A labeled batch may exceed the labeled set: the digits preset draws 64 of 50 labels,
    # its stream straddling epochs as the authors' loader does; an empty set cannot happen.
    reads_unlabeled = METHODS[cfg.method].reads_unlabeled
    if reads_unlabeled and not unlabeled:
        raise ValueError(f"num_label: no unlabeled training images are left after num_label "
                         f"{cfg.num_label} and num_val {cfg.num_val}, so {cfg.method} has "
                         "nothing to learn from; add unlabeled images (an unlabeled/ folder "
                         "for data of your own), use fewer labels, or --method supervised")
    if reads_unlabeled and cfg.batch_size > unlabeled:
        raise ValueError(f"batch_size: {cfg.batch_size} is larger than the {unlabeled} unlabeled "
                         f"training images left after num_label {cfg.num_label} and num_val "
                         f"{cfg.num_val}; use --batch-size {unlabeled} or less, or fewer labels "
                         "or validation images")


def check_sizes(cfg: Config, train_size: int) -> None:
    """Refuse, from the counts alone, a split or batch that `train_size` images cannot hold."""
    used = cfg.num_label + (0 if cfg.val_from_labeled else cfg.num_val)
    if used > train_size:
        raise ValueError(f"num_label: {cfg.num_label} labeled"
                         + ("" if cfg.val_from_labeled else f" + {cfg.num_val} validation")
                         + f" images asked for, but {cfg.dataset} has only {train_size} "
                         "training images; lower --num-label or --num-val")
    labeled = cfg.num_label - (cfg.num_val if cfg.val_from_labeled else 0)
    check_batch(cfg, labeled, train_size - used)


def _name(c: int, names: list[str] | None) -> str:
    return f"class {names[c]!r}" if names else f"class {c}"


def labeled_split(labels: np.ndarray, num_label: int, num_classes: int,
                  seed: int, names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced random labeled indices (num_label / num_classes per class) and the rest."""
    per_class = num_label // num_classes
    if num_label > len(labels):
        raise ValueError(f"num_label: {num_label} labels asked for, but the training set has "
                         f"only {len(labels)} images; use a smaller --num-label")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"num_label: {per_class} labels per class asked for, but "
                             f"{_name(c, names)} has only {len(idx)} training images; use a "
                             "smaller --num-label")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    labeled = np.sort(np.concatenate(chosen))
    unlabeled = np.setdiff1d(np.arange(len(labels)), labeled)
    return labeled, unlabeled


def authors_labeled_split(labels: np.ndarray, num_label: int, num_classes: int,
                          seed: int, names: list[str] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The authors' labeled set: Python's random seeded with `seed` shuffles all training
    indices once, and the first num_label / num_classes images of each class are labeled."""
    import random

    per_class = num_label // num_classes
    order = list(range(len(labels)))
    random.Random(seed).shuffle(order)  # the sequence of random.seed(seed); random.shuffle
    taken = dict.fromkeys(range(num_classes), 0)
    labeled = []
    for i in order:
        c = int(labels[i])
        if taken[c] < per_class:
            taken[c] += 1
            labeled.append(i)
    short = [c for c, n in taken.items() if n < per_class]
    if short:
        raise ValueError(f"num_label: {per_class} labels per class asked for, but "
                         f"{_name(short[0], names)} has only {taken[short[0]]} training images; "
                         "use a smaller --num-label")
    labeled = np.sort(np.asarray(labeled, dtype=np.int64))
    return labeled, np.setdiff1d(np.arange(len(labels)), labeled)


@dataclass(frozen=True)
class Split:
    """Disjoint index sets into the training arrays; test images are separate arrays."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray
    method: str  # how the labeled set was drawn: "random" or "authors"
    val_from_labeled: bool


def _balanced_subset(labels: np.ndarray, pool: np.ndarray, count: int, num_classes: int,
                     rng: np.random.Generator, what: str,
                     names: list[str] | None) -> np.ndarray:
    per_class = count // num_classes
    chosen = []
    for c in range(num_classes):
        idx = pool[labels[pool] == c]
        if len(idx) < per_class:
            raise ValueError(f"num_val: {per_class} validation images per class asked for, but "
                             f"{_name(c, names)} has only {len(idx)} {what}; use a smaller "
                             "--num-val")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def make_split(labels: np.ndarray, num_classes: int, num_label: int, seed: int,
               num_val: int = 0, val_from_labeled: bool = False,
               method: str = "random", names: list[str] | None = None) -> Split:
    """Labeled, validation and unlabeled indices, class-balanced and drawn from `seed`.

    The validation images come from outside the labeled set (num_label keeps the paper's
    meaning), or, with val_from_labeled, out of the labeled budget (the realistic protocol).
    They are never used for training, labeled or not. `names` (class names) go into errors.
    """
    if method not in SPLITS:
        raise ValueError(f"split: unknown split {method!r}; choose one of {list(SPLITS)}")
    draw = authors_labeled_split if method == "authors" else labeled_split
    labeled, unlabeled = draw(labels, num_label, num_classes, seed, names)
    val = np.empty(0, np.int64)
    if num_val:
        # Its own stream, so the labeled set is the same with or without a validation set.
        rng = np.random.default_rng([seed, 0x5A1])
        if val_from_labeled:
            val = _balanced_subset(labels, labeled, num_val, num_classes, rng, "labeled images",
                                   names)
            labeled = np.setdiff1d(labeled, val)
        else:
            val = _balanced_subset(labels, unlabeled, num_val, num_classes, rng,
                                   "images outside the labeled set", names)
            unlabeled = np.setdiff1d(unlabeled, val)
    return Split(labeled, unlabeled, val, method, val_from_labeled)
