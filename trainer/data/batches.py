"""A dataset on the training device: its images as uint8 NCHW, the index streams that batch
them epoch by epoch, and the batched crop-and-flip augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.data.specs import Arrays, DatasetSpec
from trainer.data.splits import Split


@dataclass
class DeviceData:
    """A dataset resident on the training device, with its split and normalisation."""

    spec: DatasetSpec
    train_x: torch.Tensor  # uint8 NCHW
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    split: Split
    test_split: list[int] | str
    mean: torch.Tensor  # (C, 1, 1), in [0, 1] units
    std: torch.Tensor
    val_index: torch.Tensor  # the validation indices, on the device
    # Recorded in split.json beside the indices: for data of your own, its name, layout,
    # class names and (folder trees) the files of each part.
    about: dict = field(default_factory=dict)

    @property
    def labeled(self) -> np.ndarray:
        return self.split.labeled

    @property
    def unlabeled(self) -> np.ndarray:
        return self.split.unlabeled

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std

    def split_record(self) -> dict:
        return {"labeled": self.labeled.tolist(), "unlabeled": self.unlabeled.tolist(),
                "val": self.split.val.tolist(), "test": self.test_split,
                "split": self.split.method, "val_from_labeled": self.split.val_from_labeled,
                **self.about}


def to_device(spec: DatasetSpec, arrays: Arrays, parts: Split, device: torch.device,
              stats_x: np.ndarray | None = None, about: dict | None = None,
              storage: torch.device | None = None) -> DeviceData:
    """Arrays and their split on `device` (or the images on `storage`, the host, when the
    device cannot hold them: pinned, for fast copies); normalisation statistics from
    `stats_x` (default: the training images), on `device`."""
    stats = arrays.train_x if stats_x is None else stats_x
    channels = torch.zeros(spec.channels, dtype=torch.float64)
    squares = torch.zeros(spec.channels, dtype=torch.float64)
    # In chunks of about 4M values (32 MiB as float64): no float copy of a large set.
    rows = max(1, 2**22 // max(1, int(np.prod(stats.shape[1:]))))
    for i in range(0, len(stats), rows):
        chunk = torch.from_numpy(stats[i:i + rows]).double().div_(255.0)
        channels += chunk.sum((0, 2, 3))
        squares += chunk.square_().sum((0, 2, 3))
    n = max(1, stats.shape[0] * stats.shape[2] * stats.shape[3])
    mean = channels / n
    std = ((squares / n - mean.pow(2)) * n / max(1, n - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    mean, std = mean.float().view(-1, 1, 1), std.float().view(-1, 1, 1)
    storage = storage or device

    def put(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if storage.type == "cpu" and device.type == "cuda":
            return t.pin_memory()
        return t.to(storage)

    return DeviceData(
        spec, put(arrays.train_x), put(arrays.train_y), put(arrays.test_x), put(arrays.test_y),
        parts, arrays.test_split, mean.to(device), std.to(device),
        torch.as_tensor(parts.val, dtype=torch.long).to(storage), about or {})


class IndexStream:
    """Batches of indices drawn epoch by epoch without replacement, as the authors' loader does.

    A batch may straddle two epochs; the state (order, position, generator) is checkpointed.
    Each epoch's order is drawn on the CPU (reproducible everywhere) and copied to `device`
    once, so a batch of indices is a slice of a device tensor: no per-step transfer.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long, device=self.device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        while len(self.order) - self.pos < self.batch_size:
            perm = torch.randperm(len(self.indices), generator=self.generator)
            epoch = self.indices[perm].to(self.device)
            self.order = torch.cat([self.order[self.pos:], epoch])
            self.pos = 0
        batch = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"order": self.order[self.pos:].to("cpu", copy=True),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.pos = state["order"].to(self.device), 0
        self.generator.set_state(state["generator"])


def augment(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Random crop with zero `padding` (offsets uniform over all positions) and optional flip."""
    if padding:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
        ox = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
        rows = (oy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (ox + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
        x = torch.where(mask, x.flip(3), x)
    return x
