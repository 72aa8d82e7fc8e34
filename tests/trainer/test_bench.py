"""`python -m trainer.bench` prints the supervised and MetaSemi step figures."""

import json
import subprocess
import sys


def test_bench_prints_both_steps_and_their_ratio():
    out = subprocess.run(
        [sys.executable, "-m", "trainer.bench", "-a", "digitscnn", "--batch-size", "16",
         "--steps", "3", "--warmup", "1", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out)
    assert result["supervised_ms"] > 0 and result["metasemi_ms"] > 0
    assert result["meta_over_supervised"] == result["metasemi_ms"] / result["supervised_ms"]
    assert result["metasemi_images_per_s"] == 2 * 16 / (result["metasemi_ms"] / 1e3)
