"""The driver plans trials from the nodes a cluster has or can add: GPU workers that its
autoscaler would launch count before any of them runs."""

from pathlib import Path

import pytest
import yaml

from study.capacity import Capacity, NodeType, find_autoscaling_config, launchable_types
from study.driver import StudyError, StudyOptions, plan_resources
from study.spaces import load_space

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
HEAD_ONLY = [{"CPU": 0.0}]  # cluster.yaml's head, the only node alive at the start


def test_launchable_types_are_cluster_yamls_workers_with_their_declared_resources():
    types, undeclared = launchable_types(CLUSTER)
    assert undeclared == []
    declared = {name: spec["resources"] for name, spec in CLUSTER["available_node_types"].items()
                if name != CLUSTER["head_node_type"]}
    assert {t.name: t.resources for t in types} == declared
    assert all(t.max_workers == CLUSTER["available_node_types"][t.name]["max_workers"]
               for t in types)


def test_no_type_is_launchable_when_the_cluster_caps_workers_at_zero():
    assert launchable_types({**CLUSTER, "max_workers": 0}) == ([], [])
    one_type_off = {**CLUSTER, "available_node_types": {
        **CLUSTER["available_node_types"],
        "ray.worker.gpu": {**CLUSTER["available_node_types"]["ray.worker.gpu"],
                           "max_workers": 0}}}
    assert "ray.worker.gpu" not in {t.name for t in launchable_types(one_type_off)[0]}


def test_a_type_without_declared_resources_is_named_as_unknown():
    spec = {k: v for k, v in CLUSTER["available_node_types"]["ray.worker.gpu"].items()
            if k != "resources"}
    config = {**CLUSTER, "available_node_types": {**CLUSTER["available_node_types"],
                                                  "ray.worker.gpu": spec}}
    types, undeclared = launchable_types(config)
    assert undeclared == ["ray.worker.gpu"]
    assert [t.name for t in types] == ["ray.worker.gpu.spot"]


def fake_proc(root: Path, pid: int, args: list[str], cwd: Path | None = None) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes("\0".join(args).encode() + b"\0")
    if cwd:
        (d / "cwd").symlink_to(cwd)


def monitor(gcs: str, config: str) -> list[str]:
    return ["/venv/bin/python3", "-u", "/venv/lib/ray/autoscaler/v2/monitor.py",
            "--logs-dir=/tmp/ray/logs", f"--gcs-address={gcs}", f"--autoscaling-config={config}",
            "--monitor-ip=10.0.0.1"]


def test_the_autoscaling_config_is_the_one_of_the_monitor_serving_this_cluster(tmp_path):
    proc = tmp_path / "proc"
    fake_proc(proc, 10, ["/usr/bin/python3", "train.py", "--gcs-address=10.0.0.1:6379"])
    fake_proc(proc, 9, ["/venv/bin/python3", "-u", "/venv/lib/ray/_private/log_monitor.py",
                        "--gcs-address=10.0.0.1:6379"])  # serves the cluster, has no config
    fake_proc(proc, 11, monitor("10.0.0.9:6379", "/other.yaml"))
    fake_proc(proc, 12, monitor("10.0.0.1:6379", "~/ray_bootstrap_config.yaml"))
    fake_proc(proc, 13, monitor("10.0.0.2:6379", "conf/fake.yaml"), cwd=tmp_path / "work")
    assert find_autoscaling_config("10.0.0.1:6379", str(proc)) == str(
        Path.home() / "ray_bootstrap_config.yaml")
    assert find_autoscaling_config("10.0.0.9:6379", str(proc)) == "/other.yaml"
    # a relative path is the monitor's own, from the folder it was started in
    assert find_autoscaling_config("10.0.0.2:6379", str(proc)) == str(
        tmp_path / "work" / "conf" / "fake.yaml")
    assert find_autoscaling_config("10.0.0.3:7000", str(proc)) is None
    # the same GCS reached through loopback: its port names it
    fake_proc(proc, 14, monitor("10.0.0.5:7001", "/five.yaml"))
    assert find_autoscaling_config("127.0.0.1:7001", str(proc)) == "/five.yaml"


def opts(**kw) -> StudyOptions:
    return StudyOptions(space="cifar100", name="s", address="auto", **kw)


def cluster_yaml_capacity(alive=HEAD_ONLY) -> Capacity:
    return Capacity(alive, launchable_types(CLUSTER)[0], "/home/ubuntu/ray_bootstrap_config.yaml")


def test_gpu_trials_are_planned_with_no_gpu_worker_alive_yet():
    space = load_space("cifar100")
    assert plan_resources(opts(), space, cluster_yaml_capacity()) == {
        "cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial}
    # from the nodes alive alone, the same cluster gets CPU trials that nothing can run
    with pytest.raises(StudyError, match="no node"):
        plan_resources(opts(), space, Capacity(HEAD_ONLY))


def test_without_gpus_anywhere_trials_are_cpu_only():
    laptop = Capacity([{"CPU": 8.0}])
    assert plan_resources(opts(), load_space("cifar100"), laptop) == {"cpu": 2, "gpu": 0.0}


def test_a_trial_larger_than_any_launchable_node_is_refused_with_the_largest():
    space = load_space("cifar100")
    with pytest.raises(StudyError, match=r"--gpus-per-trial: 2\.0 GPUs .* more than 1"):
        plan_resources(opts(gpus_per_trial=2.0), space, cluster_yaml_capacity())
    with pytest.raises(StudyError, match=r"--cpus-per-trial: 6\.0 CPUs .*with 0\.5 GPUs has "
                                         r"more than 4"):
        plan_resources(opts(cpus_per_trial=6.0), space,
                       cluster_yaml_capacity(alive=[{"CPU": 16.0}]))  # a big CPU-only head


def test_the_cpu_default_is_trimmed_to_the_nodes_that_have_the_gpus():
    space = load_space("cifar100")
    small_gpu = Capacity([{"CPU": 16.0}], [NodeType("g", {"CPU": 1.0, "GPU": 1.0}, 2)], "x")
    assert plan_resources(opts(), space, small_gpu) == {"cpu": 1.0, "gpu": space.gpus_per_trial}


def test_the_refusal_says_why_the_autoscalers_nodes_were_not_seen():
    space = load_space("cifar100")
    with pytest.raises(StudyError, match="run the driver on the head"):
        plan_resources(opts(gpus_per_trial=0.5), space, Capacity(HEAD_ONLY))
    with pytest.raises(StudyError, match="ray.worker.gpu declare no resources"):
        plan_resources(opts(gpus_per_trial=0.5), space,
                       Capacity(HEAD_ONLY, [], "/c.yaml", ["ray.worker.gpu"]))
