"""The Ray Tune function trainable: one trainer run per trial, reported through its hook.

Each evaluation is reported to Tune with the trainer's checkpoint; a retried or resumed
trial gets that checkpoint back from Tune and continues from its step. The trainer's run
directory is the trial's working directory, synced to the study's storage as artifacts.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from typing import Any

import ray
import torch
from ray import tune

from trainer import resolve, train
from trainer.loop import resolve_device
from trainer.rundir import write_json

RUN_DIR = "run"  # inside the trial directory: config.json, metrics.csv, summary.json, ...
# Reliability tests set this to a folder: each trial then fails once, right after the
# report of step FAULT_STEP (default: its first evaluation), leaving a marker file there.
FAULT_DIR_ENV = "METASEMI_FAULT_DIR"
FAULT_STEP_ENV = "METASEMI_FAULT_STEP"


class InjectedFault(RuntimeError):
    """A crash injected on purpose (see FAULT_DIR_ENV)."""


def _checkpoint_dir_of(checkpoint_path: str) -> tempfile.TemporaryDirectory:
    """A temporary folder holding the checkpoint file (a hard link where possible)."""
    tmp = tempfile.TemporaryDirectory(prefix="metasemi-ckpt-")
    dst = os.path.join(tmp.name, "checkpoint.pt")
    try:
        os.link(checkpoint_path, dst)
    except OSError:
        shutil.copy2(checkpoint_path, dst)
    return tmp


def _maybe_inject_fault(step: int) -> None:
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return
    at = int(os.environ.get(FAULT_STEP_ENV, "0") or 0)
    marker = os.path.join(folder, f"{tune.get_context().get_trial_id()}.failed")
    if step >= at and not os.path.exists(marker):
        open(marker, "w").close()
        raise InjectedFault(f"injected fault after step {step}")


def _checkpoint_step(path: str | None) -> int:
    if path is None:
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def run_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Train one trial: `base` (study-wide trainer settings) overridden by `config` (sampled)."""
    settings = {**base, **config, "save_path": os.path.abspath(RUN_DIR)}
    os.makedirs(RUN_DIR, exist_ok=True)
    # Outside the working directory, which Tune syncs to storage as the trial's artifacts.
    with tempfile.TemporaryDirectory(prefix="metasemi-restore-") as restore_dir:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            settings["resume"] = os.path.join(restore_dir, "checkpoint.pt")
            with checkpoint.as_directory() as folder:
                shutil.copy2(os.path.join(folder, "checkpoint.pt"), settings["resume"])
        _train_and_report(resolve(settings))


def _train_and_report(cfg) -> None:
    placement = {
        # What Ray gave this trial, and when it ran: packing and placement, seen afterwards.
        "trial_id": tune.get_context().get_trial_id(), "node": socket.gethostname(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": str(resolve_device(cfg.device)), "started": time.time(),
        "resumed_from_step": _checkpoint_step(cfg.resume)}
    write_json(os.path.join(RUN_DIR, "placement.json"), placement)

    def report(row: dict[str, float], checkpoint_path: str) -> None:
        placement["last_report"] = time.time()
        write_json(os.path.join(RUN_DIR, "placement.json"), placement)
        tmp = _checkpoint_dir_of(checkpoint_path)
        with tmp:
            tune.report(dict(row), checkpoint=tune.Checkpoint.from_directory(tmp.name))
        _maybe_inject_fault(int(row["step"]))

    train(cfg, report=report, show_progress=False)
