"""Atomic writes of a run directory's files: JSON, the metrics CSV, checkpoints."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import IO, Any, Literal

from trainer.lock import RUN_LOCK, Lock, acquire

# The files of a run directory, named once: the trainer writes them, the study and the
# analysis read them. A study keeps each trial's run directory in RUN_DIR of its folder.
CONFIG = "config.json"  # the run's Config
SPLIT = "split.json"  # which images are labeled, unlabeled, validation and test
METRICS = "metrics.csv"  # one row per evaluation
CHECKPOINT = "checkpoint.pt"  # the latest full training state
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the one it replaced, to fall back on
BEST = "best.pt"  # the checkpoint of the best test accuracy (the authors' convention)
SUMMARY = "summary.json"  # the run's outcome, written at the end (and on divergence)
PLACEMENT = "placement.json"  # a study trial's node, GPU and attempts (study/trainable.py)
RUN_DIR = "run"
TENSORBOARD_PREFIX = "events.out.tfevents."
# What a run directory holding a run contains (any one of them is enough to tell).
RUN_FILES = (CONFIG, SPLIT, METRICS, CHECKPOINT, PREVIOUS_CHECKPOINT, BEST, SUMMARY)

# What train() does with a run directory that already holds a run: refuse (a fresh run, or
# a resumed one continuing elsewhere), overwrite it (--overwrite), or continue it (a resumed
# run in its own directory; a study trial's folder, which Tune owns).
Existing = Literal["refuse", "overwrite", "continue"]


# The errors of a full disk (or a full quota): named as such, with the room needed.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunDirTaken(RuntimeError):
    """A fresh run was pointed at a directory that holds another run."""


class NotWritable(OSError):
    """An output folder cannot take a file; the message names the flag and the folder."""


def check_writable(folder: str, flag: str) -> None:
    """Fail before any work if `folder` cannot take a file; creates nothing that stays.

    The folders a probe makes are removed again, so a run refused later (bad data, say)
    leaves no empty run directory behind.
    """
    folder = os.path.abspath(folder)
    made = _missing(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        try:  # a few bytes, flushed: a full disk still creates an empty file
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        if e.errno in DISK_FULL:
            there = folder if os.path.isdir(folder) else os.path.dirname(made[-1])
            raise NotWritable(f"{flag}: the disk of {folder} is full "
                              f"({size_text(shutil.disk_usage(there).free)} free); free some room, "
                              "or choose a folder on another disk") from e
        raise NotWritable(f"{flag}: cannot write to {folder} ({e}); choose a writable "
                          "folder") from e
    finally:
        for path in made:  # deepest first; one that is not empty is someone else's now
            try:
                os.rmdir(path)
            except OSError:
                pass


def _missing(folder: str) -> list[str]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing, parent = [], folder
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


class DiskFull(OSError):
    """The disk filled while a file was written; the message names it, the room needed and
    how to continue. The file it would have replaced is intact."""


def size_text(nbytes: float) -> str:
    """A size for a message: 640 KiB, 12.3 MiB, 1.5 GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} KiB"


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it over.

    A reader (or a crash) sees either the old file or the complete new one, never a part.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in DISK_FULL:
            _discard(tmp)
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        _discard(tmp)
        # At least what was written, and the size of the version it replaces (a checkpoint
        # is about as large as the one before it), with room for the next one beside it.
        previous = max((os.path.getsize(p) for p in (path, os.path.join(
            folder, PREVIOUS_CHECKPOINT)) if os.path.isfile(p)), default=0)
        need = 2 * max(written, previous)
        raise DiskFull(e.errno, (
            f"the disk of {folder} is full: writing {os.path.basename(path)} stopped after "
            f"{size_text(written)}, {size_text(shutil.disk_usage(folder).free)} is free"
            f"{f', and about {size_text(need)} more is needed' if need else ''}. What was "
            "written before is intact: free the room, then continue with --resume")) from e
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    if os.path.exists(tmp):
        os.unlink(tmp)


def write_json(path: str, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """Rewrite a whole CSV (one row per evaluation: small, and never half-written)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def copy_file(src: str, dst: str) -> None:
    """Copy src to dst atomically."""
    def write(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            while chunk := s.read(1 << 20):
                f.write(chunk)
    atomic_write(dst, write)


def run_files(folder: str) -> list[str]:
    """The files of a run (and its TensorBoard logs) that `folder` holds."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n in RUN_FILES or n.startswith(TENSORBOARD_PREFIX))


def describe_run(folder: str) -> str:
    """A few words on the run a directory holds: method, dataset, seed, how far it got."""
    words = "a run"
    try:
        with open(os.path.join(folder, CONFIG)) as f:
            cfg = json.load(f)
        words = f"a {cfg['method']} run on {cfg['dataset']} (seed {cfg['seed']}"
        try:
            with open(os.path.join(folder, SUMMARY)) as f:
                status = json.load(f).get("status", "finished")
            words += f", {status})"
        except (OSError, ValueError):
            with open(os.path.join(folder, METRICS)) as f:
                rows = list(csv.DictReader(f))
            words += f", step {rows[-1]['step'] if rows else 0} of {cfg['total_steps']})"
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # damaged or partial: "a run" is all that can be said
    return words


def claim(folder: str, existing: Existing = "refuse", lock: bool = True) -> Lock | None:
    """Make `folder` this process's run directory: an exclusive lock naming its holder
    (trainer/lock.py), then refuse, overwrite or continue the run already there. Without
    `lock` (a study trial's folder, which Tune gives to one trial and syncs while it runs:
    a lock file vanishing under its copy fails the trial), the existing run alone is
    handled, and None is returned."""
    folder = os.path.abspath(folder)
    created = _missing(folder)
    os.makedirs(folder, exist_ok=True)
    if not lock:
        _existing(folder, existing, None)
        return None
    held = acquire(os.path.join(folder, RUN_LOCK), lambda holder: (
        f"--save-path: {folder} is being written by another trainer "
        f"({holder.describe() if holder else 'starting'}); wait for it to finish, or give "
        "this run another --save-path"), tuple(created))
    _existing(folder, existing, held)
    return held


def _existing(folder: str, existing: Existing, held: Lock | None) -> None:
    found = run_files(folder)
    if found and existing == "refuse":
        if held is not None:
            held.release()
        raise RunDirTaken(
            f"--save-path: {folder} already holds {describe_run(folder)}; pass --resume "
            f"{folder} to continue it, another --save-path for a new run, or --overwrite "
            "to replace it")
    if found and existing == "overwrite":
        for name in found:
            os.unlink(os.path.join(folder, name))
