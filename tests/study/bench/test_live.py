"""Live studies beside their replay (python -m study.bench live): what a finished study
spent, where its search trials ended and what it picked, read from its files."""

import json

import pytest

from study.bench.live import compare, live_outcome
from study.bench.replay import Replay
from study.bench.table import read_table
from tests.study.bench.tables import write


def finished_study(folder, trials, best_config, replaced=False):
    """A study directory as the driver leaves it, written by hand."""
    for t in trials:
        run = folder / t["trial_id"] / "run"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("step,elapsed_seconds\n" + "\n".join(
            f"{s},{s / 100}" for s in range(50, t["steps"] + 1, 50)) + "\n")
        t["path"] = str(folder / t["trial_id"])
    (folder / "study.json").write_text(json.dumps({"options": {"seed": 3}}))
    (folder / "study_summary.json").write_text(json.dumps({
        "trials": trials, "best_config": best_config,
        "num_search_trials": sum(t["phase"] == "search" for t in trials),
        "race": {"decision": {"replaced": replaced}}}))
    return str(folder)


def test_a_live_study_is_read_as_the_replay_reports_its_own(tmp_path):
    replay = Replay(read_table(str(write(tmp_path / "t.json.gz"))))
    best = {"weight": 2.5, "lr": 0.09, "alpha": 0.8, "warmup": 90}  # snaps to (3, 0.1, 1, 100)
    trials = [{"trial_id": "a", "phase": "search", "steps": 600},
              {"trial_id": "b", "phase": "search", "steps": 100},
              {"trial_id": "c", "phase": "search", "steps": 100},
              {"trial_id": "d", "phase": "race", "steps": 600}]
    out = live_outcome(finished_study(tmp_path / "s", trials, best), replay)
    assert out["seed"] == 3 and out["trials"] == 3
    assert out["cost"] == pytest.approx(6.0 + 1.0 + 1.0 + 6.0)  # every trial, race included
    assert out["ends"] == {600: 1, 100: 2}  # the search's trials only
    assert out["pick"] == replay.table.index_of({"weight": 3.0, "lr": 0.1, "alpha": 1.0,
                                                 "warmup": 100})
    assert out["regret"] == pytest.approx(100 * (replay.truth[out["pick"]] - replay.truth.min()))
    table = compare([out], [{**out, "cost": 20.0, "ends": {600: 3}, "replaced": True}])
    assert "| 3 | live | 14 | 2 | 1 |" in table and "| 3 | replay | 20 | 0 | 3 |" in table
