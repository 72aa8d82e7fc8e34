"""The tables of a report, computed from the trial frame of analysis.results (errors in %).

Every table reports the **final** test error (the last evaluation) of full-length runs,
as mean ± sample std over seeds with n. The authors' convention, the best test accuracy
seen during training, is only a column labelled optimistic. Which trials feed which table:
- reproduction: completed trials of `--reproduce` studies (arms: tuned on validation, the
  paper's defaults, the supervised baseline) and completed standalone `python -m trainer`
  runs of metasemi;
- ablation: completed trials of `--ablation` studies, and completed standalone runs;
- tuning gain: tuned minus default final test error, paired over the seeds of a reproduce
  study;
- validation ranking, best configurations, top trials: trials of search studies, ranked
  by their validation score, as the searcher ranked them.
Trials stopped early, failed or still running never enter a mean.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats as scipy_stats

from analysis.paper import Paper
from study import layout
from trainer.data.survey import dataset_name, is_dataset_path
from trainer.methods import METHODS

# Reproduction arms, in table order: (label, which trials, the paper's method to compare).
ARMS = (
    ("MetaSemi, tuned on validation", layout.TUNED, "metasemi"),
    ("MetaSemi, paper's defaults", layout.DEFAULT, "metasemi"),
    ("supervised baseline", layout.SUPERVISED, "supervised"),
    ("MetaSemi, standalone runs", "run", "metasemi"),
)
OPTIMISTIC = "optimistic: best test error during training %"


def _setting_name(paper: Paper, dataset: str, num_label: int) -> str:
    """The paper's name of a setting, else DATASET-LABELS; data of your own goes by its
    folder's or file's name."""
    s = paper.setting(dataset, num_label)
    if s:
        return s.name
    return f"{dataset_name(dataset) if is_dataset_path(dataset) else dataset}-{num_label}"


def _keys(paper: Paper, done: pd.DataFrame, with_paper: list[tuple[str, int]]):
    """(dataset, num_label) rows of a table: the settings with results of ours, the paper's
    first in the paper's order, then any other found. A setting without results has no row
    (not_run names the paper's)."""
    found = {(d, int(n)) for d, n in zip(done["dataset"], done["num_label"])}
    return [k for k in with_paper if k in found] + sorted(found - set(with_paper))


def own_data_only(frame: pd.DataFrame) -> bool:
    """Every result is on data of your own: the paper's settings are beside the point."""
    known = [d for d in frame["dataset"] if isinstance(d, str)]  # a corrupt trial's is missing
    return len(known) > 0 and all(is_dataset_path(d) for d in known)


def not_run(table: pd.DataFrame, paper: Paper, ablation: bool = False) -> str:
    """One line: which settings the paper reports and which of them have no result here."""
    reported = [s.name for s in paper.settings
                if (any(s.dataset in e for e in paper.ablation.values()) if ablation
                    else s.metasemi is not None)]
    shown = set(table["setting"]) if len(table) else set()
    missing = [name for name in reported if name not in shown]
    what = "ablation cells" if ablation else "MetaSemi's error"
    if not missing:
        return f"The paper reports {what} for {', '.join(reported)}: all are here."
    return (f"The paper reports {what} for {', '.join(reported)}; not run here: "
            f"{', '.join(missing)} (no completed full-length run of ours).")


def _steps(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _stats(errors: pd.Series, prefix: str = "error") -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; undefined for one value) of errors in %,
    and n."""
    values = errors.astype(float)
    n = len(values)
    return {f"{prefix}_mean": values.mean() if n else math.nan,
            f"{prefix}_std": values.std(ddof=1) if n > 1 else math.nan,
            **({"n": n} if prefix == "error" else {})}


def _protocol(group: pd.DataFrame) -> dict[str, str]:
    """How a row's numbers were obtained: steps, seeds, split, validation, precision."""
    if not len(group):
        return {"steps": "", "seeds": "", "split": "", "precision": ""}
    seeds = sorted(int(s) for s in group["seed"])
    num_val = {int(v) for v in group["num_val"].fillna(0)}
    val = "/".join(str(v) for v in sorted(num_val))
    from_labeled = bool(group["val_from_labeled"].fillna(False).astype(bool).any())
    split = "/".join(sorted({str(s) for s in group["split"].fillna("random")}))
    return {"steps": _steps(group["steps"]), "seeds": ",".join(map(str, seeds)),
            "split": f"{split} labels; " + (f"{val} val images held out"
                                            + (" of the labels" if from_labeled else "")
                                            if val != "0" else "no val set"),
            "precision": "/".join(sorted({str(p) for p in group["precision"].fillna("?")}))}


def _arm(frame: pd.DataFrame, arm: str) -> pd.DataFrame:
    if arm == "run":
        return frame[(frame["mode"] == "run") & (frame["method"] == "metasemi")]
    return frame[(frame["mode"] == "reproduce") & (frame["variant"] == arm)]


def reproduction_table(frame: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    """One row per setting and arm: the paper's error beside our final test error (mean, std,
    n), the gap, the optimistic best-during-training error, and how it was obtained."""
    done = frame[frame["status"] == "completed"]
    candidates = pd.concat([_arm(done, arm) for _, arm, _ in ARMS])
    rows = []
    for dataset, num_label in _keys(paper, candidates, [(s.dataset, s.num_label)
                                                        for s in paper.settings]):
        ref = paper.setting(dataset, num_label)
        here = done[(done["dataset"] == dataset) & (done["num_label"] == num_label)]
        for label, arm, method in ARMS:
            group = _arm(here, arm)
            if not len(group):
                continue
            if method == "metasemi":
                paper_error = ref.metasemi if ref and ref.metasemi is not None else math.nan
            else:
                paper_error = paper.ablation.get(method, {}).get(dataset, math.nan) \
                    if ref else math.nan
            final = _stats(group["final_test_error"])
            rows.append({"setting": _setting_name(paper, dataset, num_label), "arm": label,
                         "dataset": dataset, "num_label": num_label, "paper_error": paper_error,
                         **final, "difference": final["error_mean"] - paper_error,
                         **_stats(group["best_test_error"], "optimistic_best_error"),
                         **_protocol(group),
                         "partial": bool(group["partial"].any()) if len(group) else False})
    return pd.DataFrame(rows)


def ablation_table(frame: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    """Long form: one row per method and setting, the paper's error beside our final test
    error, and the optimistic best-during-training error."""
    done = frame[(frame["status"] == "completed") & frame["mode"].isin(["ablation", "run"])]
    keys = _keys(paper, done, [(s.dataset, s.num_label) for s in paper.settings
                               if any(s.dataset in errors for errors in paper.ablation.values())])
    rows = []
    for method, meta, mixup in ((m.name, m.meta, m.mixup) for m in METHODS.values()):
        for dataset, num_label in keys:
            group = done[(done["dataset"] == dataset) & (done["num_label"] == num_label)
                         & (done["method"] == method)]
            rows.append({"method": method, "meta": meta, "mixup": mixup,
                         "setting": _setting_name(paper, dataset, num_label),
                         "paper_error": paper.ablation.get(method, {}).get(dataset, math.nan)
                         if paper.setting(dataset, num_label) else math.nan,
                         **_stats(group["final_test_error"]),
                         **_stats(group["best_test_error"], "optimistic_best_error"),
                         **_protocol(group)})
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    # a method with no result of ours in any setting has no row (a setting run for another
    # method keeps its cell, beside the paper's number)
    ran = table.groupby("method")["n"].transform("sum") > 0
    return table[ran].reset_index(drop=True)


def ablation_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows meta x mix-up, a 'paper' and an 'ours' column per setting."""
    with_paper = set(long.loc[long["paper_error"].notna(), "setting"])
    out = []
    for (method, meta, mixup), group in long.groupby(["method", "meta", "mixup"], sort=False):
        row = {"meta": "yes" if meta else "no", "mix-up": "yes" if mixup else "no",
               "method": method}
        for _, r in group.iterrows():
            if r["setting"] in with_paper:  # digits has no paper column
                row[f"{r['setting']} paper"] = fmt_number(r["paper_error"])
            row[f"{r['setting']} ours"] = fmt_stats(r["error_mean"], r["error_std"], r["n"])
        out.append(row)
    return pd.DataFrame(out)


def paired_interval(differences: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t interval (nan for n < 2)."""
    n = len(differences)
    mean = sum(differences) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = pd.Series(differences).std(ddof=1)
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


HYPERPARAMETERS = ("weight", "alpha", "lr", "warmup", "weight_decay", "epsilon", "momentum",
                   "gamma", "milestones", "batch_size", "total_steps")


def tuning_gain(frame: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    """Per reproduce study: tuned minus default final test error (% points), paired over the
    seeds both arms completed, with a 95% t interval. Negative: tuning helped."""
    rows = []
    done = frame[(frame["status"] == "completed") & (frame["mode"] == "reproduce")]
    for study, group in done.groupby("study", sort=True):
        arms = {arm: group[group["variant"] == arm].set_index("seed")
                for arm in (layout.TUNED, layout.DEFAULT)}
        if not len(arms[layout.TUNED]) or not len(arms[layout.DEFAULT]):
            continue  # --config paper, or an arm with no completed run yet
        tuned, default = (arms[a]["final_test_error"] for a in (layout.TUNED, layout.DEFAULT))
        common = sorted(set(tuned.index) & set(default.index))
        diffs = [tuned[s] - default[s] for s in common]
        same = all(arms[layout.TUNED][h].iloc[0] == arms[layout.DEFAULT][h].iloc[0]
                   for h in HYPERPARAMETERS)
        mean, low, high = paired_interval(diffs)
        # the same configuration on the same seeds: the gain is zero by construction, and
        # its spread says nothing about what these seeds could detect
        detectable = math.nan if same else detectable_gain(diffs)
        first = group.iloc[0]
        rows.append({"study": study,
                     "setting": _setting_name(paper, first["dataset"], int(first["num_label"])),
                     "n": len(common), "seeds": ",".join(str(int(s)) for s in common),
                     "tuned_error": tuned[common].mean() if common else math.nan,
                     "default_error": default[common].mean() if common else math.nan,
                     "gain_mean": mean, "ci95_low": low, "ci95_high": high,
                     "excludes_zero": bool(high < 0 or low > 0),
                     "detectable_gain": detectable,
                     "note": "the search chose the paper's defaults: both arms are the same "
                             "runs" if same else ""})
    return pd.DataFrame(rows, columns=["study", "setting", "n", "seeds", "tuned_error",
                                       "default_error", "gain_mean", "ci95_low", "ci95_high",
                                       "excludes_zero", "detectable_gain", "note"])


def detectable_gain(differences: list[float], power: float = 0.8) -> float:
    """The smallest true gain these seeds would find (a 95% interval excluding zero) with
    probability `power`, given the spread of the paired differences: (t_0.975 + t_power)
    x sd / sqrt(n). NaN for fewer than 2 seeds."""
    n = len(differences)
    if n < 2:
        return math.nan
    sd = pd.Series(differences).std(ddof=1)
    df = n - 1
    return float((scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(power, df)) * sd
                 / math.sqrt(n))


def validation_ranking(frame: pd.DataFrame) -> pd.DataFrame:
    """Per search study: Spearman's rank correlation, over its completed trials, between the
    validation score (what the searcher ranked) and the final test accuracy."""
    rows = []
    for study, group in search_trials(frame).groupby("study", sort=True):
        done = group[(group["status"] == "completed") & group["val_score"].notna()]
        rho = math.nan
        if len(done) >= 3:
            rho = float(scipy_stats.spearmanr(done["val_score"],
                                              done["final_test_accuracy"]).statistic)
        rows.append({"study": study, "completed_trials": len(done), "spearman_rho": rho,
                     "caveat": caveat(len(done))})
    return pd.DataFrame(rows)


def search_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials a searcher proposed (not its race's), with a result."""
    return frame[(frame["mode"] == "search") & (frame["phase"].fillna("search") == "search")
                 & frame["final_test_accuracy"].notna()]


# Below this many trials a rank correlation or an importance says little (a Spearman
# correlation over 5 trials must exceed 0.9 to be significant at 5 %).
FEW_TRIALS = 10


def caveat(n: int) -> str:
    return f"only {n} trials: too few to trust" if n < FEW_TRIALS else ""


def race_table(races: dict[str, dict],
               params: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Per search study with a race: each entrant's values, its search trial's validation
    score, its validation score on each race seed, their mean and its lead over the
    defaults, and whether the race chose it. Validation only: the race reads nothing else."""
    rows = []
    for study, race in sorted(races.items()):
        decision = race["decision"]
        base = decision["means"].get("defaults")
        names = (params or {}).get(study) or list(next(iter(race["entrants"].values()),
                                                       {"config": {}})["config"])
        for name, e in race["entrants"].items():
            mean = decision["means"].get(name)
            rows.append({"study": study, "entrant": name,
                         **{p: e["config"].get(p) for p in names},
                         "search_val_score": e.get("search_val_score"),
                         "search_steps": e.get("search_steps"),
                         **{f"seed {seed}": score for seed, score in e["val_scores"].items()},
                         "mean": mean, "n": len(decision["seeds"]),
                         "vs_defaults": None if mean is None or base is None or
                         name == "defaults" else mean - base,
                         "chosen": name == decision["choice"]})
    return pd.DataFrame(rows)


def race_decisions(races: dict[str, dict]) -> list[str]:
    """One line per race: its decision and the figures behind it."""
    out = []
    for study, race in sorted(races.items()):
        d = race["decision"]
        figures = ""
        if d.get("threshold") is not None:
            figures = (f" (advantage {d['advantage']:+.4f}, needed more than "
                       f"{d['threshold']:.4f}: one run's noise sd {d['noise_sd']:.4f} over "
                       f"{d['df']} degrees of freedom, one-sided level {d['alpha']} shared by "
                       "the finalists)")
        out.append(f"- {study}: {d['reason']}{figures}; means over {len(d['seeds'])} seeds")
    return out


def rung_steps(space: dict) -> list[int]:
    """ASHA's rungs of a space (as Ray's ASHA places them: grace x factor^k below the
    trial length)."""
    total, grace, factor = space["total_steps"], space["grace_steps"], space["reduction_factor"]
    count = int(math.log(total / min(grace, total)) / math.log(factor) + 1)
    return [int(grace * factor ** k) for k in range(count) if grace * factor ** k < total]


def rung_correlation(frame: pd.DataFrame, history: pd.DataFrame,
                     spaces: dict[str, dict]) -> pd.DataFrame:
    """Per search study and ASHA rung: Spearman's correlation, over the trials that ran the
    full length (the search's and the race's), between the validation score at the rung and
    at the end: how well the early scores ASHA stops on predict the final ones."""
    rows = []
    for study, space in sorted(spaces.items()):
        trials = frame[(frame["study"] == study) & (frame["status"] == "completed")]
        # each trial's steps and scores, split once (a filter per trial and rung was
        # quadratic in the trials); none where no trial had a curve, or none a score
        by_trial = {}
        if "val_score" in history:
            curves = history[history["study"] == study]
            by_trial = {t: (h["step"].to_numpy(), h["val_score"].to_numpy())
                        for t, h in curves.groupby("trial_id", sort=False)}
        for rung in rung_steps(space):
            pairs = []
            for trial_id in trials["trial_id"]:
                steps, scores = by_trial.get(trial_id, ((), ()))
                early = scores[steps <= rung] if len(steps) else ()
                if len(early) and not pd.isna(scores).any():
                    pairs.append((early[-1], scores[-1]))
            rho = math.nan
            if len(pairs) >= 3:
                rho = float(scipy_stats.spearmanr(*zip(*pairs)).statistic)
            rows.append({"study": study, "rung_step": rung, "final_step": space["total_steps"],
                         "trials": len(pairs), "spearman_rho": rho,
                         "caveat": caveat(len(pairs))})
    return pd.DataFrame(rows, columns=["study", "rung_step", "final_step", "trials",
                                       "spearman_rho", "caveat"])


def _ranked(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials as the study ranked them: completed first, then by validation score."""
    key = trials.assign(_full=trials["status"] == "completed",
                        _score=trials["val_score"].fillna(-1.0))
    return key.sort_values(["_full", "_score"], ascending=False).drop(columns=["_full", "_score"])


def best_configs(frame: pd.DataFrame, params: dict[str, list[str]],
                 races: dict[str, dict] | None = None) -> pd.DataFrame:
    """Per search study: the configuration it chose on validation and how. With a race,
    the race's choice (the defaults unless a finalist beat them by more than the noise);
    without one, the best completed search trial. The search trial's final test error is
    reported, never used to choose."""
    rows = []
    races = races or {}
    for study, group in search_trials(frame).groupby("study", sort=True):
        best = _ranked(group).iloc[0]
        names = params.get(study, [])
        row = {"study": study, "space": best["space"], "chosen_by": "best search trial",
               "trial_id": best["trial_id"], "status": best["status"], "steps": best["steps"],
               "val_score": best["val_score"], "race_mean": math.nan, "race_seeds": 0,
               "final_test_error": best["final_test_error"], "trials": len(group),
               **{p: best[p] for p in names}}
        race = races.get(study)
        if race is not None:
            choice = race["decision"]["choice"]
            entrant = race["entrants"].get(choice, {})
            trial = group[group["trial_id"] == entrant.get("search_trial_id")]
            row.update(chosen_by=f"race: {choice}" + (" replaced the defaults"
                                                       if race["decision"]["replaced"]
                                                       else " (the defaults kept)"),
                       race_mean=race["decision"]["means"].get(choice, math.nan),
                       race_seeds=len(race["decision"]["seeds"]),
                       **{p: entrant.get("config", {}).get(p) for p in names})
            if len(trial):
                t = trial.iloc[0]
                row.update(trial_id=t["trial_id"], status=t["status"], steps=t["steps"],
                           val_score=t["val_score"],
                           final_test_error=t["final_test_error"])
        rows.append(row)
    return pd.DataFrame(rows)


def top_trials(frame: pd.DataFrame, params: dict[str, list[str]], k: int = 10) -> pd.DataFrame:
    """The k best search trials by validation score, with their searched values."""
    names = list(dict.fromkeys(p for ps in params.values() for p in ps))
    top = _ranked(search_trials(frame)).head(k)
    cols = ["study", "trial_number", "trial_id", "status", "steps", "val_score",
            "final_test_error"]
    out = top[cols + names].copy()
    return out.reset_index(drop=True)


# --- formatting ------------------------------------------------------------------------------

def fmt_number(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_stats(mean: float, std: float, n: int) -> str:
    if not n:
        return "—"
    if n == 1 or math.isnan(std):
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {std:.2f} (n={n})"


def reproduction_display(table: pd.DataFrame) -> pd.DataFrame:
    """The reproduction table as strings, as printed and put in report.md; with no paper
    column for a table of data of your own only."""
    shown = pd.DataFrame({
        "setting": table["setting"], "arm": table["arm"],
        "paper error %": table["paper_error"].map(fmt_number),
        "ours: final test error %": [
            fmt_stats(m, s, n) + (" partial" if p else "") for m, s, n, p in
            zip(table["error_mean"], table["error_std"], table["n"], table["partial"])],
        "difference": table["difference"].map(lambda d: "—" if math.isnan(d) else f"{d:+.2f}"),
        OPTIMISTIC: [fmt_stats(m, s, n) for m, s, n in zip(
            table["optimistic_best_error_mean"], table["optimistic_best_error_std"],
            table["n"])],
        "steps": table["steps"], "seeds": table["seeds"], "split": table["split"],
        "precision": table["precision"],
    })
    if table["paper_error"].isna().all():  # digits, data of your own: no paper number
        shown = shown.drop(columns=["paper error %", "difference"])
    return shown


def tuning_gain_display(table: pd.DataFrame) -> pd.DataFrame:
    """The tuning-gain table as strings."""
    return pd.DataFrame({
        "study": table["study"], "setting": table["setting"], "seeds": table["seeds"],
        "tuned error %": table["tuned_error"].map(fmt_number),
        "default error %": table["default_error"].map(fmt_number),
        "tuned − default (points)": table["gain_mean"].map(
            lambda d: "—" if math.isnan(d) else f"{d:+.2f}"),
        "95% interval": [("—" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]")
                         for lo, hi in zip(table["ci95_low"], table["ci95_high"])],
        "excludes 0": ["—" if math.isnan(lo) else "yes" if x else "no"
                       for lo, x in zip(table["ci95_low"], table["excludes_zero"])],
        "smallest detectable gain": table["detectable_gain"].map(
            lambda d: "—" if math.isnan(d) else f"{d:.2f}"),
        "n": table["n"], "note": table["note"],
    })


def _text(v) -> str:
    return fmt_number(v, 4) if isinstance(v, float) else str(v)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' own needs the tabulate package)."""
    def cell(v) -> str:
        return _text(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join(" --- " for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([head, rule, *body]) + "\n"


LATEX_ESCAPES = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$",
                 "#": "\\#", "_": "\\_", "{": "\\{", "}": "\\}", "±": "$\\pm$",
                 "—": "--"}


def latex(table: pd.DataFrame) -> str:
    """A booktabs tabular of the table's cells (numbers as shown in the markdown)."""
    def cell(v) -> str:
        return "".join(LATEX_ESCAPES.get(ch, ch) for ch in _text(v))
    lines = ["\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\toprule",
             " & ".join(cell(c) for c in table.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in table.itertuples(False)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
