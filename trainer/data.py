"""Datasets by name, the class-balanced labeled split, and batched on-device augmentation.

Images are kept as uint8 NCHW tensors on the training device; a batch is drawn by
index, cropped/flipped in one batched gather and normalised there. CIFAR and SVHN
are read from their official on-disk formats (torchvision downloads them on request);
digits is scikit-learn's embedded set and needs no download.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainer.methods import METHODS

if TYPE_CHECKING:
    from trainer.config import Config


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


# --- digits: 1797 real 8x8 images shipped inside scikit-learn -----------------------------

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-balanced `fraction` of each class, drawn with default_rng(seed):
    the test set of data that has none of its own."""
    rng = np.random.default_rng(seed)
    test = []
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        test.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    return np.sort(np.concatenate(test))


def digits_test_indices(labels: np.ndarray) -> np.ndarray:
    """The fixed digits test set: 30% of each class, drawn with numpy's default_rng(0)."""
    return holdout(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)


def digits_file() -> str:
    """scikit-learn's embedded digits (digits.csv.gz: 64 pixels and the label per row), found
    without importing scikit-learn, which costs a trial process 1.6 s (scipy with it)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    raise DatasetMissing("digits: scikit-learn's embedded digits.csv.gz was not found; "
                         "install scikit-learn (pip install scikit-learn)")


def load_digits_arrays(root: str, download: bool) -> Arrays:
    rows = np.loadtxt(digits_file(), delimiter=",")  # what sklearn's load_digits reads
    # 17 grey levels (0..16) stretched to uint8 so every dataset shares one pipeline.
    images = np.rint(rows[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = rows[:, -1].astype(np.int64)
    test = digits_test_indices(labels)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return Arrays(images[train], labels[train], images[test], labels[test], test.tolist())


# --- CIFAR: the "python version" pickles ---------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: dataset files never run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles from Python 3 spell bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _read_cifar_batch(path: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:  # a truncated or foreign file fails in many ways; each is named as this file
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
    except Exception as e:
        raise _corrupt(path, "a CIFAR python batch", e) from e
    return data, labels


@dataclass(frozen=True)
class Files:
    """Where a downloaded dataset lives under --data-path, and what it is."""

    folder: str  # "" for files directly in the data path
    train: tuple[str, ...]
    test: tuple[str, ...]
    source: str


FILES: dict[str, Files] = {
    "cifar10": Files("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                     ("test_batch",), "the extracted 'CIFAR-10 python version' archive"),
    "cifar100": Files("cifar-100-python", ("train",), ("test",),
                      "the extracted 'CIFAR-100 python version' archive"),
    "svhn": Files("", ("train_32x32.mat",), ("test_32x32.mat",),
                  "the cropped-digits files of format 2 (32x32 .mat)"),
}


def require_files(dataset: str, root: str) -> None:
    """Raise DatasetMissing, naming the missing files and the fix, where a downloaded
    dataset's files are not under `root`; datasets that are not downloaded pass."""
    files = FILES.get(dataset)
    if files is None:
        return
    missing = [n for n in files.train + files.test
               if not os.path.isfile(os.path.join(root, files.folder, n))]
    if missing:
        where = os.path.join(os.path.abspath(root), files.folder).rstrip(os.sep) or os.sep
        holds = f"'{files.folder}'" if files.folder else "them"
        raise DatasetMissing(
            f"{dataset}: missing {', '.join(missing)} in {where}. Expected {files.source}. "
            f"Pass --download to fetch it, or --data-path to the folder that holds {holds}.")


def fetch(dataset: str, root: str) -> None:
    """Download a dataset that is downloaded (torchvision checks the official checksums) into
    `root`, and read it once; nothing for the others."""
    if dataset in FILES:
        DATASETS[dataset].load(root, True)


def _cifar_loader(dataset: str) -> Callable[[str, bool], Arrays]:
    files = FILES[dataset]
    folder, train_files, test_files = files.folder, list(files.train), list(files.test)
    key = "labels" if dataset == "cifar10" else "fine_labels"

    def load(root: str, download: bool) -> Arrays:
        if download:
            import torchvision

            cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else (
                torchvision.datasets.CIFAR100)
            for train in (True, False):  # downloads and verifies the official checksums
                cls(root, train=train, download=True)
        require_files(dataset, root)
        tr = [_read_cifar_batch(os.path.join(root, folder, n), key) for n in train_files]
        te = [_read_cifar_batch(os.path.join(root, folder, n), key) for n in test_files]
        return Arrays(np.concatenate([x for x, _ in tr]), np.concatenate([y for _, y in tr]),
                      np.concatenate([x for x, _ in te]), np.concatenate([y for _, y in te]),
                      "official")

    return load


# --- SVHN: the cropped-digits .mat files (format 2) ----------------------------------------

def _read_svhn(path: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:  # as for CIFAR: scipy raises many kinds for a truncated or foreign file
        mat = loadmat(path)
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))  # HWCN -> NCHW
        y = mat["y"].astype(np.int64).reshape(-1)
        if x.shape[1:] != (3, 32, 32) or len(x) != len(y):
            raise ValueError(f"images of shape {x.shape[1:]} and {len(y)} labels for "
                             f"{len(x)} images")
    except Exception as e:
        raise _corrupt(path, "an SVHN cropped-digits .mat file", e) from e
    y[y == 10] = 0  # the format stores digit 0 as label 10
    return x.astype(np.uint8), y


def load_svhn_arrays(root: str, download: bool) -> Arrays:
    if download:
        import torchvision

        for split in ("train", "test"):
            torchvision.datasets.SVHN(root, split=split, download=True)
    names = [*FILES["svhn"].train, *FILES["svhn"].test]
    require_files("svhn", root)
    (trx, try_), (tex, tey) = (_read_svhn(os.path.join(root, n)) for n in names)
    return Arrays(trx, try_, tex, tey, "official")


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(10, 1, 8, 1, False, load_digits_arrays, 1258, 539),
    "cifar10": DatasetSpec(10, 3, 32, 4, True, _cifar_loader("cifar10"), 50_000, 10_000),
    "cifar100": DatasetSpec(100, 3, 32, 4, True, _cifar_loader("cifar100"), 50_000, 10_000),
    "svhn": DatasetSpec(10, 3, 32, 4, False, load_svhn_arrays, 73_257, 26_032),
}


# --- the split: labeled, validation, unlabeled ---------------------------------------------

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


# --- on-device data ------------------------------------------------------------------------

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
    path is data of your own (trainer/own_data.py)."""
    from trainer.own_data import is_dataset_path, load_own_for

    if is_dataset_path(cfg.dataset):
        return load_own_for(cfg, device)
    data = load_data(cfg.dataset, cfg.data_path, cfg.download, cfg.num_label, cfg.seed, device,
                     cfg.num_val, cfg.val_from_labeled, cfg.split)
    if cfg.no_flip:
        data.spec = dataclasses.replace(data.spec, flip=False)
    return data


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
