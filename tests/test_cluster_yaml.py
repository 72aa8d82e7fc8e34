"""cluster.yaml, checked offline with the Ray cluster launcher's own code: no cloud is contacted.

`ray up` loads the YAML, fills in the provider's defaults (`prepare_config`) and checks the
result against ray/autoscaler/ray-schema.json plus a few rules of its own (`validate_config`)
before it asks AWS for anything; the tests run those same two functions.
"""

from __future__ import annotations

import ast
import copy
import functools
import itertools
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAY_AWS_CONFIG = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
HEAD = "ray.head.default"
GROUP_ID = "sg-0123456789abcdef0"  # stands for the group Ray creates from provider.security_group
RAY_PORTS = {6379: "GCS", 8076: "object manager", 8265: "dashboard and job API",
             10001: "Ray Client server"}


@pytest.fixture(scope="module")
def loaded() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def config(loaded) -> dict:
    return copy.deepcopy(loaded)


@pytest.fixture
def prepared(loaded) -> dict:
    return prepare_config(copy.deepcopy(loaded))


def ray_inbound_rules():
    """Ray's own builder of the AWS security group's inbound rules.

    `ray.autoscaler._private.aws.config._create_default_inbound_rules`; its module imports
    boto3, which the project does not install: then the three functions are taken from Ray's
    source file and run as they are.
    """
    try:
        from ray.autoscaler._private.aws.config import _create_default_inbound_rules
        return _create_default_inbound_rules
    except ImportError:
        pass
    names = {"_create_default_inbound_rules", "_create_default_intracluster_inbound_rules",
             "_create_default_ssh_inbound_rules"}
    tree = ast.parse(RAY_AWS_CONFIG.read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {d.name for d in defs} == names, "Ray's security group code moved; update this test"
    namespace = {"itertools": itertools}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(RAY_AWS_CONFIG), "exec"), namespace)
    return namespace["_create_default_inbound_rules"]


def inbound_rules(config: dict) -> list[dict]:
    """The rules `ray up` gives the group: Ray's defaults plus provider.security_group's own."""
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return ray_inbound_rules()({GROUP_ID}, extra)


def opens(rule: dict, port: int) -> bool:
    if rule["IpProtocol"] in ("-1", -1, "all"):
        return True
    return rule["IpProtocol"] in ("tcp", "6") and rule["FromPort"] <= port <= rule["ToPort"]


def world_open_ports(config: dict) -> set[int]:
    """The ports of 22, Ray's and a few more that the internet can reach through the group."""
    open_ports = set()
    for rule in inbound_rules(config):
        world = ([r.get("CidrIp") for r in rule.get("IpRanges", [])] +
                 [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])])
        if {"0.0.0.0/0", "::/0"} & set(world):
            open_ports |= {p for p in [22, 80, 443, *RAY_PORTS] if opens(rule, p)}
    return open_ports


def ray_start(commands: list[str]) -> list[str]:
    """The arguments of the `ray start` in a list of start commands."""
    starts = [shlex.split(part) for cmd in commands for part in cmd.split(";")
              if part.split()[:2] == ["ray", "start"]]
    assert len(starts) == 1, commands
    return starts[0]


def worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != HEAD}


# --- Ray's validation -----------------------------------------------------------------------

def test_ray_validates_the_config(prepared):
    validate_config(prepared)  # raises on any schema or cross-field error
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert prepared["head_node_type"] == HEAD
    assert set(prepared["available_node_types"]) == {HEAD, "ray.worker.gpu", "ray.worker.gpu.spot"}


def _drop_provider(c):
    del c["provider"]


def _misspell_min_workers(c):
    c["available_node_types"]["ray.worker.gpu"]["min_worker"] = 0


def _gpu_count_as_text(c):
    c["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = "one"


def _drop_node_config(c):
    del c["available_node_types"]["ray.worker.gpu"]["node_config"]


def _min_workers_over_the_cap(c):
    c["available_node_types"]["ray.worker.gpu"]["min_workers"] = c["max_workers"] + 1


def _unknown_head_type(c):
    c["head_node_type"] = "ray.head.gpu"


@pytest.mark.parametrize("break_it,error", [
    (_drop_provider, jsonschema.ValidationError),
    (_misspell_min_workers, jsonschema.ValidationError),
    (_gpu_count_as_text, jsonschema.ValidationError),
    (_drop_node_config, jsonschema.ValidationError),
    (_min_workers_over_the_cap, ValueError),
    (_unknown_head_type, ValueError),
])
def test_ray_validation_rejects_a_broken_config(prepared, break_it, error):
    break_it(prepared)
    with pytest.raises(error):
        validate_config(prepared)


# --- security: nothing but SSH from the internet --------------------------------------------

def test_only_ssh_is_open_to_the_internet(config):
    assert world_open_ports(config) == {22}


def test_cluster_nodes_reach_each_other_on_every_port(config):
    own_group = [r for r in inbound_rules(config)
                 if r.get("UserIdGroupPairs") == [{"GroupId": GROUP_ID}]]
    assert own_group and all(opens(r, p) for r in own_group for p in RAY_PORTS)


def test_every_rule_is_ssh_or_from_the_cluster_itself(config):
    for rule in inbound_rules(config):
        if rule.get("IpRanges") or rule.get("Ipv6Ranges") or rule.get("PrefixListIds"):
            assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
        else:
            assert rule.get("UserIdGroupPairs") == [{"GroupId": GROUP_ID}], rule


def test_the_check_catches_an_opened_ray_port(config):
    config["provider"]["security_group"]["IpPermissions"].append(
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    assert world_open_ports(config) == {22, 8265}


def test_every_node_gets_the_clusters_own_security_group(config):
    sg = config["provider"]["security_group"]
    # Ray reuses an existing group of the default name as it is, whatever it opens.
    assert sg["GroupName"] and sg["GroupName"] != f"ray-autoscaler-{config['cluster_name']}"
    for name, node_type in config["available_node_types"].items():
        # Either key would replace the group built from provider.security_group.
        assert not {"SecurityGroupIds", "NetworkInterfaces"} & set(node_type["node_config"]), name


def test_dashboard_listens_on_the_head_loopback_only(config):
    args = ray_start(config["head_start_ray_commands"])
    assert "--head" in args
    assert "--dashboard-host=127.0.0.1" in args
    assert "0.0.0.0" not in " ".join(config["head_start_ray_commands"])


# --- Ray start commands ----------------------------------------------------------------------

def test_start_commands_are_ray_2_style(config):
    head, worker = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    assert head[0] == "ray stop" and worker[0] == "ray stop"
    head_args = ray_start(head)
    assert "--port=6379" in head_args
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_args
    assert "--address=$RAY_HEAD_IP:6379" in ray_start(worker)


# --- node types ------------------------------------------------------------------------------

def test_gpu_workers_declare_their_gpu_and_start_from_zero(config):
    workers = worker_types(config)
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"]["GPU"] >= 1, name
        assert node_type["resources"]["CPU"] >= 1, name
        assert node_type["min_workers"] == 0, name
        # either type alone can take the whole cap (cluster.yaml: set the other to 0)
        assert node_type["max_workers"] == config["max_workers"] == 8, name
    spot = workers["ray.worker.gpu.spot"]["node_config"]
    assert spot["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in workers["ray.worker.gpu"]["node_config"]


def test_head_is_cpu_only_and_takes_no_trials(config):
    head = config["available_node_types"][HEAD]
    assert head["resources"] == {"CPU": 0}
    assert head["node_config"]["InstanceType"].startswith("m5.")


def test_a_trial_of_every_space_fits_a_gpu_worker(config):
    gpu_nodes = [t["resources"] for t in worker_types(config).values()]
    for space in sorted((ROOT / "study" / "spaces").glob("*.toml")):
        fidelity = tomllib.loads(space.read_text()).get("fidelity", {})
        need_gpu, need_cpu = fidelity.get("gpus_per_trial", 0), fidelity.get("cpus_per_trial", 1)
        assert any(n["GPU"] >= need_gpu and n["CPU"] >= need_cpu for n in gpu_nodes), space.name


def test_autoscaler_serves_gpu_trials_with_spot_workers_first(prepared):
    """Ray's own scheduler: pending half-GPU trials bring up GPU workers, spot type first."""
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary,
    )
    from ray.autoscaler._private.resource_demand_scheduler import (
        _default_utilization_scorer,
        get_nodes_for,
    )

    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary({}))
    trials = [{"CPU": 2, "GPU": 0.5}] * 16
    to_add, left = get_nodes_for(prepared["available_node_types"], {}, HEAD,
                                 prepared["max_workers"], trials, scorer)
    assert not left
    assert to_add == {"ray.worker.gpu.spot": 8}


# --- what the nodes get ----------------------------------------------------------------------

def test_project_is_synced_without_local_clutter(config):
    assert config["file_mounts"] == {"~/metasemi": "."}
    assert {".venv", "runs", "studies", ".git"} <= set(config["rsync_exclude"])
    assert ".gitignore" in config["rsync_filter"]


def test_setup_commands_install_the_project(config):
    setup = config["setup_commands"]
    assert setup[-1] == "pip install -e ~/metasemi"
    activate = next(i for i, c in enumerate(setup) if "source ~/venv/bin/activate" in c)
    assert activate < next(i for i, c in enumerate(setup) if c.startswith("pip install"))
    commands = " ".join(setup + config["head_setup_commands"] + config["worker_setup_commands"])
    assert "torch==" not in commands and "torch>=" not in commands  # torchvision pins torch
    assert "boto3" in " ".join(config["head_setup_commands"])  # the autoscaler needs it


def test_nodes_run_the_installed_ray(config):
    pins = [c for c in config["setup_commands"] if "ray[" in c]
    assert pins == [f'pip install "ray[default,tune]=={ray.__version__}"']


def test_setup_commands_merge_as_ray_runs_them(prepared):
    # prepare_config prepends the common setup commands to the head's and workers' own.
    assert prepared["head_setup_commands"][-1].startswith("pip install \"boto3")
    assert prepared["worker_setup_commands"][-2] == "pip install -e ~/metasemi"
    assert "~/data" in prepared["worker_setup_commands"][-1]


# --- the on-premises variant that cluster.yaml's comment describes -------------------------------

def test_on_premises_variant_validates(config):
    config["provider"] = {"type": "local", "head_ip": "10.0.0.10",
                          "worker_ips": ["10.0.0.11", "10.0.0.12"]}
    config["auth"] = {"ssh_user": "metasemi", "ssh_private_key": "~/.ssh/id_ed25519"}
    for key in ("available_node_types", "head_node_type", "max_workers"):
        del config[key]
    prepared = prepare_config(config)
    validate_config(prepared)
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == 2
    assert "--dashboard-host=127.0.0.1" in ray_start(prepared["head_start_ray_commands"])
