"""Search spaces: the shipped files load; malformed ones fail naming file, key and fix."""

import pytest

from study.spaces import SpaceError, available, load_space

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


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar100", "svhn"])
def test_every_shipped_space_loads_with_the_papers_defaults_first(name):
    space = load_space(name)
    defaults = space.defaults()
    assert {"weight", "alpha", "lr", "warmup"} <= set(defaults)
    assert defaults["weight"] == 1.0 and defaults["lr"] == 0.1
    assert space.dataset == name and space.grace_steps <= space.total_steps
    # a small, realistic validation set: selection never reads the test set
    assert 0 < space.fixed["num_val"] <= space.fixed["num_label"] // 4 or name == "digits"
    assert set(space.tune_space()) == set(defaults)


def test_svhn_searches_around_its_own_alpha():
    assert load_space("svhn").defaults()["alpha"] == 0.1
    assert load_space("cifar100").fixed["num_label"] == 10000


def test_a_space_file_given_by_path_loads(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.trainer_settings({"weight": 2.0}) == {
        "dataset": "digits", "total_steps": 300, "test_freq": 50, "num_label": 50, "num_val": 100,
        "weight": 2.0}
    assert "digits" in available()


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
    (("cpus_per_trial = 1", ""), "fidelity: needs exactly"),
    (('dataset = "digits"', 'dataset = "digits"\nbogus = 1'), "bogus: unknown top-level key"),
    (("low = 0\nhigh = 150", "low = 0.5\nhigh = 150"), "params.warmup.low: must be an integer"),
    (('dataset = "digits"', 'dataset = "digits'), "not valid TOML"),
])
def test_malformed_or_out_of_range_spaces_are_rejected(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    with pytest.raises(SpaceError, match=message) as e:
        load_space(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "space.toml" in str(e.value)


def test_an_unknown_space_lists_the_known_ones():
    with pytest.raises(SpaceError, match=r"unknown space 'imagenet'.*'cifar10'"):
        load_space("imagenet")
