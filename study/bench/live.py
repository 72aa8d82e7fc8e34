"""`python -m study.bench`: does the search (Optuna TPE + ASHA) beat random search without
early stopping at an equal compute budget, on the digits space?

Per study seed: a tpe+asha study, whose trainer seconds (summed over its trials) set the
budget B; then a random-search study (FIFO, every trial full length) with enough trials to
spend more than B, of which only the trials finished within B count. Each strategy picks as
the study does (the highest final validation score among full-length trials; among all
trials only when none ran full length) and the pick's final test error is reported; the
test set never chooses.

Both studies of a seed use the same sampler seed, and Optuna's TPE draws its first
n_startup_trials (10) configurations exactly as random search of that seed does (the
paper's defaults come first in both): the strategies are compared paired, on largely the
same configurations, and differ in ASHA and in TPE's later trials.

The budget is trainer seconds by default (wall time inside the trainer, so it grows with
any other load on the machine); --budget steps counts training steps instead, which no load
changes. Both sums are reported either way.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from study.driver import LOCAL_ONLY_ENV, StudyOptions, chosen_trial
from trainer import rundir
from trainer.rundir import write_json

SPACE = "digits"
# strategy -> (searcher, scheduler)
STRATEGIES = {"tpe+asha": ("tpe", "asha"), "random": ("random", "fifo")}
MAX_RANDOM_FACTOR = 4  # random search runs at most this many times the tpe+asha trials
COLOURS = {"tpe+asha": "tab:blue", "random": "tab:orange"}


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _last_row(metrics_csv: str) -> dict[str, str]:
    try:
        with open(metrics_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return rows[-1] if rows else {}


def read_trials(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per trial of a finished study, ordered by the time it finished."""
    trials = []
    for t in summary["trials"]:
        run_dir = os.path.join(t["path"], rundir.RUN_DIR)
        last = _last_row(os.path.join(run_dir, rundir.METRICS))  # {} before any evaluation
        placement = _read_json(os.path.join(run_dir, rundir.PLACEMENT))
        trials.append({
            "trial_id": t["trial_id"], "status": t["status"], "run_dir": run_dir,
            "val_score": t["val_score"],
            # the compute a trial spent, whatever became of it: trainer seconds, steps
            "seconds": float(last.get("elapsed_seconds", 0.0)),
            "steps": int(float(last.get("step", 0))),
            "finished": placement.get("last_report", placement.get("started")),
            "test_error": 1.0 - float(last["test_accuracy"]) if last else None,
            "config": t["config"]})
    # a trial that never started training sorts last; it spent no trainer seconds
    return sorted(trials, key=lambda t: math.inf if t["finished"] is None else t["finished"])


def within_budget(trials: list[dict[str, Any]], budget: float,
                  unit: str) -> list[dict[str, Any]]:
    """The trials, in finishing order, whose cumulative cost (in unit) stays within budget."""
    kept, spent = [], 0.0
    for t in trials:
        # a relative tolerance: tpe+asha's own trials sum to exactly its budget
        if spent + t[unit] > budget * (1 + 1e-9):
            break
        spent += t[unit]
        kept.append(t)
    return kept


def curve(trials: list[dict[str, Any]], unit: str) -> list[tuple[float, float | None]]:
    """(cumulative cost, val score of the pick so far) after each finished trial."""
    points, spent = [], 0.0
    for i, t in enumerate(trials):
        spent += t[unit]
        best = chosen_trial(trials[:i + 1])
        points.append((spent, best["val_score"] if best else None))
    return points


def run_strategy(strategy: str, seed: int, num_samples: int, args: argparse.Namespace,
                 storage: str) -> dict[str, Any]:
    """Run one study of a strategy; return its summary and trials in finishing order."""
    from study.driver import run_study

    searcher, scheduler = STRATEGIES[strategy]
    opts = StudyOptions(
        space=SPACE, name=study_name(strategy, seed), storage_path=storage, mode="search",
        num_samples=num_samples, scheduler=scheduler, searcher=searcher, seed=seed,
        max_concurrent=args.max_concurrent, total_steps=args.steps_per_trial,
        test_freq=args.test_freq, verbose=0)
    t0 = time.perf_counter()
    summary = run_study(opts)
    return {"study_path": summary["path"], "trials_run": summary["num_trials"],
            "errored": summary["num_errored"], "diverged": summary["num_diverged"],
            "study_wall_seconds": time.perf_counter() - t0, "trials": read_trials(summary)}


def random_samples(trials: list[dict[str, Any]], budget: float, unit: str, num_samples: int,
                   total_steps: int) -> int:
    """Random-search trials expected to spend more than the budget, with a margin of two."""
    full = [t[unit] for t in trials if t["status"] == "completed"]
    # no full-length trial (all failed or stopped): extrapolate from the cost per step
    mean_full = statistics.mean(full) if full else max(
        (t[unit] / t["steps"] * total_steps for t in trials if t["steps"]), default=0.0)
    n = math.ceil(budget / mean_full) + 2 if mean_full > 0 else num_samples
    return max(1, min(n, MAX_RANDOM_FACTOR * num_samples))


def summarise_run(run: dict[str, Any], budget: float, unit: str) -> dict[str, Any]:
    """Budget accounting, the pick and the curve of one strategy's study."""
    kept = within_budget(run["trials"], budget, unit)
    for i, t in enumerate(run["trials"]):
        t["kept"] = i < len(kept)  # kept is a prefix of the finishing order
    chosen = chosen_trial(kept)
    return {**run, "budget": budget, "budget_unit": unit, "trials_within_budget": len(kept),
            "seconds_within_budget": sum(t["seconds"] for t in kept),
            "steps_within_budget": sum(t["steps"] for t in kept),
            # False: the study ran out of trials before the budget (too few were estimated)
            "budget_reached": sum(t[unit] for t in run["trials"]) >= budget * (1 - 1e-9),
            "pick": chosen and {k: chosen[k] for k in (
                "trial_id", "run_dir", "status", "val_score", "test_error", "config")},
            "curve": curve(kept, unit)}


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of each strategy's pick, and the paired difference."""
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        picks = [r["pick"] for r in runs if r["strategy"] == strategy and r["pick"]]
        out[strategy] = {"test_error": mean_std([p["test_error"] for p in picks]),
                         "val_score": mean_std([p["val_score"] for p in picks])}
    by_seed: dict[int, dict[str, Any]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["strategy"]] = r["pick"]
    diffs = [s["random"]["test_error"] - s["tpe+asha"]["test_error"] for s in by_seed.values()
             if s.get("random") and s.get("tpe+asha")]
    # positive: random search's pick errs more, the search wins
    out["test_error_random_minus_search"] = mean_std(diffs)
    return out


def _fmt(x: float | None, scale: float = 1.0, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x * scale:.{digits}f}"


def tables(runs: list[dict[str, Any]], agg: dict[str, Any]) -> str:
    """The Markdown tables: per seed and strategy, then the means over seeds."""
    lines = ["| seed | strategy | trials run | within budget | budget | trainer s used "
             "| steps used | best val score | pick test error % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        p = r["pick"] or {}
        lines.append(f"| {r['seed']} | {r['strategy']} | {r['trials_run']} "
                     f"| {r['trials_within_budget']} | {r['budget']:.1f} {r['budget_unit']} "
                     f"| {r['seconds_within_budget']:.1f} | {r['steps_within_budget']} "
                     f"| {_fmt(p.get('val_score'))} | {_fmt(p.get('test_error'), 100, 2)} |")

    def ms(s: dict[str, Any], scale: float, digits: int) -> str:
        return f"{_fmt(s['mean'], scale, digits)} ± {_fmt(s['std'], scale, digits)}"

    lines += ["", "| strategy | seeds | pick test error % | best val score |",
              "|---|---|---|---|"]
    for strategy in STRATEGIES:
        a = agg[strategy]
        lines.append(f"| {strategy} | {a['test_error']['n']} | {ms(a['test_error'], 100, 2)} "
                     f"| {ms(a['val_score'], 1, 4)} |")
    d = agg["test_error_random_minus_search"]
    lines += ["", f"random − tpe+asha test error (paired over {d['n']} seeds, points): "
                  f"{ms(d, 100, 2)}"]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: str) -> None:
    """Best validation score so far against cumulative trainer seconds, per strategy and seed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for r in runs:
        pts = [(s, v) for s, v in r["curve"] if v is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        # held flat to the budget: nothing better was found within it
        xs, ys = [*xs, r["budget"]], [*ys, ys[-1]]
        ax.plot(xs, ys, drawstyle="steps-post", color=COLOURS[r["strategy"]], alpha=0.8,
                label=None if r["strategy"] in labelled else r["strategy"])
        labelled.add(r["strategy"])
    ax.set_xlabel(f"cumulative trainer {runs[0]['budget_unit']}" if runs else "budget")
    ax.set_ylabel("best validation score so far")
    ax.set_title(f"{SPACE}: search vs random search at equal budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def study_name(strategy: str, seed: int) -> str:
    return f"bench-{strategy.replace('+', '-')}-seed{seed}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench live",
                                description="TPE + ASHA against random search (no early "
                                            "stopping) at an equal trainer-seconds budget.")
    a = p.add_argument
    a("--seeds", type=int, default=3, help="study seeds 0..N-1 (default 3)")
    a("--num-samples", type=int, default=16, help="trials of each tpe+asha study (default 16)")
    a("--steps-per-trial", type=int, help="override the space's steps per trial (300)")
    a("--test-freq", type=int, help="override the space's evaluation interval (50)")
    a("--max-concurrent", type=int,
      help="trials at once (default: as many as the CPUs hold, one CPU each)")
    a("--budget", choices=("seconds", "steps"), default="seconds",
      help="what the equal budget counts: trainer seconds (default) or training steps")
    a("--storage", help="where the studies go (default: a temporary folder)")
    a("--keep", action="store_true", help="keep the studies afterwards")
    a("--out", help="write every figure to this JSON file")
    a("--png", help="write the plot to this PNG file")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the options, or None; nothing has run yet."""
    for name in ("seeds", "num_samples", "steps_per_trial", "test_freq", "max_concurrent"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')}: must be >= 1, got {value}"
    for name in ("out", "png"):
        path = getattr(args, name)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return f"--{name}: the folder of {path} does not exist"
    if args.png and not args.png.endswith(".png"):
        return f"--png: {args.png} must end in .png"
    if args.storage and os.path.exists(args.storage) and not os.path.isdir(args.storage):
        return f"--storage: {args.storage} is not a folder"
    if args.storage:
        for seed in range(args.seeds):
            for strategy in STRATEGIES:
                path = os.path.join(os.path.abspath(args.storage), study_name(strategy, seed))
                if os.path.exists(path):
                    return f"--storage: a study already exists at {path}; remove it or " \
                           "choose another --storage"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if "ray" not in sys.modules:  # a private local Ray instance, on loopback only
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    from study.spaces import load_space

    total_steps = args.steps_per_trial or load_space(SPACE).total_steps
    command = shlex.join([sys.executable, "-m", "study.bench", "live", *sys.argv[1:]]
                         if argv is None else ["python", "-m", "study.bench", "live", *argv])
    storage = os.path.abspath(args.storage or tempfile.mkdtemp(prefix="study-bench-"))
    created = not args.storage or not os.path.exists(storage)  # ours to remove afterwards
    os.makedirs(storage, exist_ok=True)
    t0, runs, made = time.perf_counter(), [], []
    try:
        for seed in range(args.seeds):
            made.append(study_name("tpe+asha", seed))
            search = run_strategy("tpe+asha", seed, args.num_samples, args, storage)
            budget = sum(t[args.budget] for t in search["trials"])
            n = random_samples(search["trials"], budget, args.budget, args.num_samples,
                               total_steps)
            made.append(study_name("random", seed))
            rand = run_strategy("random", seed, n, args, storage)
            for strategy, run in (("tpe+asha", search), ("random", rand)):
                runs.append({"seed": seed, "strategy": strategy,
                             **summarise_run(run, budget, args.budget)})
            print(f"seed {seed}: budget {budget:.1f} trainer {args.budget}; random search "
                  f"ran {n} trials"
                  + ("" if runs[-1]["budget_reached"] else ", too few to spend the budget"),
                  flush=True)
    finally:
        if not args.keep:
            for name in made:
                shutil.rmtree(os.path.join(storage, name), ignore_errors=True)
            if created and not os.listdir(storage):
                shutil.rmtree(storage, ignore_errors=True)
    wall = time.perf_counter() - t0
    agg = aggregate(runs)
    print(f"\ncommand: {command}\n")
    print(tables(runs, agg))
    print(f"\nwall time: {wall:.0f} s" + (f"; studies kept in {storage}" if args.keep else ""))
    if args.out:
        write_json(args.out, {
            "command": command, "wall_seconds": wall, "space": SPACE,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "png")},
            "total_steps": total_steps, "storage": storage, "runs": runs, "summary": agg})
    if args.png:
        plot(runs, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
