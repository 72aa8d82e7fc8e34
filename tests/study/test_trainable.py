"""The trial function: a worker process serves trial after trial, each from a clean state."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.study.helpers import REPO, trial_dirs

# Wall-clock columns: the only ones a run's timing may change.
TIMING = ("elapsed_seconds", "images_per_second")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_a_reused_worker_starts_each_trial_as_a_fresh_process_would(results, tmp_path):
    # The shared ablation study (tests/conftest.py): 8 trials, two at a time, so that each
    # worker process runs several trials one after the other (Tune's reuse_actors).
    by_pid: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for d in trial_dirs(results["ablation"]):
        placement = json.loads(Path(d, "run", "placement.json").read_text())
        by_pid[placement["pid"]].append((placement["started"], d))
    reused = [d for trials in by_pid.values() for _, d in sorted(trials)[1:]]
    assert reused, f"every trial had a process of its own: {dict(by_pid)}"
    # One reused trial of each method: the model, optimiser, RNG streams, data order,
    # mix-up's Beta and the meta step's state of the trials before must leave no trace.
    picked: dict[str, str] = {}
    for d in reused:
        picked.setdefault(json.loads(Path(d, "run", "config.json").read_text())["method"], d)
    assert len(picked) >= 2, picked
    for method, d in sorted(picked.items()):
        again = tmp_path / method
        subprocess.run([sys.executable, "-m", "trainer", "--config", f"{d}/run/config.json",
                        "--save-path", str(again), "--threads", "1", "--quiet"],
                       check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True)
        assert _rows(again / "metrics.csv") == _rows(Path(d, "run", "metrics.csv")), method


def test_a_report_carries_a_checkpoint_at_the_end_and_at_most_once_an_interval():
    from study.trainable import checkpoint_due

    assert checkpoint_due(600, 600, since_last=0.1, every=30)  # the last: always
    assert not checkpoint_due(550, 600, since_last=29.9, every=30)
    assert checkpoint_due(550, 600, since_last=30.0, every=30)
    assert checkpoint_due(50, 600, since_last=0.0, every=0)  # 0: every evaluation
