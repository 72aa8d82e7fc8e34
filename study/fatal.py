"""Trial errors that a retry cannot change stop the whole study with their one message.

A missing dataset, a setting the trainer refuses, data that differs between nodes: a
retry would fail the same way, on every trial, max_failures times each. The trainable
raises TrialCannotRun for them; FatalWatch, a Tune callback, sees it when Tune records
the failure, writes the message to STOPPED_FILE, which the driver turns into its error,
and stops the study the way Ctrl-C does (Tune's graceful stop, study/interrupt.py), so
that --resume continues it once the cause is fixed. (A Tune stopper would mark the
searcher finished, and a resumed study would then start no more trials.)

A storage that fills (StorageFull) stops the study the same way: every trial would fail
at its next checkpoint. Its STOPPED_FILE may not fit there either; the record then goes to
the driver's own file in this machine's temporary folder (fallback_file).
"""

from __future__ import annotations

import os
import re
import signal
import tempfile

from ray import tune

from study import storage
from trainer.rundir import write_json

STOPPED_FILE = "stopped.json"  # in the study directory: why the study stopped, for --resume
_MESSAGE = re.compile(r"(TrialCannotRun|StorageFull): (.+)")


class TrialCannotRun(RuntimeError):
    """A trial error that a retry cannot change (see the module docstring)."""


class StorageFull(TrialCannotRun):
    """The study's storage is full: the trial could not hand its checkpoint to Tune."""


def cannot_run(error_text: str) -> tuple[str, str] | None:
    """The kind ("storage_full" or "cannot_run") and message of a TrialCannotRun in a
    trial's error text (error.txt), if it holds one."""
    found = _MESSAGE.findall(error_text or "")
    if not found:
        return None
    name, message = found[-1]
    return ("storage_full" if name == "StorageFull" else "cannot_run"), message.strip()


def fallback_file(pid: int | None = None) -> str:
    """Where the driver of process `pid` (this one) records its stop if the storage is full."""
    return os.path.join(tempfile.gettempdir(), f"metasemi-stopped-{pid or os.getpid()}.json")


class FatalWatch(tune.Callback):
    """Stops the study at the first TrialCannotRun, recording which trial and why."""

    def __init__(self, study_path: str):
        self.study_path = study_path
        self.stopped: dict[str, str] | None = None

    def setup(self, **info) -> None:  # each fit, also of a restored study
        self.stopped = None

    def _seen(self, trial) -> None:
        if self.stopped is not None:
            return
        # Tune has just appended the failure to the driver's copy of error.txt; the study's
        # storage receives it only at the next sync.
        path = trial.error_file
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except (OSError, TypeError):
            text = str(trial.get_error() or "")
        found = cannot_run(text)
        if found is not None:
            kind, message = found
            self.stopped = {"trial_id": trial.trial_id, "message": message, "kind": kind}
            try:
                storage.put_json(f"{self.study_path}/{STOPPED_FILE}", self.stopped)
            except OSError:  # a full storage, most likely: the driver reads it here instead
                write_json(fallback_file(), self.stopped)
            graceful = signal.getsignal(signal.SIGUSR1)  # tune.run()'s, while it runs
            if callable(graceful):
                graceful(signal.SIGUSR1, None)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._seen(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._seen(trial)
