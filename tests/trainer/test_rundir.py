"""One writer per run directory: a trainer claims its run directory with a lock naming it,
a fresh run never silently replaces another one, and `--resume A --save-path B` continues
A's run in B, leaving A as it was."""

import json
import os
import re
import socket
import subprocess
import sys
import warnings

import pytest

from trainer import checkpoint, rundir
from trainer.cli import main
from trainer.lock import RUN_LOCK, Locked, read_holder

TINY = ["--total-steps", "20", "--test-freq", "10", "--batch-size", "16", "--quiet"]


def files_of(run):
    return sorted(p.name for p in run.iterdir())


@pytest.mark.slow  # subprocesses that train or start Python twice
def test_two_trainers_started_on_one_run_directory_exactly_one_proceeds(tmp_path):
    run = tmp_path / "r4"
    argv = [sys.executable, "-m", "trainer", "--total-steps", "60", "--test-freq", "20",
            "--batch-size", "16", "--quiet", "--save-path", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {seed: subprocess.Popen([*argv, "--seed", str(seed)], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for seed in (1, 2)}
    outcome = {seed: (p.wait(timeout=300), *p.communicate()) for seed, p in procs.items()}
    winners = [seed for seed, (rc, _, _) in outcome.items() if rc == 0]
    assert len(winners) == 1, outcome
    (winner,), (loser,) = winners, set(outcome) - set(winners)
    rc, out, err = outcome[loser]
    assert rc == 2 and out == ""
    # Refused while the other wrote, or afterwards, finding its finished run: never both.
    assert (f"--save-path: {run} is being written by another trainer" in err
            or f"--save-path: {run} already holds a metasemi run on digits (seed {winner}"
            in err), err
    assert f"-> {run}" in outcome[winner][1]
    assert json.loads((run / rundir.CONFIG).read_text())["seed"] == winner
    assert json.loads((run / rundir.SUMMARY).read_text())["seed"] == winner
    assert len([n for n in files_of(run) if n.startswith(rundir.TENSORBOARD_PREFIX)]) == 1
    assert RUN_LOCK not in files_of(run)  # released at the end


def test_a_fresh_run_into_a_directory_holding_a_run_is_refused_naming_it_and_the_choices(
        tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--save-path", str(run)]) == 0
    before = {n: (run / n).stat().st_mtime_ns for n in files_of(run)}
    assert main([*TINY, "--method", "supervised", "--save-path", str(run)]) == 2
    err = capsys.readouterr().err
    assert (f"--save-path: {run} already holds a metasemi run on digits (seed 7788, "
            "completed); pass --resume") in err
    assert "another --save-path for a new run, or --overwrite to replace it" in err
    assert {n: (run / n).stat().st_mtime_ns for n in files_of(run)} == before


def test_overwrite_replaces_the_run_there_and_its_tensorboard_logs(tmp_path):
    run = tmp_path / "run"
    assert main([*TINY, "--save-path", str(run)]) == 0
    older = run / f"{rundir.TENSORBOARD_PREFIX}1700000000.oldhost"  # an earlier session's log
    older.write_bytes(b"old")
    assert main([*TINY, "--method", "supervised", "--overwrite", "--save-path", str(run)]) == 0
    events = [n for n in files_of(run) if n.startswith(rundir.TENSORBOARD_PREFIX)]
    assert len(events) == 1 and not older.exists()
    assert json.loads((run / rundir.CONFIG).read_text())["method"] == "supervised"
    assert not (run / rundir.BEST).exists() or json.loads(
        (run / rundir.SUMMARY).read_text())["method"] == "supervised"


def test_resume_a_with_save_path_b_continues_a_in_b_and_leaves_a_as_it_was(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*TINY, "--save-path", str(a)]) == 0
    before = {n: (a / n).read_bytes() for n in files_of(a)}
    assert main(["--resume", str(a), "--total-steps", "30", "--save-path", str(b),
                 "--quiet"]) == 0
    assert {n: (a / n).read_bytes() for n in files_of(a)} == before
    rows = (b / rundir.METRICS).read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["10", "20", "30"]  # A's history, then more
    # B now holds a run: continuing A into it again is refused, as a fresh run would be.
    capsys.readouterr()
    assert main(["--resume", str(a), "--total-steps", "40", "--save-path", str(b),
                 "--quiet"]) == 2
    assert f"--save-path: {b} already holds a metasemi run on digits" in capsys.readouterr().err
    assert main(["--resume", str(b), "--total-steps", "40", "--quiet"]) == 0  # B's own dir


def test_a_live_holder_is_named_and_a_stale_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    held = rundir.claim(str(run))
    with pytest.raises(Locked, match=rf"being written by another trainer \(host .*PID "
                                     rf"{os.getpid()}, since"):
        rundir.claim(str(run))
    held.release()
    assert not run.exists()  # claimed, never written: nothing is left behind

    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / RUN_LOCK).write_text(json.dumps({
        "host": socket.gethostname(), "pid": dead.pid, "started": 0.0, "process_start": None,
        "token": "killed"}))
    held = rundir.claim(str(run))
    assert read_holder(str(run / RUN_LOCK)).pid == os.getpid()
    held.release()


def test_a_disk_that_fills_during_a_run_is_named_and_resume_continues(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs privileges this machine does not give")
    try:
        run = disk / "run"
        assert main([*TINY, "--save-path", str(run)]) == 0
        with open(disk / "filler", "wb", buffering=0) as f:  # the disk fills up
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 4096)
        capsys.readouterr()
        assert main(["--resume", str(run), "--total-steps", "40", "--quiet"]) == 2
        assert f"--save-path: the disk of {run} is full (0 KiB free); free some room" in \
            capsys.readouterr().err  # refused before any work
        os.truncate(disk / "filler", os.path.getsize(disk / "filler") - (256 << 10))
        # Room for the small files, not for the next checkpoint: it fills during the run.
        assert main(["--resume", str(run), "--total-steps", "40", "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: the disk of {run} is full: writing "), err
        size = r"[\d.]+ [KMG]iB"
        assert re.search(rf"stopped after {size}, {size} is free, and about {size} "
                         r"more is needed\. What was written before is intact: free the room, "
                         rf"then continue with --resume {run}$", err), err
        # The last checkpoint written is whole (maybe set aside as the previous one).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", checkpoint.CheckpointFallbackWarning)
            assert checkpoint.load_latest(str(run))[0]["step"] in (20, 30, 40), err
        os.unlink(disk / "filler")
        assert main(["--resume", str(run), "--total-steps", "40", "--quiet"]) == 0
        rows = (run / rundir.METRICS).read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["10", "20", "30", "40"]
    finally:
        subprocess.run(["umount", str(disk)])
