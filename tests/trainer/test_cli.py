"""`python -m trainer`: flags, presets, and bad input that fails before any training."""

import os
import re
import subprocess
import sys

import pytest
import torch

from trainer.cli import build_parser, config_from_args, main


def parse(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_flags_resolve_over_the_dataset_preset():
    cfg = parse("--dataset", "svhn", "--lr", "0.05", "--milestones", "[10, 20]")
    assert (cfg.alpha, cfg.weight_decay, cfg.lr, cfg.milestones) == (0.1, 5e-5, 0.05, (10, 20))
    assert cfg.save_path == os.path.join("runs", "svhn-metasemi-seed7788")


def test_labels_per_class_counts_the_classes_of_the_dataset(tmp_path):
    assert parse("--labels-per-class", "3").num_label == 30
    from PIL import Image

    for c in ("a", "b", "c"):  # data of your own: its classes are its folders
        os.makedirs(tmp_path / "own" / "train" / c)
        for i in range(10):
            Image.new("L", (8, 8), i).save(tmp_path / "own" / "train" / c / f"{i}.png")
    cfg = parse("--dataset", str(tmp_path / "own"), "--labels-per-class", "2")
    assert cfg.num_label == 6


def test_speed_flags_default_to_auto_and_can_be_set():
    cfg = parse()
    assert (cfg.precision, cfg.memory_format, cfg.compile, cfg.meta_grad) == (
        "auto", "auto", False, "fd")
    cfg = parse("--precision", "fp32", "--memory-format", "channels_last", "--compile",
                "--meta-grad", "jvp")
    assert (cfg.precision, cfg.memory_format, cfg.compile, cfg.meta_grad) == (
        "fp32", "channels_last", True, "jvp")


def test_the_authors_mix_up_flag_adds_mix_up_to_the_method():
    assert parse("--method", "meta", "--mix-up").method == "metasemi"
    assert parse("--method", "supervised", "--mix-up").method == "mixup"
    assert parse("--mix-up").method == "metasemi"
    assert parse("--method", "meta").method == "meta"


@pytest.mark.parametrize("argv,message", [
    (["--num-label", "55"], "num_label.*multiple of 10"),
    (["--num-label", "5000"], "num_label.*only"),
    (["--total-steps", "0"], "total_steps: must be a positive integer"),
    (["--batch-size", "-4"], "batch_size: must be a positive integer"),
    (["--milestones", "[100, oops]"], "milestones.*malformed"),
    (["--dataset", "cifar10", "--data-path", "/nonexistent"], "missing data_batch_1"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--lr", "-1"], "cuda|lr"),
    (["--resume", "/nonexistent/run"], "no checkpoint"),
    (["--alpha", "inf"], r"alpha: must be a finite number in \(0, 100\], got inf"),
    (["--alpha", "nan"], r"alpha: must be a finite number in \(0, 100\], got nan"),
    (["--epsilon", "1e308"], r"epsilon: must be a finite number in \(0, 1\]"),
    (["--weight", "inf"], r"weight: must be a finite number in \[0, 10000\]"),
    (["--gamma", "inf"], r"gamma: must be a finite number"),
    (["--weight-decay", "1e308"], r"weight_decay: must be a finite number in \[0, 1\)"),
    (["--momentum", "inf"], r"momentum: must be a finite number in \[0, 1\)"),
    (["--lr", "0"], r"lr: must be a finite number in \(0, 10000\]"),
    (["--seed", str(2**64)], r"seed: 18446744073709551616 is too large.*\[0, 4294967294\]"),
    (["--num-label", "1200"], r"batch_size: 64 is larger than the 58 unlabeled.*--batch-size 58"),
])
def test_bad_input_fails_fast_with_a_message_and_no_run_directory(tmp_path, capsys, argv,
                                                                   message):
    save = tmp_path / "deep" / "run"  # the --save-path probe makes and removes both folders
    assert main([*argv, "--save-path", str(save), "--quiet"]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "deep").exists()


def test_an_unwritable_save_path_is_refused_before_data_or_model_load(tmp_path, capsys,
                                                                      monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run's folder should go")

    def train(*args, **kwargs):
        raise AssertionError("train() ran: data and model were about to load")

    monkeypatch.setattr("trainer.cli.train", train)
    assert main(["--save-path", str(blocker / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--save-path: cannot write to {blocker / 'run'}" in err and "writable folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


class NotATensor:
    """Pickled by reference: loading it would import and build this class."""


def test_a_checkpoint_holding_objects_is_refused_without_advising_weights_only_false(
        tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "config": {}, "hook": NotATensor()}, path)
    assert main(["--resume", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"resume: {path} is corrupt or not a checkpoint of this trainer" in err
    assert "NotATensor" in err and "tensors and plain data only, never code" in err
    assert "weights_only" not in err and "can still be loaded" not in err


def test_resume_continues_with_the_saved_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--total-steps", "20", "--test-freq", "10", "--batch-size", "16",
                 "--save-path", str(run), "--quiet"]) == 0
    cfg = parse("--resume", str(run), "--total-steps", "30")
    assert (cfg.batch_size, cfg.test_freq, cfg.total_steps) == (16, 10, 30)
    assert cfg.save_path == str(run) and cfg.resume == str(run)
    assert main(["--resume", str(run), "--total-steps", "30", "--quiet"]) == 0
    assert "30 steps" in capsys.readouterr().out


def test_python_m_trainer_reports_errors_with_exit_code_2():
    proc = subprocess.run([sys.executable, "-m", "trainer", "--dataset", "mnist"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown dataset 'mnist'" in proc.stderr
    assert "or give the path of a folder or .npz file of your own" in proc.stderr


TIMING = ("elapsed_seconds", "images_per_second")  # wall-clock columns: never repeatable


def metrics_without_timing(run) -> list[list[str]]:
    """metrics.csv as written, cell by cell, without its wall-clock columns."""
    header, *rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(header) if name not in TIMING]
    return [[cells[i] for i in keep] for cells in [header, *rows]]


def test_a_runs_config_json_runs_it_again_bit_for_bit_and_flags_override_it(tmp_path):
    import json

    first, again, changed = tmp_path / "first", tmp_path / "again", tmp_path / "changed"
    assert main(["--total-steps", "30", "--test-freq", "10", "--seed", "11", "--device", "cpu",
                 "--save-path", str(first), "--quiet"]) == 0
    assert main(["--config", str(first / "config.json"), "--save-path", str(again),
                 "--quiet"]) == 0
    assert metrics_without_timing(again) == metrics_without_timing(first)  # same digits
    settings = {p: json.loads((p / "config.json").read_text()) for p in (first, again)}
    assert {k: v for k, v in settings[again].items() if k != "save_path"} == \
        {k: v for k, v in settings[first].items() if k != "save_path"}

    assert main(["--config", str(first / "config.json"), "--seed", "12", "--total-steps",
                 "20", "--save-path", str(changed), "--quiet"]) == 0
    cfg = json.loads((changed / "config.json").read_text())
    assert (cfg["seed"], cfg["total_steps"], cfg["test_freq"]) == (12, 20, 10)
    assert len(metrics_without_timing(changed)) == 1 + 2  # evaluations at 10 and 20


def test_a_toml_file_of_settings_is_a_config(tmp_path):
    settings = tmp_path / "small.toml"
    settings.write_text('dataset = "digits"\ntotal-steps = 40\nmilestones = [30]\nseed = 5\n')
    cfg = parse("--config", str(settings), "--lr", "0.05")
    assert (cfg.total_steps, cfg.milestones, cfg.seed, cfg.lr) == (40, (30,), 5, 0.05)
    assert cfg.batch_size == 64  # the rest: the digits preset


@pytest.mark.parametrize("content, name, message", [
    ('total_step = 40\n', "typo.toml", r"typo.toml sets \['total_step'\], which are not "
                                       r"settings of the trainer; the settings are \["),
    ('total_steps = \n', "broken.toml", "broken.toml is not valid TOML"),
    ('[1, 2]', "list.json", "list.json holds a list, not a table of settings"),
    ('{"seed": 1', "cut.json", "cut.json is not valid JSON"),
    ('seed: 1', "settings.yaml", r"settings.yaml: give a run's config.json or a .toml file"),
])
def test_a_config_file_that_cannot_be_used_is_named(tmp_path, capsys, content, name, message):
    (tmp_path / name).write_text(content)
    assert main(["--config", str(tmp_path / name), "--save-path", str(tmp_path / "r")]) == 2
    assert re.search(f"error: --config: .*{message}", capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_config_and_resume_are_refused_together(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "a.toml"), "--resume", str(tmp_path)]) == 2
    assert "--config and --resume: a resumed run continues with its own settings" in \
        capsys.readouterr().err


def test_help_shows_each_flags_preset_per_dataset():
    text = " ".join(build_parser().format_help().split())
    assert "--num-label NUM_LABEL number of labeled images, a multiple of the class count " \
           "(digits 50; cifar10 4000; cifar100 10000; svhn 1000)" in text
    assert "training steps (digits 600; cifar10, cifar100, svhn 400000)" in text
    assert "(digits, cifar10, cifar100 1.0; svhn 0.1)" in text  # alpha


def greyscale_folder(root, size=28, per_class=40, classes=10):
    """A small folder tree of greyscale images of `size` pixels, `classes` classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "train" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
                folder / f"{i:03d}.png")
    return str(root)


def settings(*argv):
    from trainer.cli import settings_from_args

    return settings_from_args(build_parser().parse_args(list(argv)))


def test_your_data_on_a_cpu_gets_a_run_of_minutes_and_the_flags_of_the_full_one(tmp_path):
    # as the set: 5,000 greyscale images of 28 pixels, 10 classes, which the
    # size-based defaults (made for a GPU) give WRN-28-2 and thousands of steps
    data = greyscale_folder(tmp_path / "own", per_class=500)
    full, _ = settings("--dataset", data, "--device", "cuda") if torch.cuda.is_available() \
        else (None, None)
    cfg, notes = settings("--dataset", data, "--device", "cpu")
    assert (cfg.architecture, cfg.total_steps) == ("digitscnn", 1500)
    assert (cfg.warmup, cfg.milestones) == (1500 // 6, (1125,))  # the schedule follows
    said = re.fullmatch(r"on a CPU: digitscnn for 1500 steps, a run of minutes; the setting "
                        r"for your data's size, made for a GPU: --architecture wrn28-2 "
                        r"--total-steps (\d+)", notes[0])
    assert said and int(said.group(1)) > 1500, notes
    if full is not None:
        assert full.architecture == "wrn28-2"
    # the network or the length given: the defaults are the user's to set, nothing changes
    given, notes = settings("--dataset", data, "--device", "cpu", "-a", "wrn28-2")
    assert given.architecture == "wrn28-2" and not any("on a CPU" in n for n in notes)


def test_your_data_trains_without_flips_unless_asked_and_the_start_says_so(tmp_path):
    data = greyscale_folder(tmp_path / "own")
    cfg, notes = settings("--dataset", data, "--device", "cpu")
    assert cfg.no_flip and any(n.startswith("flips: OFF, the default for your data") for n in notes)
    cfg, notes = settings("--dataset", data, "--device", "cpu", "--flip")
    assert not cfg.no_flip and not any(n.startswith("flips:") for n in notes)
    assert not parse("--dataset", "cifar10").no_flip  # the built-in sets keep their presets
