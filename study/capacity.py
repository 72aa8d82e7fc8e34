"""What nodes a Ray cluster has, or can add: the nodes alive, and the node types its
autoscaler may launch.

A `ray up` cluster starts with no workers; its GPU nodes exist only once trials ask for
them. Sizing trials from the nodes alive would then plan CPU-only trials, so the driver
also reads the node types from the autoscaler's configuration: the file the head's
autoscaler (Ray's monitor process) was started with, found on this machine by the GCS
address it serves. The driver of `ray submit` and `ray job submit` runs on the head, where
that process is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from study.procs import command_lines


@dataclass(frozen=True)
class NodeType:
    """A worker type the autoscaler may launch: its declared resources, at most `max_workers`."""

    name: str
    resources: dict[str, float]
    max_workers: int


@dataclass(frozen=True)
class Capacity:
    """The node shapes trials can be placed on, and where they were learned from."""

    alive: list[dict[str, float]]
    types: list[NodeType] = field(default_factory=list)
    config_path: str | None = None
    undeclared: list[str] = field(default_factory=list)  # types whose resources are unknown

    @property
    def shapes(self) -> list[dict[str, float]]:
        return [*self.alive, *(t.resources for t in self.types)]

    def most(self, resource: str) -> float:
        return max((s.get(resource, 0.0) for s in self.shapes), default=0.0)

    def describe(self) -> str:
        if not self.types:
            return f"{len(self.alive)} node(s) alive"
        launchable = ", ".join(f"{t.name} {_fmt(t.resources)} x{t.max_workers}" for t in self.types)
        return f"{len(self.alive)} node(s) alive; the autoscaler can add {launchable}"


def _fmt(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def launchable_types(config: dict[str, Any]) -> tuple[list[NodeType], list[str]]:
    """Worker types an autoscaling config lets the autoscaler launch, and the names of those
    that declare no resources (Ray detects them only once such a node runs)."""
    if not config.get("max_workers", 1):
        return [], []
    head = config.get("head_node_type")
    types, undeclared = [], []
    for name, spec in (config.get("available_node_types") or {}).items():
        count = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if name == head or count <= 0:
            continue
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        if "CPU" not in resources and "GPU" not in resources:
            undeclared.append(name)
            continue
        types.append(NodeType(name, resources, count))
    return types, undeclared


def _flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def find_autoscaling_config(gcs_address: str, proc: str = "/proc") -> str | None:
    """The autoscaling config file of the autoscaler serving `gcs_address` on this machine,
    or None (no autoscaler here: a driver off the head, a cluster without one, not Linux).
    The GCS's port decides where the host differs (127.0.0.1 against the node's own IP):
    two clusters on one machine cannot share a port."""
    port = gcs_address.rpartition(":")[2]
    found: dict[bool, str] = {}  # exact address match -> config path
    for pid, args in command_lines(proc):
        if not any(os.path.basename(a) == "monitor.py" for a in args[:3]):  # not log_monitor.py
            continue
        served, path = _flag(args, "gcs-address"), _flag(args, "autoscaling-config")
        if not served or not path or served.rpartition(":")[2] != port:
            continue
        path = os.path.expanduser(path)
        if not os.path.isabs(path):  # relative to where the monitor was started
            try:
                path = os.path.join(os.readlink(f"{proc}/{pid}/cwd"), path)
            except OSError:
                continue
        found.setdefault(served == gcs_address, path)
    return found.get(True, found.get(False))


def local_capacity(num_cpus: int | None = None, num_gpus: float | None = None) -> Capacity:
    """What a local Ray instance will have: the given counts, else this machine's CPUs and
    the GPUs torch sees (CUDA_VISIBLE_DEVICES respected), known before Ray starts."""
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count()
    return Capacity([{"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(num_gpus)}])


def read_capacity() -> Capacity:
    """The connected cluster's capacity: nodes alive plus, where this machine runs its
    autoscaler, the node types the autoscaler may add."""
    import ray

    alive = [{k: float(v) for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
             for n in ray.nodes() if n.get("Alive")]
    path = find_autoscaling_config(ray.get_runtime_context().gcs_address)
    if path is None:
        return Capacity(alive)
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return Capacity(alive)
    types, undeclared = launchable_types(config)
    return Capacity(alive, types, path, undeclared)
