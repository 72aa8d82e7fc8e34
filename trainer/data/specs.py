"""What a dataset is: its spec (classes, channels, size, augmentation, loader, official
sizes), its arrays, and the errors of missing or damaged files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class DatasetMissing(FileNotFoundError):
    """The dataset's files are not where the config says; the message lists them."""


class DatasetCorrupt(ValueError):
    """A dataset file exists but cannot be read as its format; the message names it."""


def _corrupt(path: str, what: str, e: Exception) -> DatasetCorrupt:
    detail = (str(e).splitlines() or [""])[0][:200]
    return DatasetCorrupt(f"{path} is corrupt or not {what} ({type(e).__name__}: {detail}); "
                          "delete it and pass --download to fetch it again")


@dataclass
class Arrays:
    """A dataset as numpy arrays: uint8 images NCHW, int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_split: list[int] | str  # digits: indices into load_digits(); others: "official"


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    channels: int
    size: int
    crop_padding: int  # random crop with this padding (the authors: 4 for CIFAR and SVHN)
    flip: bool  # random horizontal flip (not for digits or house numbers)
    load: Callable[[str, bool], Arrays]  # (root, download) -> Arrays
    # Images in the official files (digits: 1797 less its fixed test set of 539), to refuse
    # an impossible split or batch before anything is loaded; 0 for data of your own.
    train_size: int = 0
    test_size: int = 0
