"""The searcher: Optuna's TPE through Ray Tune, persisted in optuna.db, safe to resume."""

from __future__ import annotations

import os

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study import storage
from study.spaces import Space


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch for studies that resume after a killed driver.

    The searcher is restored from Tune's last snapshot, but optuna.db is written at once:
    a trial may already be finished in the database when its result arrives again. Optuna
    would refuse the update and end the whole study; the result is recorded already, so
    it is skipped instead.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)


def make_searcher(space: Space, metric: str, mode: str, study_path: str, name: str,
                  seed: int, max_concurrent: int | None) -> Searcher:
    """Seeded TPE over the space, the paper's defaults first, stored beside the study."""
    optuna_storage = None
    if not storage.is_uri(study_path):
        os.makedirs(study_path, exist_ok=True)
        optuna_storage = optuna.storages.RDBStorage(
            f"sqlite:///{os.path.join(study_path, 'optuna.db')}")
    searcher = ResumableOptunaSearch(
        metric=metric, mode=mode, points_to_evaluate=[space.defaults()],
        sampler=optuna.samplers.TPESampler(seed=seed), study_name=name,
        storage=optuna_storage)
    if max_concurrent:
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    return searcher
