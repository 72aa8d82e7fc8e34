"""Small dataset files written in their real on-disk formats (the machines here cannot
download the real sets): CIFAR's python pickles, SVHN's .mat files, image folder trees."""

import os
import pickle

import numpy as np
import scipy.io
from PIL import Image


def write_cifar10(root, per_batch=30, test=20, seed=0):
    """Six pickled batches exactly as in 'cifar-10-batches-py' (python 2 pickles, str keys)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    labels = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        y = [int(v) for v in np.arange(n) % 10]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {"batch_label": name, "labels": y, "data": data,
                 "filenames": [f"{i}.png" for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
        labels[name] = (data, y)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    return labels


def write_cifar100(root, train=300, test=100, seed=0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    out = {}
    for name, n in [("train", train), ("test", test)]:
        fine = [int(v) for v in np.arange(n) % 100]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {b"filenames": [b"x.png"] * n, b"fine_labels": fine,
                 b"coarse_labels": [v // 5 for v in fine], b"data": data}  # bytes keys, as py2
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
        out[name] = (data, fine)
    return out


def write_svhn(root, train=60, test=30, seed=0):
    """train_32x32.mat / test_32x32.mat: X is (32, 32, 3, N) uint8, y is (N, 1), 0 stored as 10."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for name, n in [("train", train), ("test", test)]:
        digits = np.arange(n) % 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(os.path.join(root, f"{name}_32x32.mat"), {"X": x, "y": y})
        out[name] = (x, digits)
    return out


def write_folder(root, parts, size=8, mode="L", per_class=6, classes=("cat", "dog")):
    """A folder tree: for each part in `parts`, per_class images of each class."""
    rng = np.random.default_rng(0)
    for part in parts:
        for c in classes if part != "unlabeled" else ("",):
            folder = os.path.join(root, part, c)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                shape = (size, size) if mode == "L" else (size, size, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                    os.path.join(folder, f"{i:03d}.png"))
    return str(root)
