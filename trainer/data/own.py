"""Your own data, given as --dataset PATH: an image folder tree or an .npz file.

A folder tree:  train/<class>/...  (required; any nesting below a class folder)
                unlabeled/...      (optional; any images, any nesting, no labels)
                val/<class>/...    (optional; the validation set, instead of one drawn)
                test/<class>/...   (optional; without it a fixed, class-balanced fraction
                                    of train/ is held out as the test set)
An .npz file:   x_train, y_train, and optionally x_unlabeled, x_val + y_val,
                x_test + y_test, classes. Images are uint8, NHWC or NCHW (an array whose
                last axis has 1 or 3 entries and whose second has not is NHWC), or NHW for
                greyscale; labels are integers in [0, number of classes).

Class names come from the folder names (sorted) or the `classes` array. All images share
one size, or `image_size` resizes them once, here. What the data holds before it is
loaded (classes, sizes, defaults, fit) is trainer/data/survey.py. docs/own-data.md has a
worked example.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainer.data.batches import DeviceData, to_device
from trainer.data.fit import estimate_bytes, host_available, placement
from trainer.data.holdout import HOLDOUT_FRACTION, HOLDOUT_SEED, holdout
from trainer.data.specs import Arrays, DatasetSpec
from trainer.data.splits import Split, make_split
from trainer.data.survey import (
    MAX_PIXELS,
    OwnDataError,
    dataset_name,
    image_errors,
    inspect_classes,
    open_npz,
    read_array,
    tree,
)

if TYPE_CHECKING:
    from trainer.config import Config



@dataclass
class OwnData:
    """Images (uint8 NCHW) and labels (int64) of a dataset of your own, part by part."""

    name: str  # the folder's or file's name: how reports name it
    layout: str  # "folder" or "npz"
    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    unlabeled_x: np.ndarray
    val_x: np.ndarray | None
    val_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray
    test_split: str | dict  # "test/" or "x_test", or how the held-out part was drawn
    # Folder trees: each image's path relative to the root, in array order.
    files: dict[str, list[str]] = field(default_factory=dict)


# --- loading -------------------------------------------------------------------------------

class _Images:
    """Decodes image files into one uint8 NCHW array of a common size and channel count."""

    def __init__(self, image_size: int | None):
        self.image_size = image_size
        self.first: tuple[str, tuple[int, int]] | None = None  # a file and its size

    def read(self, files: list[str]) -> np.ndarray:
        from PIL import Image

        arrays = []
        for f in files:
            try:
                with Image.open(f) as im:
                    if im.size[0] * im.size[1] > MAX_PIXELS:  # before decoding it
                        raise OwnDataError(
                            f"{f}: {im.size[0]}x{im.size[1]} pixels, more than the "
                            f"{MAX_PIXELS:,} one image may have (a decompression bomb, or a "
                            "photo far too large); shrink it or remove it")
                    im.load()
                    colour = im.mode not in ("1", "L", "I", "I;16", "F", "LA")
                    im = im.convert("RGB" if colour else "L")
                    if self.image_size:
                        if im.size != (self.image_size, self.image_size):
                            im = im.resize((self.image_size, self.image_size),
                                           Image.Resampling.BILINEAR)
                    elif self.first is None:
                        self.first = (f, im.size)
                    elif im.size != self.first[1]:
                        (g, (w, h)), (w2, h2) = self.first, im.size
                        raise OwnDataError(
                            f"images of different sizes: {g} is {w}x{h}, {f} is {w2}x{h2}; "
                            "pass --image-size S to resize every image to SxS once, at load")
                    a = np.asarray(im, dtype=np.uint8)
            except image_errors() as e:  # UnidentifiedImageError is an OSError
                if isinstance(e, OwnDataError):
                    raise
                raise OwnDataError(f"{f}: not a readable PNG or JPEG image ({e}); remove or "
                                   "replace it") from e
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        channels = max((a.shape[0] for a in arrays), default=1)
        out = [np.repeat(a, 3, axis=0) if a.shape[0] < channels else a for a in arrays]
        return np.stack(out) if out else np.empty((0, channels, 1, 1), np.uint8)


def _match_channels(*parts: np.ndarray) -> list[np.ndarray]:
    """The parts with one channel count (greyscale images repeated to RGB where any part is
    in colour); empty parts shaped as the others."""
    ref = next(p for p in parts if len(p))
    channels = max(p.shape[1] for p in parts if len(p))
    out = []
    for p in parts:
        if not len(p):
            p = np.empty((0, channels, *ref.shape[2:]), np.uint8)
        elif p.shape[1] < channels:
            p = np.repeat(p, channels, axis=1)
        out.append(p)
    return out


def _load_folder(root: str, image_size: int | None) -> OwnData:
    classes = inspect_classes(root)
    reader = _Images(image_size)
    rel = lambda f: os.path.relpath(f, root)  # noqa: E731

    parts = tree(root)  # every image once, the parts apart

    def labeled_part(part: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        if part not in parts:
            return None
        folders = parts[part]
        for c, files in folders.items():
            if c not in classes:
                raise OwnDataError(f"{os.path.join(root, part, c)}: class {c!r} is not a class "
                                   f"of train/ ({', '.join(classes)}); rename or remove it")
            if not files and part == "train":
                raise OwnDataError(f"{os.path.join(root, part, c)}: an empty class folder; put "
                                   "its images there (PNG or JPEG) or remove it")
        files = [f for c in classes for f in folders.get(c, [])]
        labels = np.array([classes.index(c) for c in classes for _ in folders.get(c, [])],
                          dtype=np.int64)
        x = reader.read(files)
        return x, labels, [rel(f) for f in files]

    train_x, train_y, train_files = labeled_part("train")
    unlabeled_files = parts.get("unlabeled", {}).get("", [])
    unlabeled_x = reader.read(unlabeled_files)
    val = labeled_part("val")
    test = labeled_part("test")
    files = {"train": train_files, "unlabeled": [rel(f) for f in unlabeled_files]}
    if val:
        files["val"] = val[2]
    if test:
        test_x, test_y, files["test"] = test
        test_split: str | dict = "test/"
    else:
        held = holdout(train_y)
        keep = np.setdiff1d(np.arange(len(train_y)), held)
        test_x, test_y = train_x[held], train_y[held]
        files["test"] = [train_files[i] for i in held]
        train_x, train_y, files["train"] = train_x[keep], train_y[keep], [train_files[i]
                                                                           for i in keep]
        test_split = {"held_out_of": "train/", "fraction": HOLDOUT_FRACTION, "seed": HOLDOUT_SEED}
    parts = _match_channels(train_x, unlabeled_x, test_x, *([val[0]] if val else []))
    return OwnData(dataset_name(root), "folder", classes, parts[0], train_y, parts[1],
                   parts[3] if val else None, val[1] if val else None, parts[2], test_y,
                   test_split, files)


def _as_nchw(x: np.ndarray, key: str, path: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise OwnDataError(f"{path}: {key} has dtype {x.dtype}; give uint8 images (0..255), "
                           "e.g. (x * 255).round().astype(np.uint8)")
    stored = x.shape
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise OwnDataError(f"{path}: {key} has shape {x.shape}; give images as N,H,W,C or "
                           "N,C,H,W with 1 or 3 channels, or N,H,W for greyscale")
    if len(x) and not x.shape[-1] * x.shape[-2]:
        raise OwnDataError(f"{path}: {key} has shape {stored}: its images are "
                           f"{x.shape[-1]}x{x.shape[-2]}, no pixels at all; save the images "
                           "themselves, as N,H,W,C, N,C,H,W or N,H,W")
    if x.shape[-1] * x.shape[-2] > MAX_PIXELS:
        raise OwnDataError(f"{path}: {key} images are {x.shape[-1]}x{x.shape[-2]}, more than "
                           f"the {MAX_PIXELS:,} pixels one image may have; store them smaller")
    return x


def _labels(y: np.ndarray, key: str, path: str, n: int, classes: list[str]) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise OwnDataError(f"{path}: {key} must hold {n} integer labels, got {y.dtype} {y.shape}")
    bad = y[(y < 0) | (y >= len(classes))]
    if len(bad):
        raise OwnDataError(f"{path}: {key} has label {int(bad[0])}, outside [0, {len(classes)}) "
                           f"for the {len(classes)} classes; fix the labels or the classes "
                           "array")
    return y.astype(np.int64)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[-2:] == (size, size) or not len(x):
        return x
    t = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(size, size),
                                        mode="bilinear", antialias=True, align_corners=False)
    return t.round_().clamp_(0, 255).to(torch.uint8).numpy()


def _load_npz(path: str, image_size: int | None) -> OwnData:
    classes = inspect_classes(path)
    with open_npz(path) as z:
        arrays = {k: read_array(z, k, path) for k in z.files}
    for x_key, y_key in (("x_val", "y_val"), ("x_test", "y_test")):
        if (x_key in arrays) != (y_key in arrays):
            raise OwnDataError(f"{path}: has {x_key if x_key in arrays else y_key} without "
                               f"{y_key if x_key in arrays else x_key}; give both or neither")
    parts = {}
    for key in ("x_train", "x_unlabeled", "x_val", "x_test"):
        if key in arrays:  # popped: an NHWC original is freed once transposed
            parts[key] = _as_nchw(arrays.pop(key), key, path)
    if image_size:
        parts = {k: _resize(v, image_size) for k, v in parts.items()}
    else:
        ref = parts["x_train"].shape[-2:]
        for key, x in parts.items():
            if len(x) and x.shape[-2:] != ref:
                raise OwnDataError(f"{path}: x_train images are {ref[1]}x{ref[0]}, {key} images "
                                   f"{x.shape[-1]}x{x.shape[-2]}; pass --image-size S to resize "
                                   "them all to SxS")
    train_y = _labels(arrays["y_train"], "y_train", path, len(parts["x_train"]), classes)
    val_y = (_labels(arrays["y_val"], "y_val", path, len(parts["x_val"]), classes)
             if "x_val" in parts else None)
    train_x = parts.pop("x_train")  # the only reference: the held-out copy frees it
    empty = np.empty((0, *train_x.shape[1:]), np.uint8)
    if "x_test" in parts:
        test_x = parts["x_test"]
        test_y = _labels(arrays["y_test"], "y_test", path, len(test_x), classes)
        test_split: str | dict = "x_test"
    else:
        held = holdout(train_y)
        keep = np.setdiff1d(np.arange(len(train_y)), held)
        test_x, test_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], \
            train_y[keep]
        test_split = {"held_out_of": "x_train", "fraction": HOLDOUT_FRACTION,
                      "seed": HOLDOUT_SEED, "indices": held.tolist()}
    matched = _match_channels(train_x, parts.get("x_unlabeled", empty), test_x,
                              parts.get("x_val", empty))
    return OwnData(dataset_name(path), "npz", classes, matched[0], train_y, matched[1],
                   matched[3] if "x_val" in parts else None, val_y, matched[2], test_y,
                   test_split)


def load_own(path: str, image_size: int | None = None) -> OwnData:
    """Read the dataset at `path` (folder tree or .npz), checked, at one image size."""
    data = _load_folder(path, image_size) if os.path.isdir(path) else _load_npz(path, image_size)
    if not len(data.train_x):
        raise OwnDataError(f"--dataset {path}: no training images")
    return data


# --- on the device ------------------------------------------------------------------------

def padding_for(size: int) -> int:
    """Random-crop padding for `size`-pixel images: 4 at 32 px, as the authors pad CIFAR."""
    return max(1, round(size / 8))


def spec_of(own: OwnData, flip: bool = True) -> DatasetSpec:
    size = int(max(own.train_x.shape[-2:]))
    return DatasetSpec(len(own.classes), int(own.train_x.shape[1]), size, padding_for(size),
                       flip, load=_loaded_already)


def _loaded_already(root: str, download: bool) -> Arrays:
    raise RuntimeError("data of your own is read by load_own, not through a DatasetSpec")


def load_own_for(cfg: Config, device: torch.device,
                 storage: torch.device | None = None) -> DeviceData:
    """Your dataset on `device`: the labeled and validation images drawn from train/ as for a
    built-in set, unlabeled/ joining the unlabeled pool, val/ (if any) as the validation set.
    The images live on `storage` if given (the host, to try that path), else where they fit."""
    nbytes = estimate_bytes(cfg.dataset, cfg.image_size or None)
    device_free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    fits = placement(nbytes, device, host_available(), device_free)  # refuses what cannot fit
    storage = storage or fits
    own = load_own(cfg.dataset, cfg.image_size or None)
    if own.val_x is not None and cfg.num_val:
        raise OwnDataError(f"--num-val {cfg.num_val}: {cfg.dataset} has a validation set of its "
                           f"own ({len(own.val_x)} images); leave --num-val at 0 to use it")
    parts = make_split(own.train_y, len(own.classes), cfg.num_label, cfg.seed, cfg.num_val,
                       cfg.val_from_labeled, cfg.split, own.classes)
    n, extra = len(own.train_x), len(own.unlabeled_x)
    xs, ys = [own.train_x, own.unlabeled_x], [own.train_y, np.full(extra, -1, np.int64)]
    val = parts.val
    if own.val_x is not None:
        val = np.arange(n + extra, n + extra + len(own.val_x))
        xs.append(own.val_x)
        ys.append(own.val_y)
    split = Split(parts.labeled, np.concatenate([parts.unlabeled, np.arange(n, n + extra)]),
                  val, parts.method, parts.val_from_labeled)
    spec = spec_of(own, not cfg.no_flip)
    # One array of training images; own's parts are dropped once it is made, so that a
    # large set is held twice at most (own is this function's alone).
    train_x = np.concatenate(xs) if sum(map(len, xs[1:])) else own.train_x
    own.train_x = own.unlabeled_x = own.val_x = xs = None  # type: ignore[assignment]
    arrays = Arrays(train_x, np.concatenate(ys), own.test_x, own.test_y, own.test_split)
    about: dict = {"dataset": own.name, "layout": own.layout, "classes": own.classes}
    if own.files:
        rows = own.files["train"] + own.files["unlabeled"] + own.files.get("val", [])
        about["files"] = {"labeled": [rows[i] for i in split.labeled],
                          "val": [rows[i] for i in split.val], "test": own.files["test"]}
    if storage != device:
        about["images_on"] = "host"  # too large for the device: batches are copied over
    return to_device(spec, arrays, split, device,
                     stats_x=train_x[:n], about=about, storage=storage)
