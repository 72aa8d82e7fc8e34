"""Running the study CLI and small Ray clusters from tests, always cleaned up afterwards."""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

from study import layout
from study.procs import command_lines

REPO = Path(__file__).resolve().parents[2]
RAY_DAEMONS = ("raylet", "gcs_server", "default_worker.py", "ray::")


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_bench(*args: str, timeout: float = 600) -> tuple[int, str]:
    """`python -m study.bench ARGS` in a process group of its own (every Ray process it
    starts ends with it): its exit status and output."""
    proc = subprocess.Popen([sys.executable, "-m", "study.bench", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return proc.returncode, log


class Study:
    """Runs the study CLI in its own process group, so every Ray process it starts is ended.
    A search races its finalists (study/race.py) only where a test asks, --race-finalists K:
    most tests are about something else, and the race multiplies their trials."""

    def __init__(self, tmp_path: Path):
        self.storage = tmp_path / "studies"
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, env=None) -> subprocess.Popen:
        args = [*map(str, args)]
        if "--storage-path" not in args:
            args += ["--storage-path", str(self.storage)]
        if "--race-finalists" not in args:
            args += ["--race-finalists", "0"]
        if "--verbose" not in args:
            args += ["--verbose", "0"]
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "study" / "run.py"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            start_new_session=True, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def run(self, *args, env=None, timeout=600) -> tuple[int, str]:
        proc = self.start(*args, env=env)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the driver and the local Ray instance it started (its process group)."""
        kill_group(proc)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """A Ray cluster left running on the machine: a head (`ray start --head --block`, no
    CPUs) in its own process group on 127.0.0.1, token auth on as on a real cluster."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A token of this cluster's own: ~/.ray/auth_token exists only once some local
        # instance has made it.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        log = open(tmp_path / "ray-head.log", "w")
        self.head = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head",
             f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
             "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def close(self) -> None:
        kill_group(self.head)


def ray_processes() -> set[int]:
    """Pids of Ray's daemons and workers on this machine."""
    return {pid for pid, args in command_lines()
            if any(d in " ".join(args) for d in RAY_DAEMONS)}


def trial_dirs(path) -> list[str]:
    return sorted(glob.glob(f"{path}/{layout.TRIAL_GLOB}"))


def reported_steps(trial_dir) -> list[int]:
    with open(f"{trial_dir}/result.json") as f:
        return [int(json.loads(line)["step"]) for line in f if line.strip()]


def placement(trial_dir) -> dict:
    return json.loads(Path(f"{trial_dir}/run/placement.json").read_text())


def wait_for(condition, proc, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the study ended before {what}: {proc.communicate()[0]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def assert_each_trial_once(path, count: int, steps: list[int]) -> dict:
    """The study summary, Ray's trial folders and Optuna agree on `count` trials; each trial
    evaluated `steps` once (the trainer's metrics.csv) and Tune recorded its last one."""
    summary = json.loads((Path(path) / layout.SUMMARY_FILE).read_text())
    dirs = trial_dirs(path)
    assert summary["num_trials"] == len(dirs) == count
    assert len({t["trial_id"] for t in summary["trials"]}) == count
    assert summary["num_completed"] == count, summary
    for d in dirs:
        assert pd.read_csv(f"{d}/run/metrics.csv")["step"].tolist() == steps, d
        reported = reported_steps(d)  # a trial restored by a new driver starts a new file
        assert reported == sorted(set(reported)) and set(reported) <= set(steps), d
        assert reported[-1] == steps[-1], d
    ot = optuna.load_study(study_name=Path(path).name, storage=f"sqlite:///{path}/optuna.db")
    states = [t.state for t in ot.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == count
    # Trials asked for after the driver's last snapshot were asked again on resume; the
    # first asks are closed as failed, never left running.
    assert len(states) - count == summary["optuna_orphans_failed"]
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    return summary
