"""The tabular benchmark of a space: a grid of configurations trained on several seeds, with
the validation and test figures of every evaluation and the trainer seconds they took.

One gzipped JSON file holds it: `meta` (the space, the grid's levels, the seeds, the
trainer settings, the command and commit it was recorded at), `runs` (one per configuration
and seed: its status, where it ended, its trainer seconds) and `rows`, one per
(configuration, seed, evaluation). `Table` reads it into arrays indexed
[configuration, seed, evaluation] for the replay.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.rundir import atomic_write

# What each evaluation row keeps (from the trainer's metrics.csv).
ROW_FIELDS = ("step", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
              "elapsed_seconds")
# What each run keeps: completed or diverged, the step it ended at, its trainer seconds.
RUN_FIELDS = ("config_index", "seed", "status", "steps", "seconds")
BENCH_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          os.pardir, os.pardir, "docs", "bench"))


def table_path(space: str) -> str:
    """Where the recorded table of a space lives in the repository."""
    return os.path.join(BENCH_DIR, f"table-{space}.json.gz")


DEFAULT_PATH = table_path("digits")

# The grids of the recorded spaces: levels on each searched parameter's scale, the paper's
# defaults among them (weight 1, alpha 1, lr 0.1, warm-up a sixth of the run), each range's
# ends too. 5 x 4 x 2 x 3 = 120 configurations.
DIGITS_GRID: dict[str, tuple[float, ...]] = {
    "weight": (0.1, 0.3, 1.0, 3.0, 10.0),
    "lr": (0.01, 0.03, 0.1, 0.3),
    "alpha": (0.1, 1.0),
    "warmup": (0, 100, 300),
}
GRIDS = {"digits": DIGITS_GRID, "digits-short": {**DIGITS_GRID, "warmup": (0, 17, 50)}}


def grid_configs(grid: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Every combination of the levels, in a fixed order (the table's configuration index)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def write_table(path: str, meta: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Write the table atomically: meta, then one row per (configuration, seed, evaluation)."""
    rows, ends = [], []
    for run in sorted(runs, key=lambda r: (r["config_index"], r["seed"])):
        ends.append({k: run[k] for k in RUN_FIELDS})
        rows += [[run["config_index"], run["seed"], *(row[f] for f in ROW_FIELDS)]
                 for row in run["rows"]]
    body = {"meta": meta, "runs": ends, "columns": ["config_index", "seed", *ROW_FIELDS],
            "rows": rows}
    data = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)
    atomic_write(path, lambda f: f.write(data))


@dataclass
class Table:
    """A recorded table as arrays [configuration, seed, evaluation]; NaN past a run's end
    (a diverged run stops early)."""

    meta: dict[str, Any]
    configs: list[dict[str, float]]
    seeds: list[int]
    steps: np.ndarray  # the evaluation steps, shared by every run
    val_accuracy: np.ndarray
    val_loss: np.ndarray
    test_accuracy: np.ndarray
    test_loss: np.ndarray
    seconds: np.ndarray  # trainer seconds from the start of the run to each evaluation
    diverged: np.ndarray  # [configuration, seed]: the run stopped on a NaN or infinite loss
    end_step: np.ndarray  # [configuration, seed]: the step it ended at
    end_seconds: np.ndarray  # [configuration, seed]: its trainer seconds at the end

    @property
    def full_steps(self) -> int:
        return int(self.steps[-1])

    def index_of(self, config: dict[str, float]) -> int:
        """The index of a configuration given exactly at the grid's levels."""
        for i, c in enumerate(self.configs):
            if all(math.isclose(float(c[k]), float(config[k])) for k in c):
                return i
        raise KeyError(f"{config} is not a configuration of the table")

    @property
    def defaults_index(self) -> int:
        return self.index_of(self.meta["defaults"])

    def final_test_error(self) -> np.ndarray:
        """[configuration, seed]: the final test error of each run (a diverged run counts
        as chance, as its model is unusable)."""
        last = self.test_accuracy[:, :, -1]
        chance = 1.0 / self.meta.get("num_classes", 10)
        return 1.0 - np.where(np.isnan(last), chance, last)


def read_table(path: str = DEFAULT_PATH) -> Table:
    """Load a recorded table."""
    with gzip.open(path, "rt") as f:
        body = json.load(f)
    meta, cols = body["meta"], body["columns"]
    configs = grid_configs({k: tuple(v) for k, v in meta["grid"].items()})
    seeds = list(meta["seeds"])
    steps = np.array(meta["eval_steps"])
    shape = (len(configs), len(seeds), len(steps))
    arrays = {f: np.full(shape, np.nan) for f in ROW_FIELDS if f != "step"}
    at = {s: i for i, s in enumerate(steps.tolist())}
    seed_at = {s: i for i, s in enumerate(seeds)}
    c = {name: cols.index(name) for name in cols}
    for row in body["rows"]:
        ci, si, ei = row[c["config_index"]], seed_at[row[c["seed"]]], at[int(row[c["step"]])]
        for f in arrays:
            arrays[f][ci, si, ei] = row[c[f]]
    diverged = np.zeros(shape[:2], dtype=bool)
    end_step = np.zeros(shape[:2], dtype=int)
    end_seconds = np.full(shape[:2], np.nan)
    for run in body["runs"]:
        ci, si = run["config_index"], seed_at[run["seed"]]
        diverged[ci, si] = run["status"] == "diverged"
        end_step[ci, si], end_seconds[ci, si] = run["steps"], run["seconds"]
    missing = int((end_step == 0).sum())
    if missing:
        raise ValueError(f"{path}: {missing} of {end_step.size} runs are missing; record the "
                         "table again (python -m study.bench record)")
    return Table(meta, configs, seeds, steps, arrays["val_accuracy"], arrays["val_loss"],
                 arrays["test_accuracy"], arrays["test_loss"], arrays["elapsed_seconds"],
                 diverged, end_step, end_seconds)


def write_subtable(src: str, dst: str, levels: dict[str, list[float]]) -> None:
    """A smaller table: the runs of `src` whose values lie on the given levels (parameters
    not named keep all of theirs)."""
    with gzip.open(src, "rt") as f:
        body = json.load(f)
    grid = {k: tuple(v) for k, v in body["meta"]["grid"].items()}
    kept = {k: tuple(v for v in grid[k] if k not in levels or any(
        math.isclose(v, x) for x in levels[k])) for k in grid}
    old = grid_configs(grid)
    new_index = {tuple(c.values()): i for i, c in enumerate(grid_configs(kept))}
    remap = {i: new_index[tuple(c.values())] for i, c in enumerate(old)
             if tuple(c.values()) in new_index}
    runs = []
    for run in body["runs"]:
        if run["config_index"] in remap:
            ci = run["config_index"]
            rows = [dict(zip(ROW_FIELDS, r[2:])) for r in body["rows"] if r[0] == ci
                    and r[1] == run["seed"]]
            runs.append({**run, "config_index": remap[ci], "rows": rows})
    meta = {**body["meta"], "grid": {k: list(v) for k, v in kept.items()},
            "subtable_of": os.path.basename(src)}
    write_table(dst, meta, runs)
