"""The rehearsal's fake cluster is cluster.yaml's: the same node types, resources and worker
limits, in a config Ray's own validation accepts; a node is lost with all its processes."""

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from study.procs import descendants
from study.tools.fake_cluster import FakeClusterError, autoscaling_config, kill_node

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_node_types_resources_and_limits_come_from_cluster_yaml():
    config = autoscaling_config(CLUSTER, 6379, idle_timeout_minutes=0.25)
    head = CLUSTER["head_node_type"]
    assert config["head_node_type"] == head
    assert config["max_workers"] == CLUSTER["max_workers"]
    assert set(config["available_node_types"]) == set(CLUSTER["available_node_types"])
    for name, spec in CLUSTER["available_node_types"].items():
        fake = config["available_node_types"][name]
        assert fake["resources"] == spec["resources"], name
        if name != head:
            assert fake["min_workers"] == spec["min_workers"] == 0, name  # none at the start
            assert fake["max_workers"] == spec["max_workers"], name
            assert fake.get("priority") == spec.get("priority"), name
    assert config["idle_timeout_minutes"] == 0.25
    assert config["provider"]["gcs_address"] == "127.0.0.1:6379"


def test_ray_accepts_the_fake_config():
    validate_config(prepare_config(autoscaling_config(CLUSTER, 6379, 0.25)))


def test_a_worker_type_without_declared_resources_cannot_be_rehearsed():
    broken = copy.deepcopy(CLUSTER)
    del broken["available_node_types"]["ray.worker.gpu"]["resources"]
    with pytest.raises(FakeClusterError, match=r"available_node_types\.ray\.worker\.gpu: no "
                                               r"`resources` declared"):
        autoscaling_config(broken, 6379, 0.25)


def test_an_unknown_head_type_is_named():
    with pytest.raises(FakeClusterError, match="head_node_type 'nope'"):
        autoscaling_config({**CLUSTER, "head_node_type": "nope"}, 6379, 0.25)


def test_losing_a_node_kills_its_raylet_and_every_process_it_started(tmp_path):
    # A stand-in raylet (its socket on its command line) whose child renames itself, as
    # Ray's workers do (ray::Trainable.train): found by parentage, not by command line.
    socket = str(tmp_path / "sockets" / "raylet.7")
    raylet = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(["
         "sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)",
         f"--raylet_socket_name={socket}"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.time() + 10
        while not (children := descendants({raylet.pid})) and time.time() < deadline:
            time.sleep(0.05)
        assert len(children) == 1
        killed = kill_node(socket)
        assert sorted(killed) == sorted([raylet.pid, *children])
        assert raylet.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None  # another node's process lives on
    finally:
        for p in (raylet, bystander):
            p.kill()
            p.wait()
