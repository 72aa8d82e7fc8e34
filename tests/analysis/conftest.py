"""Hand-written run directories for the analysis tests (the shared real results, `results`,
are made in tests/conftest.py)."""

import json
from pathlib import Path

import pytest

from trainer import resolve


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
