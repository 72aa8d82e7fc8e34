"""`python analysis/report.py` and `python analysis/features.py` on real results."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow  # four interpreters importing pandas, matplotlib and optuna: 17 s
@pytest.mark.parametrize("command", [["analysis/report.py"], ["-m", "analysis.report"],
                                     ["analysis/features.py"], ["-m", "analysis.features"]])
def test_each_analysis_command_runs_as_a_script_and_as_a_module(command, tmp_path):
    # From elsewhere than the repository: the installed package is what is imported.
    args = [str(REPO / command[0])] if command[0].endswith(".py") else command
    done = subprocess.run([sys.executable, *args, "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def assert_picture(path: Path) -> None:
    """A valid PNG with content: many colours, not one flat background."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, f"{path} is nearly blank"
    assert (pixels < 200).any(axis=2).mean() > 0.01, f"{path} is nearly blank"


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    done = script("report.py", results["studies"], results["runs"], "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_the_report_writes_every_table_as_csv_and_latex(report):
    out, _ = report
    for name in ("reproduction", "ablation", "ablation_table", "best_configs", "top_trials",
                 "importance", "tuning_gain", "validation_ranking", "race",
                 "rung_correlation"):
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.tex").read_text().startswith("\\begin{tabular}")
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 25 and {"status", "reason", "seed", "trial_id", "variant", "phase",
                                  "entrant", "val_score"} <= set(trials.columns)
    # the search study's 5 trials and its race's 4 (a finalist and the defaults, 2 seeds)
    assert trials["phase"].value_counts().to_dict() == {"search": 5, "race": 4}
    assert sorted(trials.loc[trials["phase"] == "race", "entrant"]) == [
        "defaults", "defaults", "finalist-1", "finalist-1"]
    top = pd.read_csv(out / "top_trials.csv")  # ranked as the searcher ranked: validation
    assert top["val_score"].is_monotonic_decreasing and len(top) == 5


def test_the_report_prints_the_reproduction_table(report):
    _, stdout = report
    # digits has no paper number: no paper column; no row for a setting not run
    assert ("| setting | arm | ours: final test error % | optimistic: best test error during "
            "training % |") in stdout
    assert "CIFAR-10-4000 |" not in stdout
    assert ("The paper reports MetaSemi's error for SVHN-1000, CIFAR-10-4000, "
            "CIFAR-100-10000; not run here: SVHN-1000, CIFAR-10-4000, CIFAR-100-10000") in stdout
    for arm in ("MetaSemi, tuned on validation", "MetaSemi, paper's defaults",
                "supervised baseline", "MetaSemi, standalone runs"):
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"| digits-50 | {arm} |"))
        assert " ± " in line and "(n=2)" in line and "fp32" in line
    assert re.search(r"^tuning gain, digits-reproduce: tuned − default final test error "
                     r"[+-]\d+\.\d\d points, 95% interval \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\], "
                     r"paired over 2 seeds", stdout, re.M), stdout


def test_importance_covers_every_searched_parameter(report):
    out, _ = report
    scores = pd.read_csv(out / "importance.csv")
    assert sorted(scores["parameter"]) == ["alpha", "lr", "warmup", "weight"]


def test_the_plots_are_pictures_with_content(report):
    out, _ = report
    for name in ("curves", "history", "importance", "params_digits", "arms"):
        assert_picture(out / f"{name}.png")
        # drawn at the width report.md is read at (GitHub's 880 pixels), not shrunk to it
        assert Image.open(out / f"{name}.png").size[0] <= 900
    md = (out / "report.md").read_text()
    for name in ("curves", "history", "importance", "params_digits", "arms"):
        assert f"({name}.png)" in md
    assert "## Reproduction" in md and "## Ablation" in md and "finished" in md
    assert "## The race" in md and "means over 2 seeds" in md


def test_the_report_says_how_it_was_made_and_leaves_out_what_has_no_result(report, results):
    out, _ = report
    md = (out / "report.md").read_text()
    assert re.search(r"^Made \d{4}-\d\d-\d\d \d\d:\d\d UTC by `python analysis/report.py "
                     rf"{results['studies']} {results['runs']} --out \S+`, commit \S+\.$", md, re.M)
    assert re.search(r"^- digits: built in; splits of its 25 runs: sha256 [0-9a-f]{16}$", md, re.M)
    # no row of dashes for a setting we did not run: one line names them
    assert "SVHN-1000 |" not in md and "| — | — | — |" not in md
    assert "not run here: SVHN-1000, CIFAR-10-4000, CIFAR-100-10000" in md
    # one format per kind: scores to 4 decimals, errors in % to 2, correlations to 2
    top = md.split("## Top")[1].split("\n## ")[0]
    for row in [ln for ln in top.splitlines() if ln.startswith("| digits |")]:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert re.fullmatch(r"0\.\d{4}", cells[5]) and re.fullmatch(r"\d+\.\d\d", cells[6]), row


def test_a_running_study_and_a_corrupt_trial_are_reported_and_named(results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "studies" / "digits")
    (study / "study_summary.json").unlink()  # as while the driver runs
    victim = sorted(study.glob("run_trial_*"))[0]
    (victim / "run" / "summary.json").write_text("{ truncated")
    done = script("report.py", study, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    trial_id = victim.name.split("_")[2]
    assert f"trial digits/{trial_id} left out: unreadable run/summary.json" in done.stderr
    assert "partial results" in done.stdout
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**partial: still running**" in md
    assert f"digits/{trial_id}: **corrupt** unreadable run/summary.json" in md


@pytest.mark.parametrize("make,message", [
    (lambda p: (p / "x.txt").write_text("x"), "neither a study"),
    (lambda p: (p / "study.json").write_text("{}"), "has no options and space of a study"),
    (lambda p: (p / "study.json").write_text('{"format": 7, "options": {}, "space": {}}'),
     "a study of format 7, which this analysis does not read (it reads format 1)"),
    (lambda p: (p / "study.json").write_text('{"options": {}, "space": {}}'),
     "has no trials yet"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, make, message, capsys):
    from analysis.report import main  # in this process: the commands' own test starts them

    target = tmp_path / "target"
    target.mkdir()
    make(target)
    assert main([str(target), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_feature_map_is_drawn_from_a_real_checkpoint(results, tmp_path):
    run = results["runs"] / "metasemi-1"
    out = tmp_path / "features.png"
    done = script("features.py", run, "--num-point", "120", "--out", out, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert_picture(out)
    points = pd.read_csv(tmp_path / "features.csv")
    # all 50 labeled images, and 120 drawn from the unlabeled and the test points
    assert points["group"].value_counts().to_dict() == {"unlabeled": 120, "test": 120,
                                                        "labeled": 50}
    assert sorted(points["label"].unique()) == list(range(10))
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_the_feature_map_refuses_a_folder_without_a_checkpoint(tmp_path, capsys):
    from analysis.features import main

    assert main([str(tmp_path)]) == 2
    assert "no best.pt in this folder" in capsys.readouterr().err


def test_a_run_left_out_is_named_in_a_warning_and_the_rest_is_reported(fake_run, tmp_path,
                                                                       capsys):
    from analysis.report import main

    good, bad = fake_run("good"), fake_run("bad", num_label="abc")
    assert main([str(good), str(bad), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert (f"warning: run {bad} left out: unreadable config.json: num_label is 'abc', not an "
            "integer") in err
    assert (tmp_path / "out" / "report.md").is_file()


def test_nothing_to_report_exits_2_and_writes_nothing(fake_run, tmp_path, capsys):
    from analysis.report import main

    runs = [fake_run("a", seed=[1]), fake_run("b", lr="fast")]
    assert main([*map(str, runs), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("warning: run ") == 2
    assert "error: nothing to report: all 2 trials and runs are unreadable" in err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_is_refused_before_any_result_is_read(tmp_path, capsys):
    from analysis.report import main

    blocker = tmp_path / "file"
    blocker.write_text("a file where the report's folder should go")
    # The path to read does not exist: had it been read first, that would be the error.
    assert main([str(tmp_path / "missing"), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: --out: cannot write to {blocker / 'out'}" in err and "no such" not in err


def test_damaged_or_missing_result_files_are_named_left_out_and_the_rest_reported(
        results, tmp_path):
    study = shutil.copytree(results["search"], tmp_path / "studies" / "digits")
    cut, emptied, deleted = sorted(study.glob("run_trial_*"))[:3]
    metrics = cut / "run" / "metrics.csv"
    text = metrics.read_text()
    metrics.write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])  # last row cut
    (emptied / "run" / "metrics.csv").unlink()
    shutil.rmtree(deleted / "run")
    out = tmp_path / "out"
    done = script("report.py", study, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    ids = [t.name.split("_")[2] for t in (cut, emptied, deleted)]
    rows = len(text.splitlines()) - 1
    assert (f"trial digits/{ids[0]} left out: unreadable run/metrics.csv: row {rows} of {rows} "
            "is incomplete or not numeric (cut short or edited)") in done.stderr
    assert f"trial digits/{ids[1]} left out: unreadable run: lacks metrics.csv" in done.stderr
    assert (f"trial digits/{ids[2]} left out: unreadable run: holds none of the trainer's "
            "files, though the study recorded the trial as completed") in done.stderr
    trials = pd.read_csv(out / "trials.csv").set_index("trial_id")
    assert (trials.loc[ids, "status"] == "corrupt").all()
    assert (trials["status"] == "completed").sum() == len(trials) - 3
    assert "| digits | search | 9 | 6 | 0 | 3 | finished |" in (out / "report.md").read_text()


def test_a_summary_that_disagrees_with_its_metrics_is_not_trusted(fake_run):
    from analysis import load_runs

    run = fake_run("r")
    (run / "summary.json").write_text(json.dumps(
        {"status": "completed", "steps": 600, "final_test_accuracy": 0.95}))
    row = load_runs([run]).iloc[0]
    assert row["status"] == "corrupt"
    assert ("says 600 steps, final test accuracy 0.95, but metrics.csv ends at step 600 with "
            "test accuracy 0.9000") in row["reason"]


def test_a_report_that_fails_half_way_leaves_out_as_it_was(results, tmp_path, monkeypatch,
                                                            capsys):
    from analysis import plots
    from analysis.report import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("yesterday's report\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "curves", disk_full)
    assert main([str(results["search"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: the report could not be made (OSError: [Errno 28] No space left on " \
        f"device); nothing in {out} was changed" in err
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "yesterday's report\n"
