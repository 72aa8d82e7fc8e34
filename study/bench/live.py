"""`python -m study.bench live`: real studies on digits beside their replay on the table.

Runs the study's default strategy (TPE, ASHA, then the race) as real studies, one per study
seed, or reads finished ones (`--from`), and replays the same strategy on the same study
seeds against the table (study/bench/replay.py). Per seed and on average it compares what
the replay is meant to model: the trainer seconds spent, where ASHA stopped the search's
trials, how often the race replaced the defaults, and the regret of the pick (the live pick
snapped to the table's grid and measured by the table's true error).

The two agree in distribution, not trial by trial: a live study of seed j > 0 trains on its
own trainer seeds (study/race.py), the replay on the table's seeds taken in turn; live TPE
proposes continuous values, the replay snaps them to the grid. `python -m study.bench
check` is the trial-by-trial comparison.
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

from study import layout
from study.bench.table import DEFAULT_PATH
from trainer import rundir
from trainer.rundir import write_json

SPACE = "digits"
NUM_SAMPLES = 16


def _last_row(metrics_csv: str) -> dict[str, str]:
    try:
        with open(metrics_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    return rows[-1] if rows else {}


def live_outcome(study_dir: str, replay) -> dict[str, Any]:
    """What a finished live study spent, where its trials ended, and what it picked."""
    with open(os.path.join(study_dir, layout.SUMMARY_FILE)) as f:
        summary = json.load(f)
    seconds, ends = 0.0, {}
    for t in summary["trials"]:
        last = _last_row(os.path.join(t["path"], rundir.RUN_DIR, rundir.METRICS))
        seconds += float(last.get("elapsed_seconds", 0.0))
        if t["phase"] == "search":
            ends[t["steps"]] = ends.get(t["steps"], 0) + 1
    pick = replay.snap(summary["best_config"]) if summary["best_config"] else None
    race = summary.get("race") or {}
    with open(os.path.join(study_dir, layout.STUDY_FILE)) as f:
        seed = json.load(f)["options"]["seed"]
    return {"seed": seed, "study": study_dir, "cost": seconds, "ends": ends, "pick": pick,
            "regret": 100.0 * float(replay.truth[pick] - replay.truth.min())
            if pick is not None else math.nan,
            "replaced": bool(race.get("decision", {}).get("replaced")),
            "trials": summary["num_search_trials"]}


def replay_outcome(replay, seed: int, workers: int) -> dict[str, Any]:
    from study.bench.replay import STRATEGIES, simulate

    out = simulate(replay, STRATEGIES["tpe+asha+race"], seed, workers=workers,
                   num_samples=NUM_SAMPLES)
    ends: dict[int, int] = {}
    for t in out.trials:
        if t["phase"] == "search":
            ends[t["steps"]] = ends.get(t["steps"], 0) + 1
    return {"seed": seed, "cost": out.cost, "ends": ends, "pick": out.pick,
            "regret": out.regret(replay),
            "replaced": bool(out.race and out.race["decision"]["replaced"]),
            "trials": NUM_SAMPLES}


def run_live(seed: int, storage: str, max_concurrent: int | None) -> str:
    """One real study of the default strategy; returns its folder."""
    from study.driver import StudyOptions, run_study

    opts = StudyOptions(space=SPACE, name=f"live-seed{seed}", storage_path=storage,
                        num_samples=NUM_SAMPLES, seed=seed, max_concurrent=max_concurrent,
                        device="cpu", verbose=0)
    return run_study(opts)["path"]


def compare(live: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> str:
    """Per seed and on average: trainer seconds, ends of the search's trials, race, regret."""
    steps = sorted({s for r in live + replayed for s in r["ends"]})
    lines = ["| seed | source | trainer s | " + " | ".join(f"ended at {s}" for s in steps)
             + " | race replaced the defaults | pick's regret (points) |",
             "|---|---|---|" + "---|" * len(steps) + "---|---|"]
    for source, rows in (("live", live), ("replay", replayed)):
        for r in rows:
            lines.append(f"| {r['seed']} | {source} | {r['cost']:.0f} | "
                         + " | ".join(str(r["ends"].get(s, 0)) for s in steps)
                         + f" | {'yes' if r['replaced'] else 'no'} | {r['regret']:.2f} |")
    for source, rows in (("live", live), ("replay", replayed)):
        lines.append(f"| mean | {source} | {statistics.mean(r['cost'] for r in rows):.0f} | "
                     + " | ".join(f"{statistics.mean(r['ends'].get(s, 0) for r in rows):.1f}"
                                  for s in steps)
                     + f" | {sum(r['replaced'] for r in rows)} of {len(rows)} | "
                     f"{statistics.mean(r['regret'] for r in rows):.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench live", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--seeds", type=int, default=3, help="study seeds 0..N-1 to run live (default 3)")
    a("--from", dest="studies", nargs="+", metavar="STUDY_DIR",
      help="finished search studies of the default strategy to compare, instead of running")
    a("--table", default=DEFAULT_PATH)
    a("--workers", type=int, default=2, help="trials at once, live and replayed (default 2)")
    a("--storage", help="where the live studies go (default: a temporary folder)")
    a("--keep", action="store_true", help="keep the live studies")
    a("--out", help="write every figure to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < 1 or args.workers < 1:
        print("error: --seeds and --workers must be >= 1", file=sys.stderr)
        return 2
    for d in args.studies or []:
        if not os.path.isfile(os.path.join(d, layout.SUMMARY_FILE)):
            print(f"error: --from {d}: not a finished study (no study_summary.json)",
                  file=sys.stderr)
            return 2
    if not os.path.isfile(args.table):
        print(f"error: --table {args.table}: no such file", file=sys.stderr)
        return 2
    from study.driver import LOCAL_ONLY_ENV

    if "ray" not in sys.modules:  # a private local Ray instance, on loopback only
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import optuna

    from study.bench.replay import Replay
    from study.bench.table import read_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    replay = Replay(read_table(args.table))
    t0 = time.perf_counter()
    studies = list(args.studies or [])
    storage = None
    if not studies:
        storage = os.path.abspath(args.storage or tempfile.mkdtemp(prefix="study-live-"))
        studies = [run_live(seed, storage, args.workers) for seed in range(args.seeds)]
    try:
        live = [live_outcome(d, replay) for d in studies]
    finally:
        if storage and not args.keep:
            shutil.rmtree(storage, ignore_errors=True)
    replayed = [replay_outcome(replay, r["seed"], args.workers) for r in live]
    command = shlex.join(["python", "-m", "study.bench", "live",
                          *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}\n")
    print(compare(live, replayed))
    print(f"\nwall time: {time.perf_counter() - t0:.0f} s")
    if args.out:
        write_json(args.out, {"command": command, "live": live, "replay": replayed,
                              "table": args.table})
    return 0
