"""Any search-space file, however malformed, either loads or is refused with a SpaceError
naming the problem: random and mutated spaces never crash the parser."""

import copy
import functools
import os
import tomllib
import traceback
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from study.spaces import (
    CONFIG_FIELDS,
    FIDELITY_KEYS,
    SPACES_DIR,
    SpaceError,
    load_space,
    parse_space,
)

TRIED = {"parse_space": 0, "load_space": 0}
OWN = "<own data>"  # stands for the .npz of the module's fixture

SHIPPED = {path.stem: path.read_bytes() for path in sorted(Path(SPACES_DIR).glob("*.toml"))}
SHIPPED_SPACES = {name: tomllib.loads(text.decode()) for name, text in SHIPPED.items()}
DIGITS, CUSTOM = SHIPPED_SPACES["digits"], SHIPPED_SPACES["custom"]
# The shipped spaces (custom.toml naming the fixture's data), a shorter trial, and data of
# your own with a searched architecture.
BASES = [s if "dataset" in s else {"dataset": OWN, **s} for s in SHIPPED_SPACES.values()]
BASES.append({**DIGITS, "fidelity": {**DIGITS["fidelity"], "total_steps": 300}})
BASES.append({"dataset": OWN, "fidelity": dict(CUSTOM["fidelity"]),
              "fixed": {"batch_size": 16, "labels_per_class": 2},
              "params": {"warmup": {"type": "int", "low": 0, "high": 100, "default": 50},
                         "architecture": {"type": "categorical", "default": "digitscnn",
                                          "choices": ["digitscnn", "wrn28-2", "wrn28"]}}})

KEYS = sorted(CONFIG_FIELDS | FIDELITY_KEYS | {"total_steps", "labels_per_class", "type",
                                               "low", "high", "log", "default", "choices",
                                               "dataset", "fidelity", "fixed", "params"})
WORDS = ["float", "int", "categorical", "digits", "cifar10", "svhn", "convlarge", "wrn28",
         "digitscnn", "metasemi", "supervised", "random", "authors", "fd", "bf16", OWN,
         "/no/such/data.npz", "data.npz", "", "~", "[1, 2]", "300000,350000", "nan"]
scalars = st.one_of(
    st.integers(-3, 3), st.integers(), st.sampled_from([0, 1, 2, 50, 100, 600, 2**63, -2**63]),
    st.floats(), st.sampled_from([0.0, 0.1, 1.0, 1e308, float("inf"), float("nan")]),
    st.booleans(), st.text(max_size=10), st.sampled_from(WORDS),
    st.datetimes(), st.dates(), st.times())
toml_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=3),
    max_leaves=6)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
numbers = st.sampled_from([0, 1, 5, 100, 0.0, 0.5, 1.0, 10.0, -1, float("inf")]) | scalars
SETTINGS = st.sampled_from(["warmup", "milestones", "total_steps", "architecture", "method",
                            "num_label", "num_val", "batch_size", "image_size", "split"]) \
    | st.sampled_from(sorted(CONFIG_FIELDS | {"labels_per_class"}))


@st.composite
def param_specs(draw):
    """A searched parameter's table: a range, a list of choices, or keys at random."""
    kind = draw(st.sampled_from(["float", "int", "categorical", "any"]))
    if kind == "categorical":
        choices = draw(st.lists(st.sampled_from(WORDS) | numbers | toml_values, min_size=1,
                                max_size=3))
        spec = {"type": kind, "choices": choices,
                "default": draw(st.sampled_from(choices) | numbers)}
    elif kind == "any":
        spec = draw(st.dictionaries(st.sampled_from(["type", "low", "high", "default", "log",
                                                     "choices"]) | keys, toml_values,
                                    max_size=5))
    else:
        low, high = draw(numbers), draw(numbers)
        try:
            low, high = sorted([low, high])  # mostly a range; NaN and the rest as drawn
        except TypeError:
            pass
        spec = {"type": kind, "low": low, "high": high,
                "default": draw(st.sampled_from([low, high]) | numbers)}
        if draw(st.booleans()):
            spec["log"] = draw(st.booleans() | toml_values)
    return spec


def paths(d, prefix=()):
    """Every key's path in a nested table."""
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from paths(v, prefix + (k,))


def table_at(raw, path):
    for k in path:
        raw = raw[k]
    return raw


@st.composite
def mutated_spaces(draw):
    """A shipped (or test) space with a few keys dropped, renamed, retyped, nested or added."""
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    if draw(st.booleans()):  # a proxy: trials shorter than the full schedule, scaled down
        grace = raw["fidelity"]["grace_steps"]
        raw["fidelity"]["total_steps"] = draw(st.sampled_from([grace, 2 * grace, 3 * grace])
                                              | numbers)
    for _ in range(draw(st.integers(0, 4))):
        every = list(paths(raw))
        op = draw(st.sampled_from(["drop", "set", "rename", "nest", "add", "fix", "search",
                                   "respec"]))
        searched = raw.get("params")
        if op == "respec" and isinstance(searched, dict) and searched:  # another range
            searched[draw(st.sampled_from(sorted(searched)))] = draw(param_specs())
            continue
        if op in ("fix", "search"):  # a trainer setting held fixed, or searched
            table = raw.setdefault("fixed" if op == "fix" else "params", {})
            if isinstance(table, dict):
                table[draw(SETTINGS)] = draw(numbers | st.sampled_from(WORDS) | toml_values
                                             if op == "fix" else param_specs())
            continue
        if op == "add" or not every:
            tables = [()] + [p for p in every if isinstance(table_at(raw, p), dict)]
            table_at(raw, draw(st.sampled_from(tables)))[draw(keys)] = draw(toml_values)
            continue
        path = draw(st.sampled_from(every))
        parent, key = table_at(raw, path[:-1]), path[-1]
        if op == "drop":
            del parent[key]
        elif op == "set":
            parent[key] = draw(toml_values)
        elif op == "rename":
            parent[draw(keys)] = parent.pop(key)
        else:  # a value in a list or a table of its own
            parent[key] = draw(st.sampled_from([[parent[key]], {draw(keys): parent[key]}]))
    return raw


SNIPPETS = [b"[", b"]", b"[[", b"=", b" = ", b'"', b"\n", b"[params.x]\n", b"[fixed]\n",
            b"a = " + b"[" * 2000, b"[" + b"a." * 2000 + b"a]\n", b"\xff\xfe", b"\x00",
            b"inf", b"nan", b"1979-05-27T07:32:00Z", b"{", b"}", b"x = {a = {b = 1}}\n",
            b'dataset = "digits"\n', b"num_val = 0\n", b"\xe2\x82"]


@st.composite
def mutated_files(draw):
    """The bytes of a shipped space file, truncated, cut, garbled or spliced."""
    text = bytearray(draw(st.sampled_from(list(SHIPPED.values()))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["truncate", "cut", "insert", "flip", "lines"]))
        if op == "truncate":
            del text[at:]
        elif op == "cut":
            del text[at:at + draw(st.integers(1, 40))]
        elif op == "insert":
            text[at:at] = draw(st.sampled_from(SNIPPETS) | st.binary(max_size=8))
        elif op == "flip" and at < len(text):
            text[at] = draw(st.integers(0, 255))
        elif op == "lines":  # a line repeated or moved elsewhere
            lines = bytes(text).split(b"\n")
            line = lines.pop(draw(st.integers(0, len(lines) - 1)))
            lines.insert(draw(st.integers(0, len(lines))), line)
            text = bytearray(b"\n".join(lines))
    return bytes(text)


@pytest.fixture(scope="module")
def own_npz(tmp_path_factory):
    """A small .npz of your own (3 classes of 30 greyscale 8x8 images) for spaces naming it;
    prints how many inputs the property tried once the module is done."""
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("own") / "own.npz")
    np.savez(path, x_train=rng.integers(0, 256, (90, 8, 8), dtype=np.uint8),
             y_train=np.arange(90) % 3)
    yield path
    print(f"\nhypothesis: {TRIED['parse_space']} inputs to parse_space, "
          f"{TRIED['load_space']} files to load_space")


def substitute(value, own):
    """`value` with the placeholder OWN replaced by the path of the fixture's data."""
    if isinstance(value, dict):
        return {k: substitute(v, own) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, own) for v in value]
    return own if value == OWN else value


def proxy_searching(warmup):
    """The digits space, its trials shortened to 300 steps, searching `warmup`."""
    return {**DIGITS, "fidelity": {**DIGITS["fidelity"], "total_steps": 300},
            "params": {**DIGITS["params"], "warmup": warmup}}


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dataset=st.sampled_from([None, None, OWN, "digits", "/no/such.npz", ""])
       | st.text(max_size=6),
       space=mutated_spaces() | mutated_files())
# Inputs this test found crashing the parser (or an early fix of it), kept as regressions.
@example(dataset=None, space={**DIGITS, "fixed": {**DIGITS["fixed"], "architecture": ["x"]}})
@example(dataset="", space=DIGITS)
@example(dataset=None, space=proxy_searching({"type": "categorical", "choices": ["a"],
                                              "default": "a"}))
@example(dataset=None, space=proxy_searching({"type": "float", "low": 0.0,
                                              "high": float("inf"), "default": 1.0}))
@example(dataset="/no/such.npz", space={**DIGITS, "fixed": {"num_label": 50, "num_val": 0}})
@example(dataset="/", space=CUSTOM)
@example(dataset=OWN, space={**CUSTOM, "fixed": {"batch_size": "16"}})
@example(dataset=OWN, space={**CUSTOM, "fixed": {"total_steps": float("inf")}})
@example(dataset=OWN, space={**CUSTOM, "fixed": {"image_size": 2**31}})
def test_any_space_file_is_parsed_or_refused_with_a_space_error(own_npz, dataset, space):
    dataset = substitute(dataset, own_npz)
    if isinstance(space, bytes):  # the text of a file, for load_space
        path = os.path.join(os.path.dirname(own_npz), "space.toml")  # written over each time
        with open(path, "wb") as f:
            f.write(space.replace(OWN.encode(), own_npz.encode()))
        TRIED["load_space"] += 1
        read = functools.partial(load_space, path, dataset)
    else:  # a parsed file, for parse_space
        TRIED["parse_space"] += 1
        read = functools.partial(parse_space, substitute(space, own_npz), "space.toml", dataset)
    try:
        read()
    except SpaceError as e:
        assert str(e), f"a SpaceError without a message for {space!r}"
    except Exception as e:  # anything else is a crash this test looks for
        pytest.fail(f"{type(e).__name__}: {e}\nfor --dataset {dataset!r} and the space "
                    f"{space!r}\n{traceback.format_exc()}")
