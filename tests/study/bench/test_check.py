"""The replay decides as Ray Tune does: a real study whose trials replay a small recorded
table (python -m study.bench check), and the replay of that study, agree trial by trial."""

import json

import pytest

from study.bench.table import DEFAULT_PATH, write_subtable
from tests.study.helpers import run_bench


@pytest.mark.ray
def test_the_replay_makes_the_live_studys_decisions_on_a_recorded_table(tmp_path):
    small = tmp_path / "small.json.gz"  # 8 of the recorded configurations, every seed
    write_subtable(DEFAULT_PATH, str(small), {"weight": [1.0, 3.0], "lr": [0.03, 0.1],
                                              "warmup": [0, 100]})
    out = tmp_path / "check.json"
    rc, log = run_bench("check", "--table", str(small), "--num-samples", "8",
                        "--race-finalists", "2", "--race-seeds", "2", "--out", str(out))
    assert rc == 0, log[-3000:]
    result = json.loads(out.read_text())
    assert result["live"] == result["replay"] and result["trials"] == 8 + 3 * 2
    ends = {tuple(t)[4] for t in result["live"][:8]}
    assert len(ends) > 1  # ASHA stopped some trials and let others finish: decisions made
    assert result["live_decision"] == result["replay_decision"]
    assert result["live_pick"] == result["replay_pick"] is not None
