"""`python -m study.bench check`: the replay against Ray Tune itself, on a recorded table.

A real study (the driver, Tune, the Optuna searcher, ASHA and the race, on a local Ray
instance, one trial at a time) whose trials report the table's rows instead of training
(`table_trial`), beside the replay of the same study (study/bench/replay.py). One trial at
a time, both make every decision in the same order: the check passes when they propose the
same configurations, stop the same trials at the same steps, race the same finalists and
choose the same configuration.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import tempfile
from typing import Any

from study.bench.table import DEFAULT_PATH, read_table


@functools.lru_cache(maxsize=2)
def _replay(path: str, signal: str):
    from study.bench.replay import Replay

    return Replay(read_table(path), signal)


def table_trial(path: str, signal: str = "val_score"):
    """A trial function for study.driver.run_study that replays the table: a trial reports
    the rows of its configuration (snapped to the grid) on its seed, as the trainer would.
    (Its name makes Tune's folders replay_trial_ID_N_..., read as trials like run_trial's.)"""
    def replay_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
        from ray import tune

        replay = _replay(path, signal)
        seed = config["seed"] if config.get("phase") == "race" else base["seed"]
        c = replay.snap(config)
        for _, result in replay.run_events(c, replay.table.seeds.index(seed)):
            tune.report({**result, "table_index": c})
    return replay_trial


def _number(path: str) -> int:
    """Tune's creation number of a trial, from its folder name (run_trial_ID_NUMBER_...)."""
    return int(re.search(r"_trial_[0-9a-f]+_(\d+)", os.path.basename(path)).group(1))


def outline(trials: list[dict[str, Any]], replay) -> list[tuple]:
    """What both must agree on, trial by trial: configuration, phase, entrant, seed, end."""
    return [(replay.snap(t["config"]), t["phase"], t.get("entrant"),
             t["config"].get("seed"), t["steps"], t["status"]) for t in trials]


def check(table: str, storage: str, seed: int, num_samples: int, finalists: int,
          race_seeds: int, scheduler: str, searcher: str) -> dict[str, Any]:
    """Run the live study and its replay; return both outlines and whether they agree."""
    from study.bench.replay import Strategy, simulate
    from study.driver import LOCAL_ONLY_ENV, StudyOptions, run_study

    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    opts = StudyOptions(space=_replay(table, "val_score").table.meta["space"], name="check",
                        storage_path=storage, num_samples=num_samples, scheduler=scheduler,
                        searcher=searcher, seed=seed, max_concurrent=1,
                        race_finalists=finalists, race_seeds=race_seeds, num_cpus=1,
                        device="cpu", verbose=0)
    summary = run_study(opts, trial_function=table_trial(table))
    replay = _replay(table, "val_score")
    live = sorted(summary["trials"], key=lambda t: _number(t["path"]))
    strategy = Strategy("check", searcher, asha=scheduler == "asha", race=finalists > 0)
    out = simulate(replay, strategy, seed, workers=1, num_samples=num_samples,
                   race_finalists=finalists, race_seeds=race_seeds, startup_for=num_samples)
    live_outline, replay_outline = outline(live, replay), outline(out.trials, replay)
    live_pick = replay.snap(summary["best_config"]) if summary["best_config"] else None
    agree = [a == b for a, b in zip(live_outline, replay_outline)]
    return {"live": live_outline, "replay": replay_outline,
            "trials_agreeing": sum(agree), "trials": max(len(live), len(out.trials)),
            "live_pick": live_pick, "replay_pick": out.pick,
            "live_decision": (summary.get("race") or {}).get("decision"),
            "replay_decision": (out.race or {}).get("decision"),
            "agree": live_outline == replay_outline and live_pick == out.pick}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--table", default=DEFAULT_PATH)
    a("--seed", type=int, default=0, help="the study seed (0: the seeds the table holds)")
    a("--num-samples", type=int, default=8)
    a("--race-finalists", type=int, default=2)
    a("--race-seeds", type=int, default=2)
    a("--scheduler", choices=("asha", "fifo"), default="asha")
    a("--searcher", choices=("tpe", "random"), default="tpe")
    a("--out", help="write both outlines to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.table):
        print(f"error: --table {args.table}: no such file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-check-") as storage:
        result = check(args.table, storage, args.seed, args.num_samples, args.race_finalists,
                       args.race_seeds, args.scheduler, args.searcher)
    print("trial | live: (config, phase, entrant, seed, steps, status) | replay")
    for i, (a, b) in enumerate(zip(result["live"], result["replay"])):
        print(f"{i + 1} | {a} | {'same' if a == b else b}")
    print(f"{result['trials_agreeing']} of {result['trials']} trials agree; chosen "
          f"configuration: live {result['live_pick']}, replay {result['replay_pick']}")
    if args.out:
        from trainer.rundir import write_json

        write_json(args.out, result)
    return 0 if result["agree"] else 1
