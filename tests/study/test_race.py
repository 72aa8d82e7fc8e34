"""The race: who races, on which seeds, and when a finalist replaces the paper's defaults."""

import numpy as np
import pytest

from study.race import (
    ALPHA,
    DEFAULTS,
    SEED_BLOCK,
    decide,
    finalists,
    race_configs,
    selection_seeds,
)
from study.spaces import load_space

ONE_IMAGE = 1 / 100  # digits' 100 validation images


def scores(means: dict[str, float], noise: np.ndarray | None = None, seeds=(1, 2, 3)):
    """Per-entrant, per-seed validation scores: a mean, plus a seed effect, plus noise."""
    noise = np.zeros((len(means), len(seeds))) if noise is None else noise
    seed_effect = np.array([0.01, -0.02, 0.015])[:len(seeds)]
    return {name: {s: m + seed_effect[j] + noise[i, j] for j, s in enumerate(seeds)}
            for i, (name, m) in enumerate(means.items())}


NOISE = np.array([[0.02, -0.015, 0.0], [-0.02, 0.025, -0.01], [0.01, -0.01, 0.02],
                  [-0.015, 0.0, 0.01]])  # about 0.017 sd per run: a few images


def test_a_finalist_better_by_less_than_the_noise_leaves_the_defaults():
    race = scores({DEFAULTS: 0.95, "finalist-1": 0.96, "finalist-2": 0.94, "finalist-3": 0.93},
                  NOISE)
    decision = decide(race, ONE_IMAGE)
    assert decision.best_challenger == "finalist-1" and decision.advantage > 0
    assert decision.choice == DEFAULTS and not decision.replaced
    assert decision.advantage < decision.threshold
    assert "within the noise" in decision.reason


def test_a_clearly_better_finalist_replaces_the_defaults():
    race = scores({DEFAULTS: 0.90, "finalist-1": 0.97, "finalist-2": 0.94, "finalist-3": 0.93},
                  NOISE)
    decision = decide(race, ONE_IMAGE)
    assert decision.choice == "finalist-1" and decision.replaced
    assert decision.advantage == pytest.approx(0.07 + NOISE[1].mean() - NOISE[0].mean())
    assert decision.advantage > decision.threshold > ONE_IMAGE


def test_without_noise_an_advantage_must_still_exceed_one_validation_image():
    # every run agrees exactly: the t threshold is zero, so the image is what decides
    small = decide(scores({DEFAULTS: 0.95, "finalist-1": 0.955}), ONE_IMAGE)
    assert small.noise_sd == pytest.approx(0.0, abs=1e-12) and small.choice == DEFAULTS
    large = decide(scores({DEFAULTS: 0.95, "finalist-1": 0.97}), ONE_IMAGE)
    assert large.choice == "finalist-1"


def test_the_defaults_stay_when_they_score_best():
    race = scores({DEFAULTS: 0.97, "finalist-1": 0.95, "finalist-2": 0.96}, NOISE[:3])
    decision = decide(race, ONE_IMAGE)
    assert decision.choice == DEFAULTS and decision.advantage < 0
    assert "no finalist beat the defaults" in decision.reason


def test_means_rest_on_the_seeds_every_entrant_finished():
    race = scores({DEFAULTS: 0.90, "finalist-1": 0.97}, NOISE[:2])
    del race["finalist-1"][3]  # that run failed
    decision = decide(race, ONE_IMAGE)
    assert decision.seeds == [1, 2]
    assert decision.means[DEFAULTS] == pytest.approx(np.mean([race[DEFAULTS][s] for s in (1, 2)]))


def test_one_shared_seed_is_too_few_to_replace_anything():
    race = scores({DEFAULTS: 0.80, "finalist-1": 0.99}, seeds=(1,))
    decision = decide(race, ONE_IMAGE)
    assert decision.choice == DEFAULTS and "too few" in decision.reason


def test_finalists_no_better_than_the_defaults_replace_them_at_most_alpha_of_the_time():
    """The rule's promise, simulated: 4 entrants of equal true quality, 3 seeds, runs with
    seed effects and noise; over many races the defaults are replaced at most ALPHA of the
    time, while a finalist truly 4 noise-sds better wins most races."""
    rng = np.random.default_rng(0)
    names = [DEFAULTS, "finalist-1", "finalist-2", "finalist-3"]

    def rate(true_advantage: float, n: int = 3000) -> float:
        wins = 0
        for _ in range(n):
            x = 0.95 + rng.normal(0, 0.02, size=(1, 3)) + rng.normal(0, 0.015, size=(4, 3))
            x[1] += true_advantage
            race = {name: dict(zip((1, 2, 3), row)) for name, row in zip(names, x)}
            wins += decide(race, resolution=0.0).replaced
        return wins / n

    assert rate(0.0) <= ALPHA
    assert rate(4 * 0.015) > 0.5


def test_finalists_are_ranked_as_asha_ranks_them_without_the_defaults_or_failures():
    defaults = {"weight": 1.0, "lr": 0.1}
    trials = [
        {"trial_id": "a", "config": defaults, "status": "completed", "steps": 600,
         "val_score": 0.99},
        {"trial_id": "b", "config": {"weight": 2.0, "lr": 0.1}, "status": "completed",
         "steps": 600, "val_score": 0.95},
        {"trial_id": "c", "config": {"weight": 3.0, "lr": 0.1}, "status": "stopped_early",
         "steps": 400, "val_score": 0.98},  # further is better than higher
        {"trial_id": "d", "config": {"weight": 4.0, "lr": 0.1}, "status": "diverged",
         "steps": 600, "val_score": 0.0},
        {"trial_id": "e", "config": {"weight": 5.0, "lr": 0.1}, "status": "error", "steps": 0,
         "val_score": None},
        {"trial_id": "f", "config": {"weight": 6.0, "lr": 0.1}, "status": "completed",
         "steps": 600, "val_score": 0.97},
        {"trial_id": "g", "config": {"weight": 7.0, "lr": 0.1}, "status": "stopped_early",
         "steps": 100, "val_score": 0.99},
    ]
    assert [f["trial_id"] for f in finalists(trials, 3, defaults)] == ["f", "b", "c"]
    assert len(finalists(trials, 10, defaults)) == 4  # every eligible trial, no more


def test_race_trials_run_every_entrant_on_every_seed():
    configs = race_configs({DEFAULTS: {"weight": 1.0}, "finalist-1": {"weight": 2.0}}, [7, 8])
    assert [(c["entrant"], c["seed"]) for c in configs] == [
        (DEFAULTS, 7), ("finalist-1", 7), (DEFAULTS, 8), ("finalist-1", 8)]
    assert all(c["phase"] == "race" for c in configs)


def test_search_race_and_reproduce_never_share_a_trainer_seed():
    space = load_space("digits")
    reproduce = set(range(7788, 7788 + SEED_BLOCK - 1))  # --reproduce takes at most this many
    used = set()
    for study_seed in range(5):
        search, race = selection_seeds(space, study_seed, 3)
        mine = {search, *race}
        assert len(mine) == 4 and not mine & reproduce and not mine & used
        used |= mine
    assert selection_seeds(space, 0, 3) == (8788, [8789, 8790, 8791])
    with pytest.raises(ValueError, match="--seed"):
        selection_seeds(space, 2 ** 31, 3)
