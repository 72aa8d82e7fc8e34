"""The built-in datasets, read from their official on-disk formats: digits (scikit-learn's
embedded set), CIFAR-10/100 (python pickles) and SVHN (.mat files); DATASETS names them."""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.data.holdout import digits_test_indices
from trainer.data.specs import Arrays, DatasetMissing, DatasetSpec, _corrupt

# --- digits: 1797 real 8x8 images shipped inside scikit-learn -----------------------------

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
