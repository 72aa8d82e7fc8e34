"""Search spaces: the shipped files load; malformed ones fail naming file, key and fix."""

import tomllib

import numpy as np
import pytest

from study.spaces import SPACES_DIR, SpaceError, available, load_space
from trainer.settings import resolve

GOOD = """
dataset = "digits"
[fidelity]
total_steps = 300
test_freq = 50
grace_steps = 100
reduction_factor = 2
gpus_per_trial = 0.1
cpus_per_trial = 1
[fixed]
num_label = 50
num_val = 100
[params.weight]
type = "float"
low = 0.1
high = 10.0
log = true
default = 1.0
[params.warmup]
type = "int"
low = 0
high = 150
default = 50
"""


def write(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return str(path)


def own_digits(folder) -> str:
    """scikit-learn's digits as an .npz of your own, for a space that names no dataset."""
    from sklearn.datasets import load_digits

    d = load_digits()
    path = str(folder / "digits.npz")
    np.savez(path, x_train=(d.images * 15).astype(np.uint8), y_train=d.target)
    return path


@pytest.mark.parametrize("name", available())
def test_every_shipped_space_loads_with_the_papers_defaults_first(name, tmp_path):
    with open(f"{SPACES_DIR}/{name}.toml", "rb") as f:
        names_its_data = "dataset" in tomllib.load(f)
    space = load_space(name, dataset=None if names_its_data else own_digits(tmp_path))
    defaults = space.defaults()
    assert {"weight", "alpha", "lr", "warmup"} <= set(defaults)
    assert defaults["weight"] == 1.0 and defaults["lr"] == 0.1
    assert space.dataset == (name.split("-")[0] if names_its_data
                             else str(tmp_path / "digits.npz"))
    assert space.grace_steps <= space.total_steps
    # A validation set, as selection never reads the test set: small against many labels;
    # digits-sized sets (a few hundred labels at most) need it larger than that.
    cfg = resolve(space.trainer_settings(defaults))
    assert cfg.num_val > 0
    assert cfg.num_val <= cfg.num_label // 4 or cfg.num_label <= 200
    assert set(space.tune_space()) == set(defaults)


def test_the_custom_space_settles_flips_on_validation_starting_without_them(tmp_path):
    space = load_space("custom", dataset=own_digits(tmp_path))
    flips = next(p for p in space.params if p.name == "no_flip")
    assert flips.type == "categorical" and set(flips.choices) == {True, False}
    assert space.defaults()["no_flip"] is True  # the trainer's default for your data
    assert resolve(space.trainer_settings({**space.defaults(), "no_flip": False})).no_flip is False


def test_svhn_searches_around_its_own_alpha():
    assert load_space("svhn").defaults()["alpha"] == 0.1
    assert load_space("cifar100").fixed["num_label"] == 10000


def test_a_space_file_given_by_path_loads(tmp_path):
    space = load_space(write(tmp_path, GOOD.replace("total_steps = 300\n", "")))
    # no total_steps: trials run the preset's full length and schedule
    assert space.total_steps == space.full.total_steps == 600 and not space.is_proxy
    assert space.trainer_settings({"weight": 2.0}) == {
        "dataset": "digits", "total_steps": 600, "test_freq": 50, "num_label": 50, "num_val": 100,
        "weight": 2.0}
    assert "digits" in available()


def test_a_shorter_trial_keeps_the_shape_of_the_full_schedule(tmp_path):
    space = load_space(write(tmp_path, GOOD))  # 300 steps of the preset's 600
    assert space.is_proxy and space.full.milestones == (450,)
    settings = space.trainer_settings({"warmup": 100})
    assert (settings["total_steps"], settings["warmup"], settings["milestones"]) == (300, 50, [225])
    # the preset's warm-up (100 of 600) is scaled too when it is not searched
    assert space.trainer_settings({})["warmup"] == 50
    # and any other length: a quarter keeps a quarter of each
    quarter = space.trainer_settings({"warmup": 100}, total_steps=150)
    assert (quarter["warmup"], quarter["milestones"]) == (25, [112])
    cfg = resolve(space.trainer_settings({"warmup": 100}, total_steps=600))
    assert (cfg.total_steps, cfg.warmup, cfg.milestones) == (600, 100, (450,))


def test_a_trial_longer_than_the_full_length_is_refused(tmp_path):
    with pytest.raises(SpaceError, match="fidelity.total_steps: 900 exceeds the full length, 600"):
        load_space(write(tmp_path, GOOD.replace("total_steps = 300", "total_steps = 900")))


@pytest.mark.parametrize("edit,message", [
    (("low = 0.1\nhigh = 10.0", "low = 10.0\nhigh = 0.1"), "params.weight.high: must exceed low"),
    (("low = 0.1\nhigh = 10.0\nlog = true", "low = 0.0\nhigh = 10.0\nlog = true"),
     "params.weight.low: a log-scale range must start above 0"),
    (("default = 1.0", "default = 50.0"), r"params.weight.default: 50.0 must be"),
    (('type = "int"', 'type = "integer"'), "params.warmup.type: must be one of"),
    (("[params.weight]", "[params.wieght]"), "params.wieght: not a trainer setting"),
    (("num_label = 50", "num_label = 55"), "the trainer rejects this space: num_label"),
    (("num_label = 50", 'save_path = "/tmp"'), "fixed.save_path: not a trainer setting"),
    (("num_val = 100\n", ""), "fixed.num_val: must be a positive integer.*never on the test"),
    (("num_val = 100", "num_val = 105"), "the trainer rejects this space: num_val"),
    (("grace_steps = 100", "grace_steps = 1000"), "fidelity.grace_steps: 1000 exceeds"),
    (("test_freq = 50", "test_freq = -5"), "fidelity.test_freq: must be a positive integer"),
    (("cpus_per_trial = 1", ""), r"fidelity: needs \['cpus_per_trial'"),
    (('dataset = "digits"', 'dataset = "digits"\nbogus = 1'), "bogus: unknown top-level key"),
    (("low = 0\nhigh = 150", "low = 0.5\nhigh = 150"), "params.warmup.low: must be an integer"),
    (('dataset = "digits"', 'dataset = "digits'), "not valid TOML"),
    # every bound and every choice passes the trainer's own checks, not only the defaults
    (("high = 10.0", "high = inf"),
     r"params.weight.high: the trainer rejects weight = inf: weight: must be a finite number"),
    (("high = 10.0", "high = 1e308"), r"params.weight.high: the trainer rejects weight = 1e\+308"),
    (("low = 0\nhigh = 150", "low = -5\nhigh = 150"),
     r"params.warmup.low: the trainer rejects warmup = -5: warmup: must be a non-negative"),
    (("default = 50\n", 'default = 50\n[params.method]\ntype = "categorical"\n'
                         'choices = ["metasemi", "fixmatch"]\ndefault = "metasemi"\n'),
     r"params.method.choices: the trainer rejects method = 'fixmatch': method: unknown method"),
    # and so do the [fixed] values, against the dataset's known training-set size
    (("num_label = 50", "num_label = 1200"),
     r"fixed.num_label: the trainer rejects this space: num_label: 1200 labeled \+ 100 "
     r"validation images asked for, but digits has only 1258"),
    (("num_label = 50", "num_label = 1100"),
     r"batch_size: the trainer rejects this space: batch_size: 64 is larger than the 58 "
     r"unlabeled"),
    (("num_label = 50", "num_label = 50\nalpha = inf"),
     r"fixed.alpha: the trainer rejects this space: alpha: must be a finite number"),
    (("num_label = 50", "num_label = 50\nseed = 4294967295"),
     r"fixed.seed: the trainer rejects this space: seed: 4294967295 is too large"),
    (("gpus_per_trial = 0.1", "gpus_per_trial = 2.5"),
     r"fidelity.gpus_per_trial: 2.5: a fraction above 1 is not allowed.*\[0, 1\] or a whole"),
    (("gpus_per_trial = 0.1", "gpus_per_trial = inf"),
     r"fidelity.gpus_per_trial: must be a finite number >= 0, got inf"),
    (("cpus_per_trial = 1", "cpus_per_trial = nan"),
     r"fidelity.cpus_per_trial: must be a finite number >= 0, got nan"),
    (("cpus_per_trial = 1", "cpus_per_trial = 0"), r"fidelity.cpus_per_trial: must be > 0"),
    (("num_val = 100", "num_val = 100\nlabels_per_class = 5"),
     r"fixed.labels_per_class: give it or num_label, not both"),
    (("num_label = 50", "labels_per_class = 0"),
     r"fixed.labels_per_class: must be a positive integer, got 0"),
])
def test_malformed_or_out_of_range_spaces_are_rejected(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    with pytest.raises(SpaceError, match=message) as e:
        load_space(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "space.toml" in str(e.value)


@pytest.mark.parametrize("content,message", [
    (GOOD.replace("# ", "").encode().replace(b"digits", b"d\xefgits", 1),
     r"not UTF-8 text .*save the space file as UTF-8"),
    (b"x = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply to parse"),
])
def test_a_file_tomllib_cannot_decode_is_named(tmp_path, content, message):
    path = tmp_path / "space.toml"
    path.write_bytes(content)
    with pytest.raises(SpaceError, match=f"{path}: {message}"):
        load_space(str(path))


def test_labels_may_be_fixed_per_class(tmp_path):
    space = load_space(write(tmp_path, GOOD.replace("num_label = 50", "labels_per_class = 8")))
    assert space.fixed["num_label"] == 80 and "labels_per_class" not in space.fixed


def test_whole_gpus_above_one_are_allowed(tmp_path):
    assert load_space(write(tmp_path, GOOD.replace("gpus_per_trial = 0.1",
                                                   "gpus_per_trial = 2"))).gpus_per_trial == 2


def test_an_unknown_space_lists_the_known_ones():
    with pytest.raises(SpaceError, match=r"unknown space 'imagenet'.*'cifar10'"):
        load_space("imagenet")


def test_a_space_may_fix_its_full_length_for_every_run_but_not_search_it(tmp_path):
    short = load_space("digits-short")
    assert short.full.total_steps == short.total_steps == 100 and short.full.milestones == (75,)
    cfg = resolve(short.trainer_settings(short.defaults()))
    assert (cfg.total_steps, cfg.warmup, cfg.milestones) == (100, 17, (75,))
    with pytest.raises(SpaceError, match=r"fixed.milestones: the preset's milestones \[450\] "
                                         r"lie past total_steps = 100; give milestones"):
        load_space(write(tmp_path, GOOD.replace("total_steps = 300\n", "").replace(
            "num_val = 100", "num_val = 100\ntotal_steps = 100")))
    with pytest.raises(SpaceError, match="params.total_steps: not a trainer setting"):
        load_space(write(tmp_path, GOOD + '[params.total_steps]\ntype = "int"\nlow = 100\n'
                                          'high = 600\ndefault = 600\n'))
