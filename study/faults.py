"""Faults injected on purpose, for the reliability tests; each is off unless its variable is set.

- METASEMI_FAULT_DIR (+ METASEMI_FAULT_STEP): every trial crashes once, right after its
  report of that step (default: its first), leaving TRIAL_ID.failed in the folder.
- METASEMI_STALL_DIR (+ METASEMI_STALL_STEP, METASEMI_STALL_AFTER): once that many trials
  have saved the checkpoint of that step, the next one to save it stops half-way through
  writing checkpoint.pt and waits there, leaving stalled.now in the folder: the moment to
  kill a driver in the middle of a checkpoint write.
- METASEMI_CORRUPT_ON_FAULT=1, with the crash above: the trial's latest checkpoint in the
  study's storage is truncated before the crash, so the retry must fall back to the one
  before it.
- METASEMI_PERMUTE_TEST_LABELS=1: every trial's test labels are permuted (a fixed
  permutation). Selection must not notice: the test that proves it is blind to the test set.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from ray import tune

from trainer import rundir

FAULT_DIR_ENV, FAULT_STEP_ENV = "METASEMI_FAULT_DIR", "METASEMI_FAULT_STEP"
STALL_DIR_ENV, STALL_STEP_ENV = "METASEMI_STALL_DIR", "METASEMI_STALL_STEP"
STALL_AFTER_ENV, CORRUPT_ENV = "METASEMI_STALL_AFTER", "METASEMI_CORRUPT_ON_FAULT"
PERMUTE_TEST_ENV = "METASEMI_PERMUTE_TEST_LABELS"


class InjectedFault(RuntimeError):
    """A crash injected on purpose (see FAULT_DIR_ENV)."""


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
    folder = os.environ.get(FAULT_DIR_ENV)
    if folder and step >= int(os.environ.get(FAULT_STEP_ENV) or 0) and _claim(
            folder, "failed", exclusive_over_trials=False):
        if os.environ.get(CORRUPT_ENV) == "1":
            _truncate_latest_checkpoint()
        raise InjectedFault(f"injected fault after step {step}")


def _truncate_latest_checkpoint() -> None:
    """Halve checkpoint.pt of the trial's newest checkpoint in storage (local storage only)."""
    trial_dir = tune.get_context().get_storage().trial_fs_path
    latest = sorted(d for d in os.listdir(trial_dir) if d.startswith("checkpoint_"))[-1]
    path = os.path.join(trial_dir, latest, rundir.CHECKPOINT)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def install_checkpoint_stall() -> None:
    """Hang one trial half-way through a checkpoint write (see STALL_DIR_ENV), inside the
    trainer's own save, after it has set the previous checkpoint aside."""
    folder = os.environ.get(STALL_DIR_ENV)
    if not folder:
        return
    from trainer import checkpoint

    if getattr(checkpoint.save, "stalls", False):  # a reused worker: installed already
        return
    at = int(os.environ.get(STALL_STEP_ENV) or 0)
    after = int(os.environ.get(STALL_AFTER_ENV) or 0)
    real_write, real_save = checkpoint.atomic_write, checkpoint.save

    def write_half_and_hang(path, writer):
        def half(f):
            writer(f)
            f.truncate(f.tell() // 2)
            f.flush()
            open(os.path.join(folder, "stalled.now"), "w").close()
            time.sleep(3600)  # until the test kills the driver and its Ray
        real_write(path, half)

    def save(path, state):
        if state.get("step", 0) >= at and _claim(folder, "passed", exclusive_over_trials=False):
            passed = sum(f.endswith(".passed") for f in os.listdir(folder))
            if passed > after and _claim(folder, "stalled", exclusive_over_trials=True):
                checkpoint.atomic_write = write_half_and_hang
        try:
            real_save(path, state)
        finally:
            checkpoint.atomic_write = real_write

    save.stalls = True
    checkpoint.save = save


def install_test_label_permutation() -> None:
    """Permute the test labels of every dataset this worker loads (see PERMUTE_TEST_ENV)."""
    if os.environ.get(PERMUTE_TEST_ENV) != "1":
        return
    from trainer import data

    for name, spec in list(data.DATASETS.items()):
        if getattr(spec.load, "permutes_test_labels", False):  # a reused worker
            continue

        def load(root, download, _load=spec.load):
            arrays = _load(root, download)
            permuted = np.random.default_rng(0).permutation(arrays.test_y)
            return dataclasses.replace(arrays, test_y=permuted)

        load.permutes_test_labels = True
        data.DATASETS[name] = dataclasses.replace(spec, load=load)
