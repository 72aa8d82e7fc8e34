"""What a finished study prints: its counts, then a table of its own kind (the search's best
trials, the race, or the arms of a reproduction or an ablation), and where its files are."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from study.race import DEFAULTS

SEARCH_ROWS = 5  # the search's best trials shown; the report has them all


def print_summary(summary: dict) -> None:
    """The end of a study's console output."""
    print(f"\nstudy {summary['name']} ({summary['mode']}): {summary['num_trials']} trials, "
          f"{summary['num_completed']} completed, {summary['num_stopped_early']} stopped early, "
          f"{summary['num_diverged']} diverged, {summary['num_errored']} errored, "
          f"{summary['wall_seconds']:.0f}s")
    if summary["mode"] == "search":  # with a race, its table holds the finalists
        print(search_table(summary["trials"], rows=3 if summary.get("race") else SEARCH_ROWS))
    else:
        print(arms_table(summary["trials"], "variant" if summary["mode"] == "reproduce"
                         else "method"))
    if summary.get("race"):
        print(race_table(summary["race"]))
    if summary["mode"] == "search" and summary["best_config"] is not None:
        score = summary["best_val_score"]
        test = summary["best_trial_test_accuracy"]
        print(f"chosen on validation: {summary['best_config']}"
              + (f" (validation score {score:.4f}" if score is not None else " (")
              + (f"; its search trial's test accuracy {test:.4f}, reported, not used to "
                 "choose)" if test is not None else ")"))
    report = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "analysis", "report.py")
    print(f"study directory: {summary['path']}" + (
        f" (analyse it: python analysis/report.py {summary['path']})"
        if os.path.isfile(report) else ""))


def _number(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def search_table(trials: list[dict[str, Any]], rows: int = SEARCH_ROWS) -> str:
    """The search's best trials by validation score, full-length ones first (a score at an
    earlier rung is not comparable with one at the end)."""
    search = [t for t in trials if t["phase"] != "race" and t["val_score"] is not None
              and t["status"] in ("completed", "stopped_early")]
    if not search:
        return "search: no trial reported a validation score"
    search.sort(key=lambda t: (t["steps"], t["val_score"]), reverse=True)
    names = [k for k in search[0]["config"] if k not in ("seed", "phase", "entrant")]
    lines = [f"search: the {min(rows, len(search))} best of {len(search)} trials that reported, "
             "by validation score (longest first; one seed, shared by all)",
             "| trial | " + " | ".join(names) + " | ended | steps | val score |",
             "|" + "---|" * (len(names) + 4)]
    for t in search[:rows]:
        lines.append(f"| {t.get('number') or t['trial_id']} | "
                     + " | ".join(_number(t["config"].get(k)) for k in names)
                     + f" | {t['status'].replace('_', ' ')} | {t['steps']} | "
                     f"{t['val_score']:.4f} |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{statistics.fmean(values):.2f} ± {std:.2f} (n={len(values)})"


def arms_table(trials: list[dict[str, Any]], key: str) -> str:
    """A reproduction's arms (key "variant") or an ablation's methods (key "method"): test
    error per seed in %, its mean ± std, and the mean difference to the paper's defaults
    paired over seeds. The tuned arm was chosen on validation before this study."""
    errors: dict[str, dict[int, float]] = {}
    for t in trials:
        arm, seed = t["config"].get(key), t["config"].get("seed")
        if arm is None or seed is None:
            continue
        test = t["final_test_accuracy"] if t["status"] == "completed" else None
        errors.setdefault(str(arm), {})[int(seed)] = (
            math.nan if test is None else 100.0 * (1.0 - test))
    if not errors:
        return f"no trial named its {key}"
    seeds = sorted({s for per in errors.values() for s in per})
    base = errors.get("default") or {}
    lines = [f"{'arms' if key == 'variant' else 'methods'}: final test error in % per seed "
             "(the test set reports; nothing here was chosen on it)",
             f"| {key} | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean ± std | vs default, paired |", "|" + "---|" * (len(seeds) + 3)]
    for arm, per in errors.items():
        done = [per[s] for s in seeds if s in per and not math.isnan(per[s])]
        pairs = [per[s] - base[s] for s in seeds if s in per and s in base
                 and not math.isnan(per[s]) and not math.isnan(base[s])]
        vs = ("—" if arm == "default" or not pairs else
              f"{statistics.fmean(pairs):+.2f} (n={len(pairs)})")
        lines.append(f"| {arm} | " + " | ".join(
            "—" if s not in per else "failed" if math.isnan(per[s]) else f"{per[s]:.2f}"
            for s in seeds) + f" | {_mean_std(done)} | {vs} |")
    return "\n".join(lines)


def race_table(race: dict) -> str:
    """The race as printed: each entrant's values, search score, score per seed, mean."""
    decision = race["decision"]
    seeds = [str(s) for s in decision["seeds"]] or sorted(
        {k for e in race["entrants"].values() for k in e["val_scores"]})
    names = list(next(iter(race["entrants"].values()))["config"]) if race["entrants"] else []
    lines = ["race: validation score of each entrant at full length, per seed (n = "
             f"{len(decision['seeds'])} seeds shared by every entrant)",
             "| entrant | " + " | ".join(names) + " | search trial | "
             + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs defaults |",
             "|" + "---|" * (len(names) + len(seeds) + 4)]
    base = decision["means"].get(DEFAULTS)
    for name, e in race["entrants"].items():
        mean = decision["means"].get(name)
        search = (f"{e['search_val_score']:.4f} at step {e['search_steps']}"
                  if e.get("search_val_score") is not None else "—")
        vs = "—" if mean is None or base is None or name == DEFAULTS else f"{mean - base:+.4f}"
        lines.append(f"| {name} | " + " | ".join(f"{e['config'][k]:.4g}" for k in names)
                     + f" | {search} | " + " | ".join(
                         f"{e['val_scores'][s]:.4f}" if s in e["val_scores"] else "failed"
                         for s in seeds)
                     + f" | {'—' if mean is None else f'{mean:.4f}'} | {vs} |")
    return "\n".join(lines + [f"decision: {decision['reason']}"])
