"""The study directory on a local path or a cloud/shared-storage URI (s3://, gs://, ...)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from trainer.rundir import check_writable as check_folder_writable
from trainer.rundir import write_json


def is_uri(path: str) -> bool:
    return "://" in path


def study_path(storage_path: str, name: str) -> str:
    if is_uri(storage_path):
        return storage_path.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(storage_path), name)


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    fs, rel = _fs(path)
    return fs.get_file_info(rel).type != pyarrow.fs.FileType.NotFound


def put_json(path: str, data: Any) -> None:
    """Write JSON atomically on a local path; as one object upload on a URI."""
    if not is_uri(path):
        write_json(path, data)
        return
    fs, rel = _fs(path)
    with fs.open_output_stream(rel) as f:
        f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def remove(path: str) -> None:
    """Delete a file if it is there."""
    if not is_uri(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    if exists(path):
        fs, rel = _fs(path)
        fs.delete_file(rel)


def get_json(path: str) -> Any:
    if not is_uri(path):
        with open(path) as f:
            return json.load(f)
    fs, rel = _fs(path)
    with fs.open_input_stream(rel) as f:
        return json.loads(f.read().decode())


def check_writable(storage_path: str) -> None:
    """Fail before any trial if the storage path cannot take a file."""
    if not is_uri(storage_path):
        try:  # the storage folder stays: the study goes there
            os.makedirs(os.path.abspath(storage_path), exist_ok=True)
        except OSError:
            pass  # the probe names the problem
        check_folder_writable(storage_path, "--storage-path")
        return
    try:
        put_json(storage_path.rstrip("/") + "/.write-probe", {"probe": True})
    except OSError as e:
        raise OSError(f"--storage-path: cannot write to {storage_path} ({e}); choose a "
                      "writable folder or URI") from e


# Checkpoint files a trial keeps at once: the trainer's checkpoint.pt, checkpoint.prev.pt and
# best.pt in its run directory, and the two Tune keeps (CheckpointConfig(num_to_keep=2)).
CHECKPOINT_COPIES = 5
RUN_FILES_BYTES = 1 << 20  # metrics, events, split, config: generous


def trial_bytes(architecture: str, dataset: str) -> int:
    """Disk a trial of this network needs: its checkpoint copies (weights and SGD momentum
    in float32) and the run directory's small files."""
    import torch

    from trainer.data import DATASETS
    from trainer.data.survey import inspect_classes
    from trainer.models import build_model

    if dataset in DATASETS:
        channels, classes = DATASETS[dataset].channels, DATASETS[dataset].num_classes
    else:  # your data: colour, the larger case
        channels, classes = 3, len(inspect_classes(dataset))
    with torch.device("meta"):  # shapes only, no memory
        model = build_model(architecture, channels, classes)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    return CHECKPOINT_COPIES * (4 * (2 * params + buffers) + (64 << 10)) + RUN_FILES_BYTES


def check_free_space(storage_path: str, needed: int) -> None:
    """Fail before any trial if a local storage path has less room than the study needs."""
    if is_uri(storage_path):
        return  # object stores do not run full
    free = shutil.disk_usage(os.path.abspath(storage_path)).free
    if free < needed:
        raise OSError(f"--storage-path: {storage_path} has {free / 1e9:.3g} GB free, but the "
                      f"study needs about {needed / 1e9:.3g} GB for its checkpoints; free some "
                      "space, choose another --storage-path, or run fewer trials")
