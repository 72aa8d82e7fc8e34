"""A study directory of N trials built from a recorded real study, to measure the analysis at
scale (`python analysis/report.py` on 10,000 trials); a benchmark, not a test.

    python -m study.bench.big_study OUT --trials 10000 [--seed 0] [--from STUDY]
    python -m study.bench.big_study --measure 1000,3000,10000      # N, report seconds, peak MB
    python -m study.bench.big_study --record STUDY                 # renew the recording

The recording (docs/bench/study-digits.json.gz) holds the text files of a real digits study
as study/run.py wrote them (`--space digits --num-samples 8 --race-finalists 1
--race-seeds 2 --seed 3`: 12 trials, ASHA stopping 7); `--from` takes a real study directory
in its place. Each built trial is a recorded one varied by a seeded RNG: its searched values
moved a little on the space's scale, its accuracies shifted and jittered (on the grid of the
validation and test set sizes), its losses scaled, its lr and weight columns recomputed from
its values by the trainer's own schedule, its validation score by the trainer's own rule; a
recorded trial stopped early has no continuation, so a trial built from it ends where it did
at the latest. Search trial 1 runs the paper's defaults; ASHA's rule (Ray's: stop below the
(1 - 1/factor) quantile of the scores already at the rung) decides where each search trial
stops; the race's finalists come out of study/race.py and study_summary.json out of the
driver's own `summarise`. The layout is the driver's, file by file, except what is binary and
read by no report: checkpoints (`checkpoint_*/`, `run/*.pt`), TensorBoard events, and Ray's
experiment state (`experiment_state-*.json`, `tuner.pkl`, searcher state, `.sealed/`).
No trial diverges or fails: the recording has none.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import gzip
import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import numpy as np

from study import layout
from study.bench.table import BENCH_DIR
from trainer import rundir

RECORDING = os.path.join(BENCH_DIR, "study-digits.json.gz")
REPO = os.path.dirname(os.path.dirname(BENCH_DIR))
# The trial files kept, as text: Ray's (params, result lines, progress) and the trainer's.
RUN_JSON = (rundir.CONFIG, rundir.SUMMARY, rundir.SPLIT, rundir.PLACEMENT)
# Columns of metrics.csv that are means over the steps since the last evaluation (float32
# on the device); the accuracies among them are shifted with the trial's evaluations.
LOSSES = ("loss", "main_loss", "cons_loss", "val_loss", "test_loss")
TRAIN_ACCURACIES = ("train_accuracy", "pseudo_label_accuracy")
SLOTS = 2  # trials at once, for the built timeline (the recorded study ran 2)
OVERHEAD_S = 4.0  # a trial's seconds outside training (its start, Tune's reports)


# --- the recording ---------------------------------------------------------------------------

def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _number(text: str) -> int | float:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def read_study(study_dir: str) -> dict[str, Any]:
    """The text files of a finished study, as a recording: study.json, study_summary.json
    and, per trial, what Ray and the trainer wrote (binary files left out)."""
    def load(path: str) -> Any:
        with open(path) as f:
            return json.load(f)

    summary = load(os.path.join(study_dir, layout.SUMMARY_FILE))
    trials = []
    for record in summary["trials"]:
        folder = os.path.join(study_dir, os.path.basename(record["path"]))
        run = os.path.join(folder, rundir.RUN_DIR)
        with open(os.path.join(folder, "result.json")) as f:
            results = [json.loads(line) for line in f if line.strip()]
        columns, rows = _read_csv(os.path.join(run, rundir.METRICS))
        trials.append({
            "dir": os.path.basename(folder), "record": record,
            "params": load(os.path.join(folder, "params.json")), "results": results,
            "progress_columns": _read_csv(os.path.join(folder, "progress.csv"))[0],
            "metrics_columns": columns,
            "metrics": [{k: _number(v) for k, v in r.items()} for r in rows],
            **{name: load(os.path.join(run, name)) if os.path.isfile(os.path.join(run, name))
               else None for name in RUN_JSON}})
    return {"study": load(os.path.join(study_dir, layout.STUDY_FILE)),
            "summary": {k: v for k, v in summary.items() if k != "trials"}, "trials": trials}


def record(study_dir: str, out: str = RECORDING) -> str:
    """Keep a real study's text files as the recording the builder draws from."""
    data = read_study(study_dir)
    data["meta"] = {"from": os.path.abspath(study_dir),
                    "recorded": datetime.date.today().isoformat(),
                    "command": "python -m study.bench.big_study --record " + study_dir}
    text = json.dumps(data).encode()  # insertion order kept: Tune's order of the values
    rundir.atomic_write(out, lambda f: f.write(gzip.compress(text, mtime=0)))
    os.chmod(out, 0o644)  # a file of the repository, as the others beside it
    return out


def load_recording(source: str | None = None) -> dict[str, Any]:
    """A recording file, or a real study directory read as one (default: the repository's)."""
    source = source or RECORDING
    if os.path.isdir(source):
        return read_study(source)
    with gzip.open(source, "rt") as f:
        return json.load(f)


# --- one trial, varied -------------------------------------------------------------------------

def _grid(value: float, size: int | None) -> float:
    """An accuracy as the trainer logs it: k/size of a set, in float32."""
    value = min(1.0, max(0.0, value))
    return float(np.float32(round(value * size) / size)) if size else float(np.float32(value))


def _jitter(params: dict[str, Any], specs: list[dict[str, Any]],
            rng: np.random.Generator) -> dict[str, Any]:
    """A configuration near a recorded one: each value moved by a tenth of its range (on its
    own scale), within the space."""
    out = dict(params)
    for spec in specs:
        name = spec["name"]
        if name not in out:
            continue
        if spec["type"] == "categorical":
            if rng.random() < 0.1:
                out[name] = spec["choices"][int(rng.integers(len(spec["choices"])))]
            continue
        low, high = float(spec["low"]), float(spec["high"])
        if spec.get("log"):
            value = math.exp(math.log(out[name]) + rng.normal(0, 0.1 * math.log(high / low)))
        else:
            value = out[name] + rng.normal(0, 0.1 * (high - low))
        value = min(high, max(low, value))
        out[name] = int(round(value)) if spec["type"] == "int" else float(value)
    return out


def _schedule(config: dict[str, Any]):
    """What trainer.step's schedules read of a run's config."""
    return SimpleNamespace(lr=config["lr"], warmup=config["warmup"], gamma=config["gamma"],
                           milestones=tuple(config["milestones"]), weight=config["weight"])


def vary(source: dict[str, Any], config: dict[str, Any],
         rng: np.random.Generator) -> list[dict[str, Any]]:
    """A recorded trial's metrics rows for another run of `config`: accuracies shifted and
    jittered, losses and speed scaled, lr, weight and the scores recomputed as the trainer
    computes them."""
    from trainer.loop import selection_score
    from trainer.step import consistency_weight, learning_rate

    split = source[rundir.SPLIT] or {}
    num_val = len(split.get("val") or []) or None
    num_test = len(split["test"]) if isinstance(split.get("test"), list) else None
    shift, loss_scale = rng.normal(0, 0.01), math.exp(rng.normal(0, 0.05))
    speed = math.exp(rng.normal(0, 0.1))
    sched = _schedule(config)
    rows: list[dict[str, Any]] = []
    for old in source["metrics"]:
        row = dict(old)
        step = int(old["step"])
        # the lr and weight of the evaluation's last step (trainer/loop.py logs them so)
        row["lr"], row["weight"] = learning_rate(sched, step - 1), consistency_weight(
            sched, step - 1)
        for c in LOSSES:
            if c in row:
                row[c] = float(np.float32(old[c] * loss_scale))
        for c in TRAIN_ACCURACIES:
            if c in row:
                row[c] = float(np.float32(min(1.0, max(0.0, old[c] + shift))))
        row["test_accuracy"] = _grid(old["test_accuracy"] + shift + rng.normal(0, 0.004),
                                     num_test)
        row["best_test_accuracy"] = max([row["test_accuracy"]]
                                        + [r["test_accuracy"] for r in rows])
        if "val_accuracy" in row:
            row["val_accuracy"] = _grid(old["val_accuracy"] + shift + rng.normal(0, 0.004),
                                        num_val)
            row["val_score"] = selection_score([*rows, row])
        row["elapsed_seconds"] = old["elapsed_seconds"] * speed
        row["images_per_second"] = old["images_per_second"] / speed
        rows.append(row)
    return rows


def _check_schedule(source: dict[str, Any]) -> None:
    """The recomputed lr and weight are the recorded ones for the recorded config: the
    builder computes what the trainer logged."""
    from trainer.step import consistency_weight, learning_rate

    sched = _schedule(source[rundir.CONFIG])
    for row in source["metrics"]:
        lr, w = learning_rate(sched, row["step"] - 1), consistency_weight(sched, row["step"] - 1)
        if abs(lr - row["lr"]) > 1e-12 or abs(w - row["weight"]) > 1e-12:
            raise ValueError(f"{source['dir']}: step {row['step']} logged lr {row['lr']}, "
                             f"weight {row['weight']}; the schedule gives {lr}, {w}")


def asha_length(rows: list[dict[str, Any]], rungs: list[int], factor: float,
                recorded: dict[int, list[float]]) -> int:
    """How many of `rows` a search trial runs under ASHA: at each rung it reaches, it stops
    if its score is below the (1 - 1/factor) quantile of those recorded there before it
    (Ray's rule); its score joins them either way."""
    for rung in rungs:
        at = next((i for i, r in enumerate(rows) if r["step"] >= rung), None)
        if at is None:
            break
        score = rows[at]["val_score"]
        before = recorded.setdefault(rung, [])
        cutoff = float(np.nanpercentile(before, (1 - 1 / factor) * 100)) if before else None
        before.append(score)
        if cutoff is not None and score < cutoff:
            return at + 1
    return len(rows)


# --- the files -------------------------------------------------------------------------------

def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"


def _write(path: str, text: str) -> None:
    # Plain writes: the trainer's atomic, fsync'd ones cost seconds per thousand files here,
    # and a built study is read only after it is whole.
    with open(path, "w") as f:
        f.write(text)


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _summary(config: dict[str, Any], rows: list[dict[str, Any]],
             precision: str) -> dict[str, Any]:
    """run/summary.json of a completed run, as trainer/loop.py's _summary writes it."""
    last = rows[-1]
    best = max(r["test_accuracy"] for r in rows)
    out = {"status": "completed", "dataset": config["dataset"], "method": config["method"],
           "architecture": config["architecture"], "num_label": config["num_label"],
           "seed": config["seed"], "num_val": config["num_val"], "split": config["split"],
           "precision": precision, "steps": last["step"],
           "final_test_accuracy": last["test_accuracy"], "best_test_accuracy": best,
           # the first evaluation that reached the best (the trainer replaces it on more only)
           "best_step": next(r["step"] for r in rows if r["test_accuracy"] == best),
           "final_test_error": 1.0 - last["test_accuracy"], "best_test_error": 1.0 - best,
           "wall_seconds": last["elapsed_seconds"]}
    if "val_accuracy" in last:
        best_val = max(r["val_accuracy"] for r in rows)
        at = next(r for r in rows if r["val_accuracy"] == best_val)
        out.update(final_val_accuracy=last["val_accuracy"], final_val_score=last["val_score"],
                   best_val_accuracy=at["val_accuracy"], best_val_step=at["step"])
    return out


def _results(source: dict[str, Any], rows: list[dict[str, Any]], trial_id: str,
             config: dict[str, Any], start: float) -> list[dict[str, Any]]:
    """result.json's lines: each metrics row with Ray's fields, as the recorded trial's."""
    out = []
    for i, row in enumerate(rows):
        line = dict(source["results"][min(i, len(source["results"]) - 1)])
        line.update(row)  # the metrics first, then Ray's fields, as Tune writes them
        stamp = start + row["elapsed_seconds"] + OVERHEAD_S
        line.update(trial_id=trial_id, config=config, timestamp=int(stamp),
                    date=time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(stamp)))
        out.append(line)
    return out


def _write_trial(study_dir: str, name: str, trial: dict[str, Any]) -> SimpleNamespace:
    """One trial folder: Ray's params and results, the trainer's run directory; returns the
    trial as Tune's ResultGrid gives it to the driver's summary."""
    folder = os.path.join(study_dir, trial["dir"])
    run = os.path.join(folder, rundir.RUN_DIR)
    os.makedirs(run)
    source, rows, config = trial["source"], trial["rows"], trial["config"]
    with open(os.path.join(folder, "params.json"), "w") as f:  # Ray's: no newline at the end
        f.write(json.dumps(config, indent=2, sort_keys=True))
    with open(os.path.join(folder, "params.pkl"), "wb") as f:
        pickle.dump(config, f)
    results = _results(source, rows, trial["trial_id"], config, trial["start"])
    _write(os.path.join(folder, "result.json"),
           "".join(json.dumps(r) + "\n" for r in results))
    _write(os.path.join(folder, "progress.csv"), _csv(source["progress_columns"], results))
    run_config = {**source[rundir.CONFIG], **trial["settings"]}
    # the trial's working folder on its node, as the recorded one's, with this trial's name
    run_config["save_path"] = run_config["save_path"].replace(
        source["dir"], trial["dir"]).replace(f"/{source['study_name']}/working_dirs/",
                                             f"/{name}/working_dirs/")
    _write(os.path.join(run, rundir.CONFIG), _json(run_config))
    _write(os.path.join(run, rundir.METRICS), _csv(source["metrics_columns"], rows))
    _write(os.path.join(run, rundir.SPLIT), _json(source[rundir.SPLIT]))
    placement = {**source[rundir.PLACEMENT], "trial_id": trial["trial_id"],
                 "started": trial["start"],
                 "last_report": trial["start"] + rows[-1]["elapsed_seconds"] + OVERHEAD_S}
    _write(os.path.join(run, rundir.PLACEMENT), _json(placement))
    if trial["completed"]:
        precision = (source[rundir.SUMMARY] or {}).get("precision", "fp32")
        _write(os.path.join(run, rundir.SUMMARY), _json(_summary(run_config, rows, precision)))
    return SimpleNamespace(metrics=results[-1], config=dict(config), error=None, path=folder)


def _distribution(spec: dict[str, Any]):
    import optuna

    if spec["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec["choices"]))
    kind = (optuna.distributions.IntDistribution if spec["type"] == "int"
            else optuna.distributions.FloatDistribution)
    return kind(spec["low"], spec["high"], log=bool(spec["log"]))


def _optuna_db(study_dir: str, name: str, trials: list[dict[str, Any]],
               specs: list[dict[str, Any]]) -> None:
    """optuna.db as the searcher leaves it: every search trial (the race never reaches it),
    COMPLETE at full length or PRUNED with its last intermediate value, the intermediate
    values keyed by step, the defaults' trial marked as a fixed point to evaluate."""
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(study_dir, 'optuna.db')}")

    # One commit per trial is Optuna's way; without a sync per commit 10,000 take seconds,
    # not a minute. The database is whole once the builder returns (nothing reads it before).
    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _no_sync(connection, _record):
        connection.execute("PRAGMA synchronous=OFF")

    storage.engine.dispose()  # pooled connections opened before the listener: new ones
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    distributions = {s["name"]: _distribution(s) for s in specs}
    frozen = []
    for i, t in enumerate(trials):
        params = {k: t["config"][k] for k in distributions}
        start = datetime.datetime.fromtimestamp(t["start"])
        end = start + datetime.timedelta(seconds=t["rows"][-1]["elapsed_seconds"] + OVERHEAD_S)
        frozen.append(optuna.trial.FrozenTrial(
            number=i, trial_id=i, params=params, distributions=distributions,
            state=(optuna.trial.TrialState.COMPLETE if t["completed"]
                   else optuna.trial.TrialState.PRUNED),
            value=t["rows"][-1]["val_score"], datetime_start=start, datetime_complete=end,
            intermediate_values={int(r["step"]): r["val_score"] for r in t["rows"]},
            user_attrs={}, system_attrs={"fixed_params": params} if t["number"] == 1 else {}))
    study.add_trials(frozen)
    storage.engine.dispose()


# --- the study -------------------------------------------------------------------------------

def _trial_id(rng: np.random.Generator, taken: set[str]) -> str:
    """Ray's id of a searched trial: 8 hex digits, unique in the study."""
    while True:
        trial_id = f"{int(rng.integers(1 << 32)):08x}"
        if trial_id not in taken:
            taken.add(trial_id)
            return trial_id


def _space(study: dict[str, Any]):
    from study.spaces import load_space

    path = study["space"].get("path")
    return load_space(path if path and os.path.isfile(path) else study["space"]["name"])


def build(path: str, n: int, seed: int = 0, source: str | None = None) -> dict[str, Any]:
    """Write a study directory of `n` trials at `path` (a new folder; its name is the study's)
    from a recording (default: the repository's) or a real study directory `source`; returns
    what was built: per trial its id, number, phase, status and steps, in number order."""
    from study.console import trial_dirname  # imports Ray (not started): the driver's names
    from study.driver import StudyOptions, summarise
    from study.race import DEFAULTS, finalist_name, finalists, race_configs, same_config
    from study.spaces import Schedule, scale_schedule

    path = os.path.abspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"{path}: exists; give a new folder")
    rec = load_recording(source)
    study = copy.deepcopy(rec["study"])
    options, space = study["options"], study["space"]
    recorded = rec["trials"]
    for t in recorded:
        t["study_name"] = rec["summary"]["name"]
        _check_schedule(t)
    searched = [t for t in recorded if t["record"]["phase"] != "race"]
    raced = [t for t in recorded if t["record"]["phase"] == "race"]
    racing = options["mode"] == "search" and options["race_finalists"] > 0
    race_seeds = list(study["protocol"]["race_seeds"]) if racing else []
    k = options["race_finalists"] if racing else 0
    n_search = n - (k + 1) * len(race_seeds)
    if n_search < k + 1:
        raise ValueError(f"{n} trials: fewer than the race's {(k + 1) * len(race_seeds)} and "
                         f"{k + 1} search trials")
    total = options["total_steps"] or space["total_steps"]
    race_total = options["total_steps"] or space["full"]["total_steps"]
    full = Schedule(**{**space["full"], "milestones": tuple(space["full"]["milestones"])})
    factor = space["reduction_factor"]
    rungs = [] if options["scheduler"] != "asha" else [
        int(space["grace_steps"] * factor ** i) for i in range(64)
        if space["grace_steps"] * factor ** i < total]
    specs = space["params"]
    defaults = {s["name"]: s["default"] for s in specs}
    first = next(t for t in searched if same_config(t["params"], defaults))

    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    slots = [min(t[rundir.PLACEMENT]["started"] for t in recorded)] * SLOTS
    t0 = slots[0]

    def trial(number: int, src: dict[str, Any], config: dict[str, Any], steps: int,
              scores: dict[int, list[float]] | None) -> dict[str, Any]:
        tune_config = dict(config)
        # the trainer's settings of this trial, as run_trial makes them (schedule scaled to
        # the trial's length where it is shorter than the full one)
        own = {k_: v for k_, v in tune_config.items() if k_ not in ("phase", "entrant")}
        settings = {k_: list(v) if isinstance(v, tuple) else v
                    for k_, v in scale_schedule(own, full, steps).items()
                    if k_ in src[rundir.CONFIG]}
        rows = vary(src, {**src[rundir.CONFIG], **settings}, rng)
        if scores is not None:
            rows = rows[:asha_length(rows, rungs, factor, scores)]
        trial_id = _trial_id(rng, taken)
        slot = int(np.argmin(slots))
        start = slots[slot]
        slots[slot] = start + rows[-1]["elapsed_seconds"] + OVERHEAD_S
        tag = SimpleNamespace(trial_id=trial_id, config=tune_config,
                              experiment_tag=f"{number}_")
        return {"number": number, "trial_id": trial_id, "dir": trial_dirname(tag),
                "config": tune_config, "settings": settings, "rows": rows, "source": src,
                "start": start, "completed": rows[-1]["step"] >= steps,
                "phase": tune_config.get("phase", "search")}

    trials, scores = [], {}
    for number in range(1, n_search + 1):
        # trial 1: the paper's defaults, the searcher's first point to evaluate
        src = first if number == 1 else searched[int(rng.integers(len(searched)))]
        order = list(src["results"][-1]["config"])  # Tune's order of the values
        values = src["params"] if number == 1 else _jitter(src["params"], specs, rng)
        trials.append(trial(number, src, {k_: values[k_] for k_ in order}, total, scores))
    if racing:
        search = [{"config": t["config"], "trial_id": t["trial_id"], "steps": t["rows"][-1]["step"],
                   "val_score": t["rows"][-1]["val_score"],
                   "status": "completed" if t["completed"] else "stopped_early"}
                  for t in trials]
        entrants = {DEFAULTS: {k_: first["params"][k_] for k_ in first["results"][-1]["config"]}}
        for rank, f in enumerate(finalists(search, k, defaults), 1):
            entrants[finalist_name(rank)] = f["config"]
        # the defaults' runs first: known from the start, they fill the search's last slots
        configs = sorted(race_configs(entrants, race_seeds),
                         key=lambda c: c["entrant"] != DEFAULTS)
        for c in configs:
            src = next(t for t in raced if t["params"]["seed"] == c["seed"]
                       and (t["params"]["entrant"] == DEFAULTS) == (c["entrant"] == DEFAULTS))
            trials.append(trial(len(trials) + 1, src, c, race_total, None))

    os.makedirs(path)
    name = os.path.basename(path)
    options.update(name=name, storage_path=os.path.dirname(path), num_samples=n_search)
    _write(os.path.join(path, layout.STUDY_FILE), _json(study))
    results = [_write_trial(path, name, t) for t in trials]
    known = {f.name for f in fields(StudyOptions)}
    opts = StudyOptions(**{k_: v for k_, v in options.items() if k_ in known})
    summary = summarise(opts, _space(study), results, max(slots) - t0)
    # what reconcile() adds to a study that was never interrupted
    summary.update(orphaned_trial_dirs=[], optuna_orphans_failed=0)
    _write(os.path.join(path, layout.SUMMARY_FILE), _json(summary))
    if options["mode"] == "search":
        _optuna_db(path, name, [t for t in trials if t["phase"] != "race"], specs)
    return {"path": path, "trials": [
        {"trial_id": r["trial_id"], "number": r["number"], "phase": r["phase"],
         "status": r["status"], "steps": r["steps"]} for r in summary["trials"]]}


# --- the benchmark ---------------------------------------------------------------------------

def _disk_mb(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder)
               for f in fs) / 2**20


def run_report(args: list[str], log: str) -> tuple[float, float, int]:
    """Seconds, peak resident MB and exit status of one `python analysis/report.py ARGS`
    (one thread per library, as on a busy machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as f:
        t = time.perf_counter()
        child = subprocess.Popen([sys.executable, "analysis/report.py", *args], cwd=REPO,
                                 env=env, stdout=f, stderr=f)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest
        seconds = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, child.returncode  # ru_maxrss: KiB on Linux


def measure(ns: list[int], seed: int = 0, root: str | None = None, source: str | None = None,
            keep: bool = False) -> list[dict[str, Any]]:
    """Build a study of each size, time the report over it; print and return the table."""
    root = root or tempfile.mkdtemp(prefix="big-study-")
    os.makedirs(root, exist_ok=True)
    table = []
    print(f"{'N':>7} {'build s':>8} {'disk MB':>8} {'report s':>9} {'peak MB':>8}  rc")
    for n in ns:
        study_dir = os.path.join(root, f"n{n}", "digits")
        t = time.perf_counter()
        build(study_dir, n, seed, source)
        built = time.perf_counter() - t
        out = os.path.join(root, f"n{n}", "report")
        seconds, peak, rc = run_report([study_dir, "--out", out],
                                       os.path.join(root, f"n{n}", "report.log"))
        row = {"n": n, "build_seconds": built, "disk_mb": _disk_mb(study_dir),
               "report_seconds": seconds, "peak_mb": peak, "rc": rc}
        table.append(row)
        print(f"{n:>7} {built:>8.1f} {row['disk_mb']:>8.0f} {seconds:>9.1f} {peak:>8.0f}  {rc}",
              flush=True)
        if not keep:
            shutil.rmtree(os.path.join(root, f"n{n}"))
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.big_study", description=(
        "a study directory of N trials built from a recorded real study; or the report's "
        "seconds and peak memory over such studies"))
    p.add_argument("out", nargs="?", help="the study directory to build (a new folder)")
    p.add_argument("--trials", type=int, default=1000, help="trials to build (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="the builder's RNG seed")
    p.add_argument("--from", dest="source", help="a recording or a real study directory "
                   f"(default {os.path.relpath(RECORDING, REPO)})")
    p.add_argument("--measure", metavar="N,N,...", help="build studies of these sizes and "
                   "measure the report over each (seconds, peak resident MB)")
    p.add_argument("--root", help="with --measure: where to build them (default: a new "
                   "temporary folder, removed after)")
    p.add_argument("--keep", action="store_true", help="with --measure: keep what was built")
    p.add_argument("--record", metavar="STUDY", help="renew the recording from a real study")
    args = p.parse_args(argv)
    if args.record:
        print(f"recorded {args.record} into {record(args.record)}")
        return 0
    if args.measure:
        measure([int(x) for x in args.measure.split(",")], args.seed, args.root, args.source,
                args.keep)
        return 0
    if not args.out:
        p.error("give OUT, --measure or --record")
    built = build(args.out, args.trials, args.seed, args.source)
    counts: dict[str, int] = {}
    for t in built["trials"]:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    print(f"built {built['path']}: {len(built['trials'])} trials ("
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
