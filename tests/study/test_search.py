"""The searcher: seeded TPE that proposes the paper's defaults first, hears the trainer's
steps, records trials ASHA stopped as PRUNED and finished ones as COMPLETE (no Ray needed)."""

import optuna

from study.search import make_searcher
from study.spaces import load_space


def test_defaults_first_then_pruned_and_complete_trials_in_optuna_db(tmp_path):
    space = load_space("digits")
    searcher = make_searcher(space, "val_score", "max", str(tmp_path), "s", seed=0,
                             max_concurrent=None, total_steps=300, num_samples=8)
    searcher.set_search_properties("val_score", "max", space.tune_space())
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first == space.defaults()  # the paper's values are the first trial
    assert second != first
    for step, score in ((100, 0.5), (200, 0.6)):
        searcher.on_trial_result("a", {"step": step, "val_score": score})
    searcher.on_trial_result("a", {"step": 200, "val_score": 0.6})  # a resent result: no-op
    searcher.on_trial_complete("a", {"step": 200, "val_score": 0.6})  # stopped before 300
    searcher.on_trial_complete("b", {"step": 300, "val_score": 0.7})  # full length
    searcher.on_trial_complete("b", {"step": 300, "val_score": 0.7})  # again, after a resume

    db = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    a, b = db.trials
    assert a.state == optuna.trial.TrialState.PRUNED and a.intermediate_values == {
        100: 0.5, 200: 0.6}
    assert b.state == optuna.trial.TrialState.COMPLETE and b.value == 0.7
