"""`python analysis/features.py RUN_DIR` (or `python -m analysis.features`): the paper's Figure 3,
a t-SNE map of features.

The penultimate-layer features of a trained network (its `features` module, before the
linear head) for labeled, unlabeled and test points, embedded in 2-D with t-SNE and
drawn coloured by true class, one panel per group and one with the groups together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE

from trainer import checkpoint, rundir
from trainer.config import DEVICES, ConfigError
from trainer.data import DatasetMissing, load_for
from trainer.data.survey import dataset_name, is_dataset_path
from trainer.device import resolve_device
from trainer.models import build_model
from trainer.settings import config_from_dict, replace

GROUPS = ("labeled", "unlabeled", "test")
GROUP_COLOURS = {"labeled": "red", "unlabeled": "tab:blue", "test": "grey"}


class FeaturesError(ValueError):
    """The run or checkpoint cannot be mapped; the message says why and what to give."""


def _checkpoint_path(path: str, which: str) -> str:
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FeaturesError(f"{path}: no such run directory or checkpoint file")
    found = os.path.join(path, rundir.BEST if which == "best" else rundir.CHECKPOINT)
    if not os.path.isfile(found):
        raise FeaturesError(f"{path}: no {os.path.basename(found)} in this folder; give a "
                            "trainer run directory (--save-path of python -m trainer) or a "
                            "checkpoint file")
    return found


@torch.no_grad()
def penultimate(model: torch.nn.Module, x: torch.Tensor, normalize, batch_size: int = 500):
    """The features fed to the linear head, in eval mode, as a numpy array."""
    model.eval()
    device = next(model.parameters()).device  # images may be kept on the host (large sets)
    out = [model.features(normalize(x[i:i + batch_size].to(device))).flatten(1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def feature_map(path: str, which: str = "best", data_path: str | None = None,
                num_point: int | None = None, device: str = "auto", seed: int = 0):
    """Embed the features of a run's checkpoint: a frame of x, y, group, label per point."""
    ckpt = _checkpoint_path(path, which)
    try:
        state = checkpoint.load(ckpt)
        cfg = config_from_dict({**state["config"], "resume": None, "device": device,
                                **({"data_path": data_path} if data_path else {})})
    except (checkpoint.CheckpointError, ConfigError, KeyError) as e:
        raise FeaturesError(f"{ckpt}: cannot be used ({e})") from e
    dev = resolve_device(cfg.device)
    data = load_for(replace(cfg, download=False), dev)
    split_file = os.path.join(os.path.dirname(ckpt), rundir.SPLIT)
    if os.path.isfile(split_file):
        with open(split_file) as f:
            saved = json.load(f)["labeled"]
        if sorted(saved) != sorted(data.labeled.tolist()):
            raise FeaturesError(f"{split_file}: the labeled split differs from the one drawn "
                                f"again from seed {cfg.seed}; is --data-path the same data?")
    model = build_model(cfg.architecture, data.spec.channels, data.spec.num_classes).to(dev)
    model.load_state_dict(state["model"])

    rng = np.random.default_rng(seed)

    def pick(indices: np.ndarray) -> np.ndarray:
        if num_point is None or len(indices) <= num_point:
            return indices
        return np.sort(rng.choice(indices, num_point, replace=False))

    chosen = {"labeled": pick(data.labeled), "unlabeled": pick(data.unlabeled),
              "test": pick(np.arange(len(data.test_y)))}
    feats, groups, labels = [], [], []
    for group, idx in chosen.items():
        t = torch.as_tensor(idx, device=dev)
        x, y = (data.test_x[t], data.test_y[t]) if group == "test" else (
            data.train_x[t], data.train_y[t])
        feats.append(penultimate(model, x, data.normalize))
        groups += [group] * len(idx)
        labels.append(y.cpu().numpy())
    points = np.concatenate(feats)
    perplexity = min(30.0, max(2.0, (len(points) - 1) / 3))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity,
              random_state=seed).fit_transform(points)
    label = np.concatenate(labels)
    names = data.about.get("classes") or [str(c) for c in range(data.spec.num_classes)]
    # Your data's unlabeled/ images have no class: -1, named "unknown".
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "group": groups, "label": label,
                         "class": [names[c] if c >= 0 else "unknown" for c in label]}), cfg, ckpt


def plot(points: pd.DataFrame, title: str, path: str) -> str:
    """Four panels, as the paper's Figure 3: each group by class, then all by group."""
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2))
    cmap = plt.get_cmap("tab10" if points["label"].max() < 10 else "tab20")
    colour = lambda label: cmap(label % cmap.N) if label >= 0 else "lightgrey"  # noqa: E731
    for ax, group in zip(axes, GROUPS):
        g = points[points["group"] == group]
        ax.scatter(g["x"], g["y"], c=[colour(v) for v in g["label"]], s=6)
        ax.set_title(f"{group} ({len(g)}), by class")
    if "class" in points and points["label"].max() < 20:  # a legend of class names
        classes = points.drop_duplicates("label").sort_values("label")
        axes[0].legend(handles=[plt.Line2D([], [], marker="o", ls="", color=colour(r.label),
                                           label=r["class"]) for _, r in classes.iterrows()],
                       fontsize=7, markerscale=0.8, loc="best")
    for group in ("unlabeled", "test", "labeled"):  # labeled on top: the fewest points
        g = points[points["group"] == group]
        axes[3].scatter(g["x"], g["y"], c=GROUP_COLOURS[group], s=6, label=group)
    axes[3].set_title("all, by group")
    axes[3].legend(markerscale=3, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python analysis/features.py",
                                description="t-SNE map of penultimate-layer features "
                                            "(the paper's Figure 3)")
    p.add_argument("path", metavar="RUN_DIR", help="a trainer run directory or a checkpoint")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint of a run directory (default best)")
    p.add_argument("--num-point", type=int, help="at most this many points per group")
    p.add_argument("--data-path", help="dataset folder, if not the run's own")
    p.add_argument("--out", help="PNG file (default: RUN_DIR/features.png)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--seed", type=int, default=0, help="point sampling and t-SNE seed")
    args = p.parse_args(argv)
    if args.num_point is not None and args.num_point < 2:
        print("error: --num-point: must be >= 2", file=sys.stderr)
        return 2
    try:
        points, cfg, ckpt = feature_map(args.path, args.checkpoint, args.data_path,
                                        args.num_point, args.device, args.seed)
    except (FeaturesError, DatasetMissing, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(os.path.dirname(ckpt), "features.png")
    step = checkpoint.load(ckpt)["step"]
    name = dataset_name(cfg.dataset) if is_dataset_path(cfg.dataset) else cfg.dataset
    plot(points, f"{cfg.method} on {name}-{cfg.num_label}, {cfg.architecture}, "
                 f"{os.path.basename(ckpt)} at step {step}", out)
    points.to_csv(os.path.splitext(out)[0] + ".csv", index=False)
    print(f"feature map: {out} ({len(points)} points; coordinates in "
          f"{os.path.splitext(out)[0]}.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
