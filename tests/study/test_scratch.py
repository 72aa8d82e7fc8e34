"""A trial's temporary folders outlive a killed trial only until the next trial starts."""

import os
import signal
import subprocess
import sys
import textwrap

from study import scratch


def test_folders_of_killed_processes_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from study import scratch
        held = scratch.folder("restore")
        open(held.name + "/checkpoint.pt", "wb").write(b"x" * 1000)
        print(held.name, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    left = child.stdout.readline().strip()
    assert left.startswith(str(tmp_path / scratch.SCRATCH)), left
    with scratch.folder("ckpt") as mine:
        assert scratch.sweep() == []  # both processes alive: nothing removed
        child.send_signal(signal.SIGKILL)  # as Tune ends a trial it stops early
        child.wait()
        assert os.path.isdir(left)
        assert scratch.sweep() == [os.path.basename(left)]
        assert not os.path.exists(left) and os.path.isdir(mine)
    assert os.listdir(scratch.root()) == []


def test_a_folder_whose_pid_now_belongs_to_another_process_is_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    os.makedirs(scratch.root())
    reused = os.path.join(scratch.root(), f"{os.getpid()}.1-restore-abc")  # another start
    os.mkdir(reused)
    assert scratch.sweep() == [os.path.basename(reused)]
