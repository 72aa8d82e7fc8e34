"""`python -m trainer.bench.own_data`: a synthetic set of your own, written, loaded the way the
trainer loads it, and trained a step, with where it was placed and what loading cost."""

import json
import subprocess
import sys
import time

import pytest


@pytest.mark.slow  # trains
def test_a_set_is_written_once_loaded_placed_and_trained(tmp_path):
    walls = []

    def run() -> dict:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "trainer.bench.own_data", "--images", "300", "--size", "8",
             "--steps", "1", "--batch-size", "8", "--labels-per-class", "2", "--device", "cpu",
             "--dir", str(tmp_path),
             "--out", str(tmp_path / "figures.json")],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        walls.append(time.perf_counter() - t0)
        return json.loads(done.stdout)

    first = run()
    assert first == json.loads((tmp_path / "figures.json").read_text())
    # Timed, and within what the whole command took.
    assert (tmp_path / "synthetic-300x8.npz").exists() and 0 < first["write_seconds"] < walls[0]
    # The trainer's own choices for 8 px data: the small CNN, images on the CPU.
    assert first["architecture"] == "digitscnn" and first["images_on"] == "cpu"
    assert first["estimated_gib"] * 2**30 == 300 * 3 * 8 * 8
    assert first["host_peak_during_load_gib"] >= first["host_rss_before_load_gib"]
    assert 0 < first["ms_per_step"] < 1000 * walls[0]
    assert run()["write_seconds"] == 0  # the file of that shape is reused
