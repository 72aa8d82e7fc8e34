"""Data of your own, loaded: now trainer/data/own.py (and trainer/data/survey.py); this
face keeps the names `trainer.own_data` has offered."""

from trainer.data.fit import estimate_bytes, host_available, placement
from trainer.data.own import (
    OwnData,
    load_own,
    load_own_for,
    spec_of,
)
from trainer.data.survey import (
    OwnDataError,
    class_counts,
    dataset_name,
    fingerprint,
    has_own_val,
    inspect_classes,
    is_dataset_path,
    stored_size,
)
from trainer.settings import own_preset

__all__ = [
    "OwnData", "OwnDataError", "class_counts", "dataset_name", "estimate_bytes", "fingerprint",
    "has_own_val", "host_available", "inspect_classes", "is_dataset_path", "load_own",
    "load_own_for", "own_preset", "placement", "spec_of", "stored_size",
]
