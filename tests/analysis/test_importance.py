"""Hyperparameter importance: the parameter that drives the validation score ranks first."""

import numpy as np
import pandas as pd
import pytest

from analysis.importance import importance

PARAMS = [{"name": "lr", "type": "float", "low": 0.01, "high": 0.3, "log": True},
          {"name": "weight", "type": "float", "low": 0.1, "high": 10.0, "log": True},
          {"name": "warmup", "type": "int", "low": 0, "high": 500, "log": False}]


def trials(n: int, score) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"lr": np.exp(rng.uniform(np.log(0.01), np.log(0.3), n)),
                          "weight": np.exp(rng.uniform(np.log(0.1), np.log(10.0), n)),
                          "warmup": rng.integers(0, 501, n), "status": "completed"})
    frame["val_score"] = score(frame)
    return frame


def test_the_parameter_that_drives_the_score_ranks_first():
    scores, note = importance(trials(30, lambda f: -np.log(f["lr"])), PARAMS)
    assert scores.idxmax() == "lr" and scores["lr"] > 0.8
    assert set(scores.index) == {"lr", "weight", "warmup"}
    assert note == "fANOVA over 30 completed trials, objective: validation score"


def test_only_completed_trials_with_a_score_count_and_too_few_are_said_so():
    frame = trials(5, lambda f: f["weight"])
    frame.loc[:2, "status"] = "stopped_early"
    scores, note = importance(frame, PARAMS)
    assert scores is None and note == "2 completed trial(s); importance needs at least 3"


def test_the_readmes_optuna_snippet_gives_the_reports_importance(results):
    """README: get_param_importances on optuna.db with fANOVA seeded 0 is what report.md shows
    (the same completed search trials, the same seed, the same order)."""
    import optuna

    from analysis import load_study
    from analysis.results import study_params
    from analysis.tables import search_trials

    path = results["search"]
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{path}/optuna.db")
    readme = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    ours, note = importance(search_trials(load_study(str(path))), study_params(str(path)))
    assert note.startswith("fANOVA over 5 completed trials")
    assert ours.to_dict() == pytest.approx(readme)
