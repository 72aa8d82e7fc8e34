"""`python -m trainer.bench` measures ours, the reference and the packing curve in one run."""

import json
import subprocess
import sys
import time

import pytest


def bench(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.bench", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=600, check=check)


@pytest.mark.slow
def test_one_run_gives_every_figure_and_they_are_consistent(tmp_path):
    out = tmp_path / "bench.json"
    t0 = time.perf_counter()
    result = json.loads(bench(
        "--networks", "digitscnn", "--steps", "2", "--warmup", "1", "--reference-workers", "1",
        "--packing", "2", "--eval-images", "200", "--json", "--out", str(out)).stdout)
    wall_ms = 1000 * (time.perf_counter() - t0)
    assert json.loads(out.read_text()) == result  # --out writes the same object

    env = result["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["date"]
    assert env["command"].startswith("python -m trainer.bench --device cpu")
    net = result["networks"]["digitscnn"]
    assert net["batch_size"] == 32  # a CPU run's default
    ours, ref = net["ours"], net["reference"]
    for m in [*ours.values(), *ref.values()]:
        # A step's time: measured (positive), and no longer than the whole command took.
        assert 0 < m["ms"] < wall_ms and 0 <= m["data_fraction"] <= 1
    # Measured, not restated: a MetaSemi step (two batches, the meta step's extra passes)
    # costs well over a supervised one on the same network; jvp is the other estimator.
    assert net["meta_over_supervised"] > 1.5 and net["meta_over_supervised_jvp"] > 1.5
    assert ours["metasemi_jvp"]["meta_grad"] == "jvp"
    assert ref["metasemi"]["workers"] == 1 and ref["metasemi"]["ms"] > ref["supervised"]["ms"]
    assert result["steps"] == 2 and result["warmup"] == 1  # what the figures rest on

    (point,) = net["packing"]  # two trials at once, each a Ray task
    assert (point["trials"], point["launcher"], point["gpus_per_trial"]) == (2, "ray", 0.0)
    assert len(point["per_trial_images_per_s"]) == 2
    # The trials together, over the span of both, make at most what each made over its own.
    assert 0 < point["images_per_s"] <= sum(point["per_trial_images_per_s"]) * (1 + 1e-9)

    # The evaluation is timed on a part of the test set and scaled: the projection's
    # evaluation share does not depend on how many images were timed.
    proj = net["projected_400k_hours"]
    assert result["eval_images"] == 200 and proj["evaluation"] > 0
    assert proj["steps"] == pytest.approx(400_000 * ours["metasemi"]["ms"] / 1e3 / 3600)
    assert proj["total"] == pytest.approx(proj["steps"] + proj["evaluation"])


def test_the_tables_name_each_step_and_skip_what_is_turned_off(capsys):
    from trainer.bench.__main__ import main

    assert main(["--device", "cpu", "--networks", "digitscnn", "--steps", "1", "--warmup", "0",
                 "--no-reference", "--packing", "none"]) == 0
    text = capsys.readouterr().out
    for row in ("| ours supervised |", "| ours metasemi |", "| ours metasemi (jvp) |",
                "metasemi / supervised step time", "projected 400k-step run"):
        assert row in text, row
    assert "reference metasemi" not in text and "concurrent MetaSemi trials" not in text
    # What each figure rests on; on a CPU the evaluation is timed on part of the test set.
    assert "Each step figure rests on 1 timed steps after 0 warm-up" in text
    assert "the evaluation on 1000 test images, scaled to the whole test set" in text
    assert "batch 32 (+32 unlabeled for MetaSemi)" in text  # the CPU's default batch


@pytest.mark.parametrize("args, message", [
    (["--packing", "1,x"], "give trial counts like 1,2,4"),
    (["--steps", "0"], "--steps, --batch-size, --eval-images and --packing-steps must be >= 1"),
])
def test_bad_options_are_refused_before_any_measurement(args, message, capsys):
    from trainer.bench.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_recommended_gpu_share_is_the_most_trials_that_still_pay():
    from trainer.bench.packing import recommend

    def points(*rates):
        return [{"trials": 2 ** i, "gpus_per_trial": 1 / 2 ** i, "images_per_s": r}
                for i, r in enumerate(rates)]

    assert recommend(points(100, 180, 190)) == 0.5  # 4 trials add only 6%
    assert recommend(points(100, 180, 300)) == 0.25
    assert recommend(points(100, 105, 300)) == 1.0  # stops at the first level that fails
    cpu = [{"trials": 1, "gpus_per_trial": 0.0, "images_per_s": 10.0}]
    assert recommend(cpu) is None


@pytest.mark.slow
def test_without_ray_the_packing_curve_runs_plain_processes():
    from trainer.bench.packing import curve

    settings = {"dataset": "digits", "architecture": "digitscnn", "method": "metasemi",
                "device": "cpu", "batch_size": 16}
    points = curve(settings, [1, 2], steps=2, warmup=1, gpu=False, launcher="processes")
    assert [(p["trials"], p["launcher"]) for p in points] == [(1, "processes"),
                                                               (2, "processes")]
    assert all(p["images_per_s"] > 0 for p in points)
