"""Read studies and trainer runs from disk into one pandas DataFrame, one row per trial.

A study directory is what `study/run.py` wrote (study.json, Ray Tune's `*_trial_*`
folders, each with the trainer's run directory in `run/`); a run directory is what
`python -m trainer` wrote (config.json, metrics.csv, summary.json). Both become the
same kind of row, built from the trainer's own files; Ray is never imported.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from study import layout
from trainer import rundir
from trainer.config import ABSENT_MEANS, Config

# The trainer settings that become columns: every Config field but those that say where or
# how a run ran rather than what it computed (precision stays: tables report it).
NOT_COLUMNS = {"data_path", "download", "save_path", "resume", "device", "log_freq",
               "memory_format", "compile"}
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in NOT_COLUMNS)
# final_*: the last evaluation (what tables report); best_test_*: the maximum over
# evaluations, the authors' convention, an optimistic figure; val_score: what a study
# selects on (trainer.loop.selection_score), NaN for runs without a validation set.
RESULT_COLUMNS = ("study", "space", "mode", "kind", "variant", "phase", "entrant", "trial_id",
                  "trial_number", "status", "reason", "num_failures", "steps", "best_step",
                  "val_score",
                  "final_val_accuracy", "best_val_accuracy", "final_test_accuracy",
                  "final_test_error", "best_test_accuracy", "best_test_error",
                  "wall_seconds", "partial")
CONFIG_DEFAULTS = ABSENT_MEANS  # what a config.json from before a field existed means


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(default: Any) -> tuple[Callable[[Any], bool], str]:
    """The check and name of what a config column holds, from the field's default."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(default, int):
        return _is_int, "an integer"
    if isinstance(default, float):
        return (lambda v: _is_int(v) or isinstance(v, float)), "a number"
    if isinstance(default, tuple):  # milestones: a JSON list
        return (lambda v: isinstance(v, list) and all(map(_is_int, v))), "a list of integers"
    return (lambda v: isinstance(v, str)), "a string"


# What each config column holds; a config.json that disagrees (hand-edited, or from another
# program) is left out as corrupt rather than breaking or skewing a table.
CONFIG_KINDS = {f.name: _kind(f.default) for f in dataclasses.fields(Config)
                if f.name in CONFIG_COLUMNS}
PATH_COLUMNS = ("run_dir", "study_dir")
STATUSES = ("completed", "stopped_early", "diverged", "error", "running", "pending", "corrupt")
TRIAL_DIR = layout.TRIAL_DIR


STANDALONE = "(standalone)"  # the study of standalone trainer runs


class AnalysisError(ValueError):
    """A path given to the analysis cannot be read as a study or run; the message says why."""


class CorruptFile(ValueError):
    """A result file exists but cannot be read; the message names it."""


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CorruptFile(f"{path}: {type(e).__name__}: {e}") from e


def is_study(path: str) -> bool:
    return os.path.isfile(os.path.join(path, layout.STUDY_FILE))


def is_run(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in (rundir.CONFIG, rundir.METRICS))


def discover(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split paths into study and run directories; a folder of them is searched one level."""
    studies, runs = [], []
    for path in paths:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            raise AnalysisError(f"{path}: no such folder; give a study directory "
                                "(studies/NAME) or a trainer run directory (runs/NAME)")
        if is_study(path):
            studies.append(path)
        elif is_run(path):
            runs.append(path)
        else:
            children = sorted(os.path.join(path, c) for c in os.listdir(path))
            found_s = [c for c in children if os.path.isdir(c) and is_study(c)]
            found_r = [c for c in children if os.path.isdir(c) and is_run(c)]
            if not found_s and not found_r:
                raise AnalysisError(
                    f"{path}: neither a study (no study.json) nor a trainer run (no config.json "
                    "and metrics.csv), nor a folder of them; give what study/run.py or "
                    "python -m trainer wrote")
            studies += found_s
            runs += found_r
    return studies, runs


# A run's metrics.csv as columns (name -> array, in the file's order): what a row and a
# curve need, read with the csv module (pandas costs milliseconds a file, which was most of
# a report over thousands of trials).
History = dict[str, np.ndarray]


def _rows(history: History) -> int:
    return len(history["step"])


def _read_history(run_dir: str) -> History:
    """metrics.csv, checked as the trainer writes it: whole rows of numbers, never NaN (a
    diverged step writes no row), steps increasing; anything else was cut short or edited."""
    path = os.path.join(run_dir, rundir.METRICS)
    try:
        with open(path, newline="") as f:
            lines = [r for r in csv.reader(f) if r]  # blank lines skipped, as by pandas
    except (OSError, ValueError, csv.Error) as e:
        raise CorruptFile(f"{path}: {type(e).__name__}: {e}") from e
    if not lines:  # written before the first evaluation
        return {"step": np.empty(0), "test_accuracy": np.empty(0)}
    columns, rows = lines[0], lines[1:]
    missing = {"step", "test_accuracy"} - set(columns)
    if missing:
        raise CorruptFile(f"{path}: lacks the column(s) {sorted(missing)}")
    if len(set(columns)) < len(columns):
        raise CorruptFile(f"{path}: repeats a column name (edited)")
    width = len(columns)
    values = np.empty((len(rows), width))
    for i, row in enumerate(rows):
        try:
            if len(row) != width:
                raise ValueError(row)
            values[i] = [float(v) for v in row]
        except ValueError:
            values[i] = math.nan
        if np.isnan(values[i]).any():
            raise CorruptFile(f"{path}: row {i + 1} of {len(rows)} is incomplete or not "
                              "numeric (cut short or edited)")
    # A column of whole numbers written as such (the step) is one of integers, as pandas
    # reads it: curves keep the dtypes they had.
    history = {c: values[:, j].astype(np.int64) if rows and all(
        r[j].strip().lstrip("+-").isdigit() for r in rows) else values[:, j]
        for j, c in enumerate(columns)}
    steps = history["step"]
    if len(steps) > 1 and not (np.diff(steps) > 0).all():
        raise CorruptFile(f"{path}: its steps do not increase (rows edited or repeated)")
    return history


def run_row(run_dir: str) -> dict[str, Any]:
    """One row from a trainer run directory: its config, metrics history and summary."""
    row: dict[str, Any] = {"run_dir": run_dir, "num_failures": 0, "reason": ""}
    config_path = os.path.join(run_dir, rundir.CONFIG)
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise CorruptFile(f"{config_path}: not a JSON object")
    for key, (fits, kind) in CONFIG_KINDS.items():
        if key in config and not fits(config[key]):
            raise CorruptFile(f"{config_path}: {key} is {config[key]!r}, not {kind}")
    row.update({k: config.get(k, CONFIG_DEFAULTS.get(k)) for k in CONFIG_COLUMNS})
    if isinstance(row["milestones"], list):
        row["milestones"] = ",".join(str(m) for m in row["milestones"])
    history = _read_history(run_dir)
    summary_path = os.path.join(run_dir, rundir.SUMMARY)
    summary = _read_json(summary_path) if os.path.isfile(summary_path) else None
    if summary is not None and not isinstance(summary, dict):
        raise CorruptFile(f"{summary_path}: not a JSON object")
    _check_agree(summary, history, summary_path)
    if _rows(history):
        acc = history["test_accuracy"]
        best_at = int(acc.argmax())  # the first evaluation at the best
        row.update(steps=int(history["step"][-1]), final_test_accuracy=float(acc[-1]),
                   best_test_accuracy=float(acc.max()),
                   best_step=int(history["step"][best_at]))
        if "elapsed_seconds" in history:
            row["wall_seconds"] = float(history["elapsed_seconds"][-1])
        if "val_accuracy" in history:
            row.update(final_val_accuracy=float(history["val_accuracy"][-1]),
                       best_val_accuracy=float(history["val_accuracy"].max()),
                       val_score=float(history["val_score"][-1]))
    else:
        row.update(steps=0)
    if summary is None:
        row["status"] = "running" if _rows(history) else "pending"
    elif summary.get("status") == "diverged":
        row["status"], row["reason"] = "diverged", summary.get("error", "loss became NaN")
    else:
        row["status"] = "completed"
        row["wall_seconds"] = summary.get("wall_seconds", row.get("wall_seconds"))
        # "auto" in config.json; the summary says what the run resolved it to
        row["precision"] = summary.get("precision", row["precision"])
    for kind in ("best", "final"):
        acc = row.get(f"{kind}_test_accuracy")
        # in %, as every table and report shows it (accuracies stay fractions)
        row[f"{kind}_test_error"] = None if acc is None else 100.0 * (1.0 - acc)
    return row


def _check_agree(summary: dict | None, history: History, summary_path: str) -> None:
    """A finished run's summary.json names its last evaluation: metrics.csv must end there."""
    if not summary or summary.get("status") != "completed":
        return
    last = {c: v[-1] for c, v in history.items()} if _rows(history) else None
    steps, final = summary.get("steps"), summary.get("final_test_accuracy")
    if last is None or (steps is not None and steps != last["step"]) or (
            isinstance(final, float) and abs(final - last["test_accuracy"]) > 1e-9):
        ends = "holds no rows" if last is None else (
            f"ends at step {int(last['step'])} with test accuracy {last['test_accuracy']:.4f}")
        raise CorruptFile(f"{summary_path}: says {steps} steps, final test accuracy {final}, "
                          f"but metrics.csv {ends} (a file cut short, replaced or edited)")


def _trial_row(trial_dir: str, study: str, mode: str, scheduler: str,
               ended: dict[str, str] | None) -> dict[str, Any]:
    """One row of a study: the trainer's files in `run/`, Ray's error.txt, the study's verdict."""
    match = TRIAL_DIR.search(os.path.basename(trial_dir))
    trial_id, number = (match.group(1), int(match.group(2))) if match else (
        os.path.basename(trial_dir), None)
    base = {"study": study, "mode": mode, "kind": "trial", "trial_id": trial_id,
            "trial_number": number, "study_dir": os.path.dirname(trial_dir)}
    run_dir = os.path.join(trial_dir, rundir.RUN_DIR)
    error_file = os.path.join(trial_dir, "error.txt")
    errors = ""
    if os.path.isfile(error_file):
        with open(error_file, errors="replace") as f:
            errors = f.read()
    failures = errors.count("Failure #")
    params_file = os.path.join(trial_dir, "params.json")
    try:
        params = _read_json(params_file) if os.path.isfile(params_file) else {}
    except CorruptFile:
        params = {}
    params = params if isinstance(params, dict) else {}
    base["variant"] = params.get("variant")
    # a search study's trials: the search's, or its race's (study/race.py)
    base["phase"] = params.get("phase", "search") if mode == "search" else None
    base["entrant"] = params.get("entrant")
    try:
        if is_run(run_dir):
            row = run_row(run_dir)
        else:
            _check_not_lost(run_dir, (ended or {}).get(trial_id))
            # created, not started yet: Ray writes params.json when the trial starts
            row = {"run_dir": run_dir, "status": "pending", "steps": 0, "reason": "",
                   **{k: params.get(k) for k in CONFIG_COLUMNS}}
    except CorruptFile as e:
        return {**base, "run_dir": run_dir, "status": "corrupt", "steps": 0,
                "num_failures": failures, "reason": f"unreadable {_short(str(e), trial_dir)}"}
    row.update(base, num_failures=failures)
    if mode == "search":
        # The searched values as the searcher chose them (what optuna.db holds, and what a
        # reproduction trains); a trial shorter than the full length ran its step-counted
        # ones scaled to its length (its run/config.json has those).
        row.update({k: params[k] for k in CONFIG_COLUMNS if k in params})
    if row["status"] not in ("running", "pending"):
        return row
    # Ray appends "Failure # N (occurred at ...)" and the exception for every failure.
    lines = [ln for ln in errors.strip().splitlines() if ln.strip()]
    last_error = lines[-1][:300] if lines else ""
    if ended is None:  # the study is still running: the trial may yet be retried
        if failures:
            row["reason"] = f"failed {failures} time(s) so far: {last_error}"
    elif ended.get(trial_id) == "error" or (failures and ended.get(trial_id) != "stopped_early"):
        row["status"], row["reason"] = "error", last_error or "failed (no error.txt)"
    else:
        row["status"] = "stopped_early"
        row["reason"] = (f"stopped by ASHA at step {row['steps']} of {row.get('total_steps')}"
                         if scheduler == "asha" else f"ended at step {row['steps']}")
    return row


def _check_not_lost(run_dir: str, verdict: str | None) -> None:
    """A trial without a whole run directory is pending only if nothing says it ran: some
    of the trainer's files there, or the driver's verdict, mean the rest went missing."""
    present = rundir.run_files(run_dir)
    if present:
        lacking = [f for f in (rundir.CONFIG, rundir.METRICS) if f not in present]
        raise CorruptFile(f"{run_dir}: lacks {', '.join(lacking)} (deleted, or never synced)")
    if verdict in ("completed", "stopped_early"):
        raise CorruptFile(f"{run_dir}: holds none of the trainer's files, though the study "
                          f"recorded the trial as {verdict} (deleted, or never synced)")


def _short(message: str, folder: str) -> str:
    """A CorruptFile message with the trial folder's prefix taken off its path."""
    return message.replace(folder + os.sep, "")


def load_study(path: str) -> pd.DataFrame:
    """One row per trial of a study directory (running or finished); see RESULT_COLUMNS."""
    path = os.path.abspath(path)
    if not is_study(path):
        raise AnalysisError(f"{path}: not a study directory (no study.json); give the folder "
                            "that study/run.py printed as 'study directory'")
    info = study_info(path)
    options = info["options"]
    summary_path = os.path.join(path, layout.SUMMARY_FILE)
    finished = os.path.isfile(summary_path)
    ended = None
    if finished:  # the driver's own verdict on each trial
        try:
            ended = {t["trial_id"]: t["status"] for t in _read_json(summary_path)["trials"]}
        except (CorruptFile, KeyError, TypeError) as e:
            warnings.warn(f"{summary_path} is unreadable ({e}); the study is read as if it "
                          "were still running", stacklevel=2)
            finished = False
    trial_dirs = sorted(os.path.join(path, d) for d in os.listdir(path)
                        if TRIAL_DIR.search(d) and os.path.isdir(os.path.join(path, d)))
    if not trial_dirs:
        raise AnalysisError(f"{path}: the study {os.path.basename(path)!r} has no trials yet; "
                            "wait for its first trial to start, or check that it ran")
    rows = [_trial_row(d, os.path.basename(path), options.get("mode", "search"),
                       options.get("scheduler", "asha"), ended) for d in trial_dirs]
    frame = _frame(rows)
    frame["partial"] = not finished
    frame["space"] = info.get("space", {}).get("name")
    if options.get("mode") == "reproduce" and frame["variant"].isna().all():
        # A reproduce study from before arms existed trained one configuration: the paper's
        # (--config paper), or the one its search chose on the test set (--config best),
        # which no table may present as chosen on validation.
        if options.get("config_source") == "paper":
            frame["variant"] = layout.DEFAULT
        else:
            warnings.warn(f"{path}: a reproduce study of a configuration chosen on the test "
                          "set (made before validation splits); left out of the tables",
                          stacklevel=2)
    return frame


def load_runs(paths: Iterable[str]) -> pd.DataFrame:
    """One row per standalone trainer run directory (`python -m trainer --save-path ...`)."""
    rows = []
    for path in paths:
        path = os.path.abspath(path)
        if not is_run(path):
            raise AnalysisError(f"{path}: not a trainer run directory (config.json and "
                                "metrics.csv expected)")
        try:
            row = run_row(path)
        except CorruptFile as e:
            row = {"run_dir": path, "status": "corrupt", "steps": 0,
                   "reason": f"unreadable {_short(str(e), path)}"}
        # a name no study can have (study names are letters, digits, '.', '_', '-'), so
        # that a groupby over studies keeps the standalone runs as a group of their own
        row.update(study=STANDALONE, mode="run", kind="run", trial_id=os.path.basename(path),
                   trial_number=None, partial=row["status"] == "running", space=None)
        rows.append(row)
    return _frame(rows)


def load(paths: Iterable[str]) -> pd.DataFrame:
    """Every study and run under `paths`, merged into one frame (several clusters welcome)."""
    studies, runs = discover(paths)
    frames = [load_study(s) for s in studies]
    if runs:
        frames.append(load_runs(runs))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [*RESULT_COLUMNS[:10], *CONFIG_COLUMNS, *RESULT_COLUMNS[10:], *PATH_COLUMNS]
    frame = pd.DataFrame(rows)
    for c in columns:
        if c not in frame:
            frame[c] = None
    return frame[columns + [c for c in frame.columns if c not in columns]]


def study_race(study_dir: str) -> dict[str, Any] | None:
    """The race a finished search study ran, as its driver recorded it in
    study_summary.json: entrants, their validation scores per seed, the decision."""
    path = os.path.join(study_dir, layout.SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        race = _read_json(path).get("race")
    except (CorruptFile, AttributeError):
        return None
    return race if isinstance(race, dict) and "decision" in race else None


# The study.json formats this analysis reads: every one up to the newest, which the driver
# writes (a study from before the field existed is format 1).
STUDY_FORMATS = tuple(range(1, layout.STUDY_FORMAT + 1))


def study_info(study_dir: str) -> dict[str, Any]:
    """study.json of a study: its options, space and protocol; AnalysisError for one that
    is unreadable, or of a format this analysis does not know."""
    path = os.path.join(study_dir, layout.STUDY_FILE)
    try:
        info = _read_json(path)
    except CorruptFile as e:
        raise AnalysisError(f"{e}; the study cannot be read without it") from e
    fmt = info.get("format", 1) if isinstance(info, dict) else None
    if fmt not in STUDY_FORMATS:
        raise AnalysisError(
            f"{path}: a study of format {fmt!r}, which this analysis does not read (it reads "
            f"format {', '.join(map(str, STUDY_FORMATS))}); report it with the version of "
            "MetaSemi Study that ran it")
    if not isinstance(info.get("options"), dict) or not isinstance(info.get("space"), dict):
        raise AnalysisError(f"{path}: has no options and space of a study; it was not written "
                            "by study/run.py")
    return info


def study_params(study_dir: str) -> list[dict[str, Any]]:
    """The searched parameters of a study (name, type, low, high, log, choices), from study.json."""
    return study_info(study_dir)["space"].get("params", [])


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The metrics history of every readable trial in `frame`, long form with its trial_id.
    Columns are gathered trial by trial and made one DataFrame once: a frame per trial,
    concatenated, cost most of a report over thousands of trials."""
    parts: list[History] = []
    names: list[tuple[str, str, int]] = []
    for study, trial_id, status, run_dir in zip(frame["study"], frame["trial_id"],
                                                frame["status"], frame["run_dir"]):
        if status in ("corrupt", "pending"):
            continue
        try:
            history = _read_history(run_dir)
        except CorruptFile as e:  # changed since the frame was read
            warnings.warn(f"{e}; its curve is left out", stacklevel=2)
            continue
        parts.append(history)
        names.append((study, trial_id, _rows(history)))
    if not parts:
        return pd.DataFrame()
    # every column any trial has, in order of first appearance (as pd.concat orders them)
    columns = list(dict.fromkeys(c for h in parts for c in h))
    data: dict[str, Any] = {
        "study": np.repeat([s for s, _, _ in names], [n for _, _, n in names]),
        "trial_id": np.repeat([t for _, t, _ in names], [n for _, _, n in names])}
    for c in columns:
        # an empty history's columns are floats, as pandas makes them: they count
        data[c] = np.concatenate([h[c] if c in h else np.full(_rows(h), np.nan)
                                  for h in parts])
    return pd.DataFrame(data)
