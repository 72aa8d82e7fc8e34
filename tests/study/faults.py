"""Faults injected on purpose into a study's trials, for the reliability and selection tests.

A study reaches them through the trainable's documented door: METASEMI_TRIAL_HOOKS names
`hooks` below (fault_env() sets it), which returns the TrialHooks of the faults whose
variables are set. Nothing is patched: the trainer and the trainable call the hooks.

- METASEMI_FAULT_DIR (+ METASEMI_FAULT_STEP): every trial crashes once, right after its
  report of that step (default: its first), leaving TRIAL_ID.failed in the folder.
- METASEMI_STALL_DIR (+ METASEMI_STALL_STEP, METASEMI_STALL_AFTER): once that many trials
  have saved the checkpoint of that step, the next one to save it stops half-way through
  writing checkpoint.pt and waits there, leaving stalled.now in the folder: the moment to
  kill a driver in the middle of a checkpoint write.
- METASEMI_CORRUPT_ON_FAULT=1, with the crash above: the trial's latest checkpoint in the
  study's storage is truncated before the crash, so the retry must fall back to the one
  before it. =first: only in the first trial that crashes; the others retry from their
  latest.
- METASEMI_DATA_GONE=1: every trial fails as on a node without the dataset (the trainer's
  DatasetMissing, once the data is loaded): an error that no retry can change.
- METASEMI_FILL_DISK=FILE (+ METASEMI_FILL_STEP): the first trial to report that step (default:
  its first) creates FILE and writes zeros into it until its disk is full: a storage that
  fills in the middle of a study.
- METASEMI_PERMUTE_TEST_LABELS=1: every trial's test labels are permuted (a fixed
  permutation). Selection must not notice: the test that proves it is blind to the test set.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from ray import tune

from study.trainable import TRIAL_HOOKS_ENV, TrialHooks
from trainer import checkpoint, rundir
from trainer.data import DatasetMissing, DeviceData
from trainer.loop import RunHooks
from trainer.rundir import atomic_write

FAULT_DIR_ENV, FAULT_STEP_ENV = "METASEMI_FAULT_DIR", "METASEMI_FAULT_STEP"
STALL_DIR_ENV, STALL_STEP_ENV = "METASEMI_STALL_DIR", "METASEMI_STALL_STEP"
STALL_AFTER_ENV, CORRUPT_ENV = "METASEMI_STALL_AFTER", "METASEMI_CORRUPT_ON_FAULT"
PERMUTE_TEST_ENV = "METASEMI_PERMUTE_TEST_LABELS"
DATA_GONE_ENV = "METASEMI_DATA_GONE"
FILL_DISK_ENV, FILL_STEP_ENV = "METASEMI_FILL_DISK", "METASEMI_FILL_STEP"


class InjectedFault(RuntimeError):
    """A crash injected on purpose (see FAULT_DIR_ENV)."""


def fault_env(**variables: str) -> dict[str, str]:
    """Environment variables for a study whose trials take these faults (the repository on
    the workers' path, so that they import this module)."""
    repo = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    return {TRIAL_HOOKS_ENV: f"{__name__}:hooks", "PYTHONPATH": path, **variables}


def hooks() -> TrialHooks:
    """The hooks of the faults whose variables are set (called in each trial)."""
    loaded = (permute_test_labels if os.environ.get(PERMUTE_TEST_ENV) == "1"
              else data_gone if os.environ.get(DATA_GONE_ENV) == "1" else None)
    run = RunHooks(
        save_checkpoint=stalling_save if os.environ.get(STALL_DIR_ENV) else checkpoint.save,
        loaded_data=loaded)
    after = (crash_after_report if os.environ.get(FAULT_DIR_ENV)
             else fill_disk if os.environ.get(FILL_DISK_ENV) else None)
    return TrialHooks(run, after)


def _claim(folder: str, suffix: str, exclusive_over_trials: bool) -> bool:
    """Create this trial's marker file once; with exclusive_over_trials, only the first trial."""
    owner = "first" if exclusive_over_trials else tune.get_context().get_trial_id()
    marker = os.path.join(folder, f"{owner}.{suffix}")
    try:
        with open(marker, "x") as f:
            f.write(tune.get_context().get_trial_id())
        return True
    except FileExistsError:
        return False


def crash_after_report(step: int) -> None:
    """Raise InjectedFault once per trial at or after METASEMI_FAULT_STEP."""
    folder = os.environ[FAULT_DIR_ENV]
    if step >= int(os.environ.get(FAULT_STEP_ENV) or 0) and _claim(
            folder, "failed", exclusive_over_trials=False):
        corrupt = os.environ.get(CORRUPT_ENV)
        if corrupt == "1" or corrupt == "first" and _claim(folder, "corrupted",
                                                            exclusive_over_trials=True):
            _truncate_latest_checkpoint()
        raise InjectedFault(f"injected fault after step {step}")


def fill_disk(step: int) -> None:
    """Fill the disk of METASEMI_FILL_DISK, once in the study (see FILL_DISK_ENV)."""
    if step < int(os.environ.get(FILL_STEP_ENV) or 0):
        return
    try:
        f = open(os.environ[FILL_DISK_ENV], "xb", buffering=0)
    except FileExistsError:  # another trial filled it
        return
    with f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass  # full


def _truncate_latest_checkpoint() -> None:
    """Halve checkpoint.pt of the trial's newest checkpoint in storage (local storage only)."""
    trial_dir = tune.get_context().get_storage().trial_fs_path
    latest = sorted(d for d in os.listdir(trial_dir) if d.startswith("checkpoint_"))[-1]
    path = os.path.join(trial_dir, latest, rundir.CHECKPOINT)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def stalling_save(path: str, state: dict) -> None:
    """The trainer's checkpoint save, except that one trial hangs half-way through writing
    (see STALL_DIR_ENV), after the previous checkpoint has been set aside."""
    folder = os.environ[STALL_DIR_ENV]
    at = int(os.environ.get(STALL_STEP_ENV) or 0)
    after = int(os.environ.get(STALL_AFTER_ENV) or 0)
    write = atomic_write
    if state.get("step", 0) >= at and _claim(folder, "passed", exclusive_over_trials=False):
        passed = sum(f.endswith(".passed") for f in os.listdir(folder))
        if passed > after and _claim(folder, "stalled", exclusive_over_trials=True):
            def write(path, writer):
                def half(f):
                    writer(f)
                    f.truncate(f.tell() // 2)
                    f.flush()
                    open(os.path.join(folder, "stalled.now"), "w").close()
                    time.sleep(3600)  # until the test kills the driver and its Ray
                atomic_write(path, half)
    checkpoint.save(path, state, write=write)


def permute_test_labels(data: DeviceData) -> DeviceData:
    """The data with its test labels permuted by a fixed permutation (see PERMUTE_TEST_ENV)."""
    labels = data.test_y.cpu().numpy()
    permuted = torch.from_numpy(np.random.default_rng(0).permutation(labels))
    return dataclasses.replace(data, test_y=permuted.to(data.test_y.device))


def data_gone(data: DeviceData) -> DeviceData:
    """Fail as the trainer does where the dataset's files are missing."""
    raise DatasetMissing("cifar10: missing data_batch_1 in /data/cifar-10-batches-py. Pass "
                         "--download to fetch it, or --data-path to the folder that holds it.")
