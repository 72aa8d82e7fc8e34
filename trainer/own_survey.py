"""Data of your own before loading: now trainer/data/survey.py; this face keeps the names
`trainer.own_survey` has offered."""

from trainer.data.fit import estimate_bytes, host_available, placement
from trainer.data.holdout import HOLDOUT_FRACTION as TEST_FRACTION  # its old name
from trainer.data.holdout import HOLDOUT_SEED
from trainer.data.survey import (
    MAX_PIXELS,
    OwnDataError,
    class_counts,
    dataset_name,
    fingerprint,
    has_own_val,
    image_errors,
    inspect_classes,
    is_dataset_path,
    open_npz,
    read_array,
    stored_size,
    tree,
)
from trainer.settings import own_preset

__all__ = [
    "HOLDOUT_SEED", "MAX_PIXELS", "OwnDataError", "TEST_FRACTION", "class_counts",
    "dataset_name", "estimate_bytes", "fingerprint", "has_own_val", "host_available",
    "image_errors", "inspect_classes", "is_dataset_path", "open_npz", "own_preset",
    "placement", "read_array", "stored_size", "tree",
]
