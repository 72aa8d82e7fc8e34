"""The rehearsal's fake cluster is cluster.yaml's: the same node types, resources and worker
limits, in a config Ray's own validation accepts."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from study.fake_cluster import FakeClusterError, autoscaling_config

ROOT = Path(__file__).resolve().parents[2]
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
