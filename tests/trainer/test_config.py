"""Config: presets, overrides, milestone parsing and validation that names the field."""

import math
import random

import numpy as np
import pytest

from trainer.config import MAX_SEED, ConfigError, parse_milestones
from trainer.settings import resolve


@pytest.mark.parametrize("text", ["[300000, 350000]", "300000,350000", "300000 350000",
                                  " [300000,350000] "])
def test_milestones_parse_as_a_list_of_integers(text):
    assert parse_milestones(text) == (300000, 350000)


def test_empty_milestones_mean_a_constant_rate():
    assert parse_milestones("[]") == () and parse_milestones("") == ()


@pytest.mark.parametrize("text", ["[1, x]", "1.5", "__import__('os')", "[300000; 1]",
                                  "[-5]", "[5, 3]"])
def test_malformed_milestones_are_rejected_not_evaluated(text):
    with pytest.raises(ConfigError, match="milestones"):
        parse_milestones(text)


def test_each_dataset_brings_the_papers_defaults():
    svhn, c10, c100 = resolve({"dataset": "svhn"}), resolve({"dataset": "cifar10"}), resolve(
        {"dataset": "cifar100"})
    assert (svhn.alpha, svhn.weight_decay, svhn.num_label, svhn.seed) == (0.1, 5e-5, 1000, 7788)
    assert (c10.alpha, c10.weight_decay, c10.num_label, c10.seed) == (1.0, 1e-4, 4000, 8469)
    assert (c100.num_label, c100.seed, c100.architecture) == (10000, 7788, "convlarge")
    assert c10.milestones == (300000, 350000) and c10.total_steps == 400000
    assert c10.batch_size == 128 and c10.lr == 0.1 and c10.warmup == 4000
    assert c10.epsilon == 1e-2 and c10.method == "metasemi" and c10.meta_grad == "fd"


def test_flags_override_presets():
    cfg = resolve({"dataset": "svhn", "alpha": 0.5, "milestones": "[10, 20]",
                   "architecture": "shakeshake"})
    assert cfg.alpha == 0.5 and cfg.milestones == (10, 20)
    assert cfg.architecture == "shakeshake26"  # the authors' name maps to ours


def test_the_digits_preset_is_small():
    cfg = resolve({})
    assert cfg.dataset == "digits" and cfg.num_label == 50 and cfg.total_steps <= 1000


@pytest.mark.parametrize("overrides,field", [
    ({"dataset": "mnist"}, "dataset"),
    ({"architecture": "resnet9000"}, "architecture"),
    ({"method": "fixmatch"}, "method"),
    ({"meta_grad": "third-order"}, "meta_grad"),
    ({"num_label": 55}, "num_label"),
    ({"total_steps": 0}, "total_steps"),
    ({"batch_size": -1}, "batch_size"),
    ({"test_freq": 0}, "test_freq"),
    ({"lr": -0.1}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"alpha": 0.0}, "alpha"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"momentum": 1.0}, "momentum"),
    ({"warmup": -1}, "warmup"),
    ({"bogus": 1}, "bogus"),
])
def test_invalid_values_fail_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        resolve(overrides)


def test_labels_may_be_given_per_class():
    assert resolve({"labels_per_class": 4}).num_label == 40  # digits: 10 classes
    assert resolve({"dataset": "cifar100", "labels_per_class": 25}).num_label == 2500
    with pytest.raises(ConfigError, match="labels_per_class: give it or num_label, not both"):
        resolve({"labels_per_class": 4, "num_label": 40})
    with pytest.raises(ConfigError, match="labels_per_class: must be a positive integer"):
        resolve({"labels_per_class": -1})


def test_num_label_error_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="multiple of 100"):
        resolve({"dataset": "cifar100", "num_label": 1050})


INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("field,value,message", [
    ("alpha", INF, r"alpha: must be a finite number in \(0, 100\], got inf"),
    ("alpha", NAN, r"alpha: must be a finite number in \(0, 100\], got nan"),
    ("alpha", 101.0, r"alpha: .*\(0, 100\], got 101.0"),
    ("epsilon", INF, r"epsilon: must be a finite number in \(0, 1\]"),
    ("epsilon", 1e308, r"epsilon: .*got 1e\+308"),
    ("weight", INF, r"weight: must be a finite number in \[0, 10000\]"),
    ("weight", 1e308, r"weight: .*got 1e\+308"),
    ("weight", -1.0, r"weight: .*\[0, 10000\]"),
    ("weight", True, r"weight: .*got True"),
    ("lr", 0.0, r"lr: must be a finite number in \(0, 10000\], got 0.0"),
    ("lr", INF, r"lr: .*got inf"),
    ("gamma", INF, r"gamma: must be a finite number in \(0, 1e\+06\]"),
    ("gamma", 0.0, r"gamma: .*got 0.0"),
    ("weight_decay", INF, r"weight_decay: must be a finite number in \[0, 1\)"),
    ("weight_decay", 1.0, r"weight_decay: .*got 1.0"),
    ("momentum", 1e308, r"momentum: must be a finite number in \[0, 1\)"),
    ("momentum", NAN, r"momentum: .*got nan"),
    ("seed", 2**32 - 1, r"seed: 4294967295 is too large.*seed \+ 1.*\[0, 4294967294\]"),
    ("seed", 2**70, r"seed: .* is too large"),
])
def test_every_float_setting_must_be_finite_and_in_its_range_and_the_seed_fit_32_bits(
        field, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        resolve({field: value})
    assert "give a value in that range" in str(e.value) or field == "seed"


def test_the_ends_of_each_range_are_accepted():
    low = resolve({"weight": 0.0, "weight_decay": 0.0, "momentum": 0.0, "seed": 0})
    high = resolve({"alpha": 100.0, "epsilon": 1.0, "weight": 1e4, "lr": 1e4, "gamma": 1e6,
                    "seed": MAX_SEED})
    assert (low.weight, low.momentum, high.alpha, high.seed) == (0.0, 0.0, 100.0, MAX_SEED)


def test_the_largest_seed_allowed_seeds_every_generator_the_trainer_uses():
    import torch

    from trainer.data import IndexStream, make_split

    labels = np.arange(100) % 10
    for method in ("random", "authors"):  # numpy and Python's random
        make_split(labels, 10, 20, MAX_SEED, num_val=10, method=method)
    IndexStream(np.arange(10), 4, seed=MAX_SEED + 1).next()  # the unlabeled stream's seed
    torch.manual_seed(MAX_SEED)
    random.Random(MAX_SEED + 1)


def test_the_architectures_chosen_for_data_of_your_own_by_size_exist():
    from trainer.models import MIN_IMAGE_SIZE, MODELS
    from trainer.settings import ARCHITECTURE_BY_SIZE

    assert all(name in MODELS for _, name in ARCHITECTURE_BY_SIZE)
    # Each takes the smallest images it is chosen for (one pixel above the bracket below).
    for (below, _), (_, name) in zip(ARCHITECTURE_BY_SIZE, ARCHITECTURE_BY_SIZE[1:]):
        assert MIN_IMAGE_SIZE[name] <= below + 1, (name, below + 1)
