"""python -m study.bench scale: a real study of N tiny trials, timed, and its accounting."""

import json

import pandas as pd
import pytest

from study.bench.scale import accounting, study_argv
from tests.study.helpers import run_bench


def test_a_scale_study_evaluates_and_reports_every_step_of_a_tiny_trial():
    argv = study_argv(100, 10)
    assert argv[argv.index("--num-samples") + 1] == "100"
    assert argv[argv.index("--test-freq") + 1] == "1"
    assert argv[argv.index("--steps-per-trial") + 1] == "10"
    assert "fifo" in argv and argv[argv.index("--race-finalists") + 1] == "0"


@pytest.mark.ray
def test_every_trial_is_counted_once_in_the_summary_optuna_and_the_report(tmp_path):
    out = tmp_path / "scale.json"
    rc, log = run_bench("scale", "--trials", "12", "--steps", "3", "--keep",
                        str(tmp_path / "kept"), "--json", str(out), "--plot",
                        str(tmp_path / "scale.png"))
    assert rc == 0, log[-3000:]
    (m,) = json.loads(out.read_text())["measured"]
    assert m["accounting"] == [] and "every trial once" in log
    assert m["results"] == 12 * 3  # one result per step
    assert "10" in m["tpe_ms"] and len(m["suggest_ms"]) == 12
    assert 0 < m["minimum"] < m["wall_fit"] and m["snapshots"] > 0
    assert (tmp_path / "scale.png").stat().st_size > 10_000

    # The accounting finds a trial the report lost, or one it counted twice.
    study, report = tmp_path / "kept" / "n12" / "scale-12", tmp_path / "kept" / "n12" / "report"
    frame = pd.read_csv(report / "trials.csv")
    frame.iloc[1:].to_csv(report / "trials.csv", index=False)
    assert any(p.startswith("the report: 11 trials") for p in accounting(str(study), 12,
                                                                          str(report)))
    pd.concat([frame, frame.iloc[:1]]).to_csv(report / "trials.csv", index=False)
    assert any("13 trials (12 distinct)" in p for p in accounting(str(study), 12, str(report)))
