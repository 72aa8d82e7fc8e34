"""Hyperparameter importance over the completed trials of a search study (Optuna's fANOVA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd

MIN_TRIALS = 3  # fANOVA needs a few points with varied parameters to say anything
# fANOVA's time grows faster than its trials (on one core: 0.7 s over 100, 3.7 s over 400,
# 15 s over 949): past this many completed trials it runs on a seeded uniform sample of
# them, and its note says so. Below it, the result is Optuna's on optuna.db (README).
MAX_TRIALS = 500


def _distribution(spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    if spec["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec["choices"]))
    if spec["type"] == "int":
        return optuna.distributions.IntDistribution(int(spec["low"]), int(spec["high"]),
                                                    log=bool(spec["log"]))
    return optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]),
                                                  log=bool(spec["log"]))


def importance(trials: pd.DataFrame, params: list[dict[str, Any]], seed: int = 0,
               max_trials: int = MAX_TRIALS) -> tuple[pd.Series | None, str]:
    """Importance of each searched parameter for the validation score (what the search
    optimised), and a note saying on how many trials; None and the reason when there are
    too few completed trials. Over more than `max_trials`, a uniform sample of them drawn
    with `seed` (see MAX_TRIALS)."""
    done = trials[(trials["status"] == "completed") & trials["val_score"].notna()]
    if "trial_number" in done:  # optuna.db's order: its importances are then these
        done = done.sort_values("trial_number")
    if len(done) < MIN_TRIALS:
        return None, (f"{len(done)} completed trial(s); importance needs at least "
                      f"{MIN_TRIALS}")
    over = f"{len(done)} completed trials"
    if len(done) > max_trials:
        keep = np.sort(np.random.default_rng(seed).choice(len(done), max_trials,
                                                          replace=False))
        done = done.iloc[keep]  # still in trial order
        over = (f"{max_trials} of {over} (a uniform sample drawn with seed {seed}: fANOVA's "
                f"time grows faster than its trials)")
    # in name order, as Optuna's get_param_importances orders them: fANOVA's forest sees
    # the columns in this order, and the README's snippet on optuna.db then agrees
    distributions = {p["name"]: _distribution(p) for p in sorted(params, key=lambda p: p["name"])}
    # Rebuild the study in memory from the files: works for merged and copied studies alike.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in done.iterrows():
        values = {name: (int(row[name]) if isinstance(d, optuna.distributions.IntDistribution)
                         else row[name]) for name, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions=distributions, value=float(row["val_score"])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:  # e.g. no parameter varies
        return None, f"importance could not be computed ({e})"
    return (pd.Series(scores, name="importance").rename_axis("parameter"),
            f"fANOVA over {over}, objective: validation score")
