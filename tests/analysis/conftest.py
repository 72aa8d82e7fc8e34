"""One set of real results for every analysis test: a digits search study, a reproduce
study and an ablation study run by study/run.py on a local Ray, and standalone trainer runs."""

import json
from pathlib import Path

import pytest

from tests.study.helpers import Study
from trainer import resolve, train


def run_study(storage: Path, *args: str) -> None:
    study = Study(storage.parent)
    try:
        rc, out = study.run("--space", "digits", *args, "--storage-path", storage)
    finally:  # never leave a Ray instance behind
        study.close()
    assert rc == 0, out


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    studies = root / "studies"
    # FIFO: all five trials complete, so importance has five points (the study tests show
    # ASHA stopping trials; test_results shows how such a trial is read). Then a race of
    # the best one against the defaults on two seeds.
    run_study(studies, "--num-samples", "5", "--scheduler", "fifo", "--steps-per-trial", "100",
              "--test-freq", "50", "--seed", "1", "--race-finalists", "1", "--race-seeds", "2")
    # The configuration the search chose, the paper's defaults and the supervised baseline.
    run_study(studies, "--reproduce", "2", "--steps-per-trial", "40", "--test-freq", "20",
              "--max-concurrent", "2")
    run_study(studies, "--ablation", "2", "--steps-per-trial", "40", "--test-freq", "20",
              "--max-concurrent", "2")
    runs = root / "runs"
    for seed in (1, 2):
        train(resolve({"seed": seed, "total_steps": 100, "test_freq": 50, "device": "cpu",
                       "save_path": str(runs / f"metasemi-{seed}")}), show_progress=False)
    return {"root": root, "studies": studies, "search": studies / "digits",
            "reproduce": studies / "digits-reproduce", "ablation": studies / "digits-ablation",
            "runs": runs}


@pytest.fixture
def fake_run(tmp_path):
    """A finished trainer run directory written by hand (config.json, metrics.csv,
    summary.json): no training, no Ray. Keyword arguments replace config values."""
    def make(name: str, **config) -> Path:
        run = tmp_path / name
        run.mkdir(parents=True)
        full = {**resolve({"save_path": str(run)}).to_dict(), **config}
        (run / "config.json").write_text(json.dumps(full))
        (run / "metrics.csv").write_text("step,test_accuracy\n300,0.8\n600,0.9\n")
        (run / "summary.json").write_text(json.dumps({"status": "completed"}))
        return run
    return make
