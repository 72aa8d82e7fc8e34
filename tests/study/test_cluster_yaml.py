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
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray._private.authentication.authentication_token_setup import (
    AUTH_MODE_ENV_VAR,
    _get_default_token_path,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.study.helpers import free_port, kill_group

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
CLUSTER_MD = ROOT / "docs" / "cluster.md"
RAY_AWS_CONFIG = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
HEAD = "ray.head.default"
GROUP_ID = "sg-0123456789abcdef0"  # stands for the group Ray creates from provider.security_group
RAY_PORTS = {6379: "GCS", 8076: "object manager", 8265: "dashboard and job API",
             10001: "Ray Client server"}

# Token authentication. Ray's default token path, ~/.ray/auth_token, as the installed Ray
# computes it: where the token goes on every node.
NODE_TOKEN = "~/" + _get_default_token_path().relative_to(Path.home()).as_posix()
# Where docs/cluster.md has the user create the cluster's token on their own machine.
LOCAL_TOKEN = "~/.ray/metasemi_auth_token"
# Read by Ray's C++ token loader (src/ray/rpc/authentication/authentication_token_loader.cc,
# compiled into ray/_raylet.so); no Python constant names it, so the tests below check that
# the installed Ray reads it.
TOKEN_PATH_ENV_VAR = "RAY_AUTH_TOKEN_PATH"


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


ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# `NAME=value ... ray start ...`: the environment a `ray start` runs with, as the shell sees it
RAY_START = re.compile(r"\s*((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)ray\s+start(\s|$)")


def ray_starts(commands: list[str]) -> list[tuple[dict[str, str], list[str], str]]:
    """Every `ray start` in a list of start commands: the variables assigned in front of it,
    its words from `ray` on, and the raw shell text of those assignments."""
    starts = []
    for part in (p for cmd in commands for p in cmd.split(";")):
        words = shlex.split(part)
        n = next((i for i, w in enumerate(words) if not ASSIGNMENT.match(w)), len(words))
        if words[n:n + 2] == ["ray", "start"]:
            match = RAY_START.match(part)
            assert match, part
            starts.append((dict(w.split("=", 1) for w in words[:n]), words[n:], match[1]))
    return starts


def ray_start(commands: list[str]) -> list[str]:
    """The arguments of the `ray start` in a list of start commands."""
    starts = ray_starts(commands)
    assert len(starts) == 1, commands
    return starts[0][1]


def worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != HEAD}


# --- Ray's validation -----------------------------------------------------------------------

def test_ray_validates_the_config(prepared, config):
    validate_config(prepared)  # raises on any schema or cross-field error
    # Ray's own preparation keeps every node type of the file, and their resources.
    assert {k: v.get("resources") for k, v in prepared["available_node_types"].items()} == {
        k: v.get("resources") for k, v in config["available_node_types"].items()}


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
        assert node_type["max_workers"] == config["max_workers"], name
    spot = workers["ray.worker.gpu.spot"]["node_config"]
    assert spot["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in workers["ray.worker.gpu"]["node_config"]


def test_head_is_cpu_only_and_takes_no_trials(config):
    head = config["available_node_types"][HEAD]
    assert head["resources"] == {"CPU": 0}  # nothing to schedule a trial on


def test_a_trial_of_every_space_fits_a_gpu_worker(config):
    gpu_nodes = [t["resources"] for t in worker_types(config).values()]
    for space in sorted((ROOT / "study" / "spaces").glob("*.toml")):
        fidelity = tomllib.loads(space.read_text()).get("fidelity", {})
        need_gpu, need_cpu = fidelity.get("gpus_per_trial", 0), fidelity.get("cpus_per_trial", 1)
        assert any(n["GPU"] >= need_gpu and n["CPU"] >= need_cpu for n in gpu_nodes), space.name


def test_autoscaler_serves_gpu_trials_with_spot_workers_first(prepared):
    """Autoscaler v1's scheduler (RAY_UP_enable_autoscaler_v2=0): pending half-GPU trials
    bring up GPU workers, spot type first. v1 ignores `priority` and takes the type whose
    name sorts last; v2, which `ray up` starts by default, follows the spot type's
    `priority`, and tests/study/tools/test_rehearsal.py runs it."""
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
    assert config["file_mounts"] == {"~/metasemi": ".", NODE_TOKEN: LOCAL_TOKEN}
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
    # token authentication is the same there: the token mount and the start commands stay
    assert prepared["file_mounts"][NODE_TOKEN] == LOCAL_TOKEN
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        ((env, _, _),) = ray_starts(prepared[key])
        assert env[AUTH_MODE_ENV_VAR] == "token"


# --- token authentication ---------------------------------------------------------------------
# Ray 2.60 enables token auth by itself only for a local ray.init(); a `ray up` cluster needs
# the token on every node (file_mounts), RAY_AUTH_MODE=token for every `ray start`, and the
# same on the clients (docs/cluster.md, "Token authentication").

def home_path(path: str, home: Path) -> Path:
    """A `~/...` or `$HOME/...` path of cluster.yaml or the docs, under a given home."""
    for prefix in ("~/", "$HOME/", "${HOME}/"):
        if path.startswith(prefix):
            return home / path[len(prefix):]
    raise AssertionError(f"{path} is not under the home directory")


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash blocks of a Markdown text, list indentation removed."""
    return [textwrap.dedent(m[2]) for m in
            re.finditer(r"^( *)```bash\n(.*?)^\1```", markdown, re.MULTILINE | re.DOTALL)]


def docs_block(needle: str) -> str:
    (block,) = [b for b in bash_blocks(CLUSTER_MD.read_text()) if needle in b]
    return block


def token_exports(block: str) -> list[dict[str, str]]:
    """The variables of each `export` line of a shell block."""
    return [dict(w.split("=", 1) for w in shlex.split(line)[1:])
            for line in block.splitlines() if line.startswith("export ")]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any Ray auth setting, the venv's `ray`/`python` first on PATH,
    and `home` as HOME: a machine of the cluster, or the user's."""
    env = {k: v for k, v in os.environ.items()
           if k not in (AUTH_MODE_ENV_VAR, "RAY_AUTH_TOKEN", TOKEN_PATH_ENV_VAR,
                        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(home)
    return {**env, **extra}


def bash(script: str, home: Path, *args: str, check: bool = True, timeout: float = 60,
         **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "bash", *args], env=clean_env(home, **extra),
                          cwd=home, capture_output=True, text=True, timeout=timeout,
                          check=check)


def make_user_token(home: Path) -> Path:
    """Run the docs' token commands on a 'user machine' whose home is `home`."""
    home.mkdir(parents=True, exist_ok=True)
    bash("set -e\n" + docs_block("secrets.token_hex"), home)
    return home_path(LOCAL_TOKEN, home)


def auth_setup_commands(config: dict) -> list[str]:
    """The setup commands about the token or the auth mode (safe to run in a scratch home)."""
    return [c for c in config["setup_commands"] if ".ray" in c or AUTH_MODE_ENV_VAR in c]


def set_up_node(config: dict, home: Path, token_source: Path) -> Path:
    """A node's home as `ray up` leaves it: the token synced by file_mounts (rsync -a keeps
    the mode), then the auth setup commands."""
    token = home_path(NODE_TOKEN, home)
    token.parent.mkdir(parents=True)  # Ray's updater runs `mkdir -p` of the mount's folder
    subprocess.run(["cp", "-p", str(token_source), str(token)], check=True)
    for cmd in auth_setup_commands(config):
        bash(cmd, home)
    return token


def test_token_is_mounted_on_every_node_from_the_users_file(config):
    # file_mounts apply to every node: `ray up` syncs them to the head, and the head's
    # autoscaler gets them rewritten as head path -> same worker path (Ray's own rewrite).
    from ray.autoscaler._private.commands import _set_up_config_for_head_node
    from ray.autoscaler.node_provider import NodeProvider

    assert config["file_mounts"][NODE_TOKEN] == LOCAL_TOKEN
    assert NODE_TOKEN == "~/.ray/auth_token"
    head_side, bootstrap = _set_up_config_for_head_node(
        prepare_config(config), NodeProvider({}, config["cluster_name"]), no_restart=False)
    bootstrap.close()
    assert head_side["file_mounts"][NODE_TOKEN] == LOCAL_TOKEN
    # the worker side: the config the autoscaler reads on the head (~/ray_bootstrap_config.yaml)
    worker_mounts = {remote: remote for remote in head_side["file_mounts"]
                     if remote != "~/ray_bootstrap_config.yaml"}
    assert worker_mounts[NODE_TOKEN] == NODE_TOKEN
    # outside the project, so never synced (or committed) with it
    assert LOCAL_TOKEN.startswith("~/") and not LOCAL_TOKEN.startswith("~/metasemi")


def test_docs_make_the_token_file_that_is_mounted(config, tmp_path):
    token = make_user_token(tmp_path)
    # what `ray up` reads: Ray's updater expands the local path with os.path.expanduser
    assert home_path(config["file_mounts"][NODE_TOKEN], tmp_path) == token
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text().strip())
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    before = token.read_text()
    make_user_token(tmp_path)  # running them again keeps the token of a running cluster
    assert token.read_text() == before


def test_every_ray_start_enables_token_auth(config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = ray_starts(config[key])
        assert len(starts) == 1, key
        ((env, _, _),) = starts
        assert env[AUTH_MODE_ENV_VAR] == "token", key
        assert home_path(env[TOKEN_PATH_ENV_VAR], Path("/h")) == home_path(NODE_TOKEN, Path("/h"))
        assert "RAY_AUTH_TOKEN" not in env, key  # the token itself never in a command line
        # every start command either starts Ray with auth or only stops it
        assert all(c == "ray stop" or "ray start" in c for c in config[key]), key


def test_ray_reads_the_token_file_the_start_commands_name(config, tmp_path):
    """The installed Ray, run with the head's start environment on a node whose home is
    tmp_path: refuses to go on without the synced file, names it, and reads the token from it."""
    ((_, _, prefix),) = ray_starts(config["head_start_ray_commands"])
    probe = (prefix + "exec python -c 'from ray._raylet import AuthenticationTokenLoader as L; "
             "print(L.instance().get_raw_token())'")
    missing = bash(probe, tmp_path, check=False)
    assert missing.returncode != 0
    assert f"{TOKEN_PATH_ENV_VAR} is set but" in missing.stderr
    assert str(home_path(NODE_TOKEN, tmp_path)) in missing.stderr
    token = set_up_node(config, tmp_path, make_user_token(tmp_path / "laptop"))
    assert bash(probe, tmp_path).stdout.strip() == token.read_text().strip()


def test_node_setup_keeps_the_token_private_and_sets_the_mode_for_every_command(config, tmp_path):
    user_token = make_user_token(tmp_path / "laptop")
    user_token.chmod(0o644)  # even a token made carelessly ends up private on the nodes
    node = tmp_path / "node"
    token = set_up_node(config, node, user_token)
    for cmd in auth_setup_commands(config):  # setup commands run again on every `ray up`
        bash(cmd, node)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    bashrc = (node / ".bashrc").read_text().splitlines()
    assert bashrc.count(f"export {AUTH_MODE_ENV_VAR}=token") == 1
    # Ray's command runner sources ~/.bashrc before each command it runs on a node
    probe = f'source ~/.bashrc; echo "${AUTH_MODE_ENV_VAR}"'
    assert bash(probe, node).stdout.strip() == "token"
    # the setup fails (and with it `ray up`) where the token was not synced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert any(bash(c, empty, check=False).returncode for c in auth_setup_commands(config))


def test_docs_job_commands_authenticate_with_the_clusters_token(config):
    blocks = [b for b in bash_blocks(CLUSTER_MD.read_text()) if re.search(r"^ray job ", b, re.M)]
    assert len(blocks) >= 2  # the token section's check and "Run a study"
    for block in blocks:
        first_job = next(i for i, line in enumerate(block.splitlines())
                         if line.startswith("ray job "))
        exports = token_exports("\n".join(block.splitlines()[:first_job]))
        assert exports, block
        env = exports[-1]
        assert env[AUTH_MODE_ENV_VAR] == "token", block
        assert home_path(env[TOKEN_PATH_ENV_VAR], Path("/h")) == home_path(LOCAL_TOKEN, Path("/h"))
    assert f"Ray {ray.__version__}" in CLUSTER_MD.read_text()  # the version the docs cite


JOB_CLIENT_HEADER = ("from ray._private.authentication.http_token_authentication import "
                     "get_auth_headers_if_auth_enabled as h; print(h({}).get('authorization'))")


def test_job_client_sends_the_token_only_with_the_docs_environment(tmp_path):
    """What `ray job submit` (JobSubmissionClient) adds to each request to the dashboard."""
    token = make_user_token(tmp_path).read_text().strip()
    (export,) = [line for line in docs_block("ray job submit").splitlines()
                 if line.startswith("export ")]
    with_docs = bash(f"{export}\nexec python -c \"{JOB_CLIENT_HEADER}\"", tmp_path)
    assert with_docs.stdout.strip() == f"Bearer {token}"
    without = bash(f"exec python -c \"{JOB_CLIENT_HEADER}\"", tmp_path)
    assert without.stdout.strip() == "None"


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert proc.poll() is None, "ray start exited"
            assert time.time() < deadline, f"nothing listens on port {port}"
            time.sleep(0.2)


DRIVER = """
import sys, time, ray
from ray._raylet import validate_authentication_token
ray.init(address=sys.argv[1], log_to_driver=False)
print("header", validate_authentication_token(sys.argv[2]))  # what the dashboard checks
deadline = time.time() + 30
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
    time.sleep(0.2)
print("nodes", sum(n["Alive"] for n in ray.nodes()))
if sum(n["Alive"] for n in ray.nodes()) == 2:  # the worker joined: run a task there
    print("task", ray.get(ray.remote(lambda: "ran").remote(), timeout=60))  # head: no CPU
"""


@pytest.mark.slow
def test_a_cluster_started_as_configured_refuses_clients_without_the_token(config, tmp_path):
    """A head and a worker on loopback, each a `ray start` with the environment its start
    command sets, on a home set up as `ray up` does (token synced, setup commands run) from
    the token the docs make. A driver in a node's login shell (`ray exec`, `ray submit`)
    connects, runs a task on the worker and accepts the docs' job-client header; clients
    without the token, or with another one, are refused."""
    laptop, head_home, worker_home = tmp_path / "laptop", tmp_path / "head", tmp_path / "worker"
    user_token = make_user_token(laptop)
    head_token = set_up_node(config, head_home, user_token)       # `ray up`
    set_up_node(config, worker_home, head_token)                  # the autoscaler, from the head
    ((_, _, head_env),) = ray_starts(config["head_start_ray_commands"])
    ((_, _, worker_env),) = ray_starts(config["worker_start_ray_commands"])
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = "exec ray start --block --disable-usage-stats --node-ip-address=127.0.0.1 "
    worker_ports = [free_port() for _ in range(6)]
    procs, logs = [], []

    def start(home: Path, script: str, name: str) -> subprocess.Popen:
        logs.append(open(tmp_path / f"{name}.log", "w"))
        proc = subprocess.Popen(["bash", "-c", script], env=clean_env(home), cwd=home,
                                stdout=logs[-1], stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: kill_group ends all
        procs.append(proc)
        return proc

    try:
        head = start(head_home, head_env + common + f"--head --port={port} --num-cpus=0 "
                     "--include-dashboard=false", "head")
        wait_for_port(port, head)
        start(worker_home, worker_env + common + f"--address={address} --num-cpus=1 "
              "--node-manager-port={} --object-manager-port={} --metrics-export-port={} "
              "--runtime-env-agent-port={} --dashboard-agent-grpc-port={} "
              "--dashboard-agent-listen-port={}".format(*worker_ports), "worker")
        (export,) = [line for line in docs_block("ray job submit").splitlines()
                     if line.startswith("export ")]
        header = bash(f"{export}\nexec python -c \"{JOB_CLIENT_HEADER}\"", laptop).stdout.strip()
        driver = subprocess.run(
            ["bash", "-c", 'source ~/.bashrc; exec python -c "$0" "$@"', DRIVER, address, header],
            env=clean_env(head_home), cwd=head_home, capture_output=True, text=True, timeout=120)
        tails = "".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("*.log")))
        assert driver.returncode == 0, driver.stderr[-3000:] + tails
        assert driver.stdout.split("\n")[-4:-1] == ["header True", "nodes 2", "task ran"], tails

        # clients that must be refused: no token (a shell without the settings), another
        # token; one GCS attempt each instead of Ray's 20 one-second retries
        probe = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False)"
        refused = {
            "no token": clean_env(tmp_path / "stranger", RAY_NUM_REDIS_GET_RETRIES="1"),
            "other token": clean_env(tmp_path / "stranger", RAY_NUM_REDIS_GET_RETRIES="1",
                                     **{AUTH_MODE_ENV_VAR: "token", "RAY_AUTH_TOKEN": "0" * 64}),
        }
        (tmp_path / "stranger").mkdir()
        clients = {name: subprocess.Popen([sys.executable, "-c", probe, address], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True)
                   for name, env in refused.items()}
        procs += clients.values()
        for name, client in clients.items():
            _, err = client.communicate(timeout=60)
            assert client.returncode != 0, name
            assert "AuthenticationError" in err and "InvalidAuthToken" in err, (name, err[-2000:])
    finally:
        for proc in procs:
            kill_group(proc)
        for log in logs:
            log.close()
