"""Faults injected into real studies: lost nodes, killed drivers, crashes, corrupt checkpoints,
diverging trials and full disks. Each ends with every trial accounted for exactly once."""

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from analysis import load_study
from study.lock import LOCK_NAME
from tests.study.faults import fault_env
from tests.study.helpers import assert_each_trial_once, reported_steps, trial_dirs, wait_for


def finished(path, last_step: int) -> list[str]:
    """Trials whose final result the driver has recorded (Ray writes result.json)."""
    done = []
    for d in trial_dirs(path):
        try:
            if reported_steps(d)[-1:] == [last_step]:
                done.append(d)
        except (OSError, ValueError):  # not written yet, or a line half-written
            pass
    return done


# "checkpoint-write" is also the moment after two finished trials, with the third running.
@pytest.mark.parametrize("moment", ["early", "checkpoint-write"])
def test_a_driver_killed_at_any_moment_resumes_without_rerunning_finished_trials(
        study, tmp_path, moment):
    stall = tmp_path / "stall"
    stall.mkdir()
    env = {}
    if moment == "checkpoint-write":  # the third trial hangs half-way through its last save
        env = fault_env(METASEMI_STALL_DIR=str(stall), METASEMI_STALL_STEP="60",
                        METASEMI_STALL_AFTER="2")
    # Three trials, one at a time.
    proc = study.start("--space", "digits", "--name", "k", "--num-samples", "3",
                       "--scheduler", "fifo", "--max-concurrent", "1", "--steps-per-trial",
                       "60", "--test-freq", "30", "--checkpoint-every", "0", env=env)
    path = study.storage / "k"
    if moment == "early":
        wait_for(lambda: any(os.path.exists(f"{d}/run/placement.json")
                             for d in trial_dirs(path)), proc, "the first trial to start")
    else:
        wait_for(lambda: (stall / "stalled.now").exists(), proc, "a stalled checkpoint write")
    study.kill(proc)  # SIGKILL: the driver and the local Ray instance it started
    done_before = {d: Path(f"{d}/result.json").read_text() for d in finished(path, 60)}
    # The killed driver's lock is left behind, naming it; --resume takes it over.
    assert json.loads((path / LOCK_NAME).read_text())["pid"] == proc.pid

    t0 = time.time()
    rc, out = study.run("--space", "digits", "--name", "k", "--resume")  # shape from study.json
    assert rc == 0, out
    print(f"{moment}: resumed study finished {time.time() - t0:.1f} s after the restart")
    summary = assert_each_trial_once(path, 3, [30, 60])
    assert not (path / LOCK_NAME).exists()  # released by the driver that took it over
    assert len(load_study(path)) == 3  # what was moved to orphaned/ is not a trial of it
    assert len(list((path / "orphaned").glob("*"))) == len(summary["orphaned_trial_dirs"])
    for d, before in done_before.items():
        assert Path(f"{d}/result.json").read_text() == before, f"{d} was run again"


DIVERGING_SPACE = """
dataset = "digits"

[fidelity]
total_steps = 100
test_freq = 50
grace_steps = 50
reduction_factor = 2
gpus_per_trial = 0
cpus_per_trial = 1

[fixed]
num_label = 50
num_val = 100
warmup = 0

[params.lr]   # 1000 makes SGD blow up at once
type = "categorical"
choices = [0.1, 1000.0]
default = 0.1
"""


def test_a_diverging_trial_ends_failed_with_its_reason_and_the_study_goes_on(study, tmp_path):
    space = tmp_path / "diverging.toml"
    space.write_text(DIVERGING_SPACE)
    rc, out = study.run("--space", space, "--name", "d", "--num-samples", "4",
                        "--scheduler", "fifo", "--seed", "3")
    assert rc == 0, out
    summary = json.loads((study.storage / "d" / "study_summary.json").read_text())
    outcomes = {t["config"]["lr"]: t["status"] for t in summary["trials"]}
    assert outcomes == {0.1: "completed", 1000.0: "diverged"}, summary["trials"]
    assert summary["num_diverged"] >= 1 and summary["best_config"]["lr"] == 0.1
    frame = load_study(study.storage / "d")
    diverged = frame[frame["status"] == "diverged"]
    assert len(diverged) == summary["num_diverged"]
    assert diverged["reason"].str.contains("loss became NaN or infinite").all()
    assert (diverged["num_failures"] == 0).all()  # not retried: it would diverge again


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (skips where mounting needs privileges)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a small tmpfs needs privileges this machine does not give")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)])


def test_a_full_storage_path_is_reported_before_any_trial(study, tmp_path):
    with small_disk(tmp_path / "small", "2m") as small:
        rc, out = study.run("--space", "digits", "--name", "full", "--storage-path", small)
        assert rc == 2 and re.search(r"has [\d.]+ GB free, but the study needs about", out), out
        with open(small / "filler", "wb", buffering=0) as f:  # now really full
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 65536)
        rc, out = study.run("--space", "digits", "--name", "full", "--num-samples", "1",
                            "--storage-path", small)
        assert rc == 2 and "--storage-path: the disk of" in out and "is full" in out, out
        assert not list(small.glob("full"))


def test_a_storage_that_fills_during_a_study_stops_it_and_resume_continues(study, tmp_path):
    args = ["--space", "digits", "--name", "f", "--num-samples", "2", "--scheduler", "fifo",
            "--steps-per-trial", "30", "--test-freq", "10", "--max-concurrent", "1",
            "--checkpoint-every", "0"]
    with small_disk(tmp_path / "small", "24m") as small:
        filler = small / "filler"
        rc, out = study.run(*args, "--storage-path", small, env=fault_env(
            METASEMI_FILL_DISK=str(filler), METASEMI_FILL_STEP="10"))
        assert filler.exists()  # the disk filled after a trial's first report
        assert rc == 1, out
        # What could not be written (a trial's checkpoint, or optuna.db when the searcher
        # met the full disk first), and the room the trials not completed need:
        size = r"[\d.]+ [KMG]iB"
        what = (rf"trial \w+ stopped the study: node .*: the study's storage is full: the "
                rf"checkpoint of step \d+ \({size}\) could not be copied to {small}/f/\S+ \(.*"
                rf"No space left on device, {size} free there\)"
                rf"|the study's storage {small} is full: Optuna could not write optuna.db .*")
        message = re.search(rf"error: ({what})\. A trial keeps about {size} there .* the "
                            rf"(\d) trials not completed need up to {size}\. .*resume with "
                            r"--resume:\n  python study/run.py .* --resume\n", out)
        assert message, out
        print(message.group(1))
        assert not (small / "f" / "study_summary.json").exists()
        filler.unlink()  # room again
        rc, out = study.run(*args, "--storage-path", small, "--resume")
        assert rc == 0, out
        assert_each_trial_once(small / "f", 2, [10, 20, 30])


def test_a_load_of_twenty_trials_is_accounted_exactly(study):
    t0 = time.time()
    rc, out = study.run("--space", "digits", "--name", "load", "--num-samples", "20",
                        "--scheduler", "fifo", "--steps-per-trial", "20", "--test-freq", "10")
    assert rc == 0, out
    print(f"20 trials in {time.time() - t0:.0f} s")
    assert_each_trial_once(study.storage / "load", 20, [10, 20])
