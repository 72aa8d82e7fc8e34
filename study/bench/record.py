"""`python -m study.bench record`: train a space's grid (digits, digits-short) on several
seeds, once, and keep every evaluation as the tabular benchmark (study/bench/table.py).

Each run is what a study trial of that configuration trains (the space's trainer settings,
full length, fp32 on the CPU), on the seeds a study with --seed 0 gives its search and its
race. Runs go to worker processes of one thread each; every finished run is appended to
OUT.partial.jsonl at once, so an interrupted recording continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from study.bench.table import GRIDS, grid_configs, table_path, write_table


def run_settings(space: str, config: dict[str, float], seed: int, save_path: str,
                 total_steps: int | None = None) -> dict[str, Any]:
    """The trainer settings of one recorded run: a study trial's, on this seed."""
    from study.spaces import load_space

    return {**load_space(space).trainer_settings(config, total_steps), "seed": seed,
            "device": "cpu", "precision": "fp32", "save_path": save_path}


def train_one(job: tuple[str, int, dict[str, float], int, int | None]) -> dict[str, Any]:
    """Train one configuration on one seed; return its evaluations and how it ended."""
    from trainer import TrainingDiverged, resolve, rundir, train

    space, index, config, seed, total_steps = job
    with tempfile.TemporaryDirectory(prefix="record-") as tmp:
        cfg = resolve(run_settings(space, config, seed, tmp, total_steps))
        t0 = time.perf_counter()
        status = "completed"
        try:
            summary = train(cfg, show_progress=False)
            steps = summary["steps"]
        except TrainingDiverged as e:
            status, steps = "diverged", e.step
        with open(os.path.join(tmp, rundir.METRICS), newline="") as f:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        seconds = time.perf_counter() - t0
    return {"config_index": index, "seed": seed, "status": status, "steps": int(steps),
            "seconds": rows[-1]["elapsed_seconds"] if status == "completed" and rows else seconds,
            "rows": rows}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # trainers side by side on few cores: one thread each


def commit() -> str:
    """The repository's commit, marked dirty when the working tree has changes."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def record_seeds(space: str, count: int) -> list[int]:
    """The trainer seeds of a study with --seed 0: its search seed, then its race seeds
    (and, beyond a race of 3, seeds the replay keeps out of every choice)."""
    from study.race import selection_seeds
    from study.spaces import load_space

    search, race = selection_seeds(load_space(space), study_seed=0, race_seeds=count - 1)
    return [search, *race]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", choices=sorted(GRIDS), default="digits")
    p.add_argument("--seeds", type=int, default=4,
                   help="trainer seeds per configuration: a search seed and the race's "
                        "(default 4: a race of 3 seeds can be replayed)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="runs side by side, one thread each (default: the CPUs)")
    p.add_argument("--out", help="the table file (.json.gz; default "
                                 "docs/bench/table-SPACE.json.gz)")
    p.add_argument("--level", action="append", default=[], metavar="NAME=V1,V2",
                   help="record these levels of a parameter instead of the grid's (repeat "
                        "for several; a small table for tests)")
    p.add_argument("--steps-per-trial", type=int,
                   help="shorter runs, the schedule scaled (default: the full length)")
    return p


def parse_levels(space: str, items: list[str]) -> dict[str, tuple[float, ...]]:
    """The space's grid with the --level overrides applied; a bad one raises ValueError."""
    grid = dict(GRIDS[space])
    for item in items:
        name, _, values = item.partition("=")
        if name not in grid or not values:
            raise ValueError(f"--level {item!r}: give NAME=V1,V2 with NAME one of {list(grid)}")
        kind = int if all(isinstance(v, int) for v in grid[name]) else float
        try:
            grid[name] = tuple(kind(v) for v in values.split(","))
        except ValueError as e:
            raise ValueError(f"--level {item!r}: {e}") from e
    return grid


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        grid = parse_levels(args.space, args.level)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.workers < 1 or (args.steps_per_trial or 1) < 1:
        print("error: --seeds, --workers and --steps-per-trial must be >= 1", file=sys.stderr)
        return 2
    args.out = args.out or table_path(args.space)
    if not args.out.endswith(".json.gz"):
        print(f"error: --out {args.out}: must end in .json.gz", file=sys.stderr)
        return 2
    configs = grid_configs(grid)
    seeds = record_seeds(args.space, args.seeds)
    partial = args.out + ".partial.jsonl"
    done: dict[tuple[int, int], dict[str, Any]] = {}
    if os.path.exists(partial):
        with open(partial) as f:
            for line in f:
                if line.strip().endswith("}"):  # a line cut by a kill is run again
                    run = json.loads(line)
                    done[(run["config_index"], run["seed"])] = run
        print(f"continuing: {len(done)} runs recorded already in {partial}", flush=True)
    # Seed by seed, configurations shuffled: a part of the table is a usable sample.
    order = list(range(len(configs)))
    random.Random(0).shuffle(order)
    jobs = [(args.space, i, configs[i], s, args.steps_per_trial) for s in seeds for i in order
            if (i, s) not in done]
    t0, made_at = time.perf_counter(), commit()  # the code that trains: as it starts
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_one_thread) as pool, open(partial, "a") as out:
        for n, run in enumerate(pool.imap_unordered(train_one, jobs), 1):
            out.write(json.dumps(run) + "\n")
            out.flush()
            done[(run["config_index"], run["seed"])] = run
            if n % 10 == 0 or n == len(jobs):
                print(f"{n}/{len(jobs)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
    from study.spaces import load_space
    from trainer import resolve

    space = load_space(args.space)
    example = resolve(run_settings(args.space, space.defaults(), seeds[0], "unused",
                                   args.steps_per_trial))
    steps = sorted({int(r["step"]) for run in done.values() for r in run["rows"]})
    command = shlex.join(["python", "-m", "study.bench", "record",
                          *(sys.argv[1:] if argv is None else argv)])
    meta = {"space": args.space, "grid": {k: list(v) for k, v in grid.items()},
            "defaults": space.defaults(), "seeds": seeds, "eval_steps": steps,
            "num_classes": 10, "command": command, "commit": made_at,
            "recorded": time.strftime("%Y-%m-%d"), "workers": args.workers,
            "settings": {k: v for k, v in example.to_dict().items()
                         if k not in ("save_path", "seed", *grid)},
            "record_wall_seconds": time.perf_counter() - t0}
    write_table(args.out, meta, list(done.values()))
    os.unlink(partial)
    print(f"wrote {args.out}: {len(configs)} configurations x {len(seeds)} seeds")
    return 0
