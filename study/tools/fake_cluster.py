"""cluster.yaml's node types as a fake autoscaling Ray cluster on this machine.

Ray's fake multi-node provider launches each "node" as a raylet of its own on this machine,
with the resources its node type declares (GPUs included, none of them real). The head
runs Ray's autoscaler as `ray up` starts it (autoscaler v2), so the nodes come and go as on
the real cluster: added for trials that wait, removed when idle.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study.procs import command_lines, descendants

# The fake provider's node ids; its nodes use them as Ray node ids and instance ids.
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
# Node-type fields the fake provider keeps; the rest (instance types, images) is the cloud's.
KEPT_FIELDS = ("resources", "min_workers", "max_workers", "priority", "labels")


class FakeClusterError(ValueError):
    """A cluster config that cannot be rehearsed; the message names the node type and fix."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(cluster: dict[str, Any], gcs_port: int,
                       idle_timeout_minutes: float) -> dict[str, Any]:
    """An autoscaling config for Ray's fake provider with `cluster`'s node types, resources
    and worker limits; only the idle timeout is the caller's (a rehearsal cannot wait 10 min)."""
    types = cluster.get("available_node_types") or {}
    head = cluster.get("head_node_type")
    if head not in types:
        raise FakeClusterError(f"head_node_type {head!r} is not among available_node_types")
    nodes = {}
    for name, spec in types.items():
        if name != head and not {"CPU", "GPU"} & set(spec.get("resources") or {}):
            raise FakeClusterError(
                f"available_node_types.{name}: no `resources` declared; the autoscaler cannot "
                "know what such a node offers before one runs, and a fake node has only what "
                'is declared. Add e.g. resources: {"CPU": 4, "GPU": 1}')
        nodes[name] = {k: spec[k] for k in KEPT_FIELDS if k in spec} | {"node_config": {}}
    nodes[head]["max_workers"] = 0
    return {
        "cluster_name": f"fake-{cluster.get('cluster_name', 'cluster')}",
        "max_workers": cluster.get("max_workers", 2),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "external", "module": FAKE_PROVIDER,
            "gcs_address": f"127.0.0.1:{gcs_port}", "head_node_id": FAKE_HEAD_NODE_ID,
            "launch_multiple": True, "use_node_id_as_ip": True,
            "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "nobody"},
        "available_node_types": nodes, "head_node_type": head,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def load_cluster_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            cluster = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise FakeClusterError(f"--cluster-yaml {path}: cannot read it ({e})") from e
    if not isinstance(cluster, dict):
        raise FakeClusterError(f"--cluster-yaml {path}: not a Ray cluster config (a mapping)")
    return cluster


@dataclass
class FakeCluster:
    """A running fake cluster: its head process, address, the environment drivers need."""

    head: subprocess.Popen
    address: str
    env: dict[str, str]
    temp_dir: str
    config_path: str

    @property
    def monitor_log(self) -> Path:
        return Path(self.temp_dir, "ray", "session_latest", "logs", "monitor.log")

    def stop(self) -> None:
        """End the head's process group and every process of this cluster's temp folder
        (the fake nodes, which the autoscaler starts)."""
        try:
            os.killpg(self.head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.head.wait()
        kill_matching(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start(cluster: dict[str, Any], work_dir: str, idle_timeout_minutes: float) -> FakeCluster:
    """Start the head of a fake autoscaling cluster with `cluster`'s node types: no workers
    until trials ask for them. Token authentication on, as on the real cluster."""
    port = free_port()
    config = autoscaling_config(cluster, port, idle_timeout_minutes)
    config_path = os.path.join(work_dir, "autoscaling-config.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    # A temp folder of its own: every process of this cluster names it, which is how stop()
    # finds them; short, because Ray's socket paths under it are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rfc", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": temp_dir,
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           # A lost node is declared dead after ~3 s rather than ~30 s.
           "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
           "RAY_health_check_failure_threshold": "3"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # would keep it to one node
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                # as `ray up` starts the head (Ray >= 2.50): autoscaler v2
                "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
    head_resources = dict(cluster["available_node_types"][cluster["head_node_type"]]
                          .get("resources") or {})
    log = open(os.path.join(work_dir, "head.log"), "w")
    head = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
         f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
         "--disable-usage-stats", f"--autoscaling-config={config_path}",
         f"--num-cpus={int(head_resources.get('CPU', 0))}",
         f"--num-gpus={int(head_resources.get('GPU', 0))}"],
        stdout=log, stderr=subprocess.STDOUT, env=head_env, start_new_session=True)
    fake = FakeCluster(head, f"127.0.0.1:{port}", env, temp_dir, config_path)
    deadline = time.time() + 90
    while not fake.monitor_log.exists():
        if head.poll() is not None or time.time() > deadline:
            fake.stop()
            tail = Path(work_dir, "head.log").read_text()[-3000:]
            raise RuntimeError(f"the fake cluster's head did not start:\n{tail}")
        time.sleep(0.5)
    return fake


def _kill(pids: list[int]) -> list[int]:
    """SIGKILL each of `pids`; those it reached."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def kill_matching(text: str) -> list[int]:
    """SIGKILL every process of this user whose command line contains `text`."""
    return _kill([pid for pid, args in command_lines()
                  if text in " ".join(args) and pid != os.getpid()])


def kill_node(raylet_socket: str) -> list[int]:
    """Lose a node as a reclaimed spot instance is lost: its raylet and every process it
    started die at once. The raylet names its socket on its command line; its workers
    rename themselves (ray::ClassName.method), so they are found as its descendants."""
    raylets = {pid for pid, args in command_lines() if raylet_socket in " ".join(args)}
    raylets.discard(os.getpid())
    return _kill(sorted(descendants(raylets)) + sorted(raylets))
