"""The race: after a search, its finalists and the paper's defaults train at full length on
seeds of their own, and a finalist replaces the defaults only when it beats them by more
than the noise (docs/selection.md).

Seeds: the reproduce runs of a dataset train on its paper seed and the next ones. A search
study trains every trial on one seed of a block of its own, 1000 seeds above them per study
seed, and races on the seeds after it: selection and report never share a training run.
"""

from __future__ import annotations

from study.spaces import Space
from trainer.config import MAX_SEED, PRESETS, Config

SEED_BLOCK = 1000


def base_seed(space: Space) -> int:
    """The dataset's paper seed (7788, 8469), or the trainer's default for data of yours."""
    return PRESETS.get(space.dataset, {}).get("seed", Config.seed)


def selection_seeds(space: Space, study_seed: int, race_seeds: int) -> tuple[int, list[int]]:
    """The search's trainer seed and the race's seeds for a study of this sampler seed."""
    block = base_seed(space) + SEED_BLOCK * (study_seed + 1)
    if block + race_seeds > MAX_SEED:
        raise ValueError(f"--seed {study_seed}: too large for the trainer's seeds; use a "
                         f"seed below {(MAX_SEED - base_seed(space)) // SEED_BLOCK - 1}")
    return block, [block + 1 + i for i in range(race_seeds)]
