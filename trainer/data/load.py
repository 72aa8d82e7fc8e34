"""One `load` that alone knows both kinds of data: a built-in dataset by name, or data of
your own by its path."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from trainer.data.batches import DeviceData, to_device
from trainer.data.builtin import DATASETS
from trainer.data.own import load_own_for
from trainer.data.splits import make_split
from trainer.data.survey import is_dataset_path

if TYPE_CHECKING:
    from trainer.config import Config


def load_data(dataset: str, root: str, download: bool, num_label: int, seed: int,
              device: torch.device, num_val: int = 0, val_from_labeled: bool = False,
              split: str = "random") -> DeviceData:
    """Read a dataset, draw its labeled/validation/unlabeled split from `seed`, move it to
    `device`. Normalisation statistics come from the training images."""
    spec = DATASETS[dataset]
    arrays = spec.load(root, download)
    parts = make_split(arrays.train_y, spec.num_classes, num_label, seed, num_val,
                       val_from_labeled, split)
    return to_device(spec, arrays, parts, device)


def load_for(cfg: Config, device: torch.device) -> DeviceData:
    """load_data with a run's Config (dataset, path, split settings); a dataset given as a
    path is data of your own (trainer/data/own.py)."""
    if is_dataset_path(cfg.dataset):
        return load_own_for(cfg, device)
    data = load_data(cfg.dataset, cfg.data_path, cfg.download, cfg.num_label, cfg.seed, device,
                     cfg.num_val, cfg.val_from_labeled, cfg.split)
    if cfg.no_flip:
        data.spec = dataclasses.replace(data.spec, flip=False)
    return data
