"""The training loop: the run directory, the reporting hook, exact resume, divergence, bad
checkpoints."""

import csv
import glob
import json
import os

import pytest
import torch

from trainer import TrainingDiverged, resolve, train
from trainer.checkpoint import CheckpointError, CheckpointFallbackWarning
from trainer.settings import replace


def tiny(tmp_path, name="run", **overrides):
    """A digits run of a few dozen steps: seconds on a CPU."""
    base = dict(dataset="digits", total_steps=40, test_freq=20, log_freq=10, batch_size=32,
                warmup=10, milestones="[30]", device="cpu", save_path=str(tmp_path / name))
    return resolve({**base, **overrides})


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_writes_its_directory_and_reports_each_evaluation(tmp_path):
    reports = []
    cfg = tiny(tmp_path)
    summary = train(cfg, report=lambda row, ckpt: reports.append((row, os.path.isfile(ckpt))),
                    show_progress=False)
    run = cfg.save_path

    assert json.load(open(f"{run}/config.json"))["method"] == "metasemi"
    split = json.load(open(f"{run}/split.json"))
    assert len(split["labeled"]) == 50 and not set(split["labeled"]) & set(split["unlabeled"])
    assert len(split["test"]) + len(split["labeled"]) + len(split["unlabeled"]) == 1797

    rows = read_csv(f"{run}/metrics.csv")
    assert [int(r["step"]) for r in rows] == [20, 40]
    for column in ("lr", "loss", "main_loss", "cons_loss", "train_accuracy", "test_accuracy",
                   "pseudo_label_accuracy", "elapsed_seconds", "images_per_second"):
        assert column in rows[0]
    assert float(rows[1]["lr"]) == pytest.approx(0.1 * 0.1)  # past the milestone at 30
    assert glob.glob(f"{run}/events.out.tfevents.*")
    for name in ("checkpoint.pt", "best.pt"):
        assert torch.load(f"{run}/{name}", weights_only=True)["step"] in (20, 40)

    on_disk = json.load(open(f"{run}/summary.json"))
    assert on_disk == summary
    assert summary["steps"] == 40 and summary["status"] == "completed"
    assert summary["final_test_accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]))
    assert summary["best_test_accuracy"] == max(float(r["test_accuracy"]) for r in rows)
    assert summary["wall_seconds"] == float(rows[-1]["elapsed_seconds"])
    assert summary["final_test_error"] == pytest.approx(1 - summary["final_test_accuracy"])

    assert [r["step"] for r, _ in reports] == [20, 40] and all(ok for _, ok in reports)
    assert not any(f.endswith(".tmp") for f in os.listdir(run))  # atomic writes leave no debris


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["metasemi", "supervised"])
def test_interrupted_and_resumed_run_ends_with_the_same_parameters(tmp_path, method):
    straight = train(tiny(tmp_path, "straight", method=method), show_progress=False)

    def stop_halfway(row, ckpt):
        if row["step"] == 20:
            raise Interrupt

    cfg = tiny(tmp_path, "interrupted", method=method)
    with pytest.raises(Interrupt):
        train(cfg, report=stop_halfway, show_progress=False)
    assert len(read_csv(f"{cfg.save_path}/metrics.csv")) == 1
    resumed = train(replace(cfg, resume=cfg.save_path), show_progress=False)

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert resumed["final_test_accuracy"] == straight["final_test_accuracy"]
    assert [r["step"] for r in read_csv(f"{cfg.save_path}/metrics.csv")] == ["20", "40"]


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_its_last_good_checkpoint(tmp_path):
    # gamma > 1 turns the milestone into a blow-up: lr jumps to 1e5 after step 20.
    cfg = tiny(tmp_path, milestones="[20]", gamma=1e6, total_steps=60)
    with pytest.raises(TrainingDiverged, match="NaN or infinite.*step 20"):
        train(cfg, show_progress=False)

    kept = torch.load(f"{cfg.save_path}/checkpoint.pt", weights_only=True)
    assert kept["step"] == 20
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    summary = json.load(open(f"{cfg.save_path}/summary.json"))
    assert summary["status"] == "diverged" and "NaN" in summary["error"]


def test_resume_rejects_a_corrupt_checkpoint(tmp_path):
    cfg = tiny(tmp_path, total_steps=20)
    train(cfg, show_progress=False)
    path = f"{cfg.save_path}/checkpoint.pt"
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="corrupt"):
        train(replace(cfg, resume=path), show_progress=False)
    with open(path, "wb") as f:
        f.write(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(replace(cfg, resume=path), show_progress=False)


def truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = tiny(tmp_path, total_steps=40)
    train(cfg, show_progress=False)
    assert torch.load(f"{cfg.save_path}/checkpoint.prev.pt", weights_only=True)["step"] == 20
    truncate(f"{cfg.save_path}/checkpoint.pt")
    with pytest.warns(CheckpointFallbackWarning, match=r"corrupt.*previous checkpoint.*step 20"):
        summary = train(replace(cfg, resume=cfg.save_path), show_progress=False)
    assert summary["steps"] == 40
    straight = tiny(tmp_path, name="straight", total_steps=40)
    train(straight, show_progress=False)
    resumed = torch.load(f"{cfg.save_path}/checkpoint.pt", weights_only=True)["model"]
    reference = torch.load(f"{straight.save_path}/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)  # nothing lost


def test_a_checkpoint_write_cut_short_leaves_the_previous_one_to_resume_from(tmp_path):
    cfg = tiny(tmp_path, total_steps=40)
    train(cfg, show_progress=False)
    os.replace(f"{cfg.save_path}/checkpoint.pt", f"{cfg.save_path}/checkpoint.prev.pt")
    with pytest.warns(CheckpointFallbackWarning, match="no checkpoint at"):
        assert train(replace(cfg, resume=cfg.save_path), show_progress=False)["steps"] == 40


def test_resume_fails_clearly_when_no_good_checkpoint_is_left(tmp_path):
    cfg = tiny(tmp_path, total_steps=40)
    train(cfg, show_progress=False)
    truncate(f"{cfg.save_path}/checkpoint.pt")
    truncate(f"{cfg.save_path}/checkpoint.prev.pt")
    with pytest.raises(CheckpointError, match="previous checkpoint is unusable too"):
        train(replace(cfg, resume=cfg.save_path), show_progress=False)


def test_resume_rejects_a_checkpoint_of_another_run(tmp_path):
    cfg = tiny(tmp_path, total_steps=20)
    train(cfg, show_progress=False)
    with pytest.raises(CheckpointError, match="num_label: checkpoint 50, config 100"):
        train(replace(cfg, num_label=100, resume=cfg.save_path), show_progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(replace(cfg, resume=str(tmp_path / "nowhere")), show_progress=False)


def test_the_exact_meta_gradient_option_trains(tmp_path):
    # 40 steps reach 0.59 (fd 0.58, jvp 0.59; measured 2026-11-27), chance is 0.1.
    summary = train(tiny(tmp_path, meta_grad="exact"), show_progress=False)
    assert summary["steps"] == 40 and summary["final_test_accuracy"] > 0.45


def test_resuming_a_finished_run_completes_its_directory_without_training(tmp_path):
    cfg = tiny(tmp_path, total_steps=40)
    train(cfg, show_progress=False)
    reports = []
    elsewhere = replace(cfg, resume=cfg.save_path, save_path=str(tmp_path / "elsewhere"))
    summary = train(elsewhere, report=lambda row, path: reports.append(row), show_progress=False)
    assert summary["steps"] == 40 and reports == []  # nothing trained or reported again
    assert torch.load(tmp_path / "elsewhere" / "checkpoint.pt", weights_only=True)["step"] == 40
    assert json.load(open(tmp_path / "elsewhere" / "summary.json"))["status"] == "completed"
    assert [r["step"] for r in read_csv(tmp_path / "elsewhere" / "metrics.csv")] == ["20", "40"]
