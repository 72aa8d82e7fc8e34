"""The searcher: Optuna (TPE, or random search) through Ray Tune, persisted in optuna.db.

Early-stopped trials reach Optuna as PRUNED, with their intermediate values keyed by the
trainer's step, so that TPE never mistakes a partial-training result for a finished one.
"""

from __future__ import annotations

import os

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study import storage
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


def make_searcher(space: Space, metric: str, mode: str, study_path: str, name: str,
                  seed: int, max_concurrent: int | None, total_steps: int,
                  num_samples: int, sampler: str = "tpe") -> Searcher:
    """Seeded TPE (or random search) over the space, the paper's defaults first, stored
    beside the study."""
    optuna_storage = None
    if not storage.is_uri(study_path):
        os.makedirs(study_path, exist_ok=True)
        optuna_storage = optuna.storages.RDBStorage(
            f"sqlite:///{os.path.join(study_path, 'optuna.db')}")
    if sampler == "tpe":
        # Optuna's default of 10 random start-up trials would leave TPE 6 of a 16-trial
        # study; a third of the budget (4 to 10 trials) explores, the rest is TPE's.
        chosen = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(4, num_samples // 3)))
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed)
    searcher = StudySearch(
        metric=metric, mode=mode, points_to_evaluate=[space.defaults()], sampler=chosen,
        study_name=name, storage=optuna_storage, total_steps=total_steps)
    if max_concurrent:
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return searcher
