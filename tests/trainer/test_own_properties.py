"""Data of your own, however damaged, either loads or is refused with an OwnDataError or a
ConfigError naming the problem: random and mutated .npz files and folder trees never crash."""

import contextlib
import io
import os
import resource
import shutil
import tempfile
import traceback
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from trainer.config import ConfigError
from trainer.own_data import OwnDataError, load_own
from trainer.settings import resolve

TRIED = {"npz": 0, "folder": 0}
PROPERTY = settings(max_examples=400, deadline=None,
                    database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
image_sizes = st.sampled_from([None, None, None, 4, 8])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder for the examples' files (each example writes into a fresh one of its own);
    prints how many inputs each property tried once the module is done."""
    yield str(tmp_path_factory.mktemp("own"))
    print(f"\nhypothesis: {TRIED['npz']} .npz files and {TRIED['folder']} folder trees to "
          "load_own and resolve")


@contextlib.contextmanager
def memory_capped(extra=4 << 30):
    """The address space capped at what the process holds and `extra`: a reader that
    allocates without bound (a huge header, a huge label) fails with a MemoryError, reported
    as a crash, instead of exhausting the machine."""
    if not os.path.exists("/proc/self/statm"):  # Linux only
        yield
        return
    limits = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        held = int(f.read().split()[0]) * resource.getpagesize()
    cap = held + extra if limits[1] == resource.RLIM_INFINITY else min(held + extra, limits[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)


def read_both(path, image_size, shown):
    """load_own and resolve on `path`: each loads, or refuses with the project's own error."""
    for read in (lambda: load_own(path, image_size),
                 lambda: resolve({"dataset": path, "image_size": image_size})):
        try:
            with memory_capped():
                read()
        except (OwnDataError, ConfigError) as e:
            assert str(e), f"{type(e).__name__} without a message for {shown}"
        except Exception as e:  # anything else is a crash this test looks for
            pytest.fail(f"{type(e).__name__}: {e}\nfor {shown}\n{traceback.format_exc()}")


# --- .npz files ----------------------------------------------------------------------------

KEYS = ["x_train", "y_train", "x_unlabeled", "x_val", "y_val", "x_test", "y_test", "classes"]
DTYPES = ["uint8", "int8", "int64", "uint64", "float32", "float64", "bool", "complex64",
          "<U3", "S2", "datetime64[s]", "object", [("a", "u1"), ("b", "f4")]]
LABELS = [0, 1, 2, -1, 3, 255, 2**31, 2**62, 2**63 - 1]


def images(rng, n, size, layout):
    shape = {"NHW": (n, size, size), "NHWC": (n, size, size, 3), "NCHW": (n, 1, size, size)}
    return rng.integers(0, 256, shape[layout], dtype=np.uint8)


def retyped(a, dtype):
    """`a` as `dtype`, NaN among floats; an object array holds its values as Python objects."""
    if dtype == "object":
        return a.astype(object)
    try:  # datetimes from integers; complex, NaN or huge values cast as numpy casts them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = (a.astype("int64").astype(dtype) if np.dtype(dtype).kind == "M"
                   else a.astype(dtype))
    except (ValueError, TypeError, OverflowError):  # names as numbers, a table as a number
        out = np.zeros(a.shape, dtype)
    if out.dtype.kind == "f" and out.size:
        out.flat[0] = np.nan
    return out


@st.composite
def npz_arrays(draw):
    """A valid set of arrays (2 or 3 classes, optional parts), then a few keys dropped,
    renamed, retyped, reshaped, emptied or given wrong labels."""
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    k, per, size = draw(st.integers(2, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    layout = draw(st.sampled_from(["NHW", "NHWC", "NCHW"]))
    n = k * per
    arrays = {"x_train": images(rng, n, size, layout), "y_train": np.arange(n) % k}
    if draw(st.booleans()):
        arrays["classes"] = np.array(["cat", "dog", "fox"][:k])
    for x, y in (("x_val", "y_val"), ("x_test", "y_test")):
        if draw(st.booleans()):
            arrays[x], arrays[y] = images(rng, k, size, layout), np.arange(k)
    if draw(st.booleans()):
        arrays["x_unlabeled"] = images(rng, 3, size, draw(st.sampled_from(["NHW", "NHWC"])))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["x_train", "y_train"]) | st.sampled_from(sorted(arrays)
                                                                             or KEYS))
        op = draw(st.sampled_from(["drop", "rename", "retype", "reshape", "empty", "labels",
                                   "scalar", "names", "no pixels"]))
        a = arrays.pop(key, np.zeros(3, np.uint8))
        if op == "drop":
            continue
        if op == "rename":
            key = draw(st.sampled_from(KEYS) | st.text("xy_trainvlbd", max_size=9))
        elif op == "retype":
            a = retyped(a, draw(st.sampled_from(DTYPES)))
        elif op == "reshape":  # another shape, any number of axes, some of them 0
            shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 17]), max_size=5))
            a = rng.integers(0, 3, shape).astype(a.dtype if a.dtype.kind in "biuf" else "u1")
        elif op == "no pixels" and a.ndim >= 3:  # images 0 pixels high or wide
            a = a[:, :0] if layout == "NHW" or draw(st.booleans()) else a[..., :0, :]
        elif op == "empty":
            a = a[:0] if a.ndim else a.ravel()[:0]
        elif op == "labels":
            a = np.array(draw(st.lists(st.sampled_from(LABELS), max_size=8)), "int64").astype(
                draw(st.sampled_from(["int64", "uint64", "int8", "int32"])))  # wrapped around
        elif op == "scalar":
            a = np.array(draw(st.sampled_from([0, 1.5, "cat"])))
        else:  # class names: repeated, numbers, a table, none
            a = draw(st.sampled_from([np.array(["cat", "cat"]), np.array([0, 1, 2]),
                                      np.array([["a", "b"], ["c", "d"]]), np.array([], "<U1"),
                                      np.array(["", "\x00", "ü"])]))
        arrays[key] = a
    return arrays


def npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def header_lying(a, shape, descr):
    """A .npy member whose header declares `shape` and `descr`, followed by `a`'s bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + a.tobytes()


def npz_bytes(members, method=zipfile.ZIP_STORED):
    """A zip archive of `members` ({name: bytes}), as np.savez writes one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


HUGE = [(2**40, 8, 8), (2**62,), (10**6, 10**6, 3), (4, 2**31, 2**31), (4, 3, 70000, 70000),
        (2**63 - 1, 2**63 - 1), (), (0, 0, 0), (4, 0, 8), (-1, 8, 8)]


@st.composite
def npz_files(draw):
    """The bytes of an .npz (plain or compressed) of `npz_arrays`, now and then with a
    header that lies about its array, truncated, garbled, or not an .npz at all."""
    arrays = draw(npz_arrays())
    members = {f"{k}.npy": npy(v) for k, v in arrays.items()}
    if members and draw(st.booleans()):
        name = draw(st.sampled_from(sorted(members)))
        descr = draw(st.sampled_from(["|u1", "<i8", "<u8", "<f8", "|b1", "|O", "<U3", "zz"]))
        members[name] = header_lying(arrays[name[:-4]], draw(st.sampled_from(HUGE)), descr)
    data = bytearray(npz_bytes(members, draw(st.sampled_from([zipfile.ZIP_STORED,
                                                              zipfile.ZIP_DEFLATED]))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["truncate", "flip", "insert", "cut"]))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:at + draw(st.integers(1, 64))]
    other = draw(st.sampled_from([None] * 8 + ["random", "npy", "empty", "pickle"]))
    if other == "random":
        return draw(st.binary(max_size=64))
    if other == "npy":  # one array saved with np.save, named .npz
        return npy(arrays.get("x_train", np.zeros((4, 8, 8), np.uint8)))
    if other == "empty":
        return b""
    if other == "pickle":
        return b"\x80\x04\x95" + draw(st.binary(max_size=16))
    return bytes(data)


def patched(archive, offset, value):
    """`archive` with a byte of its (first) central directory entry changed: at offset 8
    its flags (bit 0: encrypted), at 10 its compression method."""
    at = archive.index(b"PK\x01\x02") + offset
    return archive[:at] + bytes([value]) + archive[at + 1:]


def valid(**arrays):
    """The members of a valid .npz, with `arrays` in place of its own."""
    arrays = {"x_train": np.zeros((6, 8, 8), np.uint8), "y_train": np.arange(6) % 2, **arrays}
    return {f"{k}.npy": v if isinstance(v, bytes) else npy(v) for k, v in arrays.items()}


DEFLATED_FF = zlib.compress(b"\xff" * 64)[2:-4]  # raw deflate, as a zip member holds it
LYING = header_lying(np.zeros(6, np.uint8), (2**40, 8, 8), "|u1")
# Inputs this test found crashing the readers (what each raised), kept as regressions.
REGRESSIONS = [
    (b"", None),  # EOFError
    (npy(np.zeros((6, 8, 8), np.uint8)), None),  # one array: TypeError, not a context manager
    (npz_bytes(valid(x_train=LYING)), None),  # MemoryError allocating 64 TiB
    (npz_bytes(valid(y_train=np.array([0, 1, 2**62]))), None),  # a list of 2**62 class names
    (npz_bytes(valid(x_train=np.zeros((), np.uint8))), None),  # max() of no sides
    (npz_bytes(valid(x_unlabeled=np.zeros((), np.uint8))), None),  # IndexError
    (npz_bytes(valid(x_train=header_lying(np.zeros(6, np.uint8), (6, 2**31, 2**31), "|u1"))),
     None),  # StopIteration: no architecture for images that large
    (npz_bytes(valid(x_train=np.zeros((6, 0, 0), np.uint8))), 4),  # torch's RuntimeError
    (patched(npz_bytes(valid()), 8, 1), None),  # RuntimeError: encrypted
    (patched(npz_bytes(valid()), 10, 99), None),  # NotImplementedError: compression method
    (npz_bytes({"x_train.npy": npy(np.zeros((6, 8, 8), np.uint8)),
                "y_train.npy": b"\xff" * 64}, zipfile.ZIP_DEFLATED).replace(
        DEFLATED_FF, b"\xff" * len(DEFLATED_FF)), None),  # zlib.error: invalid block type
]


def examples(cases):
    """The test run on each (data, image_size) in `cases` too, whatever it generates."""
    def decorate(test):
        for data, image_size in cases:
            test = example(data=data, image_size=image_size)(test)
        return test
    return decorate


@PROPERTY
@given(data=npz_files(), image_size=image_sizes)
@examples(REGRESSIONS)
def test_any_npz_file_loads_or_is_refused_naming_the_problem(scratch, data, image_size):
    folder = tempfile.mkdtemp(dir=scratch)
    path = os.path.join(folder, "data.npz")
    with open(path, "wb") as f:
        f.write(data)
    TRIED["npz"] += 1
    try:
        read_both(path, image_size, f"an .npz of {len(data)} bytes {data[:3000]!r}")
    finally:
        shutil.rmtree(folder)


# --- folder trees -------------------------------------------------------------------------

def encode(a, mode, fmt):
    buf = io.BytesIO()
    Image.fromarray(a).convert(mode).save(buf, fmt)
    return buf.getvalue()


def encoded_images():
    """Small images in many modes and formats (the reader identifies a file by its bytes,
    whatever its name): (mode, format, side) -> bytes."""
    rng = np.random.default_rng(0)
    out = {}
    for side in (1, 3, 8, 16):
        a = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        for mode in ("L", "RGB", "RGBA", "P", "1", "I;16", "LA", "CMYK", "F", "I"):
            for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"):
                try:
                    out[mode, fmt, side] = encode(a, mode, fmt)
                except (OSError, ValueError, KeyError):
                    pass  # a mode the format cannot store
    return out


ENCODED = encoded_images()
BASE_IMAGES = {key: v for key, v in ENCODED.items()
               if key[0] in ("L", "RGB") and key[1] in ("PNG", "JPEG") and key[2] == 8}


def with_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its checksum made to match)."""
    ihdr = png[16:20 + 13]  # IHDR's data: width, height, then 5 bytes
    data = width.to_bytes(4, "big") + height.to_bytes(4, "big") + ihdr[8:13]
    return png[:16] + data + zlib.crc32(b"IHDR" + data).to_bytes(4, "big") + png[33:]


def with_chunk(png: bytes, kind: bytes, data: bytes, at_end: bool) -> bytes:
    """A PNG with one chunk more (its checksum right), after the header or before the end."""
    at = len(png) - 12 if at_end else 33
    chunk = len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(
        4, "big")
    return png[:at] + chunk + png[at:]


CHUNKS = [b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"PLTE", b"tRNS", b"pHYs", b"gAMA", b"cHRM",
          b"sRGB", b"acTL", b"fcTL", b"fdAT", b"eXIf", b"IDAT", b"IEND", b"bKGD", b"sBIT"]
NAMES = ["a.png", "A.PNG", "b.jpeg", "c.jpg", ".hidden.png", "no-suffix", "notes.txt",
         "spaced name.png", "new\nline.png", "ünï©ødé.png", os.fsdecode(b"\xff\xfe.png"),
         "x" * 200 + ".png", "-.png", "deep/er/d.png", "..png"]
CLASSES = ["cat", "dog", "fox", ".hidden", "ünï", "x y", os.fsdecode(b"\xff")]


@st.composite
def trees(draw):
    """A valid folder tree (train/, optional unlabeled/, val/, test/; 2 or 3 classes of 1 to
    3 images) as {path: entry}, then a few entries garbled, moved, emptied, linked or
    replaced: an entry is ("file", bytes), ("dir",), ("symlink", target), ("hardlink", path)."""
    k = draw(st.integers(2, 3))
    classes = ["cat", "dog", "fox"][:k]
    look = draw(st.sampled_from(sorted(BASE_IMAGES)))
    plan = {}
    for part in ["train"] + draw(st.lists(st.sampled_from(["unlabeled", "val", "test"]),
                                          unique=True)):
        for c in classes if part != "unlabeled" else [""]:
            for i in range(draw(st.integers(1, 3))):
                plan[os.path.join(part, c, f"{i}.png")] = ("file", BASE_IMAGES[look])
    for _ in range(draw(st.integers(0, 3))):
        files = sorted(p for p, e in plan.items() if e[0] == "file") or ["train/cat/0.png"]
        path = draw(st.sampled_from(files))
        plan.setdefault(path, ("file", BASE_IMAGES[look]))
        folder = os.path.dirname(path)
        op = draw(st.sampled_from(["garble", "other image", "huge header", "chunk", "rename",
                                   "empty", "class", "link", "hardlink", "dangling",
                                   "not a folder", "nest"]))
        if op == "garble":  # random bytes, or a prefix or a damaged copy of the image
            data = bytearray(plan[path][1] if plan.get(path, ("dir",))[0] == "file" else b"")
            how = draw(st.sampled_from(["random", "truncate", "flip", "empty"]))
            if how == "random":
                data = bytearray(draw(st.binary(max_size=64)))
            elif how == "truncate":
                del data[draw(st.integers(0, len(data))):]
            elif how == "flip" and data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
            elif how == "empty":
                data = bytearray()
            plan[path] = ("file", bytes(data))
        elif op == "other image":  # another mode, format or size
            plan[path] = ("file", ENCODED[draw(st.sampled_from(sorted(ENCODED)))])
        elif op == "huge header":
            side = draw(st.sampled_from([0, 1, 5000, 70000, 2**31 - 1]))
            plan[path] = ("file", with_size(ENCODED["L", "PNG", 8], side,
                                            draw(st.sampled_from([0, 1, side]))))
        elif op == "chunk":  # a well-formed chunk of any kind, holding anything
            png = ENCODED[draw(st.sampled_from(sorted(k for k in ENCODED if k[1] == "PNG")))]
            data = draw(st.binary(max_size=16) | st.builds(
                lambda b: b"key\x00\x00" + zlib.compress(b)[:-2], st.binary(max_size=8)))
            plan[path] = ("file", with_chunk(png, draw(st.sampled_from(CHUNKS)), data,
                                             draw(st.booleans())))
        elif op == "rename":
            plan[os.path.join(folder, draw(st.sampled_from(NAMES)))] = plan.pop(path)
        elif op == "empty":  # a class folder without images
            for p in [p for p in plan if os.path.dirname(p) == folder]:
                del plan[p]
            plan[folder] = ("dir",)
        elif op == "class":  # a class folder more, in any part, empty or not
            part = draw(st.sampled_from(["train", "val", "test", "unlabeled"]))
            new = os.path.join(part, draw(st.sampled_from(CLASSES)))
            plan[new] = ("dir",)
            if draw(st.booleans()):
                plan[os.path.join(new, "0.png")] = plan[path]
        elif op in ("link", "hardlink"):  # to an image, its folder, or itself
            target = draw(st.sampled_from([path, folder or ".", "train", "link.png"]))
            where = draw(st.sampled_from(files + [os.path.join(
                "train", draw(st.sampled_from(CLASSES)))]))
            name = os.path.join(os.path.dirname(where), "link.png")
            if op == "link":
                plan[name] = ("symlink", os.path.relpath(target, os.path.dirname(name) or "."))
            elif target == path:
                plan[name] = ("hardlink", path)
        elif op == "dangling":
            plan[os.path.join(folder, "gone.png")] = ("symlink", "nowhere.png")
        elif op == "not a folder":  # a part or class that is a file
            top = draw(st.sampled_from(["train", "unlabeled", "val", "test", folder]))
            plan = {p: e for p, e in plan.items() if not p.startswith(top + os.sep)}
            plan[top] = ("file", b"not a folder")
        else:  # deeper below its class folder
            plan[os.path.join(folder, "sub", "dir", os.path.basename(path))] = plan.pop(path)
    return plan


def build(root, plan):
    """Write `plan` under `root`: folders and files first, then the links."""
    order = {"dir": 0, "file": 0, "symlink": 1, "hardlink": 1}
    for rel, entry in sorted(plan.items(), key=lambda item: (order[item[1][0]], item[0])):
        path = os.path.join(root, rel)
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue  # the plan put a file where a folder would be
        if os.path.lexists(path):
            continue  # the plan put something there already
        if entry[0] == "dir":
            os.makedirs(path, exist_ok=True)
        elif entry[0] == "file":
            with open(path, "wb") as f:
                f.write(entry[1])
        elif entry[0] == "symlink":
            os.symlink(entry[1], path)
        elif os.path.isfile(os.path.join(root, entry[1])):
            os.link(os.path.join(root, entry[1]), path)


def shown(plan):
    return "the tree " + repr({p: e if e[0] != "file" else ("file", e[1][:40]) for p, e in
                               sorted(plan.items())})


def two_classes(first: bytes) -> dict:
    """A tree of two classes of one image each, the first one's file `first`."""
    return {"train/cat/0.png": ("file", first), "train/dog/0.png": ("file", PNG)}


PNG = ENCODED["L", "PNG", 8]


@PROPERTY
@given(plan=trees(), image_size=image_sizes)
# Found by this test: chunks too short for PIL, whose ValueError and IndexError escaped.
@example(plan=two_classes(with_chunk(PNG, b"pHYs", b"", at_end=False)), image_size=None)
@example(plan=two_classes(with_chunk(PNG, b"iCCP", b"", at_end=True)), image_size=None)
def test_any_folder_tree_loads_or_is_refused_naming_the_problem(scratch, plan, image_size):
    folder = tempfile.mkdtemp(dir=scratch)
    root = os.path.join(folder, "data")
    os.makedirs(root)
    build(root, plan)
    TRIED["folder"] += 1
    try:
        read_both(root, image_size, shown(plan))
    finally:
        shutil.rmtree(folder)
