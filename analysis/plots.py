"""The report's pictures as PNG files (matplotlib, no display needed).

Each is drawn at most 8 inches wide at 110 dpi (880 pixels), the width report.md is read at
on GitHub, so that its text is read at the size it was set in.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window, also on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from analysis.tables import HYPERPARAMETERS  # noqa: E402
from study import layout  # noqa: E402
from trainer.config import SHORT_NAMES  # noqa: E402

DPI = 110
WIDTH = 8.0  # inches: 880 pixels
# How a trial ended, in every plot: full-length trials filled, stopped early hollow.
OUTCOMES = {
    "completed": {"marker": "o", "color": "tab:blue", "label": "full length"},
    "stopped_early": {"marker": "o", "color": "tab:orange", "facecolors": "none",
                      "label": "stopped early (score at its last rung)"},
    "diverged": {"marker": "x", "color": "tab:red", "label": "diverged"},
    "running": {"marker": "o", "color": "tab:green", "facecolors": "none", "label": "running"},
}
DEFAULTS_STYLE = {"marker": "*", "s": 220, "facecolors": "none", "edgecolors": "black",
                  "linewidths": 1.2, "zorder": 5}


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _scatter(ax, x, y, status: str, size: float = 28, floor: float | None = None) -> None:
    """Points of one outcome; those under `floor` drawn on it as down-pointing triangles."""
    style = dict(OUTCOMES.get(status, {"marker": "o", "color": "grey", "label": status}))
    label = style.pop("label")
    color = style.pop("color")
    x, y = pd.Series(list(x)), pd.Series(list(y))
    below = (y < floor) if floor is not None else pd.Series(False, index=y.index)
    if below.any():
        ax.scatter(x[below], [floor] * int(below.sum()), s=size, color=color, marker="v",
                   clip_on=False, label=f"below the axis ({label})", zorder=4)
    x, y = x[~below], y[~below]
    if style.get("facecolors") == "none":
        ax.scatter(x, y, s=size, edgecolors=color, label=label, linewidths=1.2, **style)
    else:
        ax.scatter(x, y, s=size, color=color, label=label, **style)


def _floor(scores) -> float | None:
    """Where a score axis starts so that one far-off trial (a failed setting near chance)
    does not squeeze the others into a band: three interquartile ranges below the lower
    quartile; None when no score lies below that."""
    v = pd.Series(list(scores), dtype=float).dropna()
    if len(v) < 4:
        return None
    q1, q3 = v.quantile(0.25), v.quantile(0.75)
    low = q1 - 3 * max(q3 - q1, 0.01)
    return low if v.min() < low else None


def _score_axis(ax, floor: float | None, top: float) -> None:
    if floor is not None:
        ax.set_ylim(floor - 0.01 * (top - floor), top + 0.04 * (top - floor))


def _legend_below(fig, axes, columns: int) -> None:
    """One legend under the figure for every panel's entries, each label once."""
    handles, labels = [], []
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=columns, fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, -0.02))


def _plain_log_ticks(axis) -> None:
    """A log axis with a few plain labels (0.01, 0.03, 0.1) and no minor labels, which
    overlap into unreadable text over a range below a decade."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=6))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def short_values(row: pd.Series, names: list[str]) -> str:
    """w=1.25 a=0.519 lr=0.0777 wu=164"""
    return " ".join(f"{SHORT_NAMES.get(n, n)}={row[n]:.3g}" if isinstance(row[n], float)
                    else f"{SHORT_NAMES.get(n, n)}={row[n]}" for n in names if n in row)


CURVES_SHOWN = 6  # trials in the curves plot: a legend of thousands is read by nobody


def curves(history: pd.DataFrame, top: pd.DataFrame, names: list[str], path: str,
           shown: int = CURVES_SHOWN) -> str:
    """Validation (left) and test (right, reported only) accuracy against step of the best
    `shown` trials of `top`, one colour per trial in both panels; the y axis spans their
    scores over the second half of training, where they differ."""
    fig, (val_ax, test_ax) = plt.subplots(1, 2, figsize=(WIDTH, 4.2), sharey=True)
    late = []
    for rank, (_, t) in enumerate(top.head(shown).iterrows(), 1):
        h = history[(history["study"] == t["study"]) & (history["trial_id"] == t["trial_id"])]
        number = t.get("trial_number")
        label = (f"#{rank} trial {int(number) if pd.notna(number) else t['trial_id']}: "
                 f"{short_values(t, names)}")
        line, = val_ax.plot(h["step"], h["val_accuracy"], marker="o", markersize=3, label=label)
        test_ax.plot(h["step"], h["test_accuracy"], marker="o", markersize=3,
                     color=line.get_color())
        half = h[h["step"] >= h["step"].max() / 2]
        late += [*half["val_accuracy"], *half["test_accuracy"]]
    if late:
        low, high = min(late), max(late)
        pad = max(0.01, (high - low) * 0.15)
        val_ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    val_ax.set(xlabel="step", ylabel="accuracy", title="validation (what the search read)")
    test_ax.set(xlabel="step", title="test (reported only)")
    for ax in (val_ax, test_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(f"The {min(shown, len(top))} best search trials by validation score "
                 "(earlier, lower points run off the axis)", fontsize=10)
    handles, labels = val_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    return _save(fig, path)


def history(trials: pd.DataFrame, defaults: dict[str, dict[str, Any]], path: str) -> str:
    """Optimisation history per search study: each trial's validation score in trial order
    (hollow: stopped early, at its last rung), the best full-length score so far, and the
    trial that ran the paper's defaults starred."""
    studies = sorted(trials["study"].unique())
    fig, axes = plt.subplots(1, len(studies), figsize=(min(WIDTH, 5.5 * len(studies)), 3.8),
                             squeeze=False)
    for ax, study in zip(axes[0], studies):
        t = trials[trials["study"] == study].sort_values("trial_number")
        floor = _floor(t["val_score"])
        for status, group in t.groupby("status"):
            _scatter(ax, group["trial_number"], group["val_score"], status, floor=floor)
        _score_axis(ax, floor, t["val_score"].max())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        full = t["val_score"].where(t["status"] == "completed")
        ax.step(t["trial_number"], full.cummax().ffill(), where="post", color="black", lw=1,
                label="best full-length score so far")
        paper = defaults.get(study) or {}
        mask = pd.Series(bool(paper), index=t.index)
        for name, value in paper.items():
            mask &= t[name].sub(value).abs() < 1e-9 if name in t else False
        if mask.any():
            ax.scatter(t.loc[mask, "trial_number"], t.loc[mask, "val_score"],
                       label="the paper's defaults", **DEFAULTS_STYLE)
        ax.set(xlabel="trial", ylabel="validation score",
               title=f"{study}: {len(t)} search trials")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes, 2)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return _save(fig, path)


def importance(scores: dict[str, pd.Series], counts: dict[str, int], few: int,
               path: str, totals: dict[str, int] | None = None) -> str:
    """Horizontal bars of each study's parameter importance, titled with the number of
    trials it rests on (and a caveat under `few`); of how many, where `totals` says it was
    a sample of more."""
    fig, axes = plt.subplots(1, len(scores), figsize=(min(WIDTH, 4.5 * len(scores)), 3.0),
                             squeeze=False)
    for ax, (study, s) in zip(axes[0], scores.items()):
        s = s.sort_values()
        ax.barh(s.index, s.values, color="tab:blue")
        n = counts.get(study, 0)
        total = (totals or {}).get(study, n)
        title = f"{study}: fANOVA over {n}" + (f" of {total}" if total > n else "") + \
            " full-length trials"
        if n < few:
            title += f"\n(only {n}: too few to trust)"
        ax.set(xlabel="importance for the validation score", title=title, xlim=(0, 1))
        ax.title.set_fontsize(10)
    fig.tight_layout()
    return _save(fig, path)


def params(trials: pd.DataFrame, specs: list[dict[str, Any]], path: str) -> str:
    """Each searched parameter against the trial's validation score: full-length trials
    filled, stopped-early ones hollow (their score is at an earlier rung), the paper's
    defaults starred; two panels a row, so that each is read at a legible size."""
    columns = min(2, len(specs))
    rows = math.ceil(len(specs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 3.0 * rows), squeeze=False,
                             sharey=True)
    floor = _floor(trials["val_score"])
    for ax, spec in zip(axes.flat, specs):
        for status, group in trials.groupby("status"):
            _scatter(ax, group[spec["name"]], group["val_score"], status, floor=floor)
        _score_axis(ax, floor, trials["val_score"].max())
        default = spec.get("default")
        if default is not None and spec["type"] != "categorical":
            at = trials[(trials[spec["name"]] - default).abs() < 1e-9]
            if len(at):
                ax.scatter(at[spec["name"]], at["val_score"], label="the paper's defaults",
                           **DEFAULTS_STYLE)
        if spec["type"] != "categorical":  # the searched range, not only what was drawn
            low, high = float(spec["low"]), float(spec["high"])
            if spec.get("log"):
                ax.set_xscale("log")
                _plain_log_ticks(ax.xaxis)
                ax.set_xlim(low / 1.15, high * 1.15)
            else:
                ax.set_xlim(low - 0.04 * (high - low), high + 0.04 * (high - low))
        ax.set(xlabel=spec["name"] + (" (log scale)" if spec.get("log") else ""))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation score")
    for ax in list(axes.flat)[len(specs):]:
        ax.set_visible(False)
    _legend_below(fig, axes, 3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


ARM_ORDER = layout.ARMS


def arms(trials: pd.DataFrame, path: str) -> str | None:
    """Per reproduce study: each arm's final test error per seed (a seed's points joined
    across arms: the comparison is paired) and the arms' means with one std; None when no
    reproduce trial completed."""
    done = trials[(trials["status"] == "completed") & trials["variant"].notna()]
    if not len(done):
        return None
    studies = sorted(done["study"].unique())
    fig, axes = plt.subplots(1, len(studies), figsize=(min(WIDTH, 4.5 * len(studies)), 3.6),
                             squeeze=False)
    for ax, study in zip(axes[0], studies):
        d = done[done["study"] == study]
        order = [a for a in ARM_ORDER if a in set(d["variant"])] + sorted(
            set(d["variant"]) - set(ARM_ORDER))
        x = {a: i for i, a in enumerate(order)}
        for _, g in d.groupby("seed"):
            g = g.assign(_x=g["variant"].map(x)).sort_values("_x")
            ax.plot(g["_x"], g["final_test_error"], color="grey", lw=0.8, alpha=0.6,
                    marker="o", markersize=5, markerfacecolor="white")
        for arm in order:
            errors = d.loc[d["variant"] == arm, "final_test_error"]
            std = errors.std(ddof=1) if len(errors) > 1 else 0.0
            ax.errorbar(x[arm] + 0.18, errors.mean(), yerr=std, fmt="s", color="black",
                        capsize=4, markersize=6)
            ax.annotate(f"{errors.mean():.2f}", (x[arm] + 0.26, errors.mean()), fontsize=8,
                        va="center")
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.4, len(order) - 0.3)
        title = f"{study}: {d['seed'].nunique()} seeds"
        tuned, default = (d[d["variant"] == a].head(1) for a in (layout.TUNED, layout.DEFAULT))
        names = [n for n in HYPERPARAMETERS if n in d]  # as tables.tuning_gain compares
        if len(tuned) and len(default) and (
                tuned[names].to_numpy() == default[names].to_numpy()).all():
            title += "\n(the search kept the paper's defaults: tuned = default)"
        ax.set(ylabel="final test error %", title=title)
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3, axis="y")
    handles = [Line2D([], [], color="grey", marker="o", markerfacecolor="white", lw=0.8,
                      label="one seed, across arms"),
               Line2D([], [], color="black", marker="s", lw=0, label="mean ± std")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)
