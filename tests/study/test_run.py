"""`python study/run.py` end to end on a real local Ray instance (started by each command)."""

import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from tests.study.faults import fault_env
from tests.study.helpers import REPO, reported_steps, trial_dirs
from trainer.own_data import fingerprint


def test_a_digits_study_searches_stops_poor_trials_early_and_summarises(study):
    rc, out = study.run("--space", "digits", "--name", "s", "--num-samples", "6",
                        "--max-concurrent", "2", "--steps-per-trial", "200", "--seed", "1",
                        "--verbose", "1")
    assert rc == 0, out
    path = study.storage / "s"
    summary = json.loads((path / "study_summary.json").read_text())
    dirs = trial_dirs(path)
    assert summary["num_trials"] == len(dirs) == 6
    assert summary["num_stopped_early"] >= 1, "ASHA stopped no trial"
    assert summary["num_completed"] + summary["num_stopped_early"] == 6

    best, best_config, best_test = -1.0, None, None
    for d in dirs:
        metrics = pd.read_csv(f"{d}/run/metrics.csv")
        steps = reported_steps(d)
        assert steps == metrics["step"].tolist()  # Tune saw every evaluation of the trainer
        if steps[-1] == 200:
            assert json.loads(Path(f"{d}/run/summary.json").read_text())["steps"] == 200
        # Trials of seconds carry one Tune checkpoint, at their end (--checkpoint-every 30)
        ckpts = glob.glob(f"{d}/checkpoint_*/checkpoint.pt")
        if steps[-1] == 200:
            assert [torch.load(c, weights_only=True)["step"] for c in ckpts] == [200]
        # chosen on validation: the full-length trial with the highest final val_score
        if steps[-1] == 200 and metrics["val_score"].iloc[-1] > best:
            best = metrics["val_score"].iloc[-1]
            best_config = json.loads(Path(f"{d}/params.json").read_text())
            best_test = metrics["test_accuracy"].iloc[-1]
    assert summary["best_val_score"] == pytest.approx(best)
    assert summary["best_config"] == best_config
    assert summary["best_trial_test_accuracy"] == pytest.approx(best_test)  # reported only
    assert summary["selection"] == {"metric": "val_score", "split": "validation",
                                    "num_val": 100, "among": "completed trials"}
    configs = [json.loads(Path(f"{d}/params.json").read_text()) for d in dirs]
    assert {"weight": 1.0, "alpha": 1.0, "lr": 0.1, "warmup": 100} in configs  # paper first
    # 200 of the full 600 steps: a third of the searched warm-up and of the milestone
    defaults_run = next(json.loads(Path(f"{d}/run/config.json").read_text()) for d in dirs
                        if json.loads(Path(f"{d}/params.json").read_text())["warmup"] == 100)
    assert (defaults_run["warmup"], defaults_run["milestones"]) == (33, [150])

    ot = optuna.load_study(study_name="s", storage=f"sqlite:///{path / 'optuna.db'}")
    assert len(ot.trials) == 6
    assert "study directory" in out and "chosen on validation" in out
    the_console_is_the_studys_own(out, summary, dirs, path)


def the_console_is_the_studys_own(out: str, summary: dict, dirs: list[str], path: Path):
    """No Ray box or table, no hint away from the study; a line per trial start and end that
    says how it ended; a status line with four-decimal scores; one TensorBoard run a trial."""
    for ray_output in ("╭", "│", "Trial status", "View detailed results", "driver_artifacts",
                       "Token authentication", "A new study created", "INFO"):
        assert ray_output not in out, out
    lines = out.splitlines()
    assert len(lines) <= 2 * 6 + 25, out
    numbers = {t["number"] for t in summary["trials"]}
    assert numbers == set(range(1, 7))
    ends = {}
    for n in numbers:
        mine = [ln for ln in lines if re.match(rf"trial +{n} ", ln)]
        assert re.match(rf"trial +{n} started +w=\S+ a=\S+ lr=\S+ wu=\d+$", mine[0]), mine
        assert len(mine) == 2, mine
        how = re.match(rf"trial +{n} (completed 200 steps|stopped early at step \d+/200)"
                       r", val \d\.\d{4} +w=", mine[1])
        assert how, mine[1]
        ends[n] = "completed" if how.group(1).startswith("completed") else "stopped_early"
    assert ends == {t["number"]: t["status"] for t in summary["trials"]}
    best = max(t["val_score"] for t in summary["trials"])
    assert re.search(rf"\] s: 0 running, 6/6 done \(\d+ completed, \d+ stopped early\) · "
                     rf"best val {best:.4f} \(trial \d\)$", out, re.M), out
    assert re.search(r"^\| trial \| weight \| alpha \| lr \| warmup \| ended", out, re.M)
    # TensorBoard: the trainer's events in each trial's run/, named by number and values;
    # Tune's copy (events in the trial folder itself) is not written.
    events = {os.path.relpath(os.path.dirname(f), path)
              for f in glob.glob(f"{path}/**/events.out.tfevents.*", recursive=True)}
    assert events == {os.path.relpath(d, path) + "/run" for d in dirs}
    for run in events:
        assert re.fullmatch(r"run_trial_[0-9a-f]{8}_[1-6]_w=[^,]+,a=[^,]+,lr=[^,]+,wu=\d+/run",
                            run), run


def test_a_crashed_trial_is_retried_from_its_checkpoint_or_the_one_before(study, tmp_path):
    # Each trial crashes once after its step-45 report; the first to crash has its latest
    # checkpoint (step 45) truncated in storage first, so its retry must fall back to 30.
    faults = tmp_path / "faults"
    faults.mkdir()
    rc, out = study.run("--space", "digits", "--name", "f", "--num-samples", "2",
                        "--scheduler", "fifo", "--max-concurrent", "1", "--steps-per-trial",
                        "60", "--test-freq", "15", "--max-failures", "2",
                        "--checkpoint-every", "0",
                        env=fault_env(METASEMI_FAULT_DIR=str(faults), METASEMI_FAULT_STEP="45",
                                      METASEMI_CORRUPT_ON_FAULT="first"))
    assert rc == 0, out
    crashed = {f.name.split(".")[0] for f in faults.glob("*.failed")}
    assert len(crashed) == 2  # each trial crashed once
    corrupted = (faults / "first.corrupted").read_text()
    summary = json.loads((study.storage / "f" / "study_summary.json").read_text())
    assert summary["num_completed"] == 2 and summary["num_errored"] == 0
    for d in trial_dirs(study.storage / "f"):
        placement = json.loads(Path(f"{d}/run/placement.json").read_text())
        assert pd.read_csv(f"{d}/run/metrics.csv")["step"].tolist() == [15, 30, 45, 60]
        reported = reported_steps(d)
        assert reported[0] == 15 and reported[-1] == 60  # not restarted from step 0
        crashed_at = (faults / f"{placement['trial_id']}.failed").stat().st_mtime
        if placement["trial_id"] == corrupted:
            assert placement["resumed_from_step"] == 30  # step 45's checkpoint was truncated
            fallback = placement["checkpoint_fallback"][0]
            assert "corrupt" in fallback and "step 30" in fallback, fallback
        else:
            # (Tune may miss the result of step 45: the trial crashes right after it.)
            assert placement["resumed_from_step"] == 45 and reported in (
                [15, 30, 45, 60], [15, 30, 60])
            assert placement["checkpoint_fallback"] == []
        print(f"crash: {placement['trial_id']} retried {placement['started'] - crashed_at:.1f} "
              f"s after it, from step {placement['resumed_from_step']}")


def test_gpus_per_trial_beyond_any_node_fails_before_a_trial_starts(study):
    rc, out = study.run("--space", "digits", "--name", "g", "--num-gpus", "1",
                        "--gpus-per-trial", "2")
    assert rc == 2 and "--gpus-per-trial: 2.0 GPUs per trial" in out
    assert not trial_dirs(study.storage / "g")


def test_reproduce_and_ablation_run_each_configuration_with_several_seeds(results):
    # The shared studies (tests/conftest.py): --reproduce 2 of the search's choice and
    # --ablation 2, at 40 steps.
    dirs = trial_dirs(results["reproduce"])
    arms = [json.loads(Path(f"{d}/params.json").read_text())["variant"] for d in dirs]
    configs = [json.loads(Path(f"{d}/run/config.json").read_text()) for d in dirs]
    # the configuration chosen on validation, the paper's defaults and the supervised
    # baseline, on the same seeds
    assert sorted(zip(arms, (c["seed"] for c in configs))) == [
        (arm, seed) for arm in ("default", "supervised", "tuned") for seed in (7788, 7789)]
    for arm, c in zip(arms, configs):
        assert c["method"] == ("supervised" if arm == "supervised" else "metasemi")
        assert c["num_val"] == 100 and c["total_steps"] == 40 and c["milestones"] == [30]
        if arm != "tuned":
            assert c["weight"] == 1.0 and c["lr"] == 0.1
            # the preset's full-length warm-up (100 of 600 steps) scaled to these 40
            assert c["warmup"] == 7
        assert c["precision"] == "fp32"  # reproduce runs default to fp32, as the authors'

    configs = [json.loads(Path(f"{d}/run/config.json").read_text())
               for d in trial_dirs(results["ablation"])]
    assert sorted(c["method"] for c in configs) == sorted(
        ["meta", "metasemi", "mixup", "supervised"] * 2)
    assert {c["precision"] for c in configs} == {"fp32"}
    summary = json.loads((results["ablation"] / "study_summary.json").read_text())
    assert summary["num_completed"] == 8 and summary["mode"] == "ablation"


def test_config_paper_reproduces_the_defaults_and_the_baseline_only(tmp_path):
    from study.cli import build_parser, options_from_args
    from study.driver import variants
    from study.spaces import load_space

    opts = options_from_args(build_parser().parse_args(
        ["--space", "digits", "--reproduce", "2", "--config", "paper", "--storage-path",
         str(tmp_path / "studies")]))
    space = load_space(opts.space)
    assert variants(opts, space) == {"default": space.defaults(),
                                     "supervised": {**space.defaults(), "method": "supervised"}}
    assert space.defaults() == {"weight": 1.0, "alpha": 1.0, "lr": 0.1, "warmup": 100}


def listening_addresses(pgid):
    """(ip, port) of every TCP socket listening in a process group, read from /proc."""
    inodes = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ip_hex, port_hex = fields[1].split(":")
                    raw = bytes.fromhex(ip_hex)
                    # /proc prints each 32-bit word in host (little-endian) order
                    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
                    found.append((b"".join(words), int(port_hex, 16)))
    return found


def is_loopback(raw):
    if len(raw) == 4:
        return raw[0] == 127
    return raw == bytes(15) + b"\x01" or (raw[:12] == bytes(10) + b"\xff\xff" and raw[12] == 127)


def test_a_local_study_starts_its_own_ray_on_loopback_only_beside_a_cluster(study, cluster):
    # `ray start` records its address for plain ray.init() calls; the study must not use it
    # (this head has no CPUs: a study that joined it would wait forever).
    # --verbose 2: Ray's own log lines, which say how it connected, are shown
    proc = study.start("--space", "digits", "--name", "lo", "--num-samples", "1",
                       "--scheduler", "fifo", "--steps-per-trial", "200", "--test-freq", "50",
                       "--verbose", "2")
    deadline = time.time() + 120
    while not glob.glob(f"{study.storage}/lo/run_trial_*/run/placement.json"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    sockets = listening_addresses(proc.pid)
    assert len(sockets) >= 3  # GCS, raylet, workers at least
    exposed = [(raw.hex(), port) for raw, port in sockets if not is_loopback(raw)]
    assert not exposed, exposed
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    # Ray says which it did: started its own instance, or connected to the cluster.
    assert "Started a local Ray instance" in out, out
    assert "Connecting to existing Ray cluster" not in out and cluster.address not in out


def test_a_reproduction_on_a_folder_of_your_own_and_the_report_names_its_rows_after_it(
        study, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path / "pens"  # digits, as a user's own folder tree of PNGs
    for i, (im, y) in enumerate(zip(d.images, d.target)):
        os.makedirs(root / "train" / f"class{y}", exist_ok=True)
        Image.fromarray((im * 15).astype("uint8")).save(root / "train" / f"class{y}" / f"{i}.png")
    # A reproduction of the template's defaults: one Ray start for study, trials and report.
    rc, out = study.run("--space", "custom", "--dataset", root, "--reproduce", "1",
                        "--config", "paper", "--steps-per-trial", "60", "--test-freq", "30")
    assert rc == 0, out
    reproduce = study.storage / "pens-reproduce"
    record = json.loads((reproduce / "study.json").read_text())
    assert record["data"]["path"] == str(root)  # absolute, as every node reads it
    assert len(record["data"]["fingerprint"]) == 16
    split = json.loads(Path(trial_dirs(reproduce)[0], "run", "split.json").read_text())
    assert split["dataset"] == "pens" and split["classes"] == [f"class{c}" for c in range(10)]

    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "analysis/report.py", str(reproduce),
                           "--out", str(report)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(report / "reproduction.csv")
    # Only its own rows: none of the paper's settings, which this study never ran.
    assert set(rows["setting"]) == {"pens-120"}  # a tenth of each class labeled
    ran = rows[rows["n"].fillna(0) > 0]
    assert set(ran["arm"]) == {"MetaSemi, paper's defaults", "supervised baseline"}
    assert ran["n"].tolist() == [1, 1]
    assert rows["paper_error"].isna().all()
    markdown = (report / "report.md").read_text()
    assert "| setting | arm | ours: final test error % |" in markdown  # no paper column
    assert "CIFAR" not in markdown


def test_a_study_on_data_missing_on_its_node_fails_naming_the_node(tmp_path):
    from study.trainable import DataNotHere, check_data

    with pytest.raises(DataNotHere, match=r"node .*: the study's data .*/gone does not exist"):
        check_data(str(tmp_path / "gone"), "0123456789abcdef")
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4))
    with pytest.raises(DataNotHere, match="differs from the copy the driver saw"):
        check_data(str(tmp_path / "d.npz"), "0123456789abcdef")
    check_data(str(tmp_path / "d.npz"), fingerprint(str(tmp_path / "d.npz")))  # the same copy
