"""The one holdout rule: a class-balanced test set for data that has none of its own."""

from __future__ import annotations

import numpy as np

# The one holdout rule, for every dataset without a test set of its own (digits, and data of
# your own without test/ or x_test): 30 % of each class, drawn with default_rng(0), recorded
# in split.json. So the digits images in an .npz without x_test give the built-in split.
HOLDOUT_FRACTION = 0.3
HOLDOUT_SEED = 0
DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = HOLDOUT_FRACTION, HOLDOUT_SEED  # their old names


def holdout(labels: np.ndarray, fraction: float = HOLDOUT_FRACTION,
            seed: int = HOLDOUT_SEED) -> np.ndarray:
    """Indices of a class-balanced `fraction` of each class, drawn with default_rng(seed):
    the test set of data that has none of its own."""
    rng = np.random.default_rng(seed)
    test = []
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        test.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    return np.sort(np.concatenate(test))


def digits_test_indices(labels: np.ndarray) -> np.ndarray:
    """The fixed digits test set: 30% of each class, drawn with numpy's default_rng(0)."""
    return holdout(labels)
