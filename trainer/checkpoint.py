"""Saving and safely restoring the full training state (model, optimizer, data streams, RNG)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch

from trainer import rundir
from trainer.config import ABSENT_MEANS
from trainer.rundir import atomic_write

FORMAT = 1
# Fields a resumed run must share with its checkpoint: they fix the network's shape,
# the labeled split and the objective. Schedules and lengths may change (e.g. extend a run).
MUST_MATCH = ("dataset", "architecture", "num_label", "seed", "method", "num_val",
              "val_from_labeled", "split")


PREVIOUS = rundir.PREVIOUS_CHECKPOINT


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another configuration."""


class CheckpointFallbackWarning(UserWarning):
    """The latest checkpoint was unusable; the run continues from the previous one."""


def checkpoint_file(path: str) -> str:
    """A checkpoint file, given the file itself or the run directory that holds it."""
    return os.path.join(path, rundir.CHECKPOINT) if os.path.isdir(path) else path


def previous_file(path: str) -> str:
    return os.path.join(os.path.dirname(path), PREVIOUS)


def save(path: str, state: dict[str, Any], write: Callable = atomic_write) -> None:
    """Write atomically; the checkpoint replaced is kept as checkpoint.prev.pt to fall back on.
    `write(path, writer)` puts the bytes on disk (rundir.atomic_write; a test may pass one
    that stops half-way)."""
    if os.path.exists(path):
        os.replace(path, previous_file(path))
    write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_latest(path: str) -> tuple[dict[str, Any], str]:
    """Load checkpoint.pt (given or in a run directory) and the file used; if it is missing,
    truncated or corrupt, warn and use checkpoint.prev.pt beside it, if that one is good."""
    latest = checkpoint_file(path)
    try:
        return load(latest), latest
    except CheckpointError as e:
        previous = previous_file(latest)
        if os.path.basename(latest) != rundir.CHECKPOINT or not os.path.isfile(previous):
            raise
        try:
            state = load(previous)
        except CheckpointError as e2:
            raise CheckpointError(f"{e}; the previous checkpoint is unusable too ({e2}); "
                                  "start a new run") from e2
        warnings.warn(f"{e}; continuing from the previous checkpoint {previous} "
                      f"(step {state.get('step')})", CheckpointFallbackWarning, stacklevel=2)
        return state, previous


def load(path: str) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; a clear CheckpointError if it cannot be used."""
    path = checkpoint_file(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"resume: no checkpoint at {path}; give a checkpoint.pt or the "
                              "run directory (--save-path of the earlier run) that holds one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise CheckpointError(f"resume: {path} is corrupt or not a checkpoint of this trainer "
                              f"({_reason(e)}); resume from best.pt or start a new run") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"resume: {path} is not a checkpoint of this trainer (format "
                              f"{state.get('format') if isinstance(state, dict) else '?'})")
    return state


def _reason(e: Exception) -> str:
    """Why torch.load failed, without torch's advice to retry with its safeguard off: a file
    that needs that can run code when loaded, and this trainer never loads one that way."""
    text = str(e)
    if "weights only" in text.lower() or "weights_only" in text:
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)\.(?: |$)", text)
        what = found.group(1) if found and "weights_only" not in found.group(1) else (
            "it holds objects other than tensors and plain data")
        return f"{what}; this trainer loads tensors and plain data only, never code"
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:200]}"


def check_compatible(state: dict[str, Any], config: dict[str, Any], path: str) -> None:
    """Raise CheckpointError naming every field where the checkpoint and the config differ."""
    saved = state["config"]
    def value(d: dict[str, Any], k: str) -> Any:
        return d.get(k, ABSENT_MEANS.get(k))

    diff = [f"{k}: checkpoint {value(saved, k)!r}, config {value(config, k)!r}"
            for k in MUST_MATCH if value(saved, k) != value(config, k)]
    if diff:
        raise CheckpointError(f"resume: {path} was written by a different run ("
                              + "; ".join(diff) + "); drop those flags to continue it as saved")


# The parts of split.json that fix which image plays which role; a resumed run must see them
# unchanged, the held-out test set above all (it is recomputed from the data at each start).
SPLIT_PARTS = ("labeled", "unlabeled", "val", "test", "files", "classes")


def split_digests(record: dict[str, Any]) -> dict[str, str]:
    """A short digest of each part of a split record (split.json), kept in the checkpoint."""
    return {k: hashlib.sha256(json.dumps(record.get(k), sort_keys=True).encode()).hexdigest()[:16]
            for k in SPLIT_PARTS}


def check_same_split(state: dict[str, Any], record: dict[str, Any], path: str) -> None:
    """Raise CheckpointError if the data now splits otherwise than when `state` was saved
    (the dataset's files changed); checkpoints from before digests were kept pass."""
    saved = state.get("split_digests")
    if not saved:
        return
    now = split_digests(record)
    changed = [k for k in SPLIT_PARTS if saved.get(k) != now[k]]
    if changed:
        raise CheckpointError(
            f"resume: {path} was trained on another split of {record.get('dataset', 'the data')} "
            f"({', '.join(changed)} changed since it was saved: the data's files differ); "
            "resume with the data as it was, or start a new run")
