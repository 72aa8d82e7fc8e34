"""The reproduction and ablation tables, recomputed here from the raw run files."""

import json
import math
import statistics
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from analysis import load
from analysis.paper import PAPER_FILE, load_paper
from analysis.tables import (
    ablation_table,
    ablation_wide,
    best_configs,
    detectable_gain,
    latex,
    markdown,
    not_run,
    race_table,
    reproduction_display,
    reproduction_table,
    rung_correlation,
    rung_steps,
    tuning_gain,
    validation_ranking,
)

PAPER = tomllib.loads(Path(PAPER_FILE).read_text())


def run_dirs(*folders: Path) -> list[Path]:
    return sorted(p.parent for f in folders for p in f.rglob("config.json"))


def arm_of(run: Path) -> str | None:
    """The reproduce arm of a trial's run directory (params.json beside it), if any."""
    params = run.parent / "params.json"
    return json.loads(params.read_text()).get("variant") if params.exists() else None


def final_errors(dirs, arm=None, kind="final", **where) -> dict[int, float]:
    """Seed -> test error (%) at the last evaluation (or the best one) of each completed run
    whose config matches `where` (and whose reproduce arm is `arm`)."""
    out = {}
    for d in dirs:
        config = json.loads((d / "config.json").read_text())
        summary = d / "summary.json"
        if not summary.exists() or any(config[k] != v for k, v in where.items()):
            continue
        if (arm is not None and arm_of(d) != arm) or \
                json.loads(summary.read_text())["status"] != "completed":
            continue
        acc = pd.read_csv(d / "metrics.csv")["test_accuracy"]
        out[config["seed"]] = 100 * (1 - (acc.iloc[-1] if kind == "final" else acc.max()))
    return out


@pytest.fixture(scope="module")
def frame(results):
    return load([results["studies"], results["runs"]])


def test_reproduction_table_reads_final_test_error_per_arm(results, frame):
    table = reproduction_table(frame, load_paper())
    # a row per setting with results of ours: none for the paper's settings not run here
    assert list(table["setting"].drop_duplicates()) == ["digits-50"]
    assert not_run(table, load_paper()) == (
        "The paper reports MetaSemi's error for SVHN-1000, CIFAR-10-4000, CIFAR-100-10000; "
        "not run here: SVHN-1000, CIFAR-10-4000, CIFAR-100-10000 (no completed full-length "
        "run of ours).")
    digits = table[table["setting"] == "digits-50"].set_index("arm")
    reproduce = run_dirs(results["reproduce"])
    expected = {
        "MetaSemi, tuned on validation": final_errors(reproduce, "tuned"),
        "MetaSemi, paper's defaults": final_errors(reproduce, "default"),
        "supervised baseline": final_errors(reproduce, "supervised"),
        "MetaSemi, standalone runs": final_errors(run_dirs(results["runs"]), method="metasemi"),
    }
    assert list(digits.index) == list(expected)
    for arm, errors in expected.items():
        row = digits.loc[arm]
        assert row["n"] == len(errors) == 2
        assert row["error_mean"] == pytest.approx(statistics.mean(errors.values()))
        assert row["error_std"] == pytest.approx(statistics.stdev(errors.values()))
        assert math.isnan(row["paper_error"]) and math.isnan(row["difference"])
    optimistic = final_errors(reproduce, "tuned", kind="best")
    row = digits.loc["MetaSemi, tuned on validation"]
    assert row["optimistic_best_error_mean"] == pytest.approx(statistics.mean(optimistic.values()))
    assert row["optimistic_best_error_mean"] <= row["error_mean"]
    assert row["seeds"] == "7788,7789" and row["precision"] == "fp32"
    assert row["split"] == "random labels; 100 val images held out" and row["steps"] == "40"


def test_the_optimistic_column_is_labelled_as_such(frame):
    shown = reproduction_display(reproduction_table(frame, load_paper()))
    assert "ours: final test error %" in shown.columns
    assert "optimistic: best test error during training %" in shown.columns


def test_tuning_gain_is_paired_over_seeds_with_a_95_interval(results, frame):
    reproduce = run_dirs(results["reproduce"])
    tuned, default = final_errors(reproduce, "tuned"), final_errors(reproduce, "default")
    diffs = [tuned[s] - default[s] for s in sorted(tuned)]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    t_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824}[len(diffs) - 1]  # Student t, two-sided 95%
    gain = tuning_gain(frame, load_paper()).set_index("study").loc["digits-reproduce"]
    assert gain["n"] == 2 and gain["seeds"] == "7788,7789"
    assert gain["gain_mean"] == pytest.approx(mean)
    assert gain["ci95_low"] == pytest.approx(mean - t_975 * sd / math.sqrt(2), rel=1e-4)
    assert gain["ci95_high"] == pytest.approx(mean + t_975 * sd / math.sqrt(2), rel=1e-4)


def test_validation_ranking_is_spearmans_rho_over_completed_search_trials(results, frame):
    scores, tests = [], []
    for d in sorted(results["search"].glob("run_trial_*")):
        if "phase" in json.loads((d / "params.json").read_text()):
            continue  # the race's trials: not the search's
        metrics = pd.read_csv(d / "run" / "metrics.csv")
        scores.append(metrics["val_accuracy"].iloc[-((len(metrics) + 1) // 2):].mean())
        tests.append(metrics["test_accuracy"].iloc[-1])
    ranks = pd.DataFrame({"val": scores, "test": tests}).rank()  # ties share their mean rank
    rho = ranks["val"].corr(ranks["test"])  # Pearson's r of the ranks
    row = validation_ranking(frame).set_index("study").loc["digits"]
    assert row["completed_trials"] == 5
    assert row["spearman_rho"] == pytest.approx(rho)


def test_search_trials_never_enter_the_reproduction(results, frame):
    only_search = frame[frame["mode"] == "search"]
    assert len(reproduction_table(only_search, load_paper())) == 0


def test_a_reproduced_cifar_run_is_set_beside_the_paper(results, frame, tmp_path):
    run = tmp_path / "cifar10-run"
    run.mkdir()
    config = json.loads(next(results["runs"].iterdir()).joinpath("config.json").read_text())
    config.update(dataset="cifar10", num_label=4000, architecture="convlarge")
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.csv").write_text("step,test_accuracy\n200000,0.93\n400000,0.9175\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    table = reproduction_table(load([run]), load_paper())
    row = table[table["setting"] == "CIFAR-10-4000"].set_index("arm").loc[
        "MetaSemi, standalone runs"]
    assert row["n"] == 1 and row["error_mean"] == pytest.approx(8.25)  # final, not best (7.0)
    assert row["difference"] == pytest.approx(8.25 - 7.78)
    assert row["optimistic_best_error_mean"] == pytest.approx(7.0)
    ablation = ablation_table(load([run]), load_paper()).set_index(["method", "setting"])
    assert ablation.loc[("metasemi", "CIFAR-10-4000"), "paper_error"] == (
        PAPER["ablation"]["metasemi"]["cifar10"])
    assert ablation.loc[("metasemi", "CIFAR-10-4000"), "n"] == 1


def test_ablation_table_agrees_with_the_raw_files(results, frame):
    table = ablation_table(frame, load_paper())
    dirs = run_dirs(results["ablation"], results["runs"])
    for method in ("supervised", "mixup", "meta", "metasemi"):
        row = table[(table["method"] == method) & (table["setting"] == "digits-50")].iloc[0]
        errors = [e for d in dirs for e in final_errors([d], method=method).values()]
        assert row["n"] == len(errors) == (4 if method == "metasemi" else 2)
        assert row["error_mean"] == pytest.approx(statistics.mean(errors))
        assert row["error_std"] == pytest.approx(statistics.stdev(errors))
    assert table.set_index("method").loc["meta", "meta"].all()


def test_ablation_in_the_papers_layout(frame):
    wide = ablation_wide(ablation_table(frame, load_paper()))
    assert wide[["meta", "mix-up"]].values.tolist() == [
        ["no", "no"], ["no", "yes"], ["yes", "no"], ["yes", "yes"]]
    assert "CIFAR-10-4000 paper" not in wide  # not run here: no column of dashes
    assert wide.loc[0, "digits-50 ours"].endswith("(n=2)")
    assert "digits-50 paper" not in wide  # no paper number for our embedded set


def test_tables_render_as_markdown_and_latex():
    table = pd.DataFrame({"setting": ["a_b", "c|d"], "error %": ["1.00 ± 0.50 (n=2)", "—"]})
    md = markdown(table).splitlines()
    assert md[0] == "| setting | error % |" and md[1] == "| --- | --- |"
    assert md[3] == "| c\\|d | — |"
    tex = latex(table)
    assert "a\\_b & 1.00 $\\pm$ 0.50 (n=2) \\\\" in tex and "error \\%" in tex
    assert tex.startswith("\\begin{tabular}{ll}") and "\\bottomrule" in tex


def test_the_race_table_is_the_drivers_record_of_the_race(results, frame):
    from analysis.results import curves, study_race

    race = study_race(str(results["search"]))
    table = race_table({"digits": race}).set_index("entrant")
    assert list(table.index) == ["defaults", "finalist-1"]
    seeds = [c for c in table.columns if c.startswith("seed ")]
    assert seeds == ["seed 9789", "seed 9790"]  # --seed 1: the block above 8788
    history = curves(frame[frame["phase"] == "race"])
    for _, trial in frame[frame["phase"] == "race"].iterrows():
        final = history[history["trial_id"] == trial["trial_id"]]["val_score"].iloc[-1]
        assert table.loc[trial["entrant"], f"seed {int(trial['seed'])}"] == pytest.approx(final)
    assert table["chosen"].sum() == 1
    chosen = table.index[table["chosen"]][0]
    best = best_configs(frame, {"digits": ["weight", "alpha", "lr", "warmup"]},
                        {"digits": race}).set_index("study").loc["digits"]
    assert best["chosen_by"].startswith(f"race: {chosen}")
    assert best["race_seeds"] == 2
    assert best["race_mean"] == pytest.approx(table.loc[chosen, "mean"])


def test_the_rungs_are_ashas_and_their_correlation_rests_on_full_length_trials(results, frame):
    from study.search import RaceAwareASHA

    space = {"total_steps": 600, "grace_steps": 100, "reduction_factor": 2}
    ray_rungs = RaceAwareASHA(time_attr="step", metric="val_score", mode="max", max_t=600,
                              grace_period=100, reduction_factor=2)._brackets[0]._rungs
    assert rung_steps(space) == sorted(int(m) for m, _ in ray_rungs) == [100, 200, 400]
    from analysis.results import curves

    search = frame[frame["mode"] == "search"]
    rungs = rung_correlation(search, curves(search), {
        "digits": {"total_steps": 100, "grace_steps": 50, "reduction_factor": 2}})
    assert rungs["rung_step"].tolist() == [50]
    # 5 search trials and 4 race trials ran the full 100 steps
    assert rungs["trials"].tolist() == [9] and (rungs["caveat"] != "").all()


def test_the_smallest_detectable_gain_grows_with_the_spread_and_shrinks_with_seeds():
    small, wide = detectable_gain([1.0, 1.2, 0.8]), detectable_gain([1.0, 2.0, 0.0])
    assert wide == pytest.approx(5 * small)  # five times the sd
    # (t_0.975 + t_0.8) with 2 degrees of freedom: 4.303 + 1.061
    assert small == pytest.approx((4.3027 + 1.0607) * 0.2 / math.sqrt(3), rel=1e-3)
    assert detectable_gain([1.0, 1.2, 0.8] * 3) < small
    assert math.isnan(detectable_gain([1.0]))
