"""Search spaces: small TOML files in study/spaces/, validated on load.

A space names its dataset, the study's fidelity (evaluation interval, ASHA's grace period
and reduction, default resources), trainer settings held fixed, and the searched parameters
with their bounds, scale and the paper's default (evaluated first).

A trial runs the full length of the dataset's preset (what `--reproduce` trains) unless the
space or `--steps-per-trial` makes it shorter; a shorter trial keeps the shape of the full
schedule: its warm-up and milestones are scaled by the same factor (`scale_schedule`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from trainer.config import Config, ConfigError, parse_milestones
from trainer.data import TRAIN_SIZES, check_sizes
from trainer.data.survey import OwnDataError, class_counts, has_own_val, is_dataset_path
from trainer.settings import expand_labels_per_class, resolve

SPACES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spaces")
CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)}
# Fields a space may not set: the study decides where runs go and how they start.
RESERVED = {"save_path", "resume", "device", "data_path", "download",
            "test_freq", "dataset", "threads"}  # threads: Ray's OMP_NUM_THREADS per trial
# A study's full length may be fixed ([fixed] total_steps: every run of it, reproductions
# included), never searched: trials of different lengths would not compare.
FIXED_ONLY = {"total_steps"}
FIDELITY_KEYS = {"test_freq", "grace_steps", "reduction_factor", "gpus_per_trial",
                 "cpus_per_trial"}
# A space may make its trials shorter than the full length (a low-fidelity proxy).
OPTIONAL_FIDELITY_KEYS = {"total_steps"}
PARAM_TYPES = ("float", "int", "categorical")


class SpaceError(ValueError):
    """A search-space file is malformed; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def tune_domain(self):
        from ray import tune

        if self.type == "categorical":
            return tune.choice(list(self.choices))
        if self.type == "int":
            # randint's upper bound is exclusive
            return (tune.lograndint if self.log else tune.randint)(int(self.low),
                                                                    int(self.high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)


@dataclass(frozen=True)
class Schedule:
    """The step-counted settings of a full-length run: what a shorter trial scales down."""

    total_steps: int
    warmup: int
    milestones: tuple[int, ...]


def scale_schedule(settings: dict[str, Any], full: Schedule, steps: int) -> dict[str, Any]:
    """`settings` for a run of `steps` that keeps the shape of the `full` schedule: warm-up
    and milestones (given in full-length steps) scaled by steps / full.total_steps."""
    settings = {**settings, "total_steps": steps}
    if steps == full.total_steps:
        return settings
    factor = steps / full.total_steps
    milestones: list[int] = []
    for m in parse_milestones(settings.get("milestones", full.milestones)):
        # strictly increasing, as the trainer requires, even where rounding meets
        milestones.append(max(round(m * factor), milestones[-1] + 1 if milestones else 1))
    warmup = settings.get("warmup", full.warmup)
    # Whole numbers only: any other value (a string, a float, a list) goes on unscaled, for
    # the trainer to refuse naming it, as at full length.
    if isinstance(warmup, numbers.Integral) and not isinstance(warmup, bool):
        warmup = round(warmup * factor)
    return {**settings, "warmup": warmup, "milestones": milestones}


@dataclass(frozen=True)
class Space:
    name: str
    path: str
    dataset: str
    total_steps: int  # a search trial's length: full.total_steps unless the space says less
    full: Schedule  # the full-length schedule: what --reproduce and the race train
    test_freq: int
    grace_steps: int
    reduction_factor: int
    gpus_per_trial: float
    cpus_per_trial: float
    fixed: dict[str, Any]
    params: tuple[Param, ...]

    def defaults(self) -> dict[str, Any]:
        """The paper's values of the searched parameters: the study's first trial."""
        return {p.name: p.default for p in self.params}

    def tune_space(self) -> dict[str, Any]:
        return {p.name: p.tune_domain() for p in self.params}

    def trainer_settings(self, sampled: dict[str, Any],
                         total_steps: int | None = None) -> dict[str, Any]:
        """Trainer overrides of one run of `total_steps` (default: a search trial's length):
        dataset, evaluation interval, fixed settings, sampled values, and the schedule scaled
        to that length where it is shorter than the full one."""
        return scale_schedule({"dataset": self.dataset, "test_freq": self.test_freq,
                               **self.fixed, **sampled}, self.full,
                              total_steps or self.total_steps)

    @property
    def is_proxy(self) -> bool:
        """Search trials are shorter than the runs --reproduce makes."""
        return self.total_steps != self.full.total_steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"] = [dataclasses.asdict(p) for p in self.params]
        return d


def available() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SPACES_DIR) if f.endswith(".toml"))


def load_space(name_or_path: str, dataset: str | None = None) -> Space:
    """Load a space by name (study/spaces/NAME.toml) or by the path of a .toml file;
    `dataset` (a path of your own data) replaces the file's dataset."""
    path = name_or_path
    if not name_or_path.endswith(".toml"):
        path = os.path.join(SPACES_DIR, f"{name_or_path}.toml")
        if not os.path.isfile(path):
            raise SpaceError(f"--space: unknown space {name_or_path!r}; choose one of "
                             f"{available()} or give the path of a .toml file")
    elif not os.path.isfile(path):
        raise SpaceError(f"--space: no file at {path}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)  # data only: nothing in a space file is executed
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from e
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text ({e}); save the space file as UTF-8") from e
    except RecursionError as e:  # tomllib recurses once per level of nested arrays or tables
        raise SpaceError(f"{path}: nested too deeply to parse; a space file needs only "
                         "[fidelity], [fixed] and [params.NAME] tables of plain values") from e
    return parse_space(raw, path, dataset)


Fail = Callable[[str, str], NoReturn]  # fail(key, message): raise SpaceError naming both


def parse_space(raw: dict[str, Any], path: str, dataset: str | None = None) -> Space:
    """Validate a parsed space file; raise SpaceError naming the first problem. A dataset
    given as a path (here or in the file) is made absolute: every node reads that path."""
    def fail(key: str, msg: str) -> NoReturn:
        raise SpaceError(f"{path}: {key}: {msg}")

    if dataset is not None:
        raw = {**raw, "dataset": dataset}
    if isinstance(raw.get("dataset"), str) and is_dataset_path(raw["dataset"]):
        raw = {**raw, "dataset": os.path.abspath(os.path.expanduser(raw["dataset"]))}
    _check_tables(raw, fail)
    fidelity = _fidelity(raw.get("fidelity", {}), fail)
    fixed = _fixed(raw["dataset"], dict(raw.get("fixed", {})), fail)
    params = _params(raw.get("params", {}), fixed, fail)
    full = _full_schedule(raw["dataset"], fixed, fidelity, path, fail)
    space = Space(
        name=os.path.basename(path)[:-5], path=os.path.abspath(path), dataset=raw["dataset"],
        total_steps=fidelity.get("total_steps", full.total_steps), full=full,
        test_freq=fidelity["test_freq"],
        grace_steps=fidelity["grace_steps"], reduction_factor=fidelity["reduction_factor"],
        gpus_per_trial=float(fidelity["gpus_per_trial"]),
        cpus_per_trial=float(fidelity["cpus_per_trial"]), fixed=fixed, params=tuple(params))
    _check_trainer(space, path)
    return space


def _check_tables(raw: dict[str, Any], fail: Fail) -> None:
    """Only the known top-level keys, a dataset, and tables where tables belong."""
    unknown = set(raw) - {"dataset", "fidelity", "fixed", "params"}
    if unknown:
        fail(", ".join(sorted(unknown)), "unknown top-level key(s); expected dataset, "
             "[fidelity], [fixed] and [params.NAME] tables")
    if not isinstance(raw.get("dataset"), str):
        fail("dataset", "missing; name the trainer dataset, e.g. dataset = \"cifar10\", give "
             "the path of your own data, or pass --dataset PATH")
    for table in ("fidelity", "fixed", "params"):
        if not isinstance(raw.get(table, {}), dict):
            fail(table, f"must be a table ([{table}] or [{table}.NAME]), got {raw[table]!r}")


def _fidelity(fidelity: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """[fidelity]: steps, evaluation frequency, ASHA's grace and reduction, resources."""
    missing = FIDELITY_KEYS - set(fidelity)
    unknown = set(fidelity) - FIDELITY_KEYS - OPTIONAL_FIDELITY_KEYS
    if missing or unknown:
        fail("fidelity", f"needs {sorted(FIDELITY_KEYS)} (and optionally "
             f"{sorted(OPTIONAL_FIDELITY_KEYS)}); missing {sorted(missing)}, unknown "
             f"{sorted(unknown)}")
    for key in ("total_steps", "test_freq", "grace_steps", "reduction_factor"):
        if key not in fidelity:
            continue
        v = fidelity[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            fail(f"fidelity.{key}", f"must be a positive integer, got {v!r}")
    if fidelity["reduction_factor"] < 2:
        fail("fidelity.reduction_factor", "must be >= 2 (ASHA keeps 1/reduction_factor)")
    for key in ("gpus_per_trial", "cpus_per_trial"):
        v = fidelity[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            fail(f"fidelity.{key}", f"must be a finite number >= 0, got {v!r}")
    if fidelity["gpus_per_trial"] > 1 and fidelity["gpus_per_trial"] % 1:
        fail("fidelity.gpus_per_trial", f"{fidelity['gpus_per_trial']}: a fraction above 1 is "
             "not allowed (Ray shares a GPU only in fractions of one); use a value in [0, 1] "
             "or a whole number")
    if fidelity["cpus_per_trial"] == 0:
        fail("fidelity.cpus_per_trial", "must be > 0: a trial needs a CPU to run on, e.g. 1")
    return fidelity


def _fixed(dataset: str, fixed: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """[fixed]: trainer settings held constant, labels_per_class expanded, and a
    validation set (num_val, or data of your own's val/) without which nothing is selected."""
    for key in fixed:
        if key not in CONFIG_FIELDS | {"labels_per_class"} or key in RESERVED:
            fail(f"fixed.{key}", "not a trainer setting a space may fix; allowed: "
                 f"{sorted(CONFIG_FIELDS - RESERVED)} and labels_per_class")
    try:  # labels_per_class = N stands for num_label = N x the dataset's classes
        fixed = {k: v for k, v in expand_labels_per_class(
            {"dataset": dataset, **fixed}).items() if k != "dataset"}
    except ConfigError as e:
        fail("fixed.labels_per_class" if "labels_per_class" in str(e) else "dataset",
             str(e).split(": ", 1)[1])

    own = is_dataset_path(dataset)
    if own and "num_val" not in fixed:  # your data: its val/, or 10 images per class
        fixed["num_val"] = _own_num_val(dataset, fail)
    num_val = fixed.get("num_val")
    if own and num_val == 0 and _has_own_val(dataset, fail):
        pass  # the data's own validation set (val/ or x_val)
    elif isinstance(num_val, bool) or not isinstance(num_val, int) or num_val <= 0:
        fail("fixed.num_val", f"must be a positive integer, got {num_val!r}: a study selects "
             "on a validation split, never on the test set; hold out a few hundred images, "
             "e.g. num_val = 500 for CIFAR-10 with 4000 labels")
    return fixed


def _full_schedule(dataset: str, fixed: dict[str, Any], fidelity: dict[str, Any], path: str,
                   fail: Fail) -> Schedule:
    """The full-length schedule (the preset's, with [fixed]), and the trial length checked
    against it: a search trial may be shorter than a reproduce run, never longer."""
    try:
        cfg = resolve({"dataset": dataset, **fixed})
    except ValueError as e:
        field = str(e).split(":", 1)[0]
        key = f"fixed.{field}" if field in fixed else field
        raise SpaceError(f"{path}: {key}: the trainer rejects this space: {e}") from e
    full = Schedule(cfg.total_steps, cfg.warmup, cfg.milestones)
    if "total_steps" in fixed and "milestones" not in fixed and any(
            m >= full.total_steps for m in full.milestones):
        fail("fixed.milestones", f"the preset's milestones {list(full.milestones)} lie past "
             f"total_steps = {full.total_steps}; give milestones for that length")
    steps = fidelity.get("total_steps", full.total_steps)
    if steps > full.total_steps:
        fail("fidelity.total_steps", f"{steps} exceeds the full length, {full.total_steps} "
             "steps (what --reproduce trains); leave it out to search at full length")
    if fidelity["grace_steps"] > steps:
        fail("fidelity.grace_steps", f"{fidelity['grace_steps']} exceeds a trial's "
             f"{steps} steps")
    return full


def _params(specs: dict[str, Any], fixed: dict[str, Any], fail: Fail) -> list[Param]:
    """[params.NAME]: the searched trainer settings, each with its default (the first trial)."""
    params = []
    for name, spec in specs.items():
        key = f"params.{name}"
        if name not in CONFIG_FIELDS or name in RESERVED | FIXED_ONLY:
            fail(key, "not a trainer setting; searchable: "
                 f"{sorted(CONFIG_FIELDS - RESERVED - FIXED_ONLY)}")
        if name in fixed:
            fail(key, "is also in [fixed]; keep it in one place")
        if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
            fail(f"{key}.type", f"must be one of {list(PARAM_TYPES)}")
        allowed = {"type", "default", "choices"} if spec["type"] == "categorical" else {
            "type", "default", "low", "high", "log"}
        if set(spec) - allowed:
            fail(key, f"unknown key(s) {sorted(set(spec) - allowed)}; allowed {sorted(allowed)}")
        if "default" not in spec:
            fail(f"{key}.default", "missing: the paper's value, evaluated as the first trial")
        params.append(_param(name, spec, lambda k, m, key=key: fail(f"{key}.{k}", m)))
    if not params:
        fail("params", "no parameter to search; add a [params.NAME] table")
    return params


def _check_trainer(space: Space, path: str) -> None:
    """The trainer's own checks on the first trial, then on each bound and each choice (the
    others at their defaults): no trial may fail on a value the file allows."""
    cases = [(None, None, {})]
    for p in space.params:
        ends = [("choices", c) for c in p.choices] if p.type == "categorical" else [
            ("low", p.low), ("high", p.high)]
        cases += [(f"params.{p.name}.{key}", f"{p.name} = {v!r}", {p.name: v}) for key, v in ends]
    for key, value, change in cases:
        try:
            cfg = resolve(space.trainer_settings({**space.defaults(), **change}))
            if cfg.dataset in TRAIN_SIZES:  # the official files' size: known before loading
                check_sizes(cfg, TRAIN_SIZES[cfg.dataset])
            elif is_dataset_path(cfg.dataset):  # your data: counted from its files
                counts, extra = class_counts(cfg.dataset)
                check_sizes(cfg, int(counts.sum()) + extra)
        except ValueError as e:  # ConfigError, or a split or batch the dataset cannot hold
            if key is None:  # the defaults: name the [fixed] or searched key at fault
                field = str(e).split(":", 1)[0]
                key = (f"fixed.{field}" if field in space.fixed else f"params.{field}.default"
                       if field in space.defaults() else field)
            rejects = "this space" if value is None else value
            raise SpaceError(f"{path}: {key}: the trainer rejects {rejects}: {e}") from e


def _has_own_val(dataset: str, fail) -> bool:
    """The data carries its validation set; a missing or unreadable file named as the
    space's dataset."""
    try:
        return has_own_val(dataset)
    except OwnDataError as e:  # a missing or unreadable file
        fail("dataset", str(e))


def _own_num_val(dataset: str, fail) -> int:
    """Validation images for data of your own: none where it has its own validation set,
    else 10 per class (fewer where a class has under 50 training images)."""
    try:
        if has_own_val(dataset):
            return 0
        counts, _ = class_counts(dataset)
    except OwnDataError as e:
        fail("dataset", str(e))
    return len(counts) * max(1, min(10, int(counts.min()) // 5))


def _param(name: str, spec: dict[str, Any], fail) -> Param:
    kind, default = spec["type"], spec["default"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            fail("choices", "must be a non-empty list")
        if default not in choices:
            fail("default", f"{default!r} is not among the choices {choices}")
        return Param(name, kind, default, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    for bound in ("low", "high"):
        v = spec.get(bound)
        if isinstance(v, bool) or not isinstance(v, number):
            fail(bound, f"must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not isinstance(log, bool):
        fail("log", f"must be true or false, got {log!r}")
    if not low < high:
        fail("high", f"must exceed low ({low} >= {high})")
    if log and low <= 0:
        fail("low", f"a log-scale range must start above 0, got {low}")
    if isinstance(default, bool) or not isinstance(default, number) or not low <= default <= high:
        fail("default", f"{default!r} must be a{'n integer' if kind == 'int' else ' number'} "
             f"within [{low}, {high}]")
    return Param(name, kind, default, low, high, log)
