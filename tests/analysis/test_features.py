"""The feature map (analysis/features.py) of a small trained run, and its refusals."""

import numpy as np
import pandas as pd
from PIL import Image

from analysis.features import main
from trainer import resolve, train


def test_a_short_digits_run_is_mapped_with_every_group(tmp_path, capsys):
    cfg = resolve({"total_steps": 20, "test_freq": 20, "batch_size": 32, "warmup": 5,
                   "milestones": "[15]", "device": "cpu", "save_path": str(tmp_path / "run")})
    train(cfg, show_progress=False)
    assert main([cfg.save_path, "--checkpoint", "latest", "--num-point", "30"]) == 0
    points = pd.read_csv(tmp_path / "run" / "features.csv")
    with Image.open(tmp_path / "run" / "features.png") as png:  # a real figure, drawn
        assert png.format == "PNG" and png.width >= 300 and png.height >= 200
        rgb = np.asarray(png.convert("RGB"), dtype=int)
    # The groups are drawn in colour: axes, ticks and text alone are grey.
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert saturated.sum() > 500
    assert points.groupby("group").size().to_dict() == {"labeled": 30, "test": 30,
                                                        "unlabeled": 30}
    assert points[["x", "y"]].notna().all().all() and points["x"].std() > 0
    assert "feature map:" in capsys.readouterr().out


def test_a_missing_run_or_checkpoint_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "gone")]) == 2
    assert "gone: no such run directory or checkpoint file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no best.pt in this folder" in capsys.readouterr().err
