"""The analysis at scale: a study of many trials built from a recorded real one
(study/bench/big_study.py) is read as a real study is, and a report over it holds every
trial once. Speed is measured by the benchmark (`python -m study.bench.big_study
--measure`), which prints figures; no test here asserts a time."""

import json
import os
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis import load_study
from analysis.importance import importance
from analysis.report import main as report_main
from analysis.results import curves
from analysis.tables import rung_correlation, search_trials
from study.bench import big_study
from trainer import rundir


@pytest.fixture(scope="module")
def recording():
    return big_study.load_recording()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A study of 80 trials built from the repository's recording."""
    path = tmp_path_factory.mktemp("big") / "digits"
    return big_study.build(str(path), 80, seed=1)


def test_the_builder_computes_what_the_trainer_and_the_driver_wrote(recording):
    """On the recorded trials themselves: the lr and weight columns, the validation score,
    summary.json and the folder's name, as the builder makes them, are the recorded ones."""
    from study.console import trial_dirname
    from trainer.loop import selection_score

    for t in recording["trials"]:
        big_study._check_schedule(t)  # raises where the schedule disagrees
        rows = t["metrics"]
        assert [selection_score(rows[:i + 1]) for i in range(len(rows))] == pytest.approx(
            [r["val_score"] for r in rows], abs=1e-12)
        if t[rundir.SUMMARY] is not None:
            precision = t[rundir.SUMMARY]["precision"]
            assert big_study._summary(t[rundir.CONFIG], rows, precision) == t[rundir.SUMMARY]
        number = t["record"]["number"]
        tag = SimpleNamespace(trial_id=t["record"]["trial_id"], config=t["results"][-1]["config"],
                              experiment_tag=f"{number}_")
        assert trial_dirname(tag) == t["dir"]


def test_a_built_study_is_read_as_it_was_built(built):
    frame = load_study(built["path"])
    made = pd.DataFrame(built["trials"])
    assert len(frame) == len(made) == 80
    assert frame["trial_id"].is_unique
    read = frame.set_index("trial_id").loc[made["trial_id"]]
    assert read["trial_number"].tolist() == made["number"].tolist() == list(range(1, 81))
    assert read["status"].tolist() == made["status"].tolist()
    assert read["phase"].tolist() == made["phase"].tolist()
    assert read["steps"].tolist() == made["steps"].tolist()
    assert not frame["partial"].any() and (frame["status"] != "corrupt").all()
    # ASHA stopped most search trials at its rungs; the race ran at full length
    search = read[read["phase"] == "search"]
    assert set(search["steps"]) <= {100, 200, 400, 600}
    assert (search["status"] == "stopped_early").sum() > (search["status"] == "completed").sum()
    assert (read.loc[read["phase"] == "race", "status"] == "completed").all()
    # the driver's own record says the same
    with open(os.path.join(built["path"], "study_summary.json")) as f:
        summary = json.load(f)
    assert summary["num_trials"] == 80
    assert summary["num_completed"] == (frame["status"] == "completed").sum()
    assert summary["num_stopped_early"] == (frame["status"] == "stopped_early").sum()
    assert summary["race"]["decision"]["seeds"] == [11789, 11790]


def test_a_built_studys_optuna_db_holds_its_search_trials(built):
    frame = search_trials(load_study(built["path"])).sort_values("trial_number")
    study = optuna.load_study(study_name="digits",
                              storage=f"sqlite:///{built['path']}/optuna.db")
    trials = study.get_trials()
    assert len(trials) == len(frame)  # the race never reaches Optuna
    states = {"completed": optuna.trial.TrialState.COMPLETE,
              "stopped_early": optuna.trial.TrialState.PRUNED}
    assert [t.state for t in trials] == [states[s] for s in frame["status"]]
    assert [t.value for t in trials] == pytest.approx(frame["val_score"].tolist())
    assert [t.params["lr"] for t in trials] == pytest.approx(frame["lr"].tolist())
    assert max(trials[0].intermediate_values) == frame["steps"].iloc[0]


def test_curves_are_each_trials_metrics_csv_as_pandas_reads_it(built):
    frame = load_study(built["path"])
    history = curves(frame)
    parts = []
    for _, row in frame.iterrows():
        part = pd.read_csv(os.path.join(row["run_dir"], rundir.METRICS))
        part.insert(0, "study", row["study"])
        part.insert(1, "trial_id", row["trial_id"])
        parts.append(part)
    pd.testing.assert_frame_equal(history, pd.concat(parts, ignore_index=True))


def test_rung_correlation_without_any_curve_says_no_trials():
    frame = pd.DataFrame({"study": ["s"], "status": ["completed"], "trial_id": ["a"]})
    rungs = rung_correlation(frame, pd.DataFrame(), {
        "s": {"total_steps": 600, "grace_steps": 100, "reduction_factor": 2}})
    assert rungs["trials"].tolist() == [0, 0, 0]


def test_importance_past_its_cap_rests_on_a_seeded_sample_and_says_so():
    params = [{"name": "lr", "type": "float", "low": 0.01, "high": 0.3, "log": True},
              {"name": "warmup", "type": "int", "low": 0, "high": 500, "log": False}]
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"lr": np.exp(rng.uniform(np.log(0.01), np.log(0.3), 40)),
                           "warmup": rng.integers(0, 501, 40), "status": "completed",
                           "trial_number": range(1, 41)})
    trials["val_score"] = -np.log(trials["lr"])
    scores, note = importance(trials, params, max_trials=20)
    assert note.startswith("fANOVA over 20 of 40 completed trials (a uniform sample")
    assert scores.idxmax() == "lr"
    again, _ = importance(trials, params, max_trials=20)
    assert again.to_dict() == scores.to_dict()  # the same sample, the same forest
    _, whole = importance(trials, params, max_trials=40)
    assert whole == "fANOVA over 40 completed trials, objective: validation score"


@pytest.mark.slow
def test_a_report_over_hundreds_of_trials_holds_every_trial_once(tmp_path, capsys):
    made = big_study.build(str(tmp_path / "digits"), 300, seed=2)
    out = tmp_path / "report"
    assert report_main([made["path"], "--out", str(out)]) == 0
    assert "(300 trials;" in capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 300 and trials["trial_id"].is_unique
    assert sorted(trials["trial_number"]) == list(range(1, 301))
    counts = pd.Series([t["status"] for t in made["trials"]]).value_counts()
    report = (out / "report.md").read_text()
    assert (f"| digits | search | 300 | {counts['completed']} | {counts['stopped_early']} | 0 "
            "| finished |") in report
    search = trials[trials["phase"] == "search"]
    importance_table = pd.read_csv(out / "importance.csv")
    assert (importance_table["trials"] == (search["status"] == "completed").sum()).all()
    top = pd.read_csv(out / "top_trials.csv")
    assert len(top) == 10 and top["trial_id"].isin(search["trial_id"]).all()


@pytest.mark.slow
def test_the_benchmark_prints_its_table(tmp_path, capsys):
    rows = big_study.measure([30], root=str(tmp_path / "bench"))
    assert [r["n"] for r in rows] == [30] and rows[0]["rc"] == 0
    assert rows[0]["report_seconds"] > 0 and rows[0]["peak_mb"] > 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["N", "build", "s", "disk", "MB", "report", "s", "peak", "MB",
                                  "rc"]
    assert printed[1].split()[0] == "30"
    assert not (tmp_path / "bench").exists()  # built and removed


def test_a_study_built_from_a_real_one_has_its_layout_and_its_columns(results, tmp_path):
    """From the shared real search study (FIFO, a race): the same files in every trial folder
    but the binary ones, and the same columns and kinds of values when read."""
    real = str(results["search"])
    made = big_study.build(str(tmp_path / "digits"), 40, seed=3, source=real)

    def files(study: str) -> set[str]:
        out = set()
        for name in os.listdir(study):
            folder = os.path.join(study, name)
            if "_trial_" in name and os.path.isdir(folder):
                for d, _, fs in os.walk(folder):
                    out |= {os.path.relpath(os.path.join(d, f), folder) for f in fs}
        return out

    binary = {f for f in files(real) if f.endswith(".pt") or rundir.TENSORBOARD_PREFIX in f}
    assert binary and files(made["path"]) == files(real) - binary
    a, b = load_study(real), load_study(made["path"])
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    assert set(b["status"]) == set(a["status"]) == {"completed"}  # FIFO: nothing stopped
    assert sorted(b["phase"].unique()) == sorted(a["phase"].unique())
