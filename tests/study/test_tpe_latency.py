"""TPE's cost per suggestion, bounded: the benchmark's recorded-like study, and the capped
TPE that conditions on the best and the most recent finished trials only (no timing here:
python -m study.bench.tpe prints the figures)."""

import json
import math
import pickle
import warnings

import optuna
import pytest
from optuna.samplers._tpe import sampler as tpe_internals
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter

from study.bench import tpe
from study.search import (
    TPE_KEEP_BEST,
    TPE_MAX_HISTORY,
    TPE_OPTIONS,
    CappedTPESampler,
    make_sampler,
    make_searcher,
)
from study.spaces import load_space

SPACE = load_space("digits")
DISTS = tpe.distributions(SPACE)


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def study_of(trials, sampler=None):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(trials)
    return study


def test_the_recorded_study_has_n_trials_like_a_digits_study():
    trials = tpe.recorded_trials(SPACE, 400, seed=1)
    study = study_of(trials)
    assert len(study.trials) == 400
    states = [t.state for t in study.trials]
    assert set(states) == {TrialState.COMPLETE, TrialState.PRUNED}
    assert 0.4 < states.count(TrialState.PRUNED) / 400 < 0.6
    evals = list(range(SPACE.test_freq, SPACE.total_steps + 1, SPACE.test_freq))
    stops = {100, 200, 400}  # ASHA's rungs of the digits space: grace 100, reduction 2
    assert tpe.rungs(SPACE.total_steps, SPACE.grace_steps, SPACE.reduction_factor) == sorted(
        stops)
    for t in study.trials:
        assert t.distributions == DISTS
        for name, d in DISTS.items():
            assert d.low <= t.params[name] <= d.high
        steps = sorted(t.intermediate_values)
        assert steps == evals[:len(steps)]  # a value at every evaluation up to the end
        assert 0.0 <= t.value <= 1.0 and t.value == t.intermediate_values[steps[-1]]
        assert (steps[-1] == SPACE.total_steps if t.state == TrialState.COMPLETE
                else steps[-1] in stops)
    # the space Ray's OptunaSearch converts is the study's: same names, bounds and scale
    assert set(DISTS) == {p.name for p in SPACE.params}
    assert all(DISTS[p.name].log == p.log for p in SPACE.params)


def test_a_shorter_trial_reports_every_step():
    trials = tpe.recorded_trials(SPACE, 20, total_steps=10, every=1)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(sorted(t.intermediate_values) == list(range(1, 11))
                            for t in complete)


def test_the_sqlite_fill_is_what_the_searcher_opens(tmp_path):
    trials = tpe.recorded_trials(SPACE, 12)
    tpe.fill_sqlite(SPACE, str(tmp_path), trials)
    searcher, inner = tpe.open_searcher(SPACE, str(tmp_path))
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.searcher is inner
    finished = inner._ot_study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert [t.params for t in finished] == [t.params for t in trials]
    assert searcher.suggest("a") == SPACE.defaults()  # enqueued by the searcher, as in a study


def run(sampler, n_trials, start=()):
    """Ask and tell n_trials over the digits space; the params TPE suggested."""
    study = study_of(list(start), sampler)
    suggested = []
    for _ in range(n_trials):
        trial = study.ask(fixed_distributions=DISTS)
        suggested.append(trial.params)
        score = -sum((math.log(v) if isinstance(v, float) else v / 300) ** 2
                     for v in trial.params.values())
        study.tell(trial, score)
    return suggested


def test_below_the_cap_it_is_plain_tpe_draw_for_draw():
    start = tpe.recorded_trials(SPACE, 60, seed=2)
    plain = optuna.samplers.TPESampler(seed=7, n_startup_trials=10, **TPE_OPTIONS)
    capped = CappedTPESampler(max_history=100, seed=7, n_startup_trials=10, **TPE_OPTIONS)
    assert run(capped, 30, start) == run(plain, 30, start)
    # and as the study makes it: every study of today's size stays plain TPE
    assert run(make_sampler("tpe", 3, 16), 20) == run(optuna.samplers.TPESampler(
        seed=3, n_startup_trials=5, **TPE_OPTIONS), 20)


def spy_on_split(monkeypatch):
    """What TPE conditions on: the trials of each split into good and bad ones."""
    seen = []
    split = tpe_internals._split_trials

    def spy(study, trials, n_below):
        below, above = split(study, trials, n_below)
        seen.append((list(trials), below))
        return below, above

    monkeypatch.setattr(tpe_internals, "_split_trials", spy)
    return seen


@pytest.mark.parametrize("few_complete", [False, True])
def test_above_the_cap_tpe_sees_the_best_and_the_latest(monkeypatch, few_complete):
    cap = 300
    trials = tpe.recorded_trials(SPACE, 700, seed=4)
    for i, t in enumerate(trials):  # under 25 COMPLETE: the best include pruned ones
        if few_complete and t.state == TrialState.COMPLETE and i % 50:
            steps = sorted(t.intermediate_values)[:4]
            trials[i] = optuna.trial.create_trial(
                state=TrialState.PRUNED, params=t.params, distributions=DISTS,
                value=t.intermediate_values[steps[-1]],
                intermediate_values={s: t.intermediate_values[s] for s in steps})
    study = study_of(trials)
    assert (sum(t.state == TrialState.COMPLETE for t in trials) < TPE_KEEP_BEST) == few_complete
    # Plain TPE's good set, of all 700 trials.
    best_of_all, _ = tpe_internals._split_trials(study, study.trials, TPE_KEEP_BEST)
    numbers = [t.number for t in study.trials]
    seen = spy_on_split(monkeypatch)
    study.sampler = CappedTPESampler(max_history=cap, seed=0, **TPE_OPTIONS)
    trial = study.ask(fixed_distributions=DISTS)
    assert len(seen) == len(DISTS)  # one split per parameter (independent TPE)
    for conditioned, below in seen:
        assert len(conditioned) == cap
        kept = {t.number for t in conditioned}
        # TPE's good set is the one it has without the cap
        assert [t.number for t in below] == [t.number for t in best_of_all]
        # the rest are the most recent
        recent = [n for n in numbers if n not in {t.number for t in best_of_all}][-(cap - 25):]
        assert kept == {t.number for t in best_of_all} | set(recent)
    assert set(trial.params) == set(DISTS)


def test_the_cap_keeps_trials_tpe_does_not_condition_on(monkeypatch):
    study = study_of(tpe.recorded_trials(SPACE, 80))
    running = study.ask()  # neither finished nor counted: left as TPE would see it
    sampler = CappedTPESampler(max_history=50, keep_best=5, seed=0, n_startup_trials=10)
    everything = study._get_trials(deepcopy=False, use_cache=False)
    kept = sampler._kept(study, everything)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in kept) == 50
    assert running.number in {t.number for t in kept}
    assert sampler._kept(study, everything) is kept  # chosen once per list of trials


def test_make_searcher_caps_tpe_and_the_sampler_pickles_without_trials(tmp_path):
    searcher = make_searcher(SPACE, "val_score", "max", str(tmp_path), "s", seed=0,
                             max_concurrent=2, total_steps=600, num_samples=16)
    sampler = searcher.searcher._sampler  # the study opens on set_search_properties
    assert isinstance(sampler, CappedTPESampler) and sampler.max_history == TPE_MAX_HISTORY
    assert TPE_MAX_HISTORY >= 250  # TPE's good set (25 of >= 250 trials) stays exact
    assert isinstance(make_sampler("random", 0, 16), optuna.samplers.RandomSampler)
    sampler._kept(optuna.create_study(), [])
    restored = pickle.loads(pickle.dumps(sampler))
    assert restored._memo is None and restored.max_history == TPE_MAX_HISTORY
    with pytest.raises(ValueError, match="max_history"):
        CappedTPESampler(max_history=20, keep_best=25)


def test_the_benchmark_prints_a_row_per_n_storage_and_cap(capsys):
    assert tpe.main(["--trials", "15", "--storage", "memory", "--max-history", "0,1000",
                     "--suggestions", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["n"], r["storage"], r["max_history"]) for r in rows] == [
        (15, "memory", None), (15, "memory", 1000)]
    assert all(r["finished"] == 15 + 1 + 2 for r in rows)  # the defaults, then 2 timed
