"""Reading studies and runs into one frame: one row per trial, agreeing with the raw files."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import AnalysisError, load, load_runs, load_study
from analysis.results import RESULT_COLUMNS


def trial_dirs(study: Path) -> list[Path]:
    return sorted(study.glob("run_trial_*"))


def test_a_study_is_one_row_per_trial_agreeing_with_its_files(results):
    frame = load_study(results["search"])
    summary = json.loads((results["search"] / "study_summary.json").read_text())
    assert len(frame) == summary["num_trials"] == len(trial_dirs(results["search"])) == 9
    assert (frame["status"] == "completed").sum() == summary["num_completed"] == 9
    # five search trials, then the race: the best of them and the defaults on two seeds each
    assert frame["phase"].value_counts().to_dict() == {"search": 5, "race": 4}
    assert sorted(frame["entrant"].dropna()) == ["defaults"] * 2 + ["finalist-1"] * 2
    assert not frame["partial"].any()
    for d in trial_dirs(results["search"]):
        row = frame[frame["trial_id"] == d.name.split("_")[2]].iloc[0]
        metrics = pd.read_csv(d / "run" / "metrics.csv")
        params = json.loads((d / "params.json").read_text())
        assert row["best_test_accuracy"] == pytest.approx(metrics["test_accuracy"].max())
        assert row["final_test_error"] == pytest.approx(
            100 * (1 - metrics["test_accuracy"].iloc[-1]))  # in %, as the reports show it
        second_half = metrics["val_accuracy"].iloc[-((len(metrics) + 1) // 2):]
        assert row["val_score"] == pytest.approx(second_half.mean())
        assert row["final_val_accuracy"] == pytest.approx(metrics["val_accuracy"].iloc[-1])
        assert row["num_val"] == 100 and row["precision"] == "fp32"
        assert row["steps"] == metrics["step"].iloc[-1]
        assert row["phase"] == params.get("phase", "search")
        # the searched values, as optuna.db and the race hold them...
        assert all(row[k] == pytest.approx(v) for k, v in params.items()
                   if k not in ("phase", "entrant"))
        # ...though the warm-up trained was the searched one (in steps of the full 600)
        # scaled to the trial's 100, as its config.json says
        trained = json.loads((d / "run" / "config.json").read_text())["warmup"]
        assert trained == round(params["warmup"] * 100 / 600)
        assert row["seed"] == json.loads((d / "run" / "config.json").read_text())["seed"]
    assert set(RESULT_COLUMNS) <= set(frame.columns)
    assert sorted(frame["trial_number"]) == list(range(1, 10))


def test_standalone_runs_are_tabled_like_trials(results):
    runs = load_runs(sorted(results["runs"].iterdir()))
    trials = load_study(results["search"])
    assert list(runs.columns) == list(trials.columns)
    assert runs["mode"].tolist() == ["run", "run"] and runs["seed"].tolist() == [1, 2]
    assert (runs["status"] == "completed").all() and (runs["steps"] == 100).all()


def test_studies_from_several_places_merge_into_one_frame(results):
    frame = load([results["studies"], results["runs"]])  # folders of studies and of runs
    assert sorted(frame["study"].unique()) == [
        "(standalone)", "digits", "digits-ablation", "digits-reproduce"]
    assert len(frame) == 9 + 6 + 8 + 2
    # the README's groupby keeps the standalone runs, as a group of their own
    assert frame.groupby(["study", "status"]).size()[("(standalone)", "completed")] == 2
    assert frame.groupby("mode").size().to_dict() == {
        "ablation": 8, "reproduce": 6, "run": 2, "search": 9}


def stop_after_first_rung(study: Path, trial: Path, verdict: str) -> str:
    """Make `trial` look like ASHA stopped it at step 50 of 100, with the driver's verdict."""
    metrics = pd.read_csv(trial / "run" / "metrics.csv")
    metrics[metrics["step"] <= 50].to_csv(trial / "run" / "metrics.csv", index=False)
    (trial / "run" / "summary.json").unlink()  # the trainer writes it only at the last step
    info = json.loads((study / "study.json").read_text())
    info["options"]["scheduler"] = "asha"
    (study / "study.json").write_text(json.dumps(info))
    trial_id = trial.name.split("_")[2]
    summary = json.loads((study / "study_summary.json").read_text())
    for t in summary["trials"]:
        if t["trial_id"] == trial_id:
            t["status"] = verdict
    (study / "study_summary.json").write_text(json.dumps(summary))
    return trial_id


def test_a_trial_stopped_early_says_where_and_by_what(results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "digits")
    trial_id = stop_after_first_rung(study, trial_dirs(study)[2], "stopped_early")
    row = load_study(study).set_index("trial_id").loc[trial_id]
    assert row["status"] == "stopped_early" and row["steps"] == 50
    assert row["reason"] == "stopped by ASHA at step 50 of 100"


def test_a_study_still_running_is_read_as_partial(results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "digits")
    trial_id = stop_after_first_rung(study, trial_dirs(study)[0], "stopped_early")
    (study / "study_summary.json").unlink()  # the driver has not finished yet
    frame = load_study(study).set_index("trial_id")
    assert frame["partial"].all()
    assert frame.loc[trial_id, "status"] == "running"
    assert (frame["status"] == "completed").sum() == 8


def test_a_failed_trial_carries_rays_error_as_its_reason(results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "digits")
    victim = trial_dirs(study)[0]
    trial_id = stop_after_first_rung(study, victim, "error")
    (victim / "error.txt").write_text(
        "Failure # 1 (occurred at 2026-11-27_10-00-00)\nray::run_trial() (pid=1)\n"
        "RuntimeError: CUDA error: an illegal memory access was encountered\n")
    row = load_study(study).set_index("trial_id").loc[trial_id]
    assert row["status"] == "error" and row["num_failures"] == 1
    assert row["reason"] == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_a_corrupt_result_file_marks_only_that_trial(results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "digits")
    victim = trial_dirs(study)[1]
    (victim / "run" / "metrics.csv").write_text("step,test_accuracy\n50,0.5\n100,\x00garbage\n")
    frame = load_study(study).set_index("trial_id")
    bad = frame.loc[victim.name.split("_")[2]]
    assert bad["status"] == "corrupt"
    assert bad["reason"].startswith("unreadable run/metrics.csv")
    assert (frame["status"] != "corrupt").sum() == 8


def test_a_folder_that_is_neither_a_study_nor_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AnalysisError, match="neither a study .* nor a trainer run"):
        load([tmp_path])
    with pytest.raises(AnalysisError, match="no such folder"):
        load([tmp_path / "missing"])


def test_an_empty_study_is_refused_with_its_name(results, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(results["search"] / "study.json", empty / "study.json")
    with pytest.raises(AnalysisError, match="'empty' has no trials yet"):
        load_study(empty)


def test_reproduce_trials_carry_their_arm(results):
    frame = load_study(results["reproduce"])
    assert sorted(zip(frame["variant"], frame["seed"])) == [
        (arm, seed) for arm in ("default", "supervised", "tuned") for seed in (7788, 7789)]
    chosen = json.loads((results["search"] / "study_summary.json").read_text())["best_config"]
    tuned = frame[frame["variant"] == "tuned"]
    # the chosen values, the warm-up scaled from the full 600 steps to the runs' 40
    expected = {**chosen, "warmup": round(chosen["warmup"] * 40 / 600)}
    assert all(tuned[k].tolist() == pytest.approx([v] * 2) for k, v in expected.items())
    assert (frame.loc[frame["variant"] == "supervised", "method"] == "supervised").all()


def test_grid_trials_keep_rays_own_trial_ids(results):
    frame = load_study(results["ablation"])
    summary = json.loads((results["ablation"] / "study_summary.json").read_text())
    assert sorted(frame["trial_id"]) == sorted(t["trial_id"] for t in summary["trials"])
    assert sorted(frame["trial_number"]) == list(range(8))
    assert (frame["status"] == "completed").all()


@pytest.mark.parametrize("key,value,message", [
    ("num_label", "abc", "num_label is 'abc', not an integer"),
    ("seed", [1], "seed is [1], not an integer"),
    ("lr", "fast", "lr is 'fast', not a number"),
    ("val_from_labeled", "yes", "val_from_labeled is 'yes', not true or false"),
    ("milestones", ["450"], "milestones is ['450'], not a list of integers"),
    ("dataset", 10, "dataset is 10, not a string"),
])
def test_a_run_whose_config_has_wrong_types_is_left_out_as_corrupt(fake_run, key, value,
                                                                    message):
    good, bad = fake_run("good"), fake_run("bad", **{key: value})
    frame = load_runs([good, bad]).set_index("trial_id")
    assert frame.loc["good", "status"] == "completed"
    assert frame.loc["bad", "status"] == "corrupt"
    assert frame.loc["bad", "reason"] == f"unreadable config.json: {message}"
