"""Rehearse cluster.yaml on this machine before paying for it.

A fake autoscaling cluster with cluster.yaml's own node types (study/tools/fake_cluster.py)
starts with no workers; a study with fractional-GPU trials runs on it; optionally one worker
is lost mid-study, as a reclaimed spot instance is. The rehearsal records when workers were
requested, joined and removed, and where and when each trial ran, then checks that the
autoscaler added GPU workers, the trials ran there packed as asked, the study completed,
a lost worker's trials resumed from their checkpoints, and idle workers were removed.

    python -m study.tools.rehearsal --lose-worker                 # cluster.yaml, 4 digits trials
    python -m study.tools.rehearsal --out DIR -- --num-samples 8  # study options after --

The trials train the digits set on CPU: the fake GPUs are only resources to schedule.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from study import layout, storage
from study.cli import build_parser, options_from_args
from study.errors import StudyError
from study.spaces import SpaceError, load_space
from study.tools import fake_cluster
from trainer import rundir
from trainer.rundir import check_writable, write_json

RUN_PY = Path(__file__).parents[1] / "run.py"  # study/run.py
# cluster.yaml's trials are CIFAR trials: their packing (GPU share, CPUs) is the one to
# rehearse; the digits data keeps each trial to seconds on a CPU.
PACKING_OF = "cifar100"
MONITOR_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+\w+\s+\S+ -- (.*)$")


def study_args(extra: list[str], name: str, storage: str, address: str | None) -> list[str]:
    """The rehearsal's study: the digits space with the packing of PACKING_OF's trials, every
    trial to full length (FIFO), retried after a lost node, no race (what it rehearses is
    the cluster); `extra` overrides any of it."""
    packing = load_space(PACKING_OF)
    return ["--space", "digits", "--num-samples", "4", "--scheduler", "fifo",
            "--race-finalists", "0",
            "--gpus-per-trial", f"{packing.gpus_per_trial:g}",
            "--cpus-per-trial", f"{packing.cpus_per_trial:g}",
            "--steps-per-trial", "100", "--test-freq", "25", "--max-failures", "3",
            # trials of seconds: a checkpoint at every evaluation, so that a lost node's
            # trials resume mid-way, as long trials do on a real cluster
            "--checkpoint-every", "0", *extra, "--name", name, "--storage-path", storage,
            *(["--address", address] if address else []), "--verbose", "0"]


@dataclass
class Observer:
    """What the rehearsal saw: the GCS's node table (when each node joined and left) and the
    trials' placement.json (where and when each attempt ran), polled."""

    gcs: Any  # ray._raylet.GcsClient: reads the node table without joining as a driver
    study_path: str
    t0: float = field(default_factory=time.time)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial@started -> placement
    killed: dict[str, Any] | None = None

    def poll(self) -> None:
        for node_id, info in self.gcs.get_all_node_info().items():
            resources = dict(info.resources_total)
            self.nodes[node_id.hex()] = {
                "socket": info.raylet_socket_name, "resources": resources,
                "head": "node:__internal_head__" in resources,
                "joined": info.start_time_ms / 1000}
            if info.end_time_ms:
                death = info.death_info
                self.nodes[node_id.hex()].update(
                    left=info.end_time_ms / 1000,
                    death=type(death).Reason.Name(death.reason), death_message=death.reason_message)
        for path in glob.glob(os.path.join(self.study_path, layout.TRIAL_GLOB, rundir.RUN_DIR,
                                           rundir.PLACEMENT)):
            try:
                with open(path) as f:
                    p = json.load(f)
            except (OSError, ValueError):
                continue
            p["trial_dir"] = str(Path(path).parents[1])
            self.attempts[f"{p['trial_id']}@{p['started']}"] = p

    def workers(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.nodes.items() if not v["head"]}

    def lose_a_worker(self) -> bool:
        """Kill a worker once it runs all the trials it can hold (or all the study's), one of
        them with a checkpoint and none finished: its loss then tests packing, resumption
        from a checkpoint and a restart from scratch at once. A worker Ray never fills goes
        once a trial on it has its second checkpoint. True once done."""
        if self.killed:
            return True
        try:  # written by the driver as the study starts
            study = storage.get_json(os.path.join(self.study_path, layout.STUDY_FILE))
        except (OSError, ValueError):
            return False
        per_trial, num_samples = study["resources"], study["options"]["num_samples"]
        for node_id, node in self.workers().items():
            if "left" in node:
                continue
            res = node["resources"]
            holds = min(int(res.get("CPU", 0) // per_trial["cpu"]) if per_trial["cpu"] else 99,
                        int(res.get("GPU", 0) // per_trial["gpu"]) if per_trial["gpu"] else 99)
            trials = {a["trial_id"]: a["trial_dir"] for a in self.attempts.values()
                      if a["node_id"] == node_id}
            if not trials or any(os.path.exists(os.path.join(d, rundir.RUN_DIR, rundir.SUMMARY))
                                 for d in trials.values()):
                continue
            checkpoints = {t: len(glob.glob(f"{d}/checkpoint_*")) for t, d in trials.items()}
            full = len(trials) >= min(holds, num_samples)
            if not (full and max(checkpoints.values()) >= 1 or max(checkpoints.values()) >= 2):
                continue
            when = time.time()
            pids = fake_cluster.kill_node(node["socket"])
            self.killed = {"node_id": node_id, "time": when, "trials": sorted(trials),
                           "checkpointed": sorted(t for t, n in checkpoints.items() if n),
                           "pids": len(pids)}
            return True
        return False


def monitor_events(log: Path) -> list[dict[str, Any]]:
    """The autoscaler's launches and terminations, and each node's type, from its log."""
    events = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return events
    for line in lines:
        m = MONITOR_LINE.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        text = m.group(2)
        if a := re.match(r"Adding (\d+) node\(s\) of type (\S+?)\.?$", text):
            events.append({"time": t, "event": "requested", "count": int(a.group(1)),
                           "type": a.group(2)})
        elif r := re.search(r"type=([^,]+), cloud_instance_id=(\w+).*ray node \w+ is RUNNING",
                            text):
            events.append({"time": t, "event": "running", "type": r.group(1),
                           "node_id": r.group(2)})
        elif d := re.search(r"NodeProvider: (\w+): Terminating node", text):
            events.append({"time": t, "event": "terminating", "node_id": d.group(1)})
    return events


def max_packing(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """Per node and GPU id, the most trials that ran on it at once."""
    spans: dict[str, list[tuple[float, int]]] = {}
    for a in attempts:
        end = a.get("last_report", a["started"])
        for gpu in a["gpu_ids"]:
            key = f"{a['node_id'][-5:]}/gpu{gpu}"
            spans.setdefault(key, []).extend([(a["started"], 1), (end, -1)])
    most = {}
    for key, edges in spans.items():
        level = peak = 0
        for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start
            level += step
            peak = max(peak, level)
        most[key] = peak
    return most


def judge(obs: Observer, rc: int, per_trial: dict[str, float],
          lose_worker: bool) -> dict[str, bool]:
    """The rehearsal's checks, each True when what was seen shows it."""
    workers = obs.workers()
    attempts = list(obs.attempts.values())
    checks = {
        "started without workers": not any(w["joined"] < obs.t0 for w in workers.values()),
        "autoscaler added GPU workers": any(w["resources"].get("GPU", 0) > 0
                                            for w in workers.values()),
        "trials ran on GPU workers": bool(attempts) and all(
            a["node_id"] in workers and a["gpu_ids"] for a in attempts),
    }
    summary_path = Path(obs.study_path, layout.SUMMARY_FILE)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    checks["study completed"] = rc == 0 and bool(summary) and (
        summary["num_completed"] == summary["num_trials"] > 0)
    gpu = per_trial.get("gpu", 0)
    if 0 < gpu < 1:
        per_gpu = int(round(1 / gpu))
        peaks = max_packing(attempts).values()
        checks[f"packed as asked ({per_gpu} per GPU, never more)"] = (
            max(peaks, default=0) == per_gpu or len(obs.attempts) < per_gpu) and all(
            p <= per_gpu for p in peaks)
    if lose_worker:
        # Each lost trial runs again on another node: from its checkpoint where it had one.
        ok = obs.killed is not None
        for trial in (obs.killed or {}).get("trials", []):
            resumed = trial in obs.killed["checkpointed"]
            ok = ok and any(a["node_id"] != obs.killed["node_id"]
                            and (a["resumed_from_step"] > 0) == resumed
                            for a in attempts if a["trial_id"] == trial
                            and a["started"] > obs.killed["time"])
        checks["lost worker's trials resumed elsewhere from a checkpoint"] = ok
    # Removed by the autoscaler as idle (the GCS's reason for the node's end), the lost
    # worker aside.
    lost = (obs.killed or {}).get("node_id")
    checks["idle workers removed"] = bool(workers) and all(
        w.get("death") == "AUTOSCALER_DRAIN_IDLE" for k, w in workers.items() if k != lost)
    return checks


def timeline(obs: Observer, events: list[dict[str, Any]], study_end: float | None = None,
             rc: int | None = None) -> list[dict[str, Any]]:
    """Every event, in time order, in seconds from the study's start (so far, while the
    study runs: no study_end)."""
    types = {e["node_id"]: e["type"] for e in events if e["event"] == "running"}
    rows = [{"time": e["time"], "what": f"autoscaler requested {e['count']} x {e['type']}"}
            for e in events if e["event"] == "requested"]
    rows += [{"time": e["time"], "what": f"autoscaler terminating worker {e['node_id'][-5:]}"}
             for e in events if e["event"] == "terminating"]
    for node_id, n in obs.workers().items():
        kind = types.get(node_id, "worker")
        rows.append({"time": n["joined"], "what": f"worker {node_id[-5:]} ({kind}) joined"})
        if "left" in n:
            rows.append({"time": n["left"],
                         "what": f"worker {node_id[-5:]} left ({n['death']})"})
    for a in obs.attempts.values():
        where = f"worker {a['node_id'][-5:]} gpu {','.join(a['gpu_ids']) or '-'}"
        resumed = f", resumed from step {a['resumed_from_step']}" if a["resumed_from_step"] else ""
        rows.append({"time": a["started"],
                     "what": f"trial {a['trial_id']} started on {where}{resumed}"})
        if "last_report" in a:
            rows.append({"time": a["last_report"],
                         "what": f"trial {a['trial_id']} last report on {where}"})
    if obs.killed:
        rows.append({"time": obs.killed["time"], "what": f"worker {obs.killed['node_id'][-5:]} "
                     "lost: its raylet killed (SIGKILL), as a reclaimed spot instance"})
    if study_end is not None:
        rows.append({"time": study_end, "what": f"study driver exited ({rc})"})
    rows.sort(key=lambda r: r["time"])
    return [{"t": round(r["time"] - obs.t0, 1), "what": r["what"]} for r in rows]


class LiveTimeline:
    """Prints each event of the timeline once, as it is seen (a trial's "last report" moves
    with every report: that one is left to the record)."""

    def __init__(self, show: Callable[[str], None] | None):
        self.show, self.shown = show, set()

    def update(self, obs: Observer, monitor_log: Path, study_end: float | None = None,
               rc: int | None = None) -> None:
        if self.show is None:
            return
        events = monitor_events(monitor_log) if monitor_log.exists() else []
        for row in timeline(obs, events, study_end, rc):
            # a worker's type, in brackets, may be learnt after it joined: one line for it
            key = (row["t"], row["what"].split(" (")[0])
            if "last report" not in row["what"] and key not in self.shown:
                self.shown.add(key)
                self.show(f"{row['t']:8.1f} s  {row['what']}")


def rehearse(cluster_yaml: str, out: str, extra: list[str], idle_timeout_minutes: float,
             lose_worker: bool, timeout: float,
             show: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the rehearsal, passing each event to `show` as it happens; its record (checks,
    timeline, what ran) is also out/rehearsal.json."""
    cluster = fake_cluster.load_cluster_yaml(cluster_yaml)
    os.makedirs(out, exist_ok=True)
    name = "rehearsal-" + time.strftime("%Y%m%d-%H%M%S")
    storage = os.path.abspath(os.path.join(out, "studies"))
    fake = fake_cluster.start(cluster, out, idle_timeout_minutes)
    try:
        # Ray reads the token settings when imported: set them first.
        os.environ.update({k: fake.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
        from ray._raylet import GcsClient

        obs = Observer(GcsClient(address=fake.address), os.path.join(storage, name))
        obs.poll()
        live = LiveTimeline(show)
        args = study_args(extra, name, storage, fake.address)
        with open(os.path.join(out, "study.log"), "w") as log:
            proc = subprocess.Popen([sys.executable, str(RUN_PY), *args], stdout=log,
                                    stderr=subprocess.STDOUT, env=fake.env,
                                    start_new_session=True)
            try:
                deadline = time.time() + timeout
                while proc.poll() is None and time.time() < deadline:
                    obs.poll()
                    if lose_worker:
                        obs.lose_a_worker()
                    live.update(obs, fake.monitor_log)
                    time.sleep(0.5)
            finally:  # timed out or interrupted: the driver goes too
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        study_end = time.time()
        # Idle workers go after the idle timeout; a few autoscaler rounds on top of it.
        deadline = study_end + idle_timeout_minutes * 60 + 120
        while time.time() < deadline:
            obs.poll()
            live.update(obs, fake.monitor_log, study_end, rc)
            if all("left" in w for w in obs.workers().values()):
                break
            time.sleep(1)
    finally:
        if fake.monitor_log.exists():  # the temp folder goes with the cluster
            shutil.copy(fake.monitor_log, os.path.join(out, "monitor.log"))
        fake.stop()
    study_json = Path(obs.study_path, layout.STUDY_FILE)
    per_trial = json.loads(study_json.read_text())["resources"] if study_json.exists() else {}
    events = monitor_events(Path(out, "monitor.log"))
    record = {
        "cluster_yaml": os.path.abspath(cluster_yaml), "autoscaling_config": fake.config_path,
        "idle_timeout_minutes": idle_timeout_minutes, "study": obs.study_path,
        "study_args": args, "study_rc": rc, "per_trial": per_trial,
        "checks": judge(obs, rc, per_trial, lose_worker),
        "timeline": timeline(obs, events, study_end, rc),
        "workers": obs.workers(), "attempts": list(obs.attempts.values()),
        "lost_worker": obs.killed, "packing": max_packing(list(obs.attempts.values())),
    }
    write_json(os.path.join(out, "rehearsal.json"), record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.tools.rehearsal", description=__doc__.split("\n\n")[0],
        epilog="Options after -- go to study/run.py and override the rehearsal's study.")
    parser.add_argument("--cluster-yaml", default="cluster.yaml")
    parser.add_argument("--out", default="rehearsal", help="folder for the record and logs")
    parser.add_argument("--idle-timeout-minutes", type=float, default=0.25,
                        help="replaces the config's (10 min on cluster.yaml) so that the "
                             "removal of idle workers is seen in seconds")
    parser.add_argument("--lose-worker", action="store_true",
                        help="kill one worker, as a spot reclaim would, once it is full of "
                             "trials and one has a checkpoint")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the study")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not 0 < args.idle_timeout_minutes <= 30:
        parser.error("--idle-timeout-minutes must be in (0, 30]")
    try:
        check_writable(args.out, "--out")
        # The study's options, checked as study/run.py checks them, before any Ray starts.
        probe = study_args(extra, "rehearsal-check", os.path.join(args.out, "studies"), None)
        # (resources are the fake cluster's, checked by the driver once it has joined it)
        probe += ["--num-cpus", "1024", "--num-gpus", "1024"]
        options_from_args(build_parser().parse_args(probe))
        print("rehearsal: starting the cluster of", args.cluster_yaml, "on this machine; "
              "events as they happen, in seconds from the start", flush=True)
        record = rehearse(args.cluster_yaml, args.out, extra, args.idle_timeout_minutes,
                          args.lose_worker, args.timeout,
                          show=lambda line: print(line, flush=True))
    except (fake_cluster.FakeClusterError, StudyError, SpaceError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nthe whole timeline, in time order: {os.path.join(args.out, 'rehearsal.json')}\n")
    if record["study_rc"]:
        log = Path(args.out, "study.log").read_text(errors="replace").splitlines()
        print("the study failed; the end of its log (study.log):", *log[-15:], "", sep="\n")
    for check, ok in record["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {check}")
    print(f"\nrecord: {os.path.join(args.out, 'rehearsal.json')}")
    return 0 if all(record["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
