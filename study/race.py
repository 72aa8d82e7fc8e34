"""The race: after a search, its finalists and the paper's defaults train at full length on
seeds of their own, and a finalist replaces the defaults only when it beats them by more
than the noise (docs/selection.md).

Seeds: the reproduce runs of a dataset train on its paper seed and the next ones. A search
study trains every trial on one seed of a block of its own, 1000 seeds above them per study
seed, and races on the seeds after it: selection and report never share a training run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from study.spaces import Space
from trainer.config import MAX_SEED, Config
from trainer.settings import PRESETS

SEED_BLOCK = 1000


def base_seed(space: Space) -> int:
    """The dataset's paper seed (7788, 8469), or the trainer's default for data of yours."""
    return PRESETS.get(space.dataset, {}).get("seed", Config.seed)


def selection_seeds(space: Space, study_seed: int, race_seeds: int) -> tuple[int, list[int]]:
    """The search's trainer seed and the race's seeds for a study of this sampler seed."""
    block = base_seed(space) + SEED_BLOCK * (study_seed + 1)
    if block + race_seeds > MAX_SEED:
        raise ValueError(f"--seed {study_seed}: too large for the trainer's seeds; use a "
                         f"seed below {(MAX_SEED - base_seed(space)) // SEED_BLOCK - 1}")
    return block, [block + 1 + i for i in range(race_seeds)]


# --- who races ------------------------------------------------------------------------------

DEFAULTS = "defaults"
# The race's false-replacement rate: a finalist no better than the defaults replaces them
# at most this often.
ALPHA = 0.05


def finalist_name(rank: int) -> str:
    return f"finalist-{rank}"


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same searched values (floats compared to 1e-9 relative)."""
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9) if isinstance(a[k], float) else a[k] == b[k]
        for k in a)


def finalists(trials: list[dict[str, Any]], k: int,
              defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The k best search trials other than the defaults, as ASHA ranks them: furthest step
    reached first, then validation score; errored and diverged trials never. Each is
    {"config", "trial_id", "steps", "val_score"}."""
    scored = [t for t in trials if t["status"] in ("completed", "stopped_early")
              and t["val_score"] is not None and not same_config(t["config"], defaults)]
    ranked = sorted(scored, key=lambda t: (t["steps"], t["val_score"]), reverse=True)
    out: list[dict[str, Any]] = []
    for t in ranked:
        if not any(same_config(t["config"], f["config"]) for f in out):
            out.append({k_: t[k_] for k_ in ("config", "trial_id", "steps", "val_score")})
        if len(out) == k:
            break
    return out


def race_configs(entrants: dict[str, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """The race's trial configurations: every entrant on every seed, seed by seed."""
    return [{**config, "seed": seed, "phase": "race", "entrant": name}
            for seed in seeds for name, config in entrants.items()]


# --- the decision ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What the race chose, and why, from each entrant's validation score on each seed."""

    choice: str  # DEFAULTS or a finalist's name
    replaced: bool  # a finalist replaces the paper's defaults
    seeds: list[int]  # the seeds every entrant finished (what the means rest on)
    means: dict[str, float]
    best_challenger: str | None
    advantage: float | None  # best challenger minus defaults, mean over the seeds
    noise_sd: float | None  # one run's noise, pooled over entrants (two-way residual)
    df: int | None
    threshold: float | None  # the smallest advantage that counts: the detectable one
    alpha: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide(scores: dict[str, dict[int, float]], resolution: float,
           alpha: float = ALPHA) -> Decision:
    """The race's rule (docs/selection.md): the finalist with the best mean validation
    score replaces the defaults only when its advantage, paired over the seeds, exceeds
    both one validation image (`resolution`) and the one-sided t threshold at level
    alpha / (number of finalists), with the run-to-run noise pooled over every entrant."""
    names = [n for n in scores if n != DEFAULTS]
    seeds = sorted(set.intersection(*(set(s) for s in scores.values()))) if scores else []

    def keep(reason: str, **figures) -> Decision:
        base = dict(best_challenger=None, advantage=None, noise_sd=None, df=None,
                    threshold=None)
        return Decision(DEFAULTS, False, seeds, means, alpha=alpha, reason=reason,
                        **{**base, **figures})

    means = {n: float(np.mean([scores[n][s] for s in seeds])) for n in scores} if seeds else {}
    if DEFAULTS not in scores or not seeds:
        return keep("the defaults have no finished race run: they are kept")
    if not names:
        return keep("no finalist raced: the defaults are kept")
    if len(seeds) < 2:
        return keep(f"only {len(seeds)} seed finished by every entrant: too few to measure "
                    "the noise, the defaults are kept")
    order = [DEFAULTS, *names]
    x = np.array([[scores[n][s] for s in seeds] for n in order])
    residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    df = (len(order) - 1) * (len(seeds) - 1)
    sd = float(np.sqrt((residual ** 2).sum() / df))
    best = max(names, key=lambda n: means[n])
    advantage = means[best] - means[DEFAULTS]
    from scipy import stats  # 0.8 s to import: only where a race is decided

    critical = float(stats.t.ppf(1 - alpha / len(names), df))
    threshold = max(critical * sd * math.sqrt(2 / len(seeds)), resolution)
    figures = dict(best_challenger=best, advantage=advantage, noise_sd=sd, df=df,
                   threshold=threshold)
    if advantage > threshold:
        return Decision(best, True, seeds, means, alpha=alpha,
                        reason=f"{best} beats the defaults by {advantage:+.4f} on validation, "
                               f"more than the noise allows ({threshold:.4f}): it replaces "
                               "them", **figures)
    if advantage <= 0:
        why = f"no finalist beat the defaults on average (the best, {best}, by {advantage:+.4f})"
    else:
        why = (f"{best} beats the defaults by {advantage:+.4f}, within the noise (a real "
               f"advantage must exceed {threshold:.4f})")
    return keep(f"{why}: the defaults are kept", **figures)
