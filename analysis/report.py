"""`python analysis/report.py STUDY_OR_RUN_DIR... [--out DIR]` (or `python -m analysis.report`):
tables, plots and report.md.

Reads what study/run.py and python -m trainer wrote; works on a study that is still
running (its rows are marked partial) and prints the reproduction table.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import pandas as pd

from analysis import plots, results, tables
from analysis.importance import MAX_TRIALS as MAX_IMPORTANCE_TRIALS
from analysis.importance import importance
from analysis.paper import load_paper
from trainer import rundir
from trainer.data.survey import dataset_name, is_dataset_path
from trainer.rundir import NotWritable, atomic_write, check_writable

TOP_K = 10


def _write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _write_table(out: str, name: str, table: pd.DataFrame, display: pd.DataFrame | None = None):
    """NAME.csv (full precision) and NAME.tex (as displayed); returns the markdown."""
    _write_text(os.path.join(out, f"{name}.csv"), table.to_csv(index=False))
    shown = table if display is None else display
    _write_text(os.path.join(out, f"{name}.tex"), tables.latex(shown))
    return tables.markdown(shown)


# One format per kind of figure: errors and their differences in % to 2 decimals; scores
# and accuracies (fractions) to 4, which separate any two trials on 100 validation images;
# correlations and importances to 2; searched values to 4 significant figures.
PERCENT_WORDS = ("error", "gain", "ci95", "difference")
SCORE_COLUMNS = ("val_score", "val_accuracy", "race_mean", "mean", "search_val_score",
                 "vs_defaults", "test_accuracy")
TWO_DECIMALS = ("spearman_rho", "importance")


def _format(column: str):
    if any(w in column for w in PERCENT_WORDS) or column in TWO_DECIMALS:
        return lambda v: tables.fmt_number(v, 2)
    if column in SCORE_COLUMNS or column.startswith("seed "):
        return lambda v: tables.fmt_number(v, 4)
    return lambda v: "—" if pd.isna(v) else f"{v:.4g}"


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table's float columns as report.md shows them (the CSV keeps full precision)."""
    return table.apply(lambda c: c.map(_format(c.name)) if c.dtype.kind == "f" else c)


def _commit() -> str:
    """The analysis code's git commit (with -dirty for uncommitted changes), if it has one."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=10"],
                              cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not found)"
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def _data(frame: pd.DataFrame) -> list[str]:
    """Per dataset, what identifies the data the numbers rest on: the fingerprint study.json
    recorded for data of your own; for a built-in set, a digest of the runs' splits (which
    images were labeled, unlabeled, validation and test), the same for the same seeds."""
    lines = []
    for dataset, group in frame[frame["dataset"].notna()].groupby("dataset", sort=True):
        prints = set()
        for study_dir in group["study_dir"].dropna().unique():
            prints.add(results.study_info(study_dir).get("data", {}).get("fingerprint"))
        prints.discard(None)
        digest, n = hashlib.sha256(), 0
        for run_dir in sorted(group["run_dir"].dropna()):
            try:
                with open(os.path.join(run_dir, rundir.SPLIT), "rb") as f:
                    digest.update(f.read())
                n += 1
            except OSError:
                continue
        name = f"{dataset_name(dataset)} ({dataset})" if is_dataset_path(dataset) else dataset
        lines.append(f"- {name}: " + (f"fingerprint {', '.join(sorted(prints))}; "
                                      if prints else "built in; ")
                     + f"splits of its {n} runs: sha256 {digest.hexdigest()[:16]}")
    return lines


def _header(frame: pd.DataFrame, command: str | None) -> list[str]:
    """Who made this report, when, from which code and data."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    made = f"Made {when}" + (f" by `{command}`" if command else "") + f", commit {_commit()}."
    return [made, "", "Data:", *_data(frame), ""]


def write_report(frame: pd.DataFrame, out: str, command: str | None = None) -> dict[str, str]:
    """Write every table, plot and report.md into `out`; return name -> path of what was made.
    `command`: the command line that made it, for the header."""
    os.makedirs(out, exist_ok=True)
    paper = load_paper()
    made: dict[str, str] = {}
    md: list[str] = ["# MetaSemi report", "", *_header(frame, command)]

    md += _sources(frame)
    _write_text(os.path.join(out, "trials.csv"), frame.to_csv(index=False))
    made["trials"] = os.path.join(out, "trials.csv")

    repro = tables.reproduction_table(frame, paper)
    shown = tables.reproduction_display(repro) if len(repro) else None
    if shown is not None:
        versus = ("; difference = ours − paper" if "difference" in shown else
                  " (the paper gives no number for these settings)")
        md += ["## Reproduction (final test error, %)", "",
               "Mean ± sample std over seeds (n) of the test error at the **last** evaluation "
               f"of full-length runs{versus}. Arms: the configuration a search chose on its "
               "validation split, the paper's defaults and the supervised baseline, from "
               "`--reproduce` studies, and standalone trainer runs of `metasemi`; only "
               "completed runs. The optimistic column is the authors' convention, the best "
               "test error seen during training: it selects on the test set and is not a fair "
               "estimate.", "", _write_table(out, "reproduction", repro, shown)]
        made["reproduction"] = os.path.join(out, "reproduction.csv")
        made["arms"] = plots.arms(frame[frame["mode"] == "reproduce"],
                                  os.path.join(out, "arms.png"))
        if made["arms"]:
            md += ["![final test error of each reproduction arm per seed, and their means]"
                   "(arms.png)", ""]
    if not tables.own_data_only(frame):
        md += [tables.not_run(repro, paper), ""]

    gain = tables.tuning_gain(frame, paper)
    if len(gain):
        md += ["## Tuning gain (final test error, tuned − default, % points)", "",
               "Paired over the seeds both arms completed; 95% Student-t interval. Negative: "
               "the configuration chosen on validation beat the paper's defaults on test.", "",
               _write_table(out, "tuning_gain", gain, tables.tuning_gain_display(gain))]
        made["tuning_gain"] = os.path.join(out, "tuning_gain.csv")

    ablation = tables.ablation_table(frame, paper)
    if len(ablation):  # none for data of your own with no --ablation study or runs
        _write_table(out, "ablation", ablation)
        md += ["## Ablation (final test error, %)", "",
               "The paper's table: meta-gradient pseudo labels × mix-up. From `--ablation` "
               "studies and standalone trainer runs that completed; `ablation.csv` has the "
               "optimistic best-during-training error and the protocol of each cell.", "",
               _write_table(out, "ablation_table", tables.ablation_wide(ablation)),
               "" if tables.own_data_only(frame) else tables.not_run(ablation, paper,
                                                                      ablation=True), ""]
        made["ablation"] = os.path.join(out, "ablation.csv")

    searched = frame[frame["mode"] == "search"]
    specs = {s: results.study_params(d)  # per search study, read once
             for s, d in searched[["study", "study_dir"]].drop_duplicates().itertuples(False)}
    params = {s: [p["name"] for p in ps] for s, ps in specs.items()}
    if len(tables.search_trials(frame)):
        dirs = dict(searched[["study", "study_dir"]].drop_duplicates().itertuples(False))
        races = {s: r for s, d in dirs.items() if (r := results.study_race(d)) is not None}
        best = tables.best_configs(frame, params, races)
        top = tables.top_trials(frame, params, TOP_K)
        ranking = tables.validation_ranking(frame)
        md += ["## Configuration chosen on validation, per search study", "",
               "With a race (`chosen_by` race), the race's choice: the paper's defaults unless "
               "a finalist beat them on the race's seeds by more than the noise "
               "(docs/selection.md); without one, the completed search trial with the highest "
               "validation score (the mean validation accuracy of the second half of its "
               "evaluations). The "
               "search trial's final test error is reported, never used to choose.", "",
               _write_table(out, "best_configs", best, _shown(best))]
        if races:
            race = tables.race_table(races, params)
            md += ["## The race: finalists against the paper's defaults", "",
                   "Each entrant trained at full length on the race's seeds (seeds of its own, "
                   "never the search's nor a reproduction's); validation score per seed, their "
                   "mean (n seeds) and the lead over the defaults. Test figures are not read.",
                   "", _write_table(out, "race", race, _shown(race).assign(
                       chosen=race["chosen"].map({True: "yes", False: ""}))),
                   *tables.race_decisions(races), ""]
            made["race"] = os.path.join(out, "race.csv")
        md += [f"## Top {len(top)} trials by validation score", "",
               _write_table(out, "top_trials", top, _shown(top)),
               *_ranking_section(out, ranking)]
        made["validation_ranking"] = os.path.join(out, "validation_ranking.csv")
        spaces = {s: results.study_info(d).get("space", {}) for s, d in dirs.items()}
        # Only the curves each part draws on are read: the full-length trials' for the
        # rungs, the few best trials' for the plot (not every trial's, again).
        rungs = tables.rung_correlation(searched, results.curves(
            searched[searched["status"] == "completed"]),
            {s: sp for s, sp in spaces.items() if "grace_steps" in sp})
        if len(rungs):
            md += ["## Do ASHA's early rungs predict the final scores?", "",
                   "Spearman's correlation between a trial's validation score at each rung and "
                   "at its end, over the trials that ran the full length (the search's and the "
                   "race's).", "", _write_table(out, "rung_correlation", rungs, _shown(rungs))]
            made["rung_correlation"] = os.path.join(out, "rung_correlation.csv")
        names = list(dict.fromkeys(n for ns in params.values() for n in ns))
        drawn = top.head(plots.CURVES_SHOWN)[["study", "trial_id"]]
        made["curves"] = plots.curves(results.curves(frame.merge(drawn)), top, names,
                                      os.path.join(out, "curves.png"))
        defaults = {s: {p["name"]: p["default"] for p in ps if p.get("default") is not None}
                    for s, ps in specs.items()}
        made["history"] = plots.history(tables.search_trials(frame), defaults,
                                        os.path.join(out, "history.png"))
        md += _importance_section(frame, specs, out, made)
        md += ["## Plots", "",
               "![validation and test accuracy of the best search trials](curves.png)", "",
               "![optimisation history, the paper's defaults starred](history.png)", ""]
        if "importance" in made:
            md += ["![hyperparameter importance](importance.png)", ""]
        for study, study_specs in specs.items():
            name = f"params_{study}.png"
            made[f"params_{study}"] = plots.params(
                tables.search_trials(frame[frame["study"] == study]), study_specs,
                os.path.join(out, name))
            md += [f"![{study}: each parameter against the validation score]({name})", ""]

    md += _unfinished(frame)
    _write_text(os.path.join(out, "report.md"), "\n".join(md) + "\n")
    made["report"] = os.path.join(out, "report.md")
    return made


def write_into(frame: pd.DataFrame, out: str, command: str | None = None) -> dict[str, str]:
    """write_report into a hidden folder inside `out`, then move each file into `out`: a
    report that fails half-way changes nothing there."""
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".report-", dir=out)
    try:
        made = write_report(frame, staging, command)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {k: v and os.path.join(out, os.path.basename(v)) for k, v in made.items()}


def _sources(frame: pd.DataFrame) -> list[str]:
    lines = ["| source | mode | trials | completed | stopped early | failed | state |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (study, mode), g in frame.groupby(["study", "mode"], dropna=False, sort=False):
        name = "standalone runs" if mode == "run" else study
        counts = g["status"].value_counts()
        state = "**partial: still running**" if g["partial"].any() else "finished"
        failed = sum(counts.get(s, 0) for s in ("error", "diverged", "corrupt"))
        lines.append(f"| {name} | {mode} | {len(g)} | {counts.get('completed', 0)} | "
                     f"{counts.get('stopped_early', 0)} | {failed} | {state} |")
    return ["## Sources", "", *lines, ""]


def _importance_section(frame, specs, out: str, made: dict[str, str]) -> list[str]:
    """fANOVA importance per search study, with the trials it rests on. The same as Optuna's
    get_param_importances on the study's optuna.db with FanovaImportanceEvaluator(seed=0)
    (README): the same completed search trials, in the same order."""
    scores, notes, rows, counts, totals = {}, [], [], {}, {}
    for study, study_specs in specs.items():
        trials = tables.search_trials(frame[frame["study"] == study])
        s, note = importance(trials, study_specs)
        n = int((trials["status"] == "completed").sum())
        counts[study] = min(n, MAX_IMPORTANCE_TRIALS)  # what it rests on: a sample past it
        totals[study] = n
        warn = tables.caveat(n)
        notes.append(f"- {study}: {note}" + (f" ({warn})" if warn and s is not None else ""))
        if s is not None:
            scores[study] = s
            rows += [{"study": study, "parameter": p, "importance": v, "trials": counts[study]}
                     for p, v in s.items()]
    if not rows:  # no section: one line says why
        return ["Hyperparameter importance: not computed; " + "; ".join(
            n.removeprefix("- ") for n in notes) + ".", ""]
    table = pd.DataFrame(rows)
    made["importance"] = plots.importance(scores, counts, tables.FEW_TRIALS,
                                          os.path.join(out, "importance.png"), totals)
    return ["## Hyperparameter importance", "",
            "fANOVA (Optuna, seed 0) over each search's full-length trials, for the validation "
            "score; what `optuna.importance.get_param_importances` gives on its optuna.db "
            "with `FanovaImportanceEvaluator(seed=0)`"
            + (f"; past {MAX_IMPORTANCE_TRIALS} of them, over a uniform sample of "
               f"{MAX_IMPORTANCE_TRIALS} (seed 0), as fANOVA's time grows faster than its "
               "trials" if any(t > MAX_IMPORTANCE_TRIALS for t in totals.values()) else "")
            + ".", "", *notes, "",
            _write_table(out, "importance", table, _shown(table))]


def _ranking_section(out: str, ranking: pd.DataFrame) -> list[str]:
    """Spearman's rho of validation against test per search study: a table of those with
    enough completed trials, a line for the others (the CSV has every study)."""
    known = ranking[ranking["spearman_rho"].notna()]
    lines = [f"- {r['study']}: {r['completed_trials']} full-length trials; a rank correlation "
             "needs at least 3" for _, r in ranking[ranking["spearman_rho"].isna()].iterrows()]
    if not len(known):
        _write_text(os.path.join(out, "validation_ranking.csv"), ranking.to_csv(index=False))
        return ["Does validation rank trials as the test set would? Not measured:", *lines, ""]
    return ["## Does validation rank trials as the test set would?", "",
            "Spearman's rank correlation between the validation score and the final test "
            "accuracy over each search's full-length trials (1: the same order), and the "
            f"number of trials it rests on; under {tables.FEW_TRIALS} it says little "
            "(caveat).", "", _write_table(out, "validation_ranking", ranking, _shown(known)),
            *lines, ""]


def _unfinished(frame: pd.DataFrame) -> list[str]:
    bad = frame[frame["status"].isin(["error", "diverged", "corrupt", "running", "pending"])]
    if not len(bad):
        return []
    lines = ["## Trials without a final result", ""]
    for _, r in bad.iterrows():
        where = r["study"] if r["kind"] == "trial" else r["run_dir"]
        lines.append(f"- {where}/{r['trial_id']}: **{r['status']}** {r['reason'] or ''}".rstrip())
    return lines + [""]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python analysis/report.py",
                                description="tables, plots and report.md")
    p.add_argument("paths", nargs="+", metavar="STUDY_OR_RUN_DIR",
                   help="study directories, trainer run directories, or folders of them")
    p.add_argument("--out", default="reports", help="folder for the report (default: reports)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_writable(args.out, "--out")  # before reading any result
        frame = results.load(args.paths)
    except (results.AnalysisError, NotWritable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    corrupt = frame[frame["status"] == "corrupt"]
    for _, r in corrupt.iterrows():
        what = f"trial {r['study']}/{r['trial_id']}" if r["kind"] == "trial" else (
            f"run {r['run_dir']}")
        print(f"warning: {what} left out: {r['reason']}", file=sys.stderr)
    if len(corrupt) == len(frame):
        print(f"error: nothing to report: all {len(frame)} trials and runs are unreadable (see "
              "the warnings above); fix or remove those files, or give other paths",
              file=sys.stderr)
        return 2
    try:
        command = shlex.join(["python", "analysis/report.py",
                              *(sys.argv[1:] if argv is None else argv)])
        made = write_into(frame, args.out, command)
    except (results.AnalysisError, results.CorruptFile, OSError, ValueError, KeyError,
            TypeError) as e:
        print(f"error: the report could not be made ({type(e).__name__}: {e}); nothing in "
              f"{args.out} was changed", file=sys.stderr)
        return 1
    paper = load_paper()
    repro = tables.reproduction_table(frame, paper)
    if frame["partial"].any():
        print("partial results: a study is still running (or a run has not finished)")
    print("reproduction (final test error %, mean ± std over seeds; the optimistic column is "
          "the best test error seen during training):")
    print(tables.markdown(tables.reproduction_display(repro)) if len(repro) else
          "no completed full-length run of a reproduction arm yet")
    if not tables.own_data_only(frame):
        print(tables.not_run(repro, paper))
    for _, g in tables.tuning_gain(frame, paper).iterrows():
        interval = ("" if pd.isna(g["ci95_low"]) else
                    f", 95% interval [{g['ci95_low']:+.2f}, {g['ci95_high']:+.2f}]")
        print(f"tuning gain, {g['study']}: tuned − default final test error "
              f"{g['gain_mean']:+.2f} points{interval}, paired over "
              f"{g['n']} seeds" + (f" ({g['note']})" if g["note"] else ""))
    print(f"report: {made['report']} ({len(frame)} trials; the race, the top trials, "
          "validation's ranking, importance and plots there; tables as CSV and LaTeX beside "
          "it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
