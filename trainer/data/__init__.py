"""Datasets by name, the class-balanced labeled split, and batched on-device augmentation.

Images are kept as uint8 NCHW tensors on the training device; a batch is drawn by
index, cropped/flipped in one batched gather and normalised there. CIFAR and SVHN
are read from their official on-disk formats (torchvision downloads them on request);
digits is scikit-learn's embedded set and needs no download.

The package, bottom first: specs.py (what a dataset is, its errors), holdout.py (the one
holdout rule), builtin.py (the built-in loaders, DATASETS), splits.py (labeled, validation,
unlabeled), batches.py (on the device: streams, augmentation), survey.py, fit.py and own.py
(data of your own: what it holds, whether and where it fits, loading), load.py (`load_for`,
which alone knows both kinds).
This face keeps the names `trainer.data` has always offered.
"""

from trainer.data.batches import DeviceData, IndexStream, augment, to_device
from trainer.data.builtin import (
    DATASETS,
    FILES,
    Files,
    digits_file,
    fetch,
    load_digits_arrays,
    load_svhn_arrays,
    require_files,
)
from trainer.data.holdout import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    digits_test_indices,
    holdout,
)
from trainer.data.load import load_data, load_for
from trainer.data.specs import Arrays, DatasetCorrupt, DatasetMissing, DatasetSpec
from trainer.data.splits import (
    SPLITS,
    TRAIN_SIZES,
    Split,
    authors_labeled_split,
    check_batch,
    check_sizes,
    labeled_split,
    make_split,
)

__all__ = [
    "DATASETS", "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "FILES", "HOLDOUT_FRACTION",
    "HOLDOUT_SEED", "SPLITS", "TRAIN_SIZES", "Arrays", "DatasetCorrupt", "DatasetMissing",
    "DatasetSpec", "DeviceData", "Files", "IndexStream", "Split", "augment",
    "authors_labeled_split", "check_batch", "check_sizes", "digits_file", "digits_test_indices",
    "fetch", "holdout", "labeled_split", "load_data", "load_digits_arrays", "load_for",
    "load_svhn_arrays", "make_split", "require_files", "to_device",
]
