"""The searcher: Optuna (TPE, or random search) through Ray Tune, persisted in optuna.db.

Early-stopped trials reach Optuna as PRUNED, with their intermediate values keyed by the
trainer's step, so that TPE never mistakes a partial-training result for a finished one.
"""

from __future__ import annotations

import copy
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


def make_sampler(kind: str, seed: int, num_samples: int,
                 tpe_options: dict[str, bool] | None = None) -> optuna.samplers.BaseSampler:
    """Seeded TPE (with TPE_OPTIONS, or those given) or random search."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    import warnings

    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna's default of 10 random start-up trials would leave TPE 6 of a 16-trial
        # study; a third of the budget (4 to 10 trials) explores, the rest is TPE's.
        return optuna.samplers.TPESampler(
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
