"""One driver per study: claimed atomically before Ray starts, refused naming the holder,
stale locks of killed drivers taken over by --resume (a killed driver's own lock:
tests/study/test_reliability.py)."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from study import lock
from study.lock import StudyLocked, claim
from tests.study.helpers import trial_dirs
from trainer import lock as trainer_lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(path, **fields) -> None:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "process_start": None, "token": "planted", **fields}
    path.write_text(json.dumps(holder))


def test_a_new_study_is_claimed_with_its_holder_and_released(tmp_path):
    study = tmp_path / "studies" / "s"
    held = claim(str(study), "s", resume=False)
    saved = json.loads((study / lock.LOCK_NAME).read_text())
    assert saved == asdict(held.holder) and saved["pid"] == os.getpid()
    assert saved["host"] == socket.gethostname()

    with pytest.raises(StudyLocked, match=rf"being run by another driver \(host "
                                          rf"{socket.gethostname()}, PID {os.getpid()}, since"):
        claim(str(study), "s", resume=True)
    with pytest.raises(StudyLocked, match="being run by another driver"):
        claim(str(study), "s", resume=False)
    held.release()
    assert not study.exists()  # claimed, never used: no empty study is left behind


def test_a_finished_study_is_not_claimed_again_without_resume(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text("{}")
    with pytest.raises(StudyLocked, match="already exists.*pass --resume"):
        claim(str(study), "s", resume=False)
    held = claim(str(study), "s", resume=True)
    held.release()
    assert (study / "study.json").exists() and not (study / lock.LOCK_NAME).exists()


def test_the_lock_of_a_dead_driver_on_this_host_is_taken_over(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    plant(study / lock.LOCK_NAME, pid=dead_pid())
    held = claim(str(study), "s", resume=True)
    assert json.loads((study / lock.LOCK_NAME).read_text())["token"] == held.holder.token
    held.release()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    plant(study / lock.LOCK_NAME, pid=os.getpid(), process_start="1")  # not our start time
    claim(str(study), "s", resume=True).release()


def test_another_hosts_lock_is_stale_only_when_its_heartbeat_stopped(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    path = study / lock.LOCK_NAME
    plant(path, host="other-node", pid=1)
    with pytest.raises(StudyLocked, match="host other-node, PID 1"):
        claim(str(study), "s", resume=True)
    old = time.time() - lock.STALE_AFTER_SECONDS - 5
    os.utime(path, (old, old))
    claim(str(study), "s", resume=True).release()


def test_the_holder_keeps_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_lock, "HEARTBEAT_SECONDS", 0.05)
    study = tmp_path / "s"
    held = claim(str(study), "s", resume=False)
    path = study / lock.LOCK_NAME
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5
    held.release()


def test_object_store_studies_are_locked_on_the_drivers_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "LOCAL_LOCKS", str(tmp_path / "locks"))
    held = claim("s3://bucket/studies/s", "s", resume=False)
    assert lock.lock_path("s3://bucket/studies/s").startswith(str(tmp_path / "locks"))
    with pytest.raises(StudyLocked, match="being run by another driver"):
        claim("s3://bucket/studies/s", "s", resume=True)
    held.release()
    claim("s3://bucket/studies/s", "s", resume=True).release()


@pytest.mark.slow
def test_two_drivers_racing_on_one_name_one_proceeds(study):
    args = ("--space", "digits", "--name", "race", "--num-samples", "3", "--scheduler", "fifo",
            "--steps-per-trial", "40", "--test-freq", "20")
    first, second = study.start(*args), study.start(*args)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outs
    loser = outs[[first.returncode, second.returncode].index(2)]
    assert "being run by another driver (host" in loser and "PID" in loser, loser
    summary = json.loads((study.storage / "race" / "study_summary.json").read_text())
    assert summary["num_trials"] == summary["num_completed"] == 3
    assert len(trial_dirs(study.storage / "race")) == 3
    assert not (study.storage / "race" / "orphaned").exists()
    assert not (study.storage / "race" / lock.LOCK_NAME).exists()
