"""A trial error that no retry can change stops the study at once with its one message,
and --resume continues once it is fixed."""

import errno
import json
from pathlib import Path

from tests.study.faults import fault_env
from tests.study.helpers import assert_each_trial_once, trial_dirs

ARGS = ("--space", "digits", "--name", "s", "--num-samples", "3", "--scheduler", "fifo",
        "--max-concurrent", "1", "--steps-per-trial", "20", "--test-freq", "10",
        "--race-finalists", "0")


def test_an_error_no_retry_can_change_stops_the_study_with_its_one_message(study):
    rc, out = study.run(*ARGS, env=fault_env(METASEMI_DATA_GONE="1"))
    assert rc == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out
    assert "failed with an error that no retry can change, so the study stopped: node " in \
        errors[0]
    assert "cifar10: missing data_batch_1 in /data/cifar-10-batches-py. Pass --download" in \
        errors[0] and errors[0].endswith("Fix that, then resume with --resume")
    folders = trial_dirs(study.storage / "s")
    assert len(folders) == 1  # no other trial started
    assert Path(folders[0], "error.txt").read_text().count("Failure #") == 1  # not retried
    assert out.count("Traceback") <= 1  # Tune's report of the one failure (48 before)
    assert not (study.storage / "s" / "study_summary.json").exists()
    assert json.loads((study.storage / "s" / "stopped.json").read_text())["message"]

    rc, out = study.run(*ARGS, "--resume")  # the data is back
    assert rc == 0, out
    assert_each_trial_once(study.storage / "s", 3, [10, 20])
    assert not (study.storage / "s" / "stopped.json").exists()


def test_a_full_disk_is_recognised_anywhere_in_a_driver_errors_causes():
    import sqlite3

    from study.driver import _disk_full

    def raised_from(cause: BaseException, error: BaseException) -> BaseException:
        try:
            raise error from cause
        except BaseException as e:
            return e

    optuna_error = raised_from(sqlite3.OperationalError("database or disk is full"),
                               RuntimeError("An exception is raised during the commit."))
    assert _disk_full(raised_from(optuna_error, RuntimeError("Tune"))) == \
        "Optuna could not write optuna.db (database or disk is full)"
    full = OSError(errno.ENOSPC, "No space left on device", "/s/study.json")
    assert _disk_full(full) == "writing /s/study.json: No space left on device"
    assert _disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert _disk_full(sqlite3.OperationalError("database is locked")) is None
