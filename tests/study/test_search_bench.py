"""The search benchmark (study/bench/live.py) end to end, at a tiny size: equal budgets, picks
read back from the trials' own files, the plot written."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.study.helpers import REPO, kill_group


@pytest.mark.ray
def test_the_benchmark_compares_the_strategies_at_an_equal_budget(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "study.bench", "live", "--seeds", "1", "--num-samples", "3",
         "--steps-per-trial", "60", "--test-freq", "20", "--out", str(out), "--png", str(png),
         "--storage", str(tmp_path / "studies"), "--keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=600)
    finally:
        kill_group(proc)  # the benchmark and any Ray process it left, if it did not finish
    assert proc.returncode == 0, log[-3000:]
    assert "| tpe+asha |" in log and "| random |" in log

    result = json.loads(out.read_text())
    runs = {r["strategy"]: r for r in result["runs"]}
    assert set(runs) == {"tpe+asha", "random"}
    search, rand = runs["tpe+asha"], runs["random"]
    assert search["budget_unit"] == "seconds" and search["budget"] > 0
    # the search spends the budget exactly; random search only up to it
    assert all(t["kept"] for t in search["trials"])
    assert sum(t["seconds"] for t in search["trials"]) == pytest.approx(search["budget"])
    kept = [t for t in rand["trials"] if t["kept"]]
    assert kept and sum(t["seconds"] for t in kept) <= search["budget"] * (1 + 1e-9)
    assert rand["budget"] == search["budget"]

    for run in (search, rand):
        pick = run["pick"]
        with open(Path(pick["run_dir"]) / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        assert pick["test_error"] == pytest.approx(1 - float(last["test_accuracy"]))
        # chosen on validation: the best final score among the full-length trials kept
        finals = [json.loads((Path(t["run_dir"]) / "summary.json").read_text())
                  for t in run["trials"] if t["kept"] and t["status"] == "completed"]
        assert pick["val_score"] == pytest.approx(max(s["final_val_score"] for s in finals))

    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
