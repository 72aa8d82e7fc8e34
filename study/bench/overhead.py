"""`python -m study.bench overhead`: where a study trial's slot time goes, measured.

Runs a study (by default the README main job's search: `--space digits`, 16 trials, ASHA,
then the race) with every part timed, and prints one table of slot-seconds: the trainer's
own phases (trainer/phases.py, from each trial's process), the report round trip, what
happens between trials, and beside them what the driver spends on each result and trial
(Tune's loggers, the searcher, ASHA's bookkeeping, the seal, the snapshots).

`--variants` runs the same study under several settings side by side in one run (each in a
fresh process, one after the other), e.g. `--variants before,after` to measure a change
to the per-trial overhead: `before` is the behaviour of 2026-12-01 (one trial staged
at a time, a Tune checkpoint at every evaluation), `after` today's default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

# The hooks of a Tune callback and a searcher that the driver calls; each is timed.
CALLBACK_HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start",
                  "on_trial_restore", "on_trial_save", "on_trial_result", "on_trial_complete",
                  "on_trial_recover", "on_trial_error", "on_checkpoint", "on_experiment_end")
SEARCHER_HOOKS = ("suggest", "on_trial_result", "on_trial_complete", "save_to_dir")


# Calls whose every duration is kept, not only their sum: TPE's time per suggestion grows
# with the trials it has seen (python -m study.bench scale).
KEEP_EACH = ("searcher.suggest",)


def _timed_method(method, label: str, seconds: dict, calls: dict,
                  each: dict | None = None):
    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            took = time.perf_counter() - t
            seconds[label] += took
            calls[label] += 1
            if each is not None and label in KEEP_EACH:
                each.setdefault(label, []).append(took)
    return timed


class DriverTiming:
    """Times the driver's callbacks, searcher, Tune snapshots and seals while a study runs
    in this process (a context manager around run_study; passed to it as `timing`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.trials: dict[str, dict[str, Any]] = {}  # trial id -> start, end, results
        self._undo: list[tuple[type, str, Any]] = []
        self.fit_start: float | None = None  # Tune's experiment start (callbacks' setup)
        self.fit_end: float | None = None
        self.connected: float | None = None  # Ray started (or joined): workers may start
        self.durations: dict[str, list[float]] = {}

    def _time_class(self, cls: type, names: tuple[str, ...], label: str) -> type:
        """A subclass of `cls` whose methods `names` add their time under `label.name`."""
        ns = {name: _timed_method(getattr(cls, name), f"{label}.{name}", self.seconds,
                                  self.calls, self.durations)
              for name in names if hasattr(cls, name)}
        return type(cls.__name__, (cls,), {**ns, "__module__": cls.__module__,
                                           "__reduce__": _reduce_to_plain(cls)})

    def _timed(self, obj: Any, names: tuple[str, ...], label: str) -> Any:
        obj.__class__ = self._time_class(type(obj), names, label)
        return obj

    def wrap(self, callbacks: list, search_alg):
        """The study's callbacks and searcher, timed; Tune's own loggers added, timed."""
        from ray.tune import Callback
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        timing = self

        class TrialTimes(Callback):
            def setup(self, **info):
                timing.fit_start = time.time()

            def on_experiment_end(self, trials, **info):
                timing.fit_end = time.time()

            def on_trial_start(self, iteration, trials, trial, **info):
                timing.trials.setdefault(trial.trial_id, {"results": 0})["start"] = time.time()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                timing.trials[trial.trial_id]["results"] += 1

            def on_trial_complete(self, iteration, trials, trial, **info):
                timing.trials[trial.trial_id]["end"] = time.time()

            on_trial_error = on_trial_complete

        timed = [self._timed(c, CALLBACK_HOOKS, f"callback.{type(c).__name__}")
                 for c in [*callbacks, JsonLoggerCallback(), CSVLoggerCallback()]]
        if search_alg is not None:
            search_alg = self._timed(search_alg, SEARCHER_HOOKS, "searcher")
        return [TrialTimes(), *timed], search_alg

    def _patch(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, _timed_method(original, label, self.seconds, self.calls))

    def __enter__(self) -> DriverTiming:
        from ray.tune.execution.tune_controller import TuneController
        from ray.tune.schedulers import ASHAScheduler

        from study.trust import Sealer

        # Before the seal wraps save_to_dir (study/trust.py): this times Tune's part alone.
        self._patch(TuneController, "save_to_dir", "snapshot.tune")
        self._patch(Sealer, "seal_snapshot", "snapshot.seal")
        self._patch(Sealer, "seal", "seal.look")
        self._patch(ASHAScheduler, "on_trial_result", "scheduler.on_trial_result")
        from study import driver

        self._patch(driver, "summarise", "driver.summarise")
        self._patch(driver, "reconcile", "driver.reconcile")
        connect = driver.connect
        self._undo.append((driver, "connect", connect))

        def connected(*args, **kwargs):
            connect(*args, **kwargs)
            self.connected = time.time()
        driver.connect = connected
        return self

    def __exit__(self, *exc) -> None:
        for cls, name, original in reversed(self._undo):
            setattr(cls, name, original)


def _reduce_to_plain(cls: type):
    """Pickle a timed object as its plain class (Tune keeps callbacks in tuner.pkl)."""
    def reduce(self):
        state = self.__getstate__() if hasattr(self, "__getstate__") else self.__dict__
        return (_rebuild, (cls, state))
    return reduce


def _rebuild(cls: type, state: Any) -> Any:
    obj = cls.__new__(cls)
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)
    return obj


# What each variant changes from today's defaults: environment variables the driver reads,
# and study options added to the command.
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "after": ({}, []),
    # 2026-12-01: Tune's own choice for a searcher, one trial staged at a time; a Tune
    # checkpoint (with the run directory's copy to storage) at every evaluation
    "before": ({"TUNE_MAX_PENDING_TRIALS_PG": "1"}, ["--checkpoint-every", "0"]),
}


def _run_one(argv: list[str], out: str, profile: str) -> None:
    """One study, timed, in this process; its driver's figures into `out` (JSON)."""
    from study.cli import build_parser, options_from_args
    from study.driver import LOCAL_ONLY_ENV, run_study
    from study.lock import claim
    from study.trainable import PROFILE_ENV

    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    os.environ[PROFILE_ENV] = profile
    opts = options_from_args(build_parser().parse_args(argv))
    lock = claim(opts.path, opts.name, False)
    timing = DriverTiming()
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    try:
        with timing:
            summary = run_study(opts, timing=timing)
    finally:
        lock.release()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    record = {"argv": argv, "study": opts.path, "wall": time.time() - t0,
              "driver_cpu": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
              "driver_peak_mb": cpu1.ru_maxrss / 1024, "summary": summary,
              "seconds": dict(timing.seconds), "calls": dict(timing.calls),
              "trials": timing.trials, "slots": _slots(opts),
              "fit_start": timing.fit_start, "connected": timing.connected,
              "durations": timing.durations,
              "wall_fit": (timing.fit_end or time.time()) - (timing.fit_start or t0)}
    with open(out, "w") as f:
        json.dump(record, f, default=str)


def _slots(opts) -> int:
    """How many trials ran at once: the local CPUs over the CPUs a trial takes."""
    import ray

    cpus = ray.available_resources().get("CPU") if ray.is_initialized() else None
    per = opts.cpus_per_trial or 1
    return int((cpus or os.cpu_count() or 1) // per)


def import_seconds() -> float:
    """What a fresh worker imports for its first trial (the trainer and torch; Ray it has),
    timed in a new process."""
    code = ("import time, ray, ray.tune; t = time.perf_counter(); import study.trainable; "
            "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))))
    return float(done.stdout.split()[-1])


def read_workers(profile: str) -> dict[str, list[dict[str, Any]]]:
    """Each worker process's events, by trial id, in time order."""
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name in sorted(os.listdir(profile)):
        with open(os.path.join(profile, name)) as f:
            for line in f:
                event = json.loads(line)
                by_trial[event["trial"]].append(event)
    return by_trial


def trial_rows(start: float, end: float, events: list[dict[str, Any]],
               first_in_process: bool) -> dict[str, float]:
    """One trial's slot time, from the driver's start to its end, by where it went."""
    rows: dict[str, float] = defaultdict(float)
    enter = next(e for e in events if e["event"] == "enter")
    train = next((e for e in events if e["event"] == "train"), enter)
    rows["trial start on the worker"] += enter["t"] - start
    rows["trial start: restore, placement.json"] += train["t"] - enter["t"]
    reports = [e for e in events if e["event"] == "report"]
    trained = next((e for e in events if e["event"] == "trained"), None)
    for e in reports:
        rows["report: placement.json"] += e["placement"]
    for e in events:
        if e["event"] == "reported":
            rows["report: checkpoint to storage, driver's answer"] += e["seconds"]
    if trained is not None:  # ran to its end: every phase is known, then the trial ends
        phases, after = trained["phases"], trained["t"]
        rows["trial end: Tune's stop, reset for the next"] += end - after
    else:  # stopped early (or failed) in its last report, which never returned
        phases, after = (reports[-1]["phases"], reports[-1]["t"]) if reports else ({}, train["t"])
        rows["stopped trial: the last report, Tune's stop, reset"] += end - after
    for phase, seconds in phases.items():
        if phase == "build" and first_in_process:
            # torch imports its compiler (torch._dynamo) at the first optimiser it builds
            rows[FIRST_BUILD] += seconds
        elif phase != "report":  # its parts are above
            rows[PHASE_ROWS.get(phase, phase)] += seconds
    rows["other (untimed)"] += (end - start) - sum(rows.values())
    return rows


def breakdown(driver: dict[str, Any], workers: dict[str, list[dict[str, Any]]],
              imports: float) -> dict[str, float]:
    """Slot-seconds of one study, from Tune's start to its last trial's end, by where they
    went: the workers' start, the trials' rows, and the slots' idle time between trials."""
    rows: dict[str, float] = defaultdict(float)
    seen: set[int] = set()
    spans = [(t["start"], t["end"], tid) for tid, t in driver["trials"].items()
             if "start" in t and "end" in t and workers.get(tid)]
    for start, end, tid in sorted(spans):
        events = workers[tid]
        pid = events[0]["pid"]
        for k, v in trial_rows(start, end, events, pid not in seen).items():
            rows[k] += v
        seen.add(pid)
    # Each slot, from the experiment's start to its first trial: the worker's process
    # start, its imports (measured apart: `imports`) and Tune's scheduling.
    fit_start = driver["fit_start"] or min(s for s, _, _ in spans)
    firsts = sorted(s for s, _, _ in spans)[:driver["slots"]]
    waited = sum(s - fit_start for s in firsts)
    rows["worker start: imports"] = min(imports * len(firsts), waited)
    rows["worker start: process, scheduling"] = waited - rows["worker start: imports"]
    busy = sum(end - start for start, end, _ in spans)
    last = max(e for _, e, _ in spans)
    rows["slots idle between trials, and at the end"] = (
        (last - fit_start) * driver["slots"] - busy - waited)
    return dict(rows)


FIRST_BUILD = "worker start: torch._dynamo, imported at its first optimiser"
# The trainer's phases (trainer/loop.py) as table rows.
PHASE_ROWS = {
    "resume": "trainer: claim, checkpoint read", "setup": "trainer: device, threads",
    "data": "data loading (to the device)", "build": "model and optimiser build",
    "files": "trainer: run files, TensorBoard writer", "first_step": "the first step",
    "steps": "training steps", "evaluate": "evaluations", "checkpoint": "checkpoint writes",
    "logs": "metrics.csv, TensorBoard, summary",
}

# Rows that are the trainer training: what the goal counts as trainer seconds.
TRAINING = tuple(PHASE_ROWS[p] for p in ("first_step", "steps", "evaluate"))
# Rows of the trainer's own work in a trial, reports excluded (scale.py's trial length).
TRAINER = tuple(PHASE_ROWS[p] for p in ("data", "build", "files", "first_step", "steps",
                                        "evaluate", "checkpoint", "logs"))


def measure(variant: str, study_argv: list[str], root: str, imports: float) -> dict[str, Any]:
    """Run the study once under `variant` in a fresh process; its rows and driver figures."""
    profile = os.path.join(root, variant, "profile")
    os.makedirs(profile)
    out = os.path.join(root, variant, "driver.json")
    env_changes, extra = VARIANTS[variant]
    argv = [*study_argv, *extra, "--storage-path", os.path.join(root, variant), "--verbose",
            "0"]
    env = {**os.environ, **env_changes, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "study.bench.overhead", "_one", out, profile, "--",
                    *argv], check=True, env=env)
    with open(out) as f:
        driver = json.load(f)
    rows = breakdown(driver, read_workers(profile), imports)
    slot_seconds = sum(rows.values())
    # The slots from Ray's start instead: the driver's setup before Tune's start (Ray's
    # start, the searcher, the trainable's registration) keeps the slots waiting too.
    setup = (driver["fit_start"] - driver["connected"]) * driver["slots"] if (
        driver.get("connected") and driver.get("fit_start")) else None
    return {"variant": variant, "rows": rows, "slot_seconds": slot_seconds,
            "before_fit": setup,
            "training": sum(rows.get(k, 0.0) for k in TRAINING),
            "driver": {k: driver[k] for k in ("wall", "driver_cpu", "driver_peak_mb", "slots",
                                              "seconds", "calls")},
            "trials": len(driver["trials"]),
            "results": sum(t.get("results", 0) for t in driver["trials"].values())}


def _share(seconds: float, total: float) -> str:
    return f"{seconds:.1f} s ({100 * seconds / total:.1f} %)"


def table(measured: list[dict[str, Any]]) -> str:
    """The slot-seconds table, one column per variant: seconds and share."""
    names = [m["variant"] for m in measured]
    keys = list(dict.fromkeys(k for m in measured for k in m["rows"]))
    lines = ["| where the slot time goes | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for k in keys:
        cells = [_share(m["rows"].get(k, 0.0), m["slot_seconds"]) for m in measured]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("| **slot-seconds** (Tune's start to the last trial's end x slots) | "
                 + " | ".join(f"{m['slot_seconds']:.1f} s" for m in measured) + " |")
    lines.append("| **trainer seconds** (first step, steps, evaluations) | " + " | ".join(
        f"{m['training']:.1f} s ({100 * m['training'] / m['slot_seconds']:.1f} %)"
        for m in measured) + " |")
    if all(m.get("before_fit") is not None for m in measured):
        lines.append("| slot-seconds from Ray's start (adds the driver's setup, until Tune's "
                     "start) | " + " | ".join(
                         f"{m['slot_seconds'] + m['before_fit']:.1f} s" for m in measured) + " |")
        lines.append("| **trainer seconds, of those** | " + " | ".join(
            f"{100 * m['training'] / (m['slot_seconds'] + m['before_fit']):.1f} %"
            for m in measured) + " |")
    lines += ["", "| the driver | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    drivers = [m["driver"] for m in measured]
    lines.append("| study wall time, CPU seconds, peak memory | " + " | ".join(
        f"{d['wall']:.1f} s, {d['driver_cpu']:.1f} s, {d['driver_peak_mb']:.0f} MB"
        for d in drivers) + " |")
    lines.append("| trials, results | " + " | ".join(
        f"{m['trials']}, {m['results']}" for m in measured) + " |")
    # The driver's hooks that took 10 ms or more in some variant (the rest: a few ms in all)
    labels = sorted({k for d in drivers for k, v in d["seconds"].items() if v >= 0.01})
    for k in labels:
        lines.append(f"| {k} | " + " | ".join(
            f"{1000 * d['seconds'].get(k, 0.0):.0f} ms in {d['calls'].get(k, 0)}"
            for d in drivers) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_one"]:  # the child: one study, timed
        out, profile, _, *study_argv = argv[1:]
        _run_one(study_argv, out, profile)
        return 0
    p = argparse.ArgumentParser(prog="python -m study.bench overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="after",
                   help=f"comma-separated, run in this order: {', '.join(VARIANTS)}")
    p.add_argument("--keep", metavar="DIR", help="keep the studies and profiles here")
    p.add_argument("--json", metavar="FILE", help="also write every figure here")
    args, study_argv = p.parse_known_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    study_argv = study_argv or ["--space", "digits"]
    root = args.keep or tempfile.mkdtemp(prefix="overhead-")
    imports = import_seconds()
    print(f"study: {' '.join(study_argv)}; imports of a new worker: {imports:.2f} s",
          flush=True)
    measured = []
    try:
        for v in variants:
            measured.append(measure(v, study_argv, root, imports))
            print(f"{v}: done, {measured[-1]['driver']['wall']:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(measured))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"study": study_argv, "imports": imports, "measured": measured}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
