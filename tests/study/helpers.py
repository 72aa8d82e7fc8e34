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

REPO = Path(__file__).resolve().parents[2]
RAY_DAEMONS = ("raylet", "gcs_server", "default_worker.py", "ray::")


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Study:
    """Runs the study CLI in its own process group, so every Ray process it starts is ended."""

    def __init__(self, tmp_path: Path):
        self.storage = tmp_path / "studies"
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, env=None) -> subprocess.Popen:
        args = [*map(str, args)]
        if "--storage-path" not in args:
            args += ["--storage-path", str(self.storage)]
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "study" / "run.py"), *args, "--verbose", "0"],
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
    """A head (no CPUs: it only hosts the driver) and worker nodes, each a `ray start --block`
    in its own process group on 127.0.0.1, with ports of its own."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A token of this cluster's own: nodes and drivers need one, and ~/.ray/auth_token
        # exists only once some local instance has made it.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    # a lost node is declared dead after ~3 s rather than ~30 s
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3"}
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # would forbid several nodes
        self.log_dir = tmp_path / "ray-logs"
        self.log_dir.mkdir()
        self.head = self._start("head", "--head", f"--port={self.port}", "--num-cpus=0",
                                "--include-dashboard=false")
        self.workers: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        return subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "ray"), "start",
             "--node-ip-address=127.0.0.1",
             "--disable-usage-stats", "--block", *args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def add_worker(self, num_cpus: int = 1, attempts: int = 2) -> subprocess.Popen:
        """A worker node; started one at a time (nodes starting together on one machine race
        for the same socket names), each with explicit ports. On a loaded 2-core machine a
        raylet occasionally times out during startup; that worker is replaced once."""
        name = f"worker{len(self.workers) + 1}"
        for attempt in range(1, attempts + 1):
            ports = [free_port() for _ in range(6)]
            worker = self._start(
                f"{name}-try{attempt}", f"--address={self.address}",
                f"--num-cpus={num_cpus}", f"--node-manager-port={ports[0]}",
                f"--object-manager-port={ports[1]}", f"--metrics-export-port={ports[2]}",
                f"--runtime-env-agent-port={ports[3]}",
                f"--dashboard-agent-grpc-port={ports[4]}",
                f"--dashboard-agent-listen-port={ports[5]}")
            if self.wait_for_nodes(len(self.workers) + 2, raise_on_timeout=False):
                self.workers.append(worker)
                return worker
            kill_group(worker)
        log = (self.log_dir / f"{name}-try{attempts}.log").read_text()[-2000:]
        raise AssertionError(f"{name} did not join the Ray cluster in {attempts} tries:\n{log}")

    def alive_nodes(self) -> int:
        out = subprocess.run(
            [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
             "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))", self.address],
            capture_output=True, text=True, env=self.env, timeout=60)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0

    def wait_for_nodes(self, count: int, timeout: float = 60,
                       raise_on_timeout: bool = True) -> bool:
        deadline = time.time() + timeout
        while self.alive_nodes() < count:
            if time.time() >= deadline:
                assert not raise_on_timeout, f"the Ray cluster did not reach {count} nodes"
                return False
            time.sleep(1)
        return True

    def close(self) -> None:
        for proc in [*self.workers, self.head]:
            kill_group(proc)


def ray_processes() -> set[int]:
    """Pids of Ray's daemons and workers on this machine."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(d in cmd for d in RAY_DAEMONS):
            found.add(int(pid))
    return found


def trial_dirs(path) -> list[str]:
    return sorted(glob.glob(f"{path}/run_trial_*"))


def reported_steps(trial_dir) -> list[int]:
    with open(f"{trial_dir}/result.json") as f:
        return [int(json.loads(line)["step"]) for line in f if line.strip()]


def placement(trial_dir) -> dict:
    return json.loads(Path(f"{trial_dir}/run/placement.json").read_text())
