"""The report's pictures as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window, also on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STATUS_COLOURS = {"completed": "tab:blue", "stopped_early": "tab:orange", "running": "tab:green",
                  "diverged": "tab:red", "error": "tab:red"}


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(history: pd.DataFrame, top: pd.DataFrame, path: str) -> str:
    """Validation accuracy against step for the top trials (top: rows with study and
    trial_id), with their test accuracy dashed (reported, not selected on)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rank, (_, t) in enumerate(top.iterrows(), 1):
        h = history[(history["study"] == t["study"]) & (history["trial_id"] == t["trial_id"])]
        line, = ax.plot(h["step"], h["val_accuracy"], marker="o", markersize=3,
                        label=f"#{rank} {t['study']}/{t['trial_id']}")
        ax.plot(h["step"], h["test_accuracy"], ls="--", lw=0.8, color=line.get_color())
    ax.set(xlabel="step", ylabel="accuracy",
           title="Validation accuracy of the top trials (test dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def history(trials: pd.DataFrame, path: str) -> str:
    """Optimisation history: each trial's validation score in trial order, and the best so
    far."""
    studies = sorted(trials["study"].unique())
    fig, axes = plt.subplots(1, len(studies), figsize=(6 * len(studies), 4), squeeze=False)
    for ax, study in zip(axes[0], studies):
        t = trials[trials["study"] == study].sort_values("trial_number")
        score = t["val_score"]
        for status, group in t.groupby("status"):
            ax.scatter(group["trial_number"], group["val_score"], s=25,
                       color=STATUS_COLOURS.get(status, "grey"), label=status)
        ax.step(t["trial_number"], score.cummax(), where="post", color="black", lw=1,
                label="best so far")
        ax.set(xlabel="trial", ylabel="validation score", title=f"{study}: optimisation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def importance(scores: dict[str, pd.Series], path: str) -> str:
    """Horizontal bars of each study's parameter importance."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.2), squeeze=False)
    for ax, (study, s) in zip(axes[0], scores.items()):
        s = s.sort_values()
        ax.barh(s.index, s.values, color="tab:blue")
        ax.set(xlabel="importance (fANOVA)", title=f"{study}", xlim=(0, 1))
    return _save(fig, path)


def params(trials: pd.DataFrame, specs: list[dict[str, Any]], path: str) -> str:
    """Each searched parameter against the trial's validation score, coloured by outcome."""
    fig, axes = plt.subplots(1, len(specs), figsize=(3.6 * len(specs), 3.4), squeeze=False)
    for ax, spec in zip(axes[0], specs):
        for status, group in trials.groupby("status"):
            ax.scatter(group[spec["name"]], group["val_score"], s=20,
                       color=STATUS_COLOURS.get(status, "grey"), label=status)
        if spec.get("log"):
            ax.set_xscale("log")
        ax.set(xlabel=spec["name"], ylabel="validation score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)
