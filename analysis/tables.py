"""The tables of a report, computed from the trial frame of analysis.results (errors in %).

Which trials feed which table:
- reproduction: completed MetaSemi trials of `--reproduce` studies, and completed
  standalone `python -m trainer` runs of the method metasemi;
- ablation: completed trials of `--ablation` studies, and completed standalone runs;
- best configurations and top trials: trials of search studies.
Trials stopped early, failed or still running never enter a mean.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.paper import Paper

METHODS = {  # the paper's ablation rows: method -> (meta, mix-up)
    "supervised": (False, False), "mixup": (False, True),
    "meta": (True, False), "metasemi": (True, True),
}
METRICS = ("final", "best")


def _error_column(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r}; choose final or best")
    return f"{metric}_test_error"


def _setting_name(paper: Paper, dataset: str, num_label: int) -> str:
    s = paper.setting(dataset, num_label)
    return s.name if s else f"{dataset}-{num_label}"


def _keys(paper: Paper, done: pd.DataFrame, with_paper: list[tuple[str, int]]):
    """(dataset, num_label) rows of a table: the paper's settings, then any other found."""
    found = {(d, int(n)) for d, n in zip(done["dataset"], done["num_label"])}
    return with_paper + sorted(found - set(with_paper))


def _steps(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _stats(errors: pd.Series) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; undefined for one value) in %, and n."""
    values = 100.0 * errors.astype(float)
    n = len(values)
    return {"error_mean": values.mean() if n else math.nan,
            "error_std": values.std(ddof=1) if n > 1 else math.nan, "n": n}


def reproduction_table(frame: pd.DataFrame, paper: Paper, metric: str = "final") -> pd.DataFrame:
    """One row per setting: the paper's MetaSemi error beside ours (mean, std, n) and the gap."""
    col = _error_column(metric)
    done = frame[(frame["status"] == "completed") & (frame["method"] == "metasemi")
                 & frame["mode"].isin(["reproduce", "run"])]
    rows = []
    for dataset, num_label in _keys(paper, done, [(s.dataset, s.num_label)
                                                  for s in paper.settings]):
        group = done[(done["dataset"] == dataset) & (done["num_label"] == num_label)]
        ref = paper.setting(dataset, num_label)
        paper_error = ref.metasemi if ref and ref.metasemi is not None else math.nan
        stats = _stats(group[col])
        rows.append({"setting": _setting_name(paper, dataset, num_label), "dataset": dataset,
                     "num_label": num_label, "paper_error": paper_error, **stats,
                     "difference": stats["error_mean"] - paper_error,
                     "steps": _steps(group["steps"]) if len(group) else "",
                     "partial": bool(group["partial"].any()) if len(group) else False})
    return pd.DataFrame(rows)


def ablation_table(frame: pd.DataFrame, paper: Paper, metric: str = "final") -> pd.DataFrame:
    """Long form: one row per method and setting, the paper's error beside ours."""
    col = _error_column(metric)
    done = frame[(frame["status"] == "completed") & frame["mode"].isin(["ablation", "run"])]
    keys = _keys(paper, done, [(s.dataset, s.num_label) for s in paper.settings
                               if any(s.dataset in errors for errors in paper.ablation.values())])
    rows = []
    for method, (meta, mixup) in METHODS.items():
        for dataset, num_label in keys:
            group = done[(done["dataset"] == dataset) & (done["num_label"] == num_label)
                         & (done["method"] == method)]
            rows.append({"method": method, "meta": meta, "mixup": mixup,
                         "setting": _setting_name(paper, dataset, num_label),
                         "paper_error": paper.ablation.get(method, {}).get(dataset, math.nan)
                         if paper.setting(dataset, num_label) else math.nan,
                         **_stats(group[col]),
                         "steps": _steps(group["steps"]) if len(group) else ""})
    return pd.DataFrame(rows)


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


def search_trials(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["mode"] == "search") & frame["best_test_accuracy"].notna()]


def best_configs(frame: pd.DataFrame, params: dict[str, list[str]]) -> pd.DataFrame:
    """Per search study: its best trial (by best test accuracy) and the searched values."""
    rows = []
    for study, group in search_trials(frame).groupby("study", sort=True):
        best = group.loc[group["best_test_accuracy"].idxmax()]
        rows.append({"study": study, "space": best["space"], "trial_id": best["trial_id"],
                     "status": best["status"], "steps": best["steps"],
                     "best_test_error": 100.0 * best["best_test_error"],
                     "trials": len(group),
                     **{p: best[p] for p in params.get(study, [])}})
    return pd.DataFrame(rows)


def top_trials(frame: pd.DataFrame, params: dict[str, list[str]], k: int = 10) -> pd.DataFrame:
    """The k best search trials over all studies, with their searched values."""
    names = list(dict.fromkeys(p for ps in params.values() for p in ps))
    top = search_trials(frame).sort_values("best_test_accuracy", ascending=False).head(k)
    cols = ["study", "trial_id", "status", "steps", "best_test_error", "final_test_error"]
    out = top[cols + names].copy()
    out[["best_test_error", "final_test_error"]] *= 100.0
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
    """The reproduction table as strings, as printed and put in report.md."""
    return pd.DataFrame({
        "setting": table["setting"],
        "paper error %": table["paper_error"].map(fmt_number),
        "ours error %": [fmt_stats(m, s, n) + (" partial" if p else "") for m, s, n, p in
                         zip(table["error_mean"], table["error_std"], table["n"],
                             table["partial"])],
        "difference": table["difference"].map(
            lambda d: "—" if math.isnan(d) else f"{d:+.2f}"),
        "steps": table["steps"],
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
