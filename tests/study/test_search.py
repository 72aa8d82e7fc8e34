"""The searcher: seeded TPE that proposes the paper's defaults first, hears the trainer's
steps, records trials ASHA stopped as PRUNED and finished ones as COMPLETE; then the race
(no Ray needed)."""

import optuna

from study.race import DEFAULTS
from study.search import RaceSearch, make_searcher
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


def race_search(num_samples=3, k=2, seeds=(11, 12), max_concurrent=None):
    space = load_space("digits")
    inner = make_searcher(space, "val_score", "max", None, "s", seed=0, max_concurrent=None,
                          total_steps=600, num_samples=num_samples)
    searcher = RaceSearch(inner, num_samples, k, list(seeds), space.defaults(), max_concurrent)
    searcher.set_search_properties("val_score", "max", space.tune_space())
    return space, inner, searcher


def test_the_race_follows_the_search_and_the_defaults_fill_its_last_slots():
    space, inner, searcher = race_search()
    search = [searcher.suggest(t) for t in ("s1", "s2", "s3")]
    assert search[0] == space.defaults() and all("phase" not in c for c in search)
    # every search trial is out: free slots take the defaults' race runs, known already
    d1, d2 = searcher.suggest("r1"), searcher.suggest("r2")
    assert [(c["entrant"], c["seed"], c["phase"]) for c in (d1, d2)] == [
        (DEFAULTS, 11, "race"), (DEFAULTS, 12, "race")]
    assert {k: d1[k] for k in space.defaults()} == space.defaults()
    # the finalists wait for the last search trial
    searcher.on_trial_complete("s1", {"step": 600, "val_score": 0.90})
    searcher.on_trial_complete("s2", {"step": 200, "val_score": 0.95})  # stopped by ASHA
    assert searcher.suggest("r3") is None
    searcher.on_trial_result("r1", {"step": 600, "val_score": 0.5})  # race: not Optuna's
    searcher.on_trial_complete("r1", {"step": 600, "val_score": 0.5})
    searcher.on_trial_complete("s3", {"step": 600, "val_score": 0.93})
    race = [searcher.suggest(f"r{i}") for i in range(3, 7)]
    assert [(c["entrant"], c["seed"]) for c in race] == [
        ("finalist-1", 11), ("finalist-2", 11), ("finalist-1", 12), ("finalist-2", 12)]
    # finalist 1 went furthest with the best score; the defaults' own trial is not a finalist
    assert {k: race[0][k] for k in search[2]} == search[2]
    assert {k: race[1][k] for k in search[1]} == search[1]
    assert searcher.suggest("r7") is RaceSearch.FINISHED
    # Optuna saw the three search trials only
    assert len(inner._ot_study.trials) == 3
    assert [t.state.name for t in inner._ot_study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]


def test_a_race_trial_waits_for_a_slot_under_max_concurrent():
    _, _, searcher = race_search(num_samples=2, max_concurrent=2)
    searcher.suggest("s1"), searcher.suggest("s2")
    assert searcher.suggest("r1") is None  # two search trials hold both slots
    searcher.on_trial_complete("s1", {"step": 600, "val_score": 0.9})
    assert searcher.suggest("r1")["entrant"] == DEFAULTS


def test_no_race_without_finalists():
    _, _, searcher = race_search(num_samples=1, k=0)
    searcher.suggest("s1")
    assert searcher.suggest("s2") is RaceSearch.FINISHED
