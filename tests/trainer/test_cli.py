"""`python -m trainer`: flags, presets, and bad input that fails before any training."""

import os
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
])
def test_bad_input_fails_fast_with_a_message_and_no_run_directory(tmp_path, capsys, argv,
                                                                   message):
    save = tmp_path / "run"
    assert main([*argv, "--save-path", str(save), "--quiet"]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not save.exists()


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
    assert proc.returncode == 2 and "invalid choice: 'mnist'" in proc.stderr
