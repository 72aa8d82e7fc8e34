"""`python -m study.bench.tpe`: what the driver pays the searcher per trial, as a study grows.

An Optuna study configured as make_searcher configures it (TPE options, the digits space's
distributions as Ray converts them, optuna.db in sqlite, or in memory) is filled with N
finished trials shaped like recorded ones: about half COMPLETE with an intermediate value
at every evaluation, half PRUNED at an ASHA rung with the values up to it. Then the real
searcher (StudySearch behind its ConcurrencyLimiter) opens it, and each measured trial is
suggested, reported at every evaluation and told, as Ray Tune's driver does.

Reported per N: the suggestion (median, p90) and, within it, TPE's own sampling; the first
suggestion after opening (a resumed driver reads the whole optuna.db once); one
intermediate report; the tell; optuna.db's size; the seconds the fill took.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from study import layout
from study.search import TPE_MAX_HISTORY
from study.spaces import Space, load_space

METRIC, MODE, NAME = "val_score", "max", "tpe-bench"
SLOTS = 2  # the ConcurrencyLimiter of a 2-slot study; suggestions are made one at a time


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """The space's Optuna distributions, exactly as Ray's OptunaSearch converts them."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch.convert_search_space(space.tune_space())


def rungs(total_steps: int, grace: int, reduction: int) -> list[int]:
    """ASHA's rungs below the full length: where a stopped trial ends."""
    out, r = [], max(1, grace)
    while r < total_steps:
        out.append(r)
        r *= reduction
    return out


def _draw(dist: BaseDistribution, rng: random.Random) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.choice(dist.choices)
    low, high = dist.low, dist.high
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.randint(int(low), int(high))
    if dist.log:
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def recorded_trials(space: Space, n: int, seed: int = 0, total_steps: int | None = None,
                    every: int | None = None) -> list[FrozenTrial]:
    """N finished trials like a study's: params drawn in the space, a rising learning curve
    with noise; about half COMPLETE (a value at every `every` steps to `total_steps`), the
    rest PRUNED at an ASHA rung (half of them at the first) with their values so far."""
    total_steps = total_steps or space.total_steps
    every = every or space.test_freq
    dists = distributions(space)
    stops = rungs(total_steps, min(space.grace_steps, total_steps), space.reduction_factor)
    # ASHA keeps 1/reduction at each rung: a stopped trial ends at rung k with weight 1/2^k
    stop_weights = [0.5 ** k for k in range(len(stops))]
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        params = {name: _draw(d, rng) for name, d in dists.items()}
        # A plausible accuracy: best near the defaults, worse towards the bounds.
        badness = sum((math.log(params[k]) - math.log(v)) ** 2 for k, v in
                      space.defaults().items() if isinstance(v, float) and params[k] > 0)
        final = max(0.1, min(0.99, 0.92 - 0.04 * badness + rng.gauss(0, 0.02)))
        pruned = bool(stops) and rng.random() < 0.5
        last = rng.choices(stops, stop_weights)[0] if pruned else total_steps
        curve = {s: round(min(1.0, max(0.0, final * (1 - 0.7 * math.exp(-3 * s / total_steps))
                                       + rng.gauss(0, 0.01))), 4)
                 for s in range(every, last + 1, every)}
        trials.append(optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            # Optuna records a pruned trial's last intermediate value as its value
            value=curve[max(curve)] if curve else None, params=params,
            distributions=dists, intermediate_values=curve))
    return trials


def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


def open_searcher(space: Space, study_path: str | None, seed: int = 0,
                  num_samples: int = 10_000, total_steps: int | None = None):
    """The study's searcher as make_searcher builds it, with the space set as Tune sets it;
    returns it and the StudySearch inside."""
    from study.search import make_searcher

    searcher = make_searcher(space, METRIC, MODE, study_path, NAME, seed, SLOTS,
                             total_steps or space.total_steps, num_samples)
    searcher.set_search_properties(METRIC, MODE, space.tune_space())
    return searcher, getattr(searcher, "searcher", searcher)


def wal(engine) -> None:
    """SQLite in WAL mode, synced at checkpoints only (not the study's setting: compared)."""
    from sqlalchemy import event

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened already reconnect with the pragmas


def fill_sqlite(space: Space, study_path: str, trials: list[FrozenTrial],
                use_wal: bool = False) -> float:
    """Write the trials to study_path/optuna.db as an earlier driver left it; seconds."""
    os.makedirs(study_path, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(study_path, 'optuna.db')}")
    if use_wal:
        wal(storage.engine)
    t0 = time.perf_counter()
    study = optuna.create_study(storage=storage, study_name=NAME, direction="maximize")
    study.add_trials(trials)
    seconds = time.perf_counter() - t0
    storage.engine.dispose()
    return seconds


def _timed(fn, into: list[float]):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)
    return wrapper


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _run_trial(searcher, trial_id: str, steps: list[int], rng: random.Random,
               reports: list[float], tells: list[float]) -> None:
    """Report the trial at every evaluation, then tell it, as Tune's driver does."""
    for step in steps[:-1]:
        t = time.perf_counter()
        searcher.on_trial_result(trial_id, {"step": step, METRIC: rng.random()})
        reports.append(time.perf_counter() - t)
    t = time.perf_counter()
    searcher.on_trial_complete(trial_id, {"step": steps[-1], METRIC: rng.random()})
    tells.append(time.perf_counter() - t)


def _time_trials(searcher, inner, steps: list[int], suggestions: int,
                 seed: int) -> dict[str, Any]:
    """Suggest, report and tell `suggestions` trials after the first (the enqueued defaults:
    on sqlite the one that reads all of optuna.db); their times in ms."""
    sampler_s: list[float] = []
    sampler = inner._ot_study.sampler
    # Instance attributes over the bound methods: what TPE itself spends, apart from storage.
    sampler.sample_independent = _timed(sampler.sample_independent, sampler_s)
    sampler.sample_relative = _timed(sampler.sample_relative, sampler_s)
    rng = random.Random(seed)
    reports: list[float] = []
    tells: list[float] = []
    suggest_s, tpe_s = [], []
    t = time.perf_counter()
    searcher.suggest("first")
    first = time.perf_counter() - t
    _run_trial(searcher, "first", steps, rng, reports, tells)
    for i in range(suggestions):
        sampler_s.clear()
        t = time.perf_counter()
        config = searcher.suggest(f"t{i}")
        suggest_s.append(time.perf_counter() - t)
        tpe_s.append(sum(sampler_s))
        assert isinstance(config, dict), config
        _run_trial(searcher, f"t{i}", steps, rng, reports, tells)
    ms = 1000.0
    return {"suggest_median_ms": statistics.median(suggest_s) * ms,
            "suggest_p90_ms": _pct(suggest_s, 0.9) * ms,
            "tpe_median_ms": statistics.median(tpe_s) * ms,
            "first_suggest_ms": first * ms,
            "report_median_ms": statistics.median(reports) * ms,
            "report_p90_ms": _pct(reports, 0.9) * ms,
            "tell_median_ms": statistics.median(tells) * ms}


def measure(space: Space, n: int, storage: str, caps: list[int | None] | None = None,
            suggestions: int = 20, seed: int = 0, total_steps: int | None = None,
            every: int | None = None, workdir: str | None = None) -> list[dict[str, Any]]:
    """Fill a study with n recorded-like trials (once) and time `suggestions` trials through
    it per cap: TPE conditioning on at most that many finished trials (None: all)."""
    _quiet()
    caps = [TPE_MAX_HISTORY] if caps is None else caps
    trials = recorded_trials(space, n, seed, total_steps, every)
    total_steps, every = total_steps or space.total_steps, every or space.test_freq
    steps = list(range(every, total_steps + 1, every))  # the timed trials' evaluations
    rows = []
    with tempfile.TemporaryDirectory(prefix="tpe-bench-", dir=workdir) as tmp:
        filled, size = os.path.join(tmp, "filled"), None
        if storage.startswith("sqlite"):
            fill = fill_sqlite(space, filled, trials, use_wal=storage == "sqlite-wal")
            # with WAL, what the log holds until its checkpoint too
            db = os.path.join(filled, layout.OPTUNA_DB)
            size = sum(os.path.getsize(f) for f in (db, db + "-wal")
                       if os.path.exists(f)) / 2 ** 20
        for i, cap in enumerate(caps):
            if storage.startswith("sqlite"):
                path = os.path.join(tmp, f"study-{i}")  # each cap opens the same optuna.db
                os.makedirs(path)
                shutil.copyfile(os.path.join(filled, layout.OPTUNA_DB),
                                os.path.join(path, layout.OPTUNA_DB))
                searcher, inner = open_searcher(space, path, seed, total_steps=total_steps)
                if storage == "sqlite-wal":
                    wal(inner._storage.engine)
            else:
                searcher, inner = open_searcher(space, None, seed, total_steps=total_steps)
                t0 = time.perf_counter()
                inner._ot_study.add_trials(trials)
                fill = time.perf_counter() - t0
            inner._ot_study.sampler.max_history = cap
            row = {"n": n, "storage": storage, "max_history": cap,
                   **_time_trials(searcher, inner, steps, suggestions, seed),
                   "db_mb": size, "fill_s": fill}
            row["finished"] = len(inner._ot_study._get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
            rows.append(row)
    return rows


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| N | storage | TPE history | suggest median ms | p90 ms | of it TPE ms "
            "| first suggest ms | report median ms | p90 ms | tell ms | optuna.db MB | fill s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['storage']} | {r['max_history'] or 'all'} "
            f"| {r['suggest_median_ms']:.1f} "
            f"| {r['suggest_p90_ms']:.1f} | {r['tpe_median_ms']:.1f} "
            f"| {r['first_suggest_ms']:.0f} | {r['report_median_ms']:.2f} "
            f"| {r['report_p90_ms']:.2f} | {r['tell_median_ms']:.1f} "
            f"| {_fmt(r['db_mb'], '.1f')} | {r['fill_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.tpe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", default="10,100,1000,10000",
                   help="finished trials in the study, comma-separated (default: %(default)s)")
    p.add_argument("--storage", default="sqlite,memory",
                   help="comma-separated: sqlite (optuna.db, as a study keeps it), memory, "
                        "sqlite-wal (optuna.db in WAL mode, synced at checkpoints only)")
    p.add_argument("--suggestions", type=int, default=20, help="timed trials per N")
    p.add_argument("--space", default="digits")
    p.add_argument("--total-steps", type=int, default=None,
                   help="recorded trials' length (default: the space's)")
    p.add_argument("--every", type=int, default=None,
                   help="recorded trials' evaluation interval (default: the space's)")
    p.add_argument("--max-history", default=str(TPE_MAX_HISTORY),
                   help="finished trials TPE conditions on, comma-separated; 0: all, plain "
                        "TPE (default: %(default)s, the study's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    space = load_space(args.space)
    rows = []
    caps = [int(x) or None for x in args.max_history.split(",")]
    for n in (int(x) for x in args.trials.split(",")):
        for kind in args.storage.split(","):
            for row in measure(space, n, kind, caps, args.suggestions, args.seed,
                               args.total_steps, args.every):
                rows.append(row)
                print(json.dumps(row) if args.json else
                      f"N={n} {kind} history {row['max_history'] or 'all'}: suggest "
                      f"{row['suggest_median_ms']:.1f} ms", flush=True)
    if not args.json:
        print()
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
