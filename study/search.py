"""The searcher: Optuna (TPE, or random search) through Ray Tune, persisted in optuna.db.

Early-stopped trials reach Optuna as PRUNED, with their intermediate values keyed by the
trainer's step, so that TPE never mistakes a partial-training result for a finished one.
"""

from __future__ import annotations

import copy
import heapq
import math
import os

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study import storage
from study.race import DEFAULTS, finalist_name, finalists, race_configs
from study.spaces import Space


class StudySearch(OptunaSearch):
    """OptunaSearch that knows a trial's full length and survives a resumed driver.

    - A trial that ends before `total_steps` without an error or divergence was stopped by
      the scheduler: it is told PRUNED (Optuna then takes its last intermediate value).
    - Intermediate values are reported at the trainer's `step`, not Tune's iteration count.
    - After a killed driver, the searcher is restored from Tune's last snapshot while
      optuna.db was written at once: a trial may be finished in the database already when
      its result arrives again. Optuna would refuse the update and end the whole study;
      the result is recorded already, so it is skipped instead.
    """

    def __init__(self, *args, total_steps: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.total_steps = total_steps
        self._last_step: dict[str, int] = {}  # per trial, the step last told to Optuna

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        step = int(result["step"])
        if (trial_id in self._completed_trials or trial_id not in self._ot_trials
                or self._last_step.get(trial_id) == step):
            return
        self._last_step[trial_id] = step
        try:
            self._ot_trials[trial_id].report(result[self.metric], step)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        # Tune hands a trial's last result (the one ASHA stopped it on, or the final one)
        # only to this method: it is an intermediate value too.
        if result and self.metric in result and "step" in result and not error:
            self.on_trial_result(trial_id, result)
        stopped_early = (not error and result and not result.get("diverged")
                         and int(result.get("step", self.total_steps)) < self.total_steps)
        if not stopped_early or trial_id in self._completed_trials:
            try:
                super().on_trial_complete(trial_id, result, error)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._completed_trials.add(trial_id)
            return
        try:
            self._ot_study.tell(self._ot_trials[trial_id], None,
                                state=optuna.trial.TrialState.PRUNED)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        self._completed_trials.add(trial_id)


# Optuna's TPE settings for a study (measured on the replay benchmark, docs/search-benchmark.md).
TPE_OPTIONS: dict[str, bool] = {"multivariate": False, "constant_liar": False}
# TPE's time per suggestion grows linearly with the finished trials it conditions on: on one
# core, 20 ms at 1,000 and 180-220 ms at 10,000 (in memory; python -m study.bench.tpe), most
# of the 0.5 s a trial of a 2-slot study of 1-s trials leaves the driver. Past this many,
# TPE sees the best and the most recent ones only (29 ms at 10,000); smaller studies, all
# that run today, get plain TPE.
TPE_MAX_HISTORY = 1000
# Optuna's default gamma puts min(ceil(n / 10), 25) trials in TPE's "good" set, 25 from 241
# on: keeping the 25 best leaves that set, TPE's model of where good trials lie, as it is
# without a cap. What the cap drops are old trials of the "bad" set, which TPE's default
# weights count less the older they are.
TPE_KEEP_BEST = 25


_SEEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # what TPE reads


def _rank(trial: optuna.trial.FrozenTrial, sign: float) -> tuple:
    """Smaller is better, in the order TPE splits trials: COMPLETE by value, then PRUNED
    by the furthest step reached and the value there (optuna's _split_trials)."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return (0, sign * trial.value, 0.0)
    if trial.intermediate_values:
        step, value = max(trial.intermediate_values.items())
        return (1, -step, math.inf if math.isnan(value) else sign * value)
    return (1, 1, 0.0)


class _History:
    """A study as TPE reads it: all of it, but for the finished trials `sampler` keeps."""

    def __init__(self, study: optuna.Study, sampler: CappedTPESampler):
        self._study, self._sampler = study, sampler

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        # With use_cache, Optuna hands out one list of all trials per suggestion: the trials
        # kept are chosen once from it, not once per parameter and call.
        everything = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        kept = self._sampler._kept(self._study, everything)
        if kept is everything:
            return self._study._get_trials(deepcopy=deepcopy, states=states,
                                           use_cache=use_cache)
        trials = kept if states is None else [t for t in kept if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


class CappedTPESampler(optuna.samplers.TPESampler):
    """TPE that conditions on at most `max_history` finished trials: the `keep_best` best
    (as TPE ranks them) and the most recent others. Up to `max_history` finished trials it
    is plain TPE, draw for draw; `max_history=None` never caps."""

    def __init__(self, *, max_history: int | None = TPE_MAX_HISTORY,
                 keep_best: int = TPE_KEEP_BEST, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_history is not None and not max(keep_best, self._n_startup_trials) < max_history:
            raise ValueError(f"max_history ({max_history}) must exceed keep_best ({keep_best}) "
                             f"and n_startup_trials ({self._n_startup_trials})")
        self.max_history, self.keep_best = max_history, keep_best
        self._memo: tuple[list, int, list] | None = None  # all trials, their number, kept

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memo": None}  # Tune's searcher checkpoints: no trials

    def _kept(self, study: optuna.Study, trials: list) -> list:
        """`trials`, less the finished ones beyond the cap (`trials` itself: none beyond)."""
        if self._memo is not None and self._memo[0] is trials and self._memo[1] == len(trials):
            return self._memo[2]
        seen = [t for t in trials if t.state in _SEEN]
        kept = trials
        if len(seen) > self.max_history:
            sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
            complete = [t for t in seen if t.state == optuna.trial.TrialState.COMPLETE]
            if len(complete) >= self.keep_best:  # the best are COMPLETE: rank by value only
                best = heapq.nsmallest(self.keep_best, complete,
                                       key=lambda t: (sign * t.value, t.number))
            else:
                best = heapq.nsmallest(self.keep_best, seen,
                                       key=lambda t: (_rank(t, sign), t.number))
            keep = {t.number for t in best}
            for t in reversed(seen):  # trials come in the order of their numbers
                if len(keep) >= self.max_history:
                    break
                keep.add(t.number)
            kept = [t for t in trials if t.number in keep or t.state not in _SEEN]
        # The memo holds `trials`, so no later list can take its id: `is` stays exact.
        self._memo = trials, len(trials), kept
        return kept

    def _view(self, study: optuna.Study):
        if self.max_history is None or study._is_multi_objective():
            return study
        return _History(study, self)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict) -> dict:
        return super().sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                           param_name: str, param_distribution) -> object:
        return super().sample_independent(self._view(study), trial, param_name,
                                          param_distribution)


def make_sampler(kind: str, seed: int, num_samples: int,
                 tpe_options: dict[str, bool] | None = None,
                 max_history: int | None = TPE_MAX_HISTORY) -> optuna.samplers.BaseSampler:
    """Seeded TPE (with TPE_OPTIONS, or those given; conditioning on at most `max_history`
    finished trials) or random search."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    import warnings

    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna's default of 10 random start-up trials would leave TPE 6 of a 16-trial
        # study; a third of the budget (4 to 10 trials) explores, the rest is TPE's.
        return CappedTPESampler(
            max_history=max_history,
            seed=seed, n_startup_trials=min(10, max(4, num_samples // 3)),
            **(TPE_OPTIONS if tpe_options is None else tpe_options))


def make_searcher(space: Space, metric: str, mode: str, study_path: str | None, name: str,
                  seed: int, max_concurrent: int | None, total_steps: int,
                  num_samples: int, sampler: str = "tpe",
                  tpe_options: dict[str, bool] | None = None) -> Searcher:
    """Seeded TPE (or random search) over the space, the paper's defaults first, stored
    beside the study (in memory without a local study_path: the replay benchmark)."""
    optuna_storage = None
    if study_path is not None and not storage.is_uri(study_path):
        os.makedirs(study_path, exist_ok=True)
        optuna_storage = optuna.storages.RDBStorage(
            f"sqlite:///{os.path.join(study_path, 'optuna.db')}")
    searcher = StudySearch(
        metric=metric, mode=mode, points_to_evaluate=[space.defaults()],
        sampler=make_sampler(sampler, seed, num_samples, tpe_options),
        study_name=name, storage=optuna_storage, total_steps=total_steps)
    if max_concurrent:
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return searcher


def is_race(trial_or_config) -> bool:
    """A trial (or its config) of the race that follows a search (study/race.py)."""
    config = getattr(trial_or_config, "config", trial_or_config) or {}
    return config.get("phase") == "race"


class RaceSearch(Searcher):
    """The study's searcher for its first `num_samples` trials, then the race.

    The defaults' race runs are known from the start: they fill the slots that the search's
    last trials leave free. Once every search trial has ended, the k best of them (as ASHA
    ranks them, study.race.finalists) race on the same seeds. Race trials never reach the
    searcher below (Optuna), nor ASHA (RaceAwareASHA).
    """

    def __init__(self, searcher: Searcher, num_samples: int, k: int, seeds: list[int],
                 defaults: dict, max_concurrent: int | None = None):
        self.searcher = searcher
        self.num_samples, self.k, self.seeds = num_samples, k, list(seeds)
        self.defaults = dict(defaults)
        self.max_concurrent = max_concurrent
        self.suggested = 0  # search trials handed out
        self.open: set[str] = set()  # search trials not ended yet
        self.ended: dict[str, dict] = {}  # search trial -> how it ended
        self.configs: dict[str, dict] = {}  # search trial -> its searched values
        self.racing: set[str] = set()  # race trials running
        self.queue = race_configs({DEFAULTS: self.defaults}, self.seeds)
        self.finalists: list[dict] | None = None  # chosen once the search has ended
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.suggested < self.num_samples:
            suggestion = self.searcher.suggest(trial_id)
            if isinstance(suggestion, dict):
                self.suggested += 1
                self.open.add(trial_id)
                self.configs[trial_id] = dict(suggestion)
            return suggestion
        if not self.k:
            return Searcher.FINISHED
        if self.max_concurrent and len(self.open) + len(self.racing) >= self.max_concurrent:
            return None
        if self.finalists is None and not any(c["entrant"] == DEFAULTS for c in self.queue):
            if self.open:
                return None  # the finalists are known once every search trial has ended
            self._choose_finalists()
        if not self.queue:
            return Searcher.FINISHED
        self.racing.add(trial_id)
        return self.queue.pop(0)

    def _choose_finalists(self) -> None:
        trials = [{**self.ended[t], "trial_id": t, "config": self.configs[t]}
                  for t in self.ended if t in self.configs]
        self.finalists = finalists(trials, self.k, self.defaults)
        entrants = {finalist_name(i + 1): f["config"] for i, f in enumerate(self.finalists)}
        self.queue += race_configs(entrants, self.seeds)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.racing:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self.racing:
            self.racing.discard(trial_id)
            return
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        self.open.discard(trial_id)
        result = result or {}
        status = ("error" if error or not result else "diverged" if result.get("diverged")
                  else "completed")  # finalists() ranks by steps: stopped trials rank lower
        self.ended[trial_id] = {"status": status, "steps": int(result.get("step", 0)),
                                "val_score": result.get(self.metric)}

    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class RaceAwareASHA(ASHAScheduler):
    """ASHA over the search's trials; a race trial always runs to its end."""

    def on_trial_add(self, tune_controller, trial) -> None:
        if not is_race(trial):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_race(trial):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not is_race(trial):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not is_race(trial):
            super().on_trial_remove(tune_controller, trial)
