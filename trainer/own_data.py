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
one size, or `image_size` resizes them once, here. docs/own-data.md has a worked example.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainer.data import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    Arrays,
    DatasetSpec,
    DeviceData,
    Split,
    holdout,
    make_split,
    to_device,
)

if TYPE_CHECKING:
    from trainer.config import Config

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Without test/ (or x_test): this fraction of each class of train/ is the test set, drawn
# with this seed; recorded in split.json. The digits set's own rule: its images in an .npz
# without x_test give the built-in split exactly.
TEST_FRACTION, HOLDOUT_SEED = DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED


class OwnDataError(ValueError):
    """Data at --dataset PATH that cannot be used as it is; the message names the file."""


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


def is_dataset_path(dataset: str) -> bool:
    """--dataset names a path (a folder or an .npz file), not a built-in dataset."""
    return os.sep in dataset or dataset.endswith(".npz") or os.path.isdir(dataset)


def dataset_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return base[:-4] if base.endswith(".npz") else base


# --- what the data holds, before loading it ------------------------------------------------

def _image_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return found


def _class_folders(root: str, part: str) -> dict[str, list[str]]:
    base = os.path.join(root, part)
    return {c: _image_files(os.path.join(base, c)) for c in sorted(os.listdir(base))
            if os.path.isdir(os.path.join(base, c)) and not c.startswith(".")}


def _npz(path: str):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise OwnDataError(f"{path}: not a readable .npz file ({e})") from e


def inspect_classes(path: str) -> list[str]:
    """The class names of the dataset at `path`, read without loading any image."""
    if not os.path.exists(path):
        raise OwnDataError(f"--dataset {path}: no such folder or file; give an image folder "
                           "tree (train/<class>/...) or an .npz file (docs/own-data.md)")
    if os.path.isdir(path):
        if not os.path.isdir(os.path.join(path, "train")):
            raise OwnDataError(f"--dataset {path}: has no train/ folder; put the labeled images "
                               "in train/<class>/ (docs/own-data.md)")
        train = os.path.join(path, "train")
        # Folder names only: validation reads them often, and a large tree is slow to walk.
        classes = sorted(c for c in os.listdir(train)
                         if os.path.isdir(os.path.join(train, c)) and not c.startswith("."))
        if len(classes) < 2:
            raise OwnDataError(f"{os.path.join(path, 'train')}: {len(classes)} class folder(s); "
                               "a classifier needs at least two, one folder per class")
        return classes
    with _npz(path) as z:
        if "x_train" not in z.files or "y_train" not in z.files:
            raise OwnDataError(f"{path}: has {sorted(z.files)}; it needs x_train and y_train")
        if "classes" in z.files:
            return [str(c) for c in z["classes"]]
        y = z["y_train"]
        if not np.issubdtype(y.dtype, np.integer) or y.size == 0:
            raise OwnDataError(f"{path}: y_train must be integer labels, got {y.dtype} "
                               f"({y.size} of them)")
        return [str(c) for c in range(int(y.max()) + 1)]


def _npz_shape(path: str, key: str) -> tuple[int, ...]:
    """An array's shape from its .npy header in the archive, without reading the array."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            fmt = np.lib.format
            header = (fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0)
                      else fmt.read_array_header_2_0)
            return header(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise OwnDataError(f"{path}: cannot read the shape of {key} ({e})") from e


def stored_size(path: str) -> int:
    """The side of the stored images (the larger one): the first image of train/, or
    x_train's shape."""
    if os.path.isdir(path):
        from PIL import Image

        for files in _class_folders(path, "train").values():
            if files:
                try:
                    with Image.open(files[0]) as im:
                        return max(im.size)
                except OSError as e:
                    raise OwnDataError(f"{files[0]}: not a readable PNG or JPEG image ({e})") from e
        raise OwnDataError(f"{os.path.join(path, 'train')}: no images in its class folders")
    shape = _npz_shape(path, "x_train")
    nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
    return int(max(shape[1:3] if nhwc else shape[-2:]))


def class_counts(path: str) -> tuple[np.ndarray, int]:
    """Training images per class (less the held-out test fraction where the data has no
    test set), and the number of extra unlabeled images."""
    if os.path.isdir(path):
        counts = np.array([len(f) for f in _class_folders(path, "train").values()])
        has_test = os.path.isdir(os.path.join(path, "test"))
        unlabeled = os.path.join(path, "unlabeled")
        extra = len(_image_files(unlabeled)) if os.path.isdir(unlabeled) else 0
    else:
        with _npz(path) as z:
            counts = np.bincount(z["y_train"].clip(0), minlength=len(inspect_classes(path)))
            has_test = "x_test" in z.files
        extra = _npz_shape(path, "x_unlabeled")[0] if has_key(path, "x_unlabeled") else 0
    if not has_test:
        counts = counts - np.round(TEST_FRACTION * counts).astype(int)
    return counts, extra


def has_own_val(path: str) -> bool:
    """The data carries its validation set: a val/ folder, or x_val in the .npz."""
    return os.path.isdir(os.path.join(path, "val")) if os.path.isdir(path) else \
        has_key(path, "x_val")


def has_key(path: str, key: str) -> bool:
    with _npz(path) as z:
        return key in z.files


# Architecture by image side: the small CNN for tiny images, WRN-28-2 around 32 px,
# ResNet-18 from 64 px.
ARCHITECTURE_BY_SIZE = ((16, "digitscnn"), (63, "wrn28-2"), (1 << 30, "resnet18"))


def own_preset(path: str, given: dict) -> dict:
    """Defaults for data of your own, from its size (every one overridable; the trainer
    prints the resolved config at start)."""
    inspect_classes(path)  # a missing path or train/ is named before anything else
    size = given.get("image_size") or stored_size(path)
    counts, extra = class_counts(path)
    classes = len(counts)
    per_class = int(counts.min())
    num_val = given.get("num_val") or 0
    # With unlabeled/ images: every labeled image the smallest class allows, less the
    # validation images drawn beside them. Without: a tenth of each class, the rest of
    # train/ serving as the unlabeled images.
    labeled = per_class - (0 if given.get("val_from_labeled") else num_val // classes)
    if not extra:
        labeled = min(labeled, max(1, per_class // 10))
    pool = int(counts.sum()) + extra
    batch = given.get("batch_size") or (64 if pool < 10_000 else 128)
    # About 50 passes over the training images, in whole hundreds of steps; the schedule
    # follows a total given on the command line.
    total = given.get("total_steps") or int(min(400_000, max(500, round(50 * pool / batch, -2))))
    test_freq = max(min(50, total), int(round(total / 20, -1)))
    return {"architecture": next(a for s, a in ARCHITECTURE_BY_SIZE if size <= s),
            "num_label": max(1, labeled) * classes, "batch_size": batch, "total_steps": total,
            "warmup": total // 6, "milestones": (int(total * 0.75),), "test_freq": test_freq,
            "log_freq": max(10, test_freq // 2), "weight_decay": 5e-4}


def fingerprint(path: str) -> str:
    """A digest of what the data is, the same on every node that holds the same copy:
    every image's path and size (a folder), or the file's size and its first and last MiB
    (.npz). Modification times are left out: copies to other nodes rarely keep them."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for f in _image_files(path):
            h.update(f"{os.path.relpath(f, path)}\0{os.path.getsize(f)}\n".encode())
    else:
        size = os.path.getsize(path)
        h.update(str(size).encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


# --- loading -------------------------------------------------------------------------------

class _Images:
    """Decodes image files into one uint8 NCHW array of a common size and channel count."""

    def __init__(self, image_size: int | None):
        self.image_size = image_size
        self.first: tuple[str, tuple[int, int]] | None = None  # a file and its size

    def read(self, files: list[str]) -> tuple[np.ndarray, int]:
        from PIL import Image, UnidentifiedImageError

        arrays = []
        for f in files:
            try:
                with Image.open(f) as im:
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
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                if isinstance(e, OwnDataError):
                    raise
                raise OwnDataError(f"{f}: not a readable PNG or JPEG image ({e}); remove or "
                                   "replace it") from e
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        channels = max((a.shape[0] for a in arrays), default=1)
        out = [np.repeat(a, 3, axis=0) if a.shape[0] < channels else a for a in arrays]
        return (np.stack(out) if out else np.empty((0, channels, 1, 1), np.uint8)), channels


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

    def labeled_part(part: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        if not os.path.isdir(os.path.join(root, part)):
            return None
        folders = _class_folders(root, part)
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
        x, _ = reader.read(files)
        return x, labels, [rel(f) for f in files]

    train_x, train_y, train_files = labeled_part("train")
    unlabeled_files = (_image_files(os.path.join(root, "unlabeled"))
                       if os.path.isdir(os.path.join(root, "unlabeled")) else [])
    unlabeled_x, _ = reader.read(unlabeled_files)
    val = labeled_part("val")
    test = labeled_part("test")
    files = {"train": train_files, "unlabeled": [rel(f) for f in unlabeled_files]}
    if val:
        files["val"] = val[2]
    if test:
        test_x, test_y, files["test"] = test
        test_split: str | dict = "test/"
    else:
        held = holdout(train_y, TEST_FRACTION, HOLDOUT_SEED)
        keep = np.setdiff1d(np.arange(len(train_y)), held)
        test_x, test_y = train_x[held], train_y[held]
        files["test"] = [train_files[i] for i in held]
        train_x, train_y, files["train"] = train_x[keep], train_y[keep], [train_files[i]
                                                                           for i in keep]
        test_split = {"held_out_of": "train/", "fraction": TEST_FRACTION, "seed": HOLDOUT_SEED}
    parts = _match_channels(train_x, unlabeled_x, test_x, *([val[0]] if val else []))
    return OwnData(dataset_name(root), "folder", classes, parts[0], train_y, parts[1],
                   parts[3] if val else None, val[1] if val else None, parts[2], test_y,
                   test_split, files)


def _as_nchw(x: np.ndarray, key: str, path: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise OwnDataError(f"{path}: {key} has dtype {x.dtype}; give uint8 images (0..255), "
                           "e.g. (x * 255).round().astype(np.uint8)")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise OwnDataError(f"{path}: {key} has shape {x.shape}; give images as N,H,W,C or N,C,H,W "
                       "with 1 or 3 channels, or N,H,W for greyscale")


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
    with _npz(path) as z:
        arrays = {k: z[k] for k in z.files}
    parts = {}
    for key in ("x_train", "x_unlabeled", "x_val", "x_test"):
        if key in arrays:
            parts[key] = _as_nchw(arrays[key], key, path)
    for x_key, y_key in (("x_val", "y_val"), ("x_test", "y_test")):
        if (x_key in arrays) != (y_key in arrays):
            raise OwnDataError(f"{path}: has {x_key if x_key in arrays else y_key} without "
                               f"{y_key if x_key in arrays else x_key}; give both or neither")
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
    train_x = parts["x_train"]
    empty = np.empty((0, *train_x.shape[1:]), np.uint8)
    if "x_test" in parts:
        test_x = parts["x_test"]
        test_y = _labels(arrays["y_test"], "y_test", path, len(test_x), classes)
        test_split: str | dict = "x_test"
    else:
        held = holdout(train_y, TEST_FRACTION, HOLDOUT_SEED)
        keep = np.setdiff1d(np.arange(len(train_y)), held)
        test_x, test_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], \
            train_y[keep]
        test_split = {"held_out_of": "x_train", "fraction": TEST_FRACTION,
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

def crop_padding(size: int) -> int:
    """Random-crop padding for `size`-pixel images: 4 at 32 px, as the authors pad CIFAR."""
    return max(1, round(size / 8))


def spec_of(own: OwnData, flip: bool = True) -> DatasetSpec:
    size = int(max(own.train_x.shape[-2:]))
    return DatasetSpec(len(own.classes), int(own.train_x.shape[1]), size, crop_padding(size),
                       flip, load=_loaded_already)


def _loaded_already(root: str, download: bool) -> Arrays:
    raise RuntimeError("data of your own is read by load_own, not through a DatasetSpec")


# --- does it fit? -------------------------------------------------------------------------

# Loading holds about three copies at its peak (decoded images, their stack, the training
# array with unlabeled/ and val/ appended); training keeps one. On a GPU the data may take
# half of the free memory, the rest is the model's.
HOST_COPIES, DEVICE_SHARE = 3, 0.5


def estimate_bytes(path: str, image_size: int | None = None) -> int:
    """The decoded size of every image at `path` (uint8), from file counts and one header
    (folders: counted as colour, the larger case) or the arrays' headers (.npz)."""
    side = image_size or stored_size(path)
    if os.path.isdir(path):
        count = len(_image_files(path))
        return count * 3 * side * side
    total = 0
    for key in ("x_train", "x_unlabeled", "x_val", "x_test"):
        if has_key(path, key):
            shape = _npz_shape(path, key)
            nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
            channels = 1 if len(shape) == 3 else shape[-1] if nhwc else shape[1]
            total += shape[0] * channels * side * side
    return total


def host_available() -> int:
    """Memory the OS can give this process now (MemAvailable), in bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def placement(nbytes: int, device: torch.device, host_free: int,
              device_free: int | None) -> torch.device:
    """Where the images live while training: on `device` when they fit, else in (pinned)
    host memory, each batch copied over; refused, with the numbers, when the host cannot
    hold them either."""
    gb = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    if HOST_COPIES * nbytes > host_free:
        raise OwnDataError(
            f"the images take {gb(nbytes)} decoded, and loading them needs about "
            f"{gb(HOST_COPIES * nbytes)} of host memory, but {gb(host_free)} is available; "
            "use --image-size to load them smaller, or fewer images")
    if device_free is not None and nbytes > DEVICE_SHARE * device_free:
        return torch.device("cpu")
    return device


def load_own_for(cfg: Config, device: torch.device) -> DeviceData:
    """Your dataset on `device`: the labeled and validation images drawn from train/ as for a
    built-in set, unlabeled/ joining the unlabeled pool, val/ (if any) as the validation set."""
    nbytes = estimate_bytes(cfg.dataset, cfg.image_size or None)
    device_free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    storage = placement(nbytes, device, host_available(), device_free)
    own = load_own(cfg.dataset, cfg.image_size or None)
    if own.val_x is not None and cfg.num_val:
        raise OwnDataError(f"--num-val {cfg.num_val}: {cfg.dataset} has a validation set of its "
                           f"own ({len(own.val_x)} images); leave --num-val at 0 to use it")
    parts = make_split(own.train_y, len(own.classes), cfg.num_label, cfg.seed, cfg.num_val,
                       cfg.val_from_labeled, cfg.split)
    n, extra = len(own.train_x), len(own.unlabeled_x)
    xs, ys = [own.train_x, own.unlabeled_x], [own.train_y, np.full(extra, -1, np.int64)]
    val = parts.val
    if own.val_x is not None:
        val = np.arange(n + extra, n + extra + len(own.val_x))
        xs.append(own.val_x)
        ys.append(own.val_y)
    split = Split(parts.labeled, np.concatenate([parts.unlabeled, np.arange(n, n + extra)]),
                  val, parts.method, parts.val_from_labeled)
    arrays = Arrays(np.concatenate(xs), np.concatenate(ys), own.test_x, own.test_y,
                    own.test_split)
    about: dict = {"dataset": own.name, "layout": own.layout, "classes": own.classes}
    if own.files:
        rows = own.files["train"] + own.files["unlabeled"] + own.files.get("val", [])
        about["files"] = {"labeled": [rows[i] for i in split.labeled],
                          "val": [rows[i] for i in split.val], "test": own.files["test"]}
    if storage != device:
        about["images_on"] = "host"  # too large for the device: batches are copied over
    return to_device(spec_of(own, not cfg.no_flip), arrays, split, device,
                     stats_x=own.train_x, about=about, storage=storage)
