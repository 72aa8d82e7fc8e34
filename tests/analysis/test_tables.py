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
from analysis.tables import ablation_table, ablation_wide, latex, markdown, reproduction_table

PAPER = tomllib.loads(Path(PAPER_FILE).read_text())


def run_dirs(*folders: Path) -> list[Path]:
    return sorted(p.parent for f in folders for p in f.rglob("config.json"))


def final_errors(dirs, **where) -> list[float]:
    """Final test error (%) of each run whose config matches `where` and that completed."""
    out = []
    for d in dirs:
        config = json.loads((d / "config.json").read_text())
        summary = d / "summary.json"
        if not summary.exists() or any(config[k] != v for k, v in where.items()):
            continue
        if json.loads(summary.read_text())["status"] != "completed":
            continue
        out.append(100 * (1 - pd.read_csv(d / "metrics.csv")["test_accuracy"].iloc[-1]))
    return out


@pytest.fixture(scope="module")
def frame(results):
    return load([results["studies"], results["runs"]])


def test_reproduction_table_agrees_with_the_raw_files(results, frame):
    table = reproduction_table(frame, load_paper()).set_index("setting")
    assert list(table.index[:4]) == ["SVHN-1000", "CIFAR-10-4000", "CIFAR-100-10000", "digits-50"]
    # digits: the two reproduce trials and the two standalone runs, all MetaSemi
    errors = final_errors(run_dirs(results["reproduce"], results["runs"]), method="metasemi")
    assert len(errors) == 4
    digits = table.loc["digits-50"]
    assert digits["n"] == 4
    assert digits["error_mean"] == pytest.approx(statistics.mean(errors))
    assert digits["error_std"] == pytest.approx(statistics.stdev(errors))
    assert math.isnan(digits["paper_error"]) and math.isnan(digits["difference"])
    for key, setting in PAPER["settings"].items():
        if key != "digits":
            row = table.loc[setting["name"]]
            assert row["paper_error"] == setting["metasemi"] and row["n"] == 0


def test_search_trials_never_enter_the_reproduction(results, frame):
    only_search = frame[frame["mode"] == "search"]
    assert reproduction_table(only_search, load_paper())["n"].sum() == 0


def test_a_reproduced_cifar_run_is_set_beside_the_paper(results, frame, tmp_path):
    run = tmp_path / "cifar10-run"
    run.mkdir()
    config = json.loads(next(results["runs"].iterdir()).joinpath("config.json").read_text())
    config.update(dataset="cifar10", num_label=4000, architecture="convlarge")
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.csv").write_text("step,test_accuracy\n200000,0.90\n400000,0.9175\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    table = reproduction_table(load([run]), load_paper()).set_index("setting")
    row = table.loc["CIFAR-10-4000"]
    assert row["n"] == 1 and row["error_mean"] == pytest.approx(8.25)
    assert row["difference"] == pytest.approx(8.25 - 7.78)


def test_ablation_table_agrees_with_the_raw_files(results, frame):
    table = ablation_table(frame, load_paper())
    dirs = run_dirs(results["ablation"], results["runs"])
    for method in ("supervised", "mixup", "meta", "metasemi"):
        row = table[(table["method"] == method) & (table["setting"] == "digits-50")].iloc[0]
        errors = final_errors(dirs, method=method)
        assert row["n"] == len(errors) == (4 if method == "metasemi" else 2)
        assert row["error_mean"] == pytest.approx(statistics.mean(errors))
        assert row["error_std"] == pytest.approx(statistics.stdev(errors))
        for dataset, name in (("svhn", "SVHN-1000"), ("cifar100", "CIFAR-100-10000")):
            paper_row = table[(table["method"] == method) & (table["setting"] == name)].iloc[0]
            assert paper_row["paper_error"] == PAPER["ablation"][method][dataset]
    assert table.set_index("method").loc["meta", "meta"].all()


def test_ablation_in_the_papers_layout(frame):
    wide = ablation_wide(ablation_table(frame, load_paper()))
    assert wide[["meta", "mix-up"]].values.tolist() == [
        ["no", "no"], ["no", "yes"], ["yes", "no"], ["yes", "yes"]]
    assert wide.loc[3, "CIFAR-10-4000 paper"] == "7.78"
    assert wide.loc[3, "CIFAR-10-4000 ours"] == "—"
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
