"""`python -m study.bench scale`: how a study's cost grows with its number of trials.

For each N (`--trials 100,1000`; 10,000 for a bigger machine or a patient user) it runs a
real search of N trials (TPE, FIFO, no race) of a tiny trainer setting, digits for
`--steps` steps reporting every step, each in a fresh driver process with every part timed
(study/bench/overhead.py), then the report over it. Per N it prints:

- the wall time against the theoretical minimum, N x the mean trial's trainer seconds /
  slots (Ray Tune's bookkeeping release test allows 28 % over it);
- the driver's CPU seconds and peak memory; the time per Tune snapshot and per seal;
- TPE's suggestion latency at the 10th, 100th and 1,000th trial;
- the sizes of optuna.db and of the study directory; the time of the summary and of the
  report, and the report's peak memory;
- the accounting: every trial once in study_summary.json, in optuna.db and in the report.

`--plot FILE` draws the figures; `--json FILE` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

from study import layout
from study.bench.overhead import TRAINER, breakdown, read_workers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Ray Tune's release test "bookkeeping overhead": 10,000 trials of 1 s on 16 CPUs within
# 800 s against a minimum of 625 s.
RAY_ALLOWANCE = 800 / 625 - 1


def study_argv(n: int, steps: int) -> list[str]:
    """A search of n trials of `steps` digits steps, reporting (and evaluating) every step."""
    return ["--space", "digits", "--num-samples", str(n), "--scheduler", "fifo",
            "--race-finalists", "0", "--steps-per-trial", str(steps), "--test-freq", "1",
            "--name", f"scale-{n}"]


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def optuna_trials(db: str) -> dict[str, int]:
    """Trials per state in an optuna.db, read with sqlite alone."""
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())


def timed_report(study: str, out: str) -> dict[str, float]:
    """`python analysis/report.py STUDY --out OUT`: its wall seconds and peak memory."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "analysis", "report.py"), study,
                             "--out", out], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"the report over {study} failed: {stderr[-2000:]}")
    return {"seconds": time.perf_counter() - t, "peak_mb": usage.ru_maxrss / 1024}


def accounting(study: str, n: int, report_dir: str) -> list[str]:
    """What is missing or counted twice: each of the n trials once in the summary, in
    optuna.db and in the report's frame (trials.csv). Empty when all hold."""
    problems = []
    with open(os.path.join(study, layout.SUMMARY_FILE)) as f:
        summary = json.load(f)
    ids = [t["trial_id"] for t in summary["trials"]]
    if len(ids) != n or len(set(ids)) != n:
        problems.append(f"study_summary.json: {len(ids)} trials, {len(set(ids))} distinct, "
                        f"not {n}")
    states = optuna_trials(os.path.join(study, layout.OPTUNA_DB))
    if sum(states.values()) != n:
        problems.append(f"optuna.db: {sum(states.values())} trials ({states}), not {n}")
    import pandas as pd

    frame = pd.read_csv(os.path.join(report_dir, "trials.csv"))
    seen = frame["trial_id"].astype(str).tolist() if "trial_id" in frame else []
    if sorted(seen) != sorted(ids):
        problems.append(f"the report: {len(seen)} trials ({len(set(seen))} distinct), "
                        f"the summary {len(ids)}")
    return problems


def measure(n: int, steps: int, root: str) -> dict[str, Any]:
    """One study of n trials, timed (overhead.py's driver), then its report."""
    from study.bench.overhead import import_seconds

    where = os.path.join(root, f"n{n}")
    profile = os.path.join(where, "profile")
    os.makedirs(profile)
    out = os.path.join(where, "driver.json")
    argv = [*study_argv(n, steps), "--storage-path", where, "--verbose", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "study.bench.overhead", "_one", out, profile, "--",
                    *argv], check=True, env=env, cwd=REPO)
    with open(out) as f:
        driver = json.load(f)
    study = driver["study"]
    rows = breakdown(driver, read_workers(profile), import_seconds())
    trainer = sum(rows.get(k, 0.0) for k in TRAINER)
    mean_trial = trainer / n
    fit = driver["wall_fit"]
    minimum = n * mean_trial / driver["slots"]
    suggest = driver["durations"].get("searcher.suggest", [])
    report_dir = os.path.join(where, "report")
    report = timed_report(study, report_dir)
    seconds, calls = driver["seconds"], driver["calls"]

    def per_call(label: str) -> float | None:
        return seconds[label] / calls[label] if calls.get(label) else None

    return {
        "trials": n, "steps": steps, "slots": driver["slots"], "wall_fit": fit,
        "wall": driver["wall"], "mean_trial_trainer_s": mean_trial, "minimum": minimum,
        "over_minimum": fit / minimum - 1, "overhead_per_trial_s": (fit - minimum)
        * driver["slots"] / n, "driver_cpu": driver["driver_cpu"],
        "driver_peak_mb": driver["driver_peak_mb"],
        "results": sum(t.get("results", 0) for t in driver["trials"].values()),
        "snapshot_ms": 1000 * (per_call("snapshot.tune") or 0),
        "snapshots": calls.get("snapshot.tune", 0),
        "snapshot_seal_ms": 1000 * (per_call("snapshot.seal") or 0),
        "seal_look_ms": 1000 * (per_call("seal.look") or 0),
        "seal_looks": calls.get("seal.look", 0),
        "tpe_ms": {str(i): 1000 * suggest[i - 1] for i in (10, 100, 1000, 10000)
                   if len(suggest) >= i},
        "suggest_ms": [1000 * s for s in suggest],
        "optuna_db_mb": os.path.getsize(os.path.join(study, layout.OPTUNA_DB)) / 2**20,
        "study_dir_mb": _du(study) / 2**20,
        "summary_s": seconds.get("driver.summarise", 0.0) + seconds.get("driver.reconcile", 0.0),
        "report_s": report["seconds"], "report_peak_mb": report["peak_mb"],
        "accounting": accounting(study, n, report_dir),
        "searcher_on_result_ms": 1000 * (per_call("searcher.on_trial_result") or 0),
    }


def table(measured: list[dict[str, Any]]) -> str:
    """The figures, one column per N."""
    def row(name: str, fmt) -> str:
        return f"| {name} | " + " | ".join(fmt(m) for m in measured) + " |"

    def ms(key: str):
        return lambda m: (f"{m['tpe_ms'][key]:.0f} ms" if key in m["tpe_ms"] else "-")

    lines = ["| trials | " + " | ".join(str(m["trials"]) for m in measured) + " |",
             "|---|" + "---:|" * len(measured),
             row("slots; steps per trial, each reported", lambda m: f"{m['slots']}; {m['steps']}"),
             row("mean trial: trainer seconds", lambda m: f"{m['mean_trial_trainer_s']:.2f} s"),
             row("theoretical minimum (N x trial / slots)", lambda m: f"{m['minimum']:.0f} s"),
             row("wall time of Tune's run", lambda m: f"{m['wall_fit']:.0f} s"),
             row("over the minimum (Ray's test allows 28 %)",
                 lambda m: f"{100 * m['over_minimum']:.0f} %"),
             row("overhead per trial (slot-seconds)",
                 lambda m: f"{m['overhead_per_trial_s']:.2f} s"),
             row("driver: CPU seconds, peak memory",
                 lambda m: f"{m['driver_cpu']:.0f} s, {m['driver_peak_mb']:.0f} MB"),
             row("results", lambda m: str(m["results"])),
             row("Tune snapshot: per snapshot (count)",
                 lambda m: f"{m['snapshot_ms']:.0f} ms ({m['snapshots']})"),
             row("seal: per snapshot; per look (count)",
                 lambda m: f"{m['snapshot_seal_ms']:.1f} ms; {m['seal_look_ms']:.1f} ms "
                           f"({m['seal_looks']})"),
             row("searcher: per result (optuna.db write)",
                 lambda m: f"{m['searcher_on_result_ms']:.1f} ms"),
             row("TPE suggestion at the 10th trial", ms("10")),
             row("... at the 100th", ms("100")), row("... at the 1,000th", ms("1000")),
             row("... at the 10,000th", ms("10000")),
             row("optuna.db; the study directory",
                 lambda m: f"{m['optuna_db_mb']:.1f} MB; {m['study_dir_mb']:.0f} MB"),
             row("summary (driver)", lambda m: f"{m['summary_s']:.1f} s"),
             row("report: time, peak memory",
                 lambda m: f"{m['report_s']:.1f} s, {m['report_peak_mb']:.0f} MB"),
             row("accounting (summary, optuna.db, report)",
                 lambda m: "every trial once" if not m["accounting"]
                 else "; ".join(m["accounting"]))]
    return "\n".join(lines)


def projection(measured: list[dict[str, Any]], n: int = 10_000) -> str | None:
    """The wall time at n trials, from the largest N's per-trial overhead."""
    if not measured:
        return None
    m = max(measured, key=lambda m: m["trials"])
    minimum = n * m["mean_trial_trainer_s"] / m["slots"]
    wall = minimum + n * m["overhead_per_trial_s"] / m["slots"]
    return (f"projected at {n:,} trials from N = {m['trials']:,}: minimum {minimum:.0f} s, "
            f"wall {wall:.0f} s ({100 * (wall / minimum - 1):.0f} % over; Ray's test "
            f"allows {100 * RAY_ALLOWANCE:.0f} %)")


def plot(measured: list[dict[str, Any]], path: str) -> None:
    """Wall time against the minimum per N, and TPE's suggestion latency per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8.8, 3.4), dpi=100)
    ns = [m["trials"] for m in measured]
    a.plot(ns, [m["wall_fit"] for m in measured], "o-", label="wall time")
    a.plot(ns, [m["minimum"] for m in measured], "s--", label="theoretical minimum")
    a.plot(ns, [m["minimum"] * (1 + RAY_ALLOWANCE) for m in measured], ":",
           label="Ray's allowance (+28 %)")
    a.set(xscale="log", yscale="log", xlabel="trials", ylabel="seconds",
          title="a study's wall time")
    a.legend(fontsize=8)
    for m in measured:
        b.plot(range(1, len(m["suggest_ms"]) + 1), m["suggest_ms"], ".", ms=2,
               label=f"N = {m['trials']}")
    b.set(xlabel="trial", ylabel="ms", title="TPE's suggestion time", yscale="log")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", default="100,1000", help="comma-separated N (default 100,1000)")
    p.add_argument("--steps", type=int, default=10,
                   help="digits steps per trial, each evaluated and reported (default 10)")
    p.add_argument("--keep", metavar="DIR", help="keep the studies here")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plot", metavar="FILE")
    args = p.parse_args(argv)
    try:
        sizes = [int(n) for n in args.trials.split(",")]
    except ValueError:
        p.error(f"--trials: {args.trials!r} is not a comma-separated list of numbers")
    if any(n < 1 for n in sizes) or args.steps < 1:
        p.error("--trials and --steps must be at least 1")
    root = args.keep or tempfile.mkdtemp(prefix="scale-")
    measured = []
    try:
        for n in sizes:
            t = time.perf_counter()
            measured.append(measure(n, args.steps, root))
            print(f"N = {n}: {time.perf_counter() - t:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(measured))
    line = projection(measured)
    if line:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": sizes, "steps": args.steps, "measured": measured}, f, indent=1)
    if args.plot:
        plot(measured, args.plot)
    return 1 if any(m["accounting"] for m in measured) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
