"""cluster.yaml rehearsed on this machine: Ray's own autoscaler, with cluster.yaml's node
types as fake nodes, adds GPU workers for a study's fractional-GPU trials, which run there
packed as asked, survive the loss of a worker, and leave no idle worker behind."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.tools.rehearsal import LiveTimeline, Observer, main, max_packing, monitor_events
from tests.study.helpers import REPO, assert_each_trial_once, trial_dirs

# Lines as Ray 2.60's autoscaler v2 writes them to monitor.log (from a rehearsal).
MONITOR_LOG = """\
2026-11-27 17:03:28,026	INFO event_logger.py:77 -- Adding 1 node(s) of type ray.worker.gpu.spot.
2026-11-27 17:03:28,028	INFO node_provider.py:485 -- Launching 1 nodes of type ray.worker.gpu.spot.
2026-11-27 17:03:32,395	INFO instance_manager.py:263 -- Update instance ALLOCATED->RAY_RUNNING \
(id=7feb, type=ray.worker.gpu.spot, cloud_instance_id=fff00001, ray_id=): ray node fff00001 \
is RUNNING
2026-11-27 17:03:50,630	INFO node_provider.py:211 -- NodeProvider: fff00001: Terminating node
"""


def test_the_autoscalers_requests_launches_and_terminations_are_read_from_its_log(tmp_path):
    log = tmp_path / "monitor.log"
    log.write_text(MONITOR_LOG)
    events = monitor_events(log)
    assert [(e["event"], e.get("type"), e.get("node_id")) for e in events] == [
        ("requested", "ray.worker.gpu.spot", None),
        ("running", "ray.worker.gpu.spot", "fff00001"),
        ("terminating", None, "fff00001")]
    assert events[-1]["time"] - events[0]["time"] == pytest.approx(22.604)
    assert monitor_events(tmp_path / "missing.log") == []


@pytest.mark.parametrize("argv, message", [
    (["--cluster-yaml", "missing.yaml"], "--cluster-yaml missing.yaml: cannot read it"),
    (["--", "--num-samples", "0"], "--num-samples: must be >= 1"),
    (["--", "--space", "nope"], "nope"),
    (["--out", "/proc/rehearsal"], "--out: cannot write to /proc/rehearsal"),
])
def test_bad_input_is_refused_before_any_ray_process_starts(tmp_path, capsys, argv, message):
    out = ["--out", str(tmp_path / "r")] if "--out" not in argv else []
    assert main([*out, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "head.log").exists()


def attempt(node, gpus, start, end):
    return {"node_id": node, "gpu_ids": gpus, "started": start, "last_report": end}


def test_packing_counts_trials_sharing_a_gpu_at_the_same_time():
    attempts = [attempt("n1", ["0"], 0, 10), attempt("n1", ["0"], 5, 15),
                attempt("n1", ["0"], 10, 20),  # starts as the first ends: never three at once
                attempt("n2", ["0"], 0, 10), attempt("n2", ["1"], 0, 10)]
    assert max_packing(attempts) == {"n1/gpu0": 2, "n2/gpu0": 1, "n2/gpu1": 1}


def test_the_live_timeline_shows_each_event_once_when_first_seen(tmp_path):
    obs = Observer(gcs=None, study_path=str(tmp_path), t0=100.0)
    shown = []
    live = LiveTimeline(shown.append)
    obs.nodes["n00001"] = {"head": False, "joined": 101.0, "resources": {}}
    live.update(obs, tmp_path / "monitor.log")
    obs.attempts["t@103"] = {**attempt("n00001", ["0"], 103.0, 104.0), "trial_id": "t",
                             "resumed_from_step": 0}
    live.update(obs, tmp_path / "monitor.log")
    obs.attempts["t@103"]["last_report"] = 109.0  # moves with every report: not shown
    live.update(obs, tmp_path / "monitor.log", study_end=110.0, rc=0)
    assert shown == ["     1.0 s  worker 00001 (worker) joined",
                     "     3.0 s  trial t started on worker 00001 gpu 0",
                     "    10.0 s  study driver exited (0)"]


@pytest.mark.ray
def test_a_study_on_cluster_yamls_autoscaling_cluster_scales_up_packs_survives_and_scales_down(
        tmp_path):
    out = tmp_path / "rehearsal"
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.tools.rehearsal",
         "--cluster-yaml", str(REPO / "cluster.yaml"),
         "--out", str(out), "--lose-worker", "--idle-timeout-minutes", "0.1", "--timeout", "400",
         "--", "--num-samples", "2", "--steps-per-trial", "60", "--test-freq", "15"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    arrived = [(time.monotonic(), line) for line in proc.stdout]  # the timeline, as it comes
    proc.wait(timeout=600)
    stdout = "".join(line for _, line in arrived)
    print(stdout)
    record = json.loads((out / "rehearsal.json").read_text())
    assert proc.returncode == 0, stdout
    assert all(record["checks"].values()), record["checks"]
    # Printed as it happened: the first trial's start long before the driver's exit.
    when = lambda words: next(t for t, line in arrived if words in line)  # noqa: E731
    assert when("started on worker") < when("study driver exited") - 5, stdout

    # Half a GPU and two CPUs per trial, as the cifar100 space asks; the nodes are
    # cluster.yaml's GPU workers (4 CPUs, 1 GPU): two trials per node, sharing its GPU.
    # Two trials, on one worker's GPU together: the first worker's, or the replacement's
    # where Ray was slow to start the second trial beside the first.
    assert record["per_trial"] == {"cpu": 2, "gpu": 0.5}
    assert max(record["packing"].values()) == 2
    workers = record["workers"].values()
    assert all(w["resources"]["GPU"] == 1 and w["resources"]["CPU"] == 4 for w in workers)
    # Ray hands each trial its GPU id (the same for two trials sharing one); without CUDA
    # the fake GPU is a resource only, and the trainer stays on the CPU.
    assert all(a["gpu_ids"] == ["0"] and a["cuda_visible_devices"] == "0"
               and a["device"] == "cpu" for a in record["attempts"])
    # The spot type has the higher priority: the autoscaler launched only spot workers,
    # the replacement of the lost one included.
    launched = [row["what"] for row in record["timeline"] if "requested" in row["what"]]
    assert launched and all(w.endswith("ray.worker.gpu.spot") for w in launched), launched

    # Every trial accounted for once (as tests/study/test_reliability.py checks after its
    # faults); those on the lost worker ran again on another, from their checkpoints where
    # they had one (the worker is lost once one of them has).
    study = Path(record["study"])
    summary = assert_each_trial_once(study, 2, [15, 30, 45, 60])
    assert summary["num_errored"] == 0
    lost = record["lost_worker"]
    # Lost with its trials (both, where Ray started the second before the first had two
    # checkpoints), their worker processes too: not only its raylet.
    ids = {Path(d).name.split("_")[2] for d in trial_dirs(study)}
    assert len(ids) == 2 and lost["trials"] and set(lost["trials"]) <= ids
    assert lost["pids"] >= 3
    assert lost["checkpointed"]
    for trial in lost["trials"]:
        retries = [a for a in record["attempts"]
                   if a["trial_id"] == trial and a["started"] > lost["time"]]
        assert all(a["node_id"] != lost["node_id"] for a in retries)
        if trial in lost["checkpointed"]:
            assert any(a["resumed_from_step"] >= 15 for a in retries), trial
        else:
            assert retries and retries[0]["resumed_from_step"] == 0, trial

    # The timeline is in order: a worker requested, then joined, before the first trial
    # started; every worker left after the study ended.
    rows = record["timeline"]
    first = lambda words: min(r["t"] for r in rows if words in r["what"])  # noqa: E731
    assert first("requested") <= first("joined") <= first("started on")
    ended = first("study driver exited")
    left = [r for r in rows if r["what"].endswith("left (AUTOSCALER_DRAIN_IDLE)")]
    assert left and all(r["t"] >= ended for r in left)
