"""`python -m study.bench replay`: the search strategies replayed against the recorded table
over many study seeds, in seconds: regret against budget, the oracle gain, the selection
signals, TPE's settings for parallel workers and how well ASHA's rungs predict the end.

Every figure says what it rests on: the table's configurations and seeds, the study seeds
replayed, the simulated workers. Intervals are 95 % Student-t intervals over study seeds;
comparisons between strategies are paired over the same study seeds.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shlex
import sys
import time
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from study.bench.replay import SIGNALS, STRATEGIES, Replay, Strategy, simulate
from study.bench.table import DEFAULT_PATH, read_table
from trainer.rundir import write_json

MAIN = "tpe+asha+race"  # what the study does by default: the main job's strategy
BUDGET_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # budgets, as multiples of the main job's
TPE_VARIANTS = {"univariate": (), "multivariate": (("multivariate", True),),
                "constant liar": (("constant_liar", True),),
                "multivariate + constant liar": (("multivariate", True),
                                                 ("constant_liar", True))}
WORKER_COUNTS = (2, 4, 16)


def interval(values: list[float]) -> dict[str, float]:
    """Mean and its 95 % Student-t interval (NaN-free values; nan for fewer than 2)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "low": math.nan, "high": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "low": math.nan, "high": math.nan}
    half = float(scipy_stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


# --- simulations, spread over processes ----------------------------------------------------

_REPLAYS: dict[tuple[str, str], Replay] = {}


def _replay(path: str, signal: str) -> Replay:
    if (path, signal) not in _REPLAYS:
        _REPLAYS[(path, signal)] = Replay(read_table(path), signal)
    return _REPLAYS[(path, signal)]


def _one(job: tuple) -> dict[str, Any]:
    """One replayed study (in a worker process): its regret, cost and race outcome."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path, signal, strategy, seed, workers, num_samples, budget = job
    replay = _replay(path, signal)
    out = simulate(replay, strategy, seed, workers=workers, num_samples=num_samples,
                   budget=budget)
    decision = out.race["decision"] if out.race else None
    return {"strategy": strategy.name, "seed": seed, "workers": workers, "budget": budget,
            "num_samples": num_samples, "signal": signal, "regret": out.regret(replay),
            "cost": out.cost, "makespan": out.makespan, "pick": out.pick,
            "trials": sum(t.get("phase", "search") == "search" for t in out.trials),
            "duplicates": out.duplicates,
            "replaced": None if decision is None else decision["replaced"],
            "gain_over_defaults": 100.0 * float(replay.truth[replay.table.defaults_index]
                                                - replay.truth[out.pick])
            if out.pick is not None else math.nan,
            "heldout_gain": out.heldout_gain(replay)}


def run_jobs(jobs: list[tuple], processes: int) -> list[dict[str, Any]]:
    if processes <= 1:
        return [_one(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(_one, jobs, chunksize=4)


# --- what the table itself says ------------------------------------------------------------

def oracle(replay: Replay) -> dict[str, Any]:
    """How much any search could win here: the table's best configuration against the
    defaults, by mean final test error over the seeds; and the same when the best is picked
    on half the seeds and measured on the other half (what survives the noise)."""
    errors = 100.0 * replay.table.final_test_error()  # [configuration, seed]
    d = replay.table.defaults_index
    best = int(np.argmin(errors.mean(1)))
    n = errors.shape[1]
    halves = []
    for picked in _halves(n):
        rest = [s for s in range(n) if s not in picked]
        c = int(np.argmin(errors[:, picked].mean(1)))
        halves.append(float(errors[d, rest].mean() - errors[c, rest].mean()))
    per_seed = errors[d] - errors[best]
    return {"best_config": replay.table.configs[best], "best_error": float(errors[best].mean()),
            "defaults_error": float(errors[d].mean()),
            "gain": float(errors[d].mean() - errors[best].mean()),
            "gain_per_seed": per_seed.tolist(),
            "defaults_rank": int((errors.mean(1) < errors[d].mean()).sum()) + 1,
            "configs": len(replay.table.configs), "seeds": n,
            "cross_validated_gain": float(np.mean(halves)), "splits": len(halves),
            "seed_sd_of_defaults": float(errors[d].std(ddof=1)),
            # one run's spread over seeds, among the configurations worth choosing
            "noise_sd": float(np.sqrt(np.mean(
                errors[np.argsort(errors.mean(1))[:len(errors) // 4]].var(1, ddof=1))))}


def _halves(n: int) -> list[list[int]]:
    """Every way to pick half the seeds (the rest measure)."""
    from itertools import combinations

    return [list(c) for c in combinations(range(n), n // 2)]


def signals(table_path: str, subset: int, draws: int, seed: int = 0) -> dict[str, Any]:
    """Each selection signal, measured as studies use it: in many random sets of `subset`
    configurations, on each seed, how well its final value ranks them by their true error
    on the *other* seeds (Spearman), and the regret of the one it picks."""
    rng = np.random.default_rng(seed)
    base = Replay(read_table(table_path))
    errors = base.table.final_test_error()  # [c, s]
    n_c, n_s = errors.shape
    sets = [rng.choice(n_c, size=subset, replace=False) for _ in range(draws)]
    out: dict[str, Any] = {}
    for name, (what, _) in SIGNALS.items():
        scores = Replay(base.table, name).scores[:, :, -1]
        rhos, regrets = [], []
        for idx in sets:
            for s in range(n_s):
                truth = np.delete(errors[idx], s, axis=1).mean(1)
                x = scores[idx, s]
                rhos.append(float(scipy_stats.spearmanr(x, -truth).statistic))
                pick = int(np.nanargmax(np.where(np.isnan(x), -np.inf, x)))
                regrets.append(100.0 * float(truth[pick] - truth.min()))
        out[name] = {"what": what, "spearman": rhos, "regret": regrets}
    return out


def rung_correlations(replay: Replay) -> list[dict[str, Any]]:
    """Spearman, over the table's configurations on each seed, between the selection
    score at each ASHA rung and at the end (and the true error), averaged over seeds."""
    from study.search import RaceAwareASHA

    space, t = replay.space, replay.table
    rungs = [int(m) for m, _ in RaceAwareASHA(
        time_attr="step", metric="val_score", mode="max", max_t=replay.full_steps,
        grace_period=space.grace_steps, reduction_factor=space.reduction_factor)
        ._brackets[0]._rungs]
    out = []
    for rung in sorted(rungs) + [replay.full_steps]:
        e = int(np.searchsorted(t.steps, rung))
        final, early, truth = [], [], []
        for s in range(len(t.seeds)):
            ok = ~np.isnan(replay.scores[:, s, e]) & ~np.isnan(replay.scores[:, s, -1])
            final.append(scipy_stats.spearmanr(replay.scores[ok, s, e],
                                               replay.scores[ok, s, -1]).statistic)
            truth.append(scipy_stats.spearmanr(replay.scores[ok, s, e],
                                               -replay.truth[ok]).statistic)
            early.append(int(ok.sum()))
        out.append({"step": rung, "vs_final_score": float(np.mean(final)),
                    "vs_true_error": float(np.mean(truth)), "configs": min(early),
                    "seeds": len(t.seeds)})
    return out


# --- the benchmark ---------------------------------------------------------------------------

def benchmark(table_path: str, seeds: int, workers: int, processes: int,
              subset: int, draws: int) -> dict[str, Any]:
    """Every figure of docs/search-benchmark.md, from the table."""
    t0 = time.perf_counter()
    replay = _replay(table_path, "val_score")
    meta = replay.table.meta
    result: dict[str, Any] = {
        "space": meta["space"], "study_seeds": seeds, "workers": workers,
        "table": {k: meta[k] for k in ("command", "commit", "recorded", "seeds", "grid",
                                       "defaults") if k in meta}}
    result["oracle"] = oracle(replay)
    result["rungs"] = rung_correlations(replay)

    main = run_jobs([(table_path, "val_score", STRATEGIES[MAIN], s, workers, 16, None)
                     for s in range(seeds)], processes)
    budget = float(np.mean([m["cost"] for m in main]))
    result["main_job"] = {"strategy": MAIN, "num_samples": 16, "runs": main,
                          "budget": budget, "regret": interval([m["regret"] for m in main]),
                          "replaced": sum(bool(m["replaced"]) for m in main)}

    # A race needs its (3 + 1) x 3 full-length runs and a search before it: below that,
    # the strategy cannot run.
    reserve = 12 * replay.mean_full_seconds()
    jobs = [(table_path, "val_score", strategy, s, workers, None, factor * budget)
            for factor in BUDGET_FACTORS for strategy in STRATEGIES.values()
            if not (strategy.race and factor * budget < 1.2 * reserve)
            for s in range(seeds)]
    result["by_budget"] = run_jobs(jobs, processes)

    # TPE's settings judged on the search alone (tpe+asha): the race would keep the
    # defaults over most picks and hide what the sampler found.
    variants = [Strategy(f"tpe+asha ({v})", "tpe", asha=True, tpe_options=opts)
                for v, opts in TPE_VARIANTS.items()]
    result["tpe_options"] = run_jobs(
        [(table_path, "val_score", v, s, w, None, budget) for w in WORKER_COUNTS
         for v in variants for s in range(seeds)], processes)

    sig = signals(table_path, subset, draws)
    replays = run_jobs([(table_path, name, STRATEGIES[MAIN], s, workers, 16, None)
                        for name in SIGNALS for s in range(seeds)], processes)
    for name in SIGNALS:
        sig[name]["replayed_regret"] = [r["regret"] for r in replays if r["signal"] == name]
        for key in ("spearman", "regret"):  # thousands of values: their mean and interval
            sig[name][key] = interval(sig[name][key])
    result["signals"] = {"subset": subset, "draws": draws, "per_signal": sig}
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def _fmt(ci: dict[str, float], digits: int = 2) -> str:
    if not ci["n"] or math.isnan(ci["mean"]):
        return "—"
    if math.isnan(ci["low"]):
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def tables(result: dict[str, Any]) -> str:
    """The benchmark's Markdown tables."""
    o, lines = result["oracle"], []
    n = result["study_seeds"]
    lines += [f"oracle gain: the table's best configuration {o['best_config']} errs "
              f"{o['best_error']:.2f} %, the defaults {o['defaults_error']:.2f} % (rank "
              f"{o['defaults_rank']} of {o['configs']}): {o['gain']:+.2f} points, mean over "
              f"{o['seeds']} seeds; picked on half the seeds and measured on the others, "
              f"{o['cross_validated_gain']:+.2f} points ({o['splits']} splits). One run's "
              f"spread over seeds: sd {o['noise_sd']:.2f} points (the best quarter of the "
              f"configurations), {o['seed_sd_of_defaults']:.2f} for the defaults.", ""]
    budget = result["main_job"]["budget"]
    heldout = not all(math.isnan(r["heldout_gain"]) for r in result["main_job"]["runs"])
    lines += [f"main job ({MAIN}, 16 search trials, race of 3 finalists on 3 seeds, "
              f"{result['workers']} workers): {budget:.0f} trainer seconds on average; the "
              f"race replaced the defaults in {result['main_job']['replaced']} of {n} studies",
              "", f"regret at the main job's budget ({n} study seeds; % points of true test "
              "error, the mean over the table's seeds, above the table's best; paired: minus "
              "the main job's strategy)" + ("; held-out gain: the defaults' error minus the "
                                            "pick's on the seeds no study trained on"
                                            if heldout else ""), "",
              "| strategy | regret | paired vs " + MAIN + " | "
              + ("held-out gain over the defaults | " if heldout else "")
              + "trainer s | search trials | duplicates |",
              "|---|---|---|" + ("---|" if heldout else "") + "---|---|---|"]
    at = [r for r in result["by_budget"] if math.isclose(r["budget"], budget)]
    ref = {r["seed"]: r["regret"] for r in at if r["strategy"] == MAIN}
    for name in STRATEGIES:
        rows = [r for r in at if r["strategy"] == name]
        paired = interval([r["regret"] - ref[r["seed"]] for r in rows if r["seed"] in ref])
        gain = f"{_fmt(interval([r['heldout_gain'] for r in rows]))} | " if heldout else ""
        lines.append(f"| {name} | {_fmt(interval([r['regret'] for r in rows]))} | "
                     f"{'—' if name == MAIN else _fmt(paired)} | {gain}"
                     f"{np.mean([r['cost'] for r in rows]):.0f} | "
                     f"{np.mean([r['trials'] for r in rows]):.1f} | "
                     f"{np.mean([r['duplicates'] for r in rows]):.1f} |")
    lines += ["", "TPE's settings, tpe+asha at the main job's budget (regret; paired vs "
              "univariate)", "",
              "| workers | " + " | ".join(TPE_VARIANTS) + " |",
              "|---|" + "---|" * len(TPE_VARIANTS)]
    for w in WORKER_COUNTS:
        rows = [r for r in result["tpe_options"] if r["workers"] == w]
        base = {r["seed"]: r["regret"] for r in rows if r["strategy"].endswith("(univariate)")}
        cells = []
        for v in TPE_VARIANTS:
            mine = [r for r in rows if r["strategy"].endswith(f"({v})")]
            cell = _fmt(interval([r["regret"] for r in mine]))
            if v != "univariate":
                cell += " (" + _fmt(interval([r["regret"] - base[r["seed"]] for r in mine])) + ")"
            cells.append(cell)
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    s = result["signals"]
    lines += ["", f"selection signals: Spearman with the true error on the other seeds and "
              f"the regret of the pick, over {s['draws']} random sets of {s['subset']} "
              f"configurations x each seed; and the regret of {MAIN} replayed with it "
              f"({n} study seeds)", "",
              "| signal | what | Spearman | pick's regret | replayed regret |",
              "|---|---|---|---|---|"]
    for name, v in s["per_signal"].items():
        lines.append(f"| {name} | {v['what']} | {_fmt(v['spearman'], 3)} | "
                     f"{_fmt(v['regret'])} | "
                     f"{_fmt(interval(v['replayed_regret']))} |")
    lines += ["", "ASHA's rungs: Spearman of the score at the rung with the final score and "
              "with the true error (mean over seeds, all configurations)", "",
              "| step | vs final score | vs true error |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['vs_final_score']:.3f} | {r['vs_true_error']:.3f} |"
              for r in result["rungs"]]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Regret against budget, one line per strategy with its 95 % band over study seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name in STRATEGIES:
        xs, ys, lo, hi = [], [], [], []
        for factor in BUDGET_FACTORS:
            budget = factor * result["main_job"]["budget"]
            rows = [r for r in result["by_budget"]
                    if r["strategy"] == name and math.isclose(r["budget"], budget)]
            ci = interval([r["regret"] for r in rows])
            if ci["n"] and not math.isnan(ci["mean"]):
                xs.append(np.mean([r["cost"] for r in rows]))
                ys.append(ci["mean"])
                lo.append(ci["low"])
                hi.append(ci["high"])
        line, = ax.plot(xs, ys, marker="o", label=name)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.08)
    ax.axvline(result["main_job"]["budget"], color="grey", ls=":", lw=1)
    ax.text(result["main_job"]["budget"], ax.get_ylim()[1], " main job", va="top",
            fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set(xlabel="trainer seconds spent (log scale)",
           ylabel="regret: true test error above the best, % points",
           title=f"{result['space']}: regret against budget ({result['study_seeds']} study "
                 "seeds, 95 % bands)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--table", default=DEFAULT_PATH, help="the recorded table (python -m study.bench record)")
    a("--seeds", type=int, default=20, help="study seeds replayed per strategy (default 20)")
    a("--workers", type=int, default=2, help="simulated workers: trials at once (default 2)")
    a("--processes", type=int, default=max(1, os.cpu_count() or 1),
      help="processes running the replays (default: the CPUs)")
    a("--subset", type=int, default=16, help="configurations per set in the signal comparison")
    a("--draws", type=int, default=500, help="random sets in the signal comparison")
    a("--out", help="write every figure to this JSON file")
    a("--png", help="write the regret curves to this PNG file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("seeds", "workers", "processes", "subset", "draws"):
        if getattr(args, name) < 1:
            print(f"error: --{name}: must be >= 1", file=sys.stderr)
            return 2
    if not os.path.isfile(args.table):
        print(f"error: --table {args.table}: no such file; record one with python -m "
              "study.bench record", file=sys.stderr)
        return 2
    for name in ("out", "png"):
        path = getattr(args, name)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            print(f"error: --{name}: the folder of {path} does not exist", file=sys.stderr)
            return 2
    result = benchmark(args.table, args.seeds, args.workers, args.processes, args.subset,
                       args.draws)
    result["command"] = shlex.join(["python", "-m", "study.bench", "replay",
                                    *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {result['command']}\n")
    print(tables(result))
    print(f"\nwall time: {result['wall_seconds']:.0f} s")
    if args.out:
        write_json(args.out, result)
    if args.png:
        plot(result, args.png)
    return 0
