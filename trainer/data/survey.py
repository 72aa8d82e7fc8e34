"""Data of your own, before it is loaded: is --dataset a path, its class names and counts,
its image size, a fingerprint of it, the trainer's defaults for it, and whether it fits.

Everything here reads folder listings, one image header or the .npz arrays' headers, so
validation and the study's driver can call it often; trainer/data/own.py loads the images.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib

import numpy as np

from trainer.data.holdout import HOLDOUT_FRACTION

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The largest image decoded, in pixels (width x height): far above any image a
# semi-supervised benchmark trains on, far below what exhausts memory (a decompression bomb
# is a small file that decodes to billions of pixels).
MAX_PIXELS = 4096 * 4096
# The parts of a folder tree; the labeled ones hold class folders.
LABELED_PARTS = ("train", "val", "test")


class OwnDataError(ValueError):
    """Data at --dataset PATH that cannot be used as it is; the message names the file."""


def is_dataset_path(dataset: str) -> bool:
    """--dataset names a path (a folder or an .npz file), not a built-in dataset."""
    return os.sep in dataset or dataset.endswith(".npz") or os.path.isdir(dataset)


def dataset_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return base[:-4] if base.endswith(".npz") else base


# --- what the data holds, before loading it ------------------------------------------------

def image_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return found


def image_errors() -> tuple[type[Exception], ...]:
    """What PIL raises for a damaged image file: OSError (unidentified or truncated data),
    SyntaxError, ValueError and IndexError (a malformed or short chunk), a decompression bomb."""
    from PIL import Image

    return OSError, SyntaxError, ValueError, IndexError, Image.DecompressionBombError


def _class_folders(root: str, part: str) -> dict[str, list[str]]:
    base = os.path.join(root, part)
    return {c: image_files(os.path.join(base, c)) for c in sorted(os.listdir(base))
            if os.path.isdir(os.path.join(base, c)) and not c.startswith(".")}


# Parts that must not share a file: training with what judges it, validation with test.
_DISJOINT = {("train", "test"), ("train", "val"), ("val", "test"), ("unlabeled", "test"),
             ("unlabeled", "val")}


def tree(root: str) -> dict[str, dict[str, list[str]]]:
    """The images of a folder tree, part by part ({class: files}; unlabeled/ under ""),
    each file once, whatever links the tree holds: a file reached by two paths (a symbolic
    or hard link) is read at its first path only. Refused: one file under two classes, or
    shared by parts that must be disjoint (the test set with training, say)."""
    parts: dict[str, dict[str, list[str]]] = {}
    for part in LABELED_PARTS:
        if os.path.isdir(os.path.join(root, part)):
            parts[part] = _class_folders(root, part)
    if os.path.isdir(os.path.join(root, "unlabeled")):
        parts["unlabeled"] = {"": image_files(os.path.join(root, "unlabeled"))}
    seen: dict[tuple[int, int], tuple[str, str, str]] = {}  # identity -> part, class, path
    out: dict[str, dict[str, list[str]]] = {}
    for part, folders in parts.items():
        out[part] = {}
        for c, files in folders.items():
            kept = []
            for f in files:
                try:
                    st = os.stat(f)
                except OSError as e:  # a dangling link
                    raise OwnDataError(f"{f}: cannot be read ({e}); remove or fix it") from e
                first = seen.setdefault((st.st_dev, st.st_ino), (part, c, f))
                if first[2] == f:
                    kept.append(f)
                elif (first[0], part) in _DISJOINT:
                    raise OwnDataError(
                        f"{first[2]} and {f} are one file (a link): {part}/ would share an "
                        f"image with {first[0]}/, which must be kept apart; remove one of "
                        "them")
                elif first[0] == part != "unlabeled" and first[1] != c:
                    raise OwnDataError(
                        f"{first[2]} and {f} are one file (a link) under two classes, "
                        f"{first[1]!r} and {c!r}; remove the one with the wrong label")
                # else: the same image again (in its class, or unlabeled/ repeating a
                # training image, which is unlabeled data already): counted once
            out[part][c] = kept
    return out


# What reading a damaged .npz raises: numpy's ValueError, a short file's EOFError, zipfile's
# and zlib's errors (a member marked encrypted is a RuntimeError, an unknown compression
# method a NotImplementedError).
DAMAGED_NPZ = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
               NotImplementedError)


def open_npz(path: str):
    try:
        z = np.load(path, allow_pickle=False)
    except DAMAGED_NPZ as e:
        raise OwnDataError(f"{path}: not a readable .npz file ({e})") from e
    if isinstance(z, np.ndarray):
        raise OwnDataError(f"{path}: one array (an .npy file), not an .npz archive of named "
                           "arrays; save them with np.savez(path, x_train=..., y_train=...)")
    return z


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
        check_classes(classes, os.path.join(path, "train"))
        return classes
    with open_npz(path) as z:
        if "x_train" not in z.files or "y_train" not in z.files:
            raise OwnDataError(f"{path}: has {sorted(z.files)}; it needs x_train and y_train")
        y = read_array(z, "y_train", path)
        names = read_array(z, "classes", path) if "classes" in z.files else None
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or y.size == 0:
        hint = ("; store each label as its index into classes, e.g. "
                "np.searchsorted(classes, labels) for sorted classes" if y.dtype.kind in "USO"
                else "")
        raise OwnDataError(f"{path}: y_train must be a 1-D array of integer labels (class "
                           f"indices), got {y.dtype} of shape {y.shape}{hint}")
    if names is not None and names.ndim != 1:
        raise OwnDataError(f"{path}: classes must be a 1-D array of names, got shape "
                           f"{names.shape}")
    if names is None and int(y.max()) >= y.size:  # classes 0..max: one has no image
        present = np.unique(y[y >= 0])  # before naming them all: y.max() may be 2**62
        gaps = np.flatnonzero(present != np.arange(len(present)))
        raise OwnDataError(f"{path}: class '{gaps[0] if len(gaps) else len(present)}' has no "
                           f"image in y_train (its largest label is {int(y.max())}, for "
                           f"{y.size} images); number the classes 0, 1, ... without gaps")
    classes = ([str(c) for c in names] if names is not None
               else [str(c) for c in range(max(int(y.max()) + 1, 0))])
    check_classes(classes, f"{path}: classes")
    bad = y[(y < 0) | (y >= len(classes))]
    if len(bad):
        raise OwnDataError(f"{path}: y_train has label {int(bad[0])}, outside [0, {len(classes)}) "
                           f"for the {len(classes)} classes; fix the labels or the classes array")
    empty = [classes[i] for i in np.flatnonzero(np.bincount(y, minlength=len(classes)) == 0)]
    if empty:
        raise OwnDataError(f"{path}: class {empty[0]!r} has no image in y_train; give every "
                           "class training images, or leave it out of classes")
    return classes


def check_classes(classes: list[str], where: str) -> None:
    """The rules on class names, one for every form of data: two or more, each once."""
    if len(classes) < 2:
        raise OwnDataError(f"{where}: {len(classes)} class(es); a classifier needs at least "
                           "two")
    seen: set[str] = set()
    for c in classes:
        if c in seen:
            raise OwnDataError(f"{where}: the class name {c!r} appears twice; give each class "
                               "one unique name")
        seen.add(c)


def read_array(z, key: str, path: str) -> np.ndarray:
    """One array of an open .npz; an array of Python objects is refused, never unpickled."""
    try:
        return z[key]
    except MemoryError as e:  # the header declares more than memory holds
        raise OwnDataError(f"{path}: {key} does not fit in memory ({e}); if the array is "
                           "really that large store the images smaller, else the file is "
                           "damaged: write it again") from e
    except DAMAGED_NPZ as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise OwnDataError(
                f"{path}: {key} is an array of Python objects (dtype object), which is never "
                "read (unpickling can run code); save it as a numeric array (uint8 images, "
                "integer labels) or, for classes, an array of strings") from e
        raise OwnDataError(f"{path}: {key} cannot be read ({e}); the file is damaged, write "
                           "it again") from e


def _npz_shape(path: str, key: str) -> tuple[int, ...]:
    """An array's shape from its .npy header in the archive, without reading the array."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            fmt = np.lib.format
            header = (fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0)
                      else fmt.read_array_header_2_0)
            return header(f)[0]
    except (KeyError, *DAMAGED_NPZ) as e:
        raise OwnDataError(f"{path}: cannot read the shape of {key} ({e})") from e


def _images_shape(path: str, key: str) -> tuple[int, ...]:
    """The shape of the images `key` from its header: 3 or 4 axes and images of at most
    MAX_PIXELS, as loading requires, else refused."""
    shape = _npz_shape(path, key)
    if len(shape) not in (3, 4):
        raise OwnDataError(f"{path}: {key} has shape {shape}; give images as N,H,W,C or "
                           "N,C,H,W with 1 or 3 channels, or N,H,W for greyscale")
    nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
    h, w = shape[1:3] if nhwc else shape[-2:]
    if h * w > MAX_PIXELS:
        raise OwnDataError(f"{path}: {key} images are {w}x{h}, more than the {MAX_PIXELS:,} "
                           "pixels one image may have; store them smaller")
    return shape


def stored_size(path: str, side: str = "max") -> int:
    """The side of the stored images (the larger one, or with side="min" the smaller): the
    first image of train/, or x_train's shape."""
    if os.path.isdir(path):
        from PIL import Image

        for files in _class_folders(path, "train").values():
            if files:
                try:
                    with Image.open(files[0]) as im:
                        return max(im.size) if side == "max" else min(im.size)
                except image_errors() as e:
                    raise OwnDataError(f"{files[0]}: not a readable PNG or JPEG image ({e}); "
                                       "remove or replace it") from e
        raise OwnDataError(f"{os.path.join(path, 'train')}: no images in its class folders")
    shape = _images_shape(path, "x_train")
    nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
    sides = shape[1:3] if nhwc else shape[-2:]
    return int(max(sides) if side == "max" else min(sides))


def class_counts(path: str) -> tuple[np.ndarray, int]:
    """Training images per class (less the held-out test fraction where the data has no
    test set), and the number of extra unlabeled images."""
    classes = inspect_classes(path)  # a missing train/ or y_train, or bad labels, named first
    if os.path.isdir(path):
        parts = tree(path)
        counts = np.array([len(f) for f in parts["train"].values()])
        has_test = "test" in parts
        extra = len(parts.get("unlabeled", {}).get("", []))
    else:
        with open_npz(path) as z:
            counts = np.bincount(read_array(z, "y_train", path), minlength=len(classes))
            has_test = "x_test" in z.files
        extra = _images_shape(path, "x_unlabeled")[0] if has_key(path, "x_unlabeled") else 0
    if not has_test:
        counts = counts - np.round(HOLDOUT_FRACTION * counts).astype(int)
    return counts, extra


def has_own_val(path: str) -> bool:
    """The data carries its validation set: a val/ folder, or x_val in the .npz."""
    return os.path.isdir(os.path.join(path, "val")) if os.path.isdir(path) else \
        has_key(path, "x_val")


def has_key(path: str, key: str) -> bool:
    with open_npz(path) as z:
        return key in z.files


def fingerprint(path: str) -> str:
    """A digest of what the data is, the same on every node that holds the same copy:
    every image's path and size (a folder), or the file's size and its first and last MiB
    (.npz). Modification times are left out: copies to other nodes rarely keep them."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for f in image_files(path):
            # fsencode: file names need not be UTF-8 (Linux names are bytes)
            h.update(os.fsencode(os.path.relpath(f, path)) + f"\0{os.path.getsize(f)}\n".encode())
    else:
        size = os.path.getsize(path)
        h.update(str(size).encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]
