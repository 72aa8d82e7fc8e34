"""The Ray Tune function trainable: one trainer run per trial, reported through its hook.

Each evaluation is reported to Tune with the trainer's checkpoint; a retried or resumed
trial gets that checkpoint back from Tune (and the one before it, to fall back on if the
latest turns out corrupt) and continues from its step. The trainer's run directory is
the trial's working directory, synced to the study's storage as artifacts.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.fs
import ray
from ray import tune

from study import scratch
from study.fatal import StorageFull, TrialCannotRun
from study.gpu_share import cap_cuda_memory
from study.spaces import Schedule, scale_schedule
from trainer import checkpoint, resolve, rundir, train
from trainer.config import ConfigError
from trainer.data import DatasetCorrupt, DatasetMissing
from trainer.data.survey import OwnDataError, fingerprint
from trainer.device import resolve_device
from trainer.loop import RunHooks, TrainingDiverged
from trainer.phases import PhaseClock
from trainer.rundir import RUN_DIR, write_json

# "module:function", a function returning TrialHooks: how the reliability tests take part in
# every trial of a study (tests/study/faults.py). Unset, trials run with no hooks.
TRIAL_HOOKS_ENV = "METASEMI_TRIAL_HOOKS"
# A folder: where each trial's time goes, appended as JSON lines per worker process
# (python -m study.bench overhead). Unset, nothing is timed or written.
PROFILE_ENV = "METASEMI_PROFILE"


# When this worker process had imported the trainer, torch and this module.
IMPORTED_AT = time.time()


def _profile(event: str, **fields: Any) -> None:
    """One timed event of this worker's trials into METASEMI_PROFILE/worker-PID.jsonl."""
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        return
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields})
    with open(os.path.join(folder, f"worker-{os.getpid()}.jsonl"), "a") as f:
        f.write(line + "\n")


@dataclass(frozen=True)
class TrialHooks:
    """Doors into each trial: the trainer's own (RunHooks), and a call after each report to
    Tune with the step reported (where a test crashes a trial on purpose)."""

    run: RunHooks = RunHooks()
    after_report: Callable[[int], None] | None = None


def trial_hooks() -> TrialHooks:
    """The hooks named by METASEMI_TRIAL_HOOKS, or none."""
    named = os.environ.get(TRIAL_HOOKS_ENV)
    if not named:
        return TrialHooks()
    module, _, function = named.partition(":")
    try:
        hooks = getattr(importlib.import_module(module), function)()
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"{TRIAL_HOOKS_ENV}={named!r}: cannot load it ({e}); give "
                           "module:function of a function that returns TrialHooks") from e
    if not isinstance(hooks, TrialHooks):
        raise RuntimeError(f"{TRIAL_HOOKS_ENV}={named!r} returned {type(hooks).__name__}, "
                           "not TrialHooks")
    return hooks


def _checkpoint_dir_of(checkpoint_path: str) -> tempfile.TemporaryDirectory:
    """A temporary folder holding the checkpoint file (a hard link where possible)."""
    tmp = scratch.folder("ckpt")
    dst = os.path.join(tmp.name, rundir.CHECKPOINT)
    try:
        os.link(checkpoint_path, dst)
    except OSError:
        shutil.copy2(checkpoint_path, dst)
    return tmp


def _previous_checkpoint(latest: tune.Checkpoint) -> str | None:
    """The trial's Tune checkpoint folder before `latest` (Tune keeps two), if there is one."""
    parent, name = latest.path.rstrip("/").rsplit("/", 1)
    infos = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    older = sorted(i.path for i in infos if i.type == pyarrow.fs.FileType.Directory
                   and i.base_name.startswith("checkpoint_") and i.base_name < name)
    return older[-1] if older else None


def _restore(latest: tune.Checkpoint, folder: str) -> str:
    """Copy Tune's latest checkpoint, and the previous one as the trainer's fallback, here."""
    target = os.path.join(folder, rundir.CHECKPOINT)
    with latest.as_directory() as d:
        if os.path.isfile(os.path.join(d, rundir.CHECKPOINT)):
            shutil.copy2(os.path.join(d, rundir.CHECKPOINT), target)
    previous = _previous_checkpoint(latest)
    if previous is not None:
        fs = latest.filesystem
        try:
            with fs.open_input_stream(f"{previous}/{rundir.CHECKPOINT}") as src, \
                    open(checkpoint.previous_file(target), "wb") as dst:
                shutil.copyfileobj(src, dst)
        except OSError:
            pass  # no fallback then; a corrupt latest fails with a clear message
    return target


def _storage_full(step: int, checkpoint_path: str, error: OSError) -> StorageFull:
    """The one-line error of a checkpoint that did not fit in the study's storage."""
    where = tune.get_context().get_storage().trial_fs_path
    try:
        free = f", {rundir.size_text(shutil.disk_usage(where).free)} free there"
    except OSError:  # a URI, or storage on another node
        free = ""
    return StorageFull(
        f"node {socket.gethostname()}: the study's storage is full: the checkpoint of step "
        f"{step} ({rundir.size_text(os.path.getsize(checkpoint_path))}) could not be copied to "
        f"{where} ({error.strerror or error}{free})")


class DataNotHere(RuntimeError):
    """This node lacks the study's data of your own, or holds another copy of it."""


def check_data(dataset: str | None, expected: str | None) -> None:
    """Fail at once, naming this node, where your data is missing or differs from what the
    driver saw (its fingerprint in study.json)."""
    if expected is None or dataset is None:
        return
    node = socket.gethostname()
    if not os.path.exists(dataset):
        raise DataNotHere(f"node {node}: the study's data {dataset} does not exist here; every "
                          "node must hold it at the same path (a shared file system, or a "
                          "file mount: docs/cluster.md)")
    found = fingerprint(dataset)
    if found != expected:
        raise DataNotHere(f"node {node}: the data at {dataset} differs from the copy the "
                          f"driver saw (fingerprint {found}, study.json has {expected}); give "
                          "every node the same copy")


def trial_settings(config: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The trainer settings of a trial: the study's `base`, then a reproduce arm's values,
    then the trial's own; at the length of its phase (a race trial: race_steps), with the
    full schedule scaled to it."""
    config, base = dict(config), dict(base)
    full = Schedule(**base.pop("full_schedule"))
    race = base.pop("race_steps", None)
    base.pop("checkpoint_every", None)  # the trial function's, not the trainer's
    arms = base.pop("variants", None)
    if arms is not None:  # a reproduce study: the arm's values, then this trial's seed
        config = {**arms[config.pop("variant")], **config}
    steps = race if config.pop("phase", None) == "race" else base["total_steps"]
    config.pop("entrant", None)
    return scale_schedule({**base, **config}, full, steps)


# Errors a retry cannot change: the trial raises TrialCannotRun, and the study stops with
# its message (study/fatal.py) instead of failing every trial max_failures times.
NOT_RETRYABLE = (ConfigError, DatasetMissing, DatasetCorrupt, OwnDataError, DataNotHere)


def run_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Train one trial: `base` (study-wide trainer settings) overridden by `config` (sampled)."""
    trial_id = tune.get_context().get_trial_id()
    if os.environ.get(PROFILE_ENV):
        import psutil  # Ray's own dependency

        _profile("enter", trial=trial_id, imported=IMPORTED_AT,
                 process_started=psutil.Process().create_time())
    try:
        _run_trial(config, base)
    except NOT_RETRYABLE as e:
        message = " ".join(str(e).split())  # one line: the study's message is this line
        raise TrialCannotRun(f"node {socket.gethostname()}: {message}") from None
    finally:  # a trial stopped early ends here too: Tune ends its thread inside a report
        _profile("exit", trial=trial_id)


def _run_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    config, base = dict(config), dict(base)
    share = base.pop("gpu_share", None)  # the trial's GPU fraction, when its memory is capped
    # A study started before 2026-12-02 had no such key: it checkpointed every evaluation.
    every = base.get("checkpoint_every", 0.0)  # trial_settings takes it out of the rest
    cap = cap_cuda_memory(share) if share and resolve_device(base["device"]).type == "cuda" \
        else None
    check_data(base.get("dataset"), base.pop("data_fingerprint", None))
    settings = trial_settings(config, base)
    settings["save_path"] = os.path.abspath(RUN_DIR)
    os.makedirs(RUN_DIR, exist_ok=True)
    # Outside the working directory, which Tune syncs to storage as the trial's artifacts.
    scratch.sweep()  # what trials killed on this machine left
    with scratch.folder("restore") as restore_dir:
        latest = tune.get_checkpoint()
        if latest is not None:
            settings["resume"] = _restore(latest, restore_dir)
        _train_and_report(resolve(settings), cap, trial_hooks(), every)


def checkpoint_due(step: int, total_steps: int, since_last: float, every: float) -> bool:
    """Whether a report carries a Tune checkpoint: the trial's last, or one `every` seconds
    or more after the last it carried (or after the trial's start)."""
    return step >= total_steps or since_last >= every


def _train_and_report(cfg, gpu_memory_cap: int | None = None,
                      hooks: TrialHooks = TrialHooks(), checkpoint_every: float = 0.0) -> None:
    resumed_from, fallback = 0, []
    if cfg.resume:
        with warnings.catch_warnings(record=True) as caught:  # train() warns for itself
            warnings.simplefilter("always")
            resumed_from = int(checkpoint.load_latest(cfg.resume)[0]["step"])
        fallback = [str(w.message) for w in caught]
    placement = {
        # What Ray gave this trial, and when it ran: packing and placement, seen afterwards.
        "trial_id": tune.get_context().get_trial_id(), "node": socket.gethostname(),
        "pid": os.getpid(),  # a worker serves trial after trial (reuse_actors)
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": str(resolve_device(cfg.device)), "started": time.time(),
        "resumed_from_step": resumed_from, "checkpoint_fallback": fallback,
        "gpu_memory_cap_bytes": gpu_memory_cap}
    write_json(os.path.join(RUN_DIR, rundir.PLACEMENT), placement)
    last_row: dict[str, float] = {}
    clock = PhaseClock()  # the trainer's phases; the report's own, split below
    last_checkpoint = [time.perf_counter()]  # when the last checkpoint reached Tune (a cell)
    _profile("train", trial=placement["trial_id"])

    def report(row: dict[str, float], checkpoint_path: str) -> None:
        t = time.perf_counter()
        placement["last_report"] = time.time()
        write_json(os.path.join(RUN_DIR, rundir.PLACEMENT), placement)
        last_row.update(row)
        # Before Tune's report, which a trial stopped early never returns from.
        _profile("report", trial=placement["trial_id"], step=int(row["step"]),
                 phases=clock.snapshot(), placement=time.perf_counter() - t)
        t = time.perf_counter()
        if not checkpoint_due(int(row["step"]), cfg.total_steps, t - last_checkpoint[0],
                              checkpoint_every):
            tune.report(dict(row))  # the run directory reaches storage at the trial's end
        else:
            tmp = _checkpoint_dir_of(checkpoint_path)
            with tmp:
                try:
                    tune.report(dict(row), checkpoint=tune.Checkpoint.from_directory(tmp.name))
                except OSError as e:  # Tune's copy into the study's storage
                    if e.errno not in rundir.DISK_FULL:
                        raise
                    raise _storage_full(int(row["step"]), checkpoint_path, e) from None
            last_checkpoint[0] = time.perf_counter()
        _profile("reported", trial=placement["trial_id"], seconds=time.perf_counter() - t)
        if hooks.after_report is not None:
            hooks.after_report(int(row["step"]))

    try:
        # The trial's folder is Tune's, one trial's alone (no lock: Tune syncs the folder
        # while the trial runs): a restored trial continues the run there, a new attempt
        # replaces what an attempt that never reported left.
        train(cfg, report=report, show_progress=False, hooks=hooks.run,
              existing="continue" if cfg.resume else "overwrite", lock=False, clock=clock)
        _profile("trained", trial=placement["trial_id"], phases=clock.snapshot())
    except TrainingDiverged as e:
        # Retrying would diverge again from the same checkpoint: end the trial here, failed,
        # with the trainer's reason in run/summary.json. The searcher is told the worst
        # validation score, so that it learns to avoid the region.
        placement["diverged_at_step"] = e.step
        write_json(os.path.join(RUN_DIR, rundir.PLACEMENT), placement)
        tune.report({**last_row, "step": e.step, "val_score": 0.0, "diverged": 1})
