"""Run a study: connect to Ray, build the Tuner (Optuna TPE + ASHA), fit or resume, summarise."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from study import layout, storage
from study.capacity import Capacity, read_capacity
from study.errors import StudyError
from study.interrupt import StudyInterrupted, graceful_stop, reassert
from study.race import DEFAULTS, base_seed, decide, same_config, selection_seeds
from study.spaces import Space, load_space
from trainer import rundir
from trainer.data.survey import fingerprint, is_dataset_path
from trainer.methods import METHODS

# Ray gives a node the loopback address (and its servers listen on loopback only) when
# this is "0", as it does on macOS and Windows. Read when Ray is imported, so it is set
# before that, and only for a local instance: a driver joining a cluster needs its real IP.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Each Tune checkpoint is copied into the study's storage with the trial's run directory,
# and every second one per trial forces Tune to snapshot the whole experiment, which grows
# with the study's trials (docs/performance.md, "Ten thousand trials"). A crashed trial
# loses at most this much training; the digits main job's trials, of seconds, checkpoint
# only at their end.
CHECKPOINT_EVERY_S = 30.0
# What the searcher and ASHA optimise: the trainer's validation score (the mean validation
# accuracy of the second half of the evaluations, trainer.loop.selection_score). Nothing they read
# depends on the test set.
METRIC, MODE = "val_score", "max"
SEARCHERS = ("tpe", "random")


@dataclass(frozen=True)
class StudyOptions:
    """Everything a study needs, validated once in study/cli.py."""

    space: str
    name: str
    dataset: str | None = None  # your data's absolute path, in place of the space's dataset
    storage_path: str = "./studies"
    address: str | None = None
    resume: bool = False
    mode: str = "search"  # search | reproduce | ablation
    num_samples: int = 16
    scheduler: str = "asha"
    searcher: str = "tpe"  # tpe | random (Optuna's samplers)
    gpus_per_trial: float | None = None  # None: the space's default when GPUs exist, else 0
    cap_gpu_memory: bool = True  # a trial with a GPU fraction caps its allocator at it
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int = 2
    # A trial's report carries a Tune checkpoint at most this often (and always its last):
    # what a retried trial resumes from (study/trainable.py). 0: at every evaluation.
    checkpoint_every: float = CHECKPOINT_EVERY_S
    seed: int = 0  # the searcher's seed; it also picks the search's and the race's trainer seeds
    seeds: int = 3  # runs per configuration in reproduce/ablation modes
    # After a search, its best race_finalists and the defaults train at full length on
    # race_seeds seeds of their own (study/race.py); 0 finalists: no race.
    race_finalists: int = 3
    race_seeds: int = 3
    config_source: str = "best"  # reproduce: the study's best or the paper's defaults
    total_steps: int | None = None  # override the space's steps per trial
    test_freq: int | None = None
    data_path: str = "./data"
    device: str = "auto"
    # The trainer's --precision and --compile for every trial. Reproduce and ablation runs
    # default to fp32, as the authors trained, until bf16 is shown on a GPU to give the same
    # pseudo labels and final accuracy (study/cli.py); searches may use bf16.
    precision: str = "auto"
    compile: bool = False
    num_cpus: int | None = None  # a local Ray instance's logical resources
    num_gpus: float | None = None
    verbose: int = 1
    # reproduce with --config best: the configuration the search study chose on validation
    best_config: dict[str, Any] | None = None
    # ...and the search state it was taken from: the search study's name and a digest of its
    # study_summary.json (a resumed reproduce study is refused if the choice changed since)
    source: dict[str, str] | None = None

    @property
    def path(self) -> str:
        return storage.study_path(self.storage_path, self.name)


def check_address(address: str) -> None:
    """HOST:PORT (or ray://HOST:PORT) must accept a TCP connection; Ray itself would retry
    for minutes. 'auto' is left to Ray, which fails at once when it finds no cluster."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as e:
        raise StudyError(f"--address: cannot reach a Ray cluster at {address} ({e}); start "
                         "one (ray up cluster.yaml, or ray start --head) or leave --address "
                         "out to run on a local Ray instance") from e


def connect(opts: StudyOptions) -> None:
    import ray

    # Ray's INFO lines (a local instance started, a token saved, state files written) are
    # not the user's concern unless they ask for Ray's output (--verbose 2).
    quiet = {"log_to_driver": opts.verbose > 1,
             "logging_level": logging.INFO if opts.verbose > 1 else logging.WARNING}
    if opts.address:
        try:
            ray.init(address=opts.address, **quiet)
        except (ConnectionError, RuntimeError) as e:
            raise StudyError(f"--address: could not connect to Ray at {opts.address}: {e}") from e
        return
    # A private local instance: loopback only (see LOCAL_ONLY_ENV), no dashboard. "local"
    # rather than nothing: never join a cluster that `ray start` left on this machine.
    # Ray turns token authentication on for a new local instance, and says so at each start:
    # right for a private instance, and nothing the user need act on.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: "Token authentication is enabled" not in record.getMessage())
    ray.init(address="local", num_cpus=opts.num_cpus, num_gpus=opts.num_gpus,
             include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)


def resources(opts: StudyOptions, space: Space) -> dict[str, float]:
    """CPUs and GPUs per trial, checked against what the cluster's nodes can ever give: the
    nodes alive and the node types its autoscaler may add (study/capacity.py)."""
    capacity = read_capacity()
    per_trial = plan_resources(opts, space, capacity)
    if opts.address:
        print(f"cluster: {capacity.describe()}")
    return per_trial


def plan_resources(opts: StudyOptions, space: Space, capacity: Capacity) -> dict[str, float]:
    """The plan behind resources(): the space's defaults or the options, within the node
    shapes; GPU trials when any node, alive or launchable, has a GPU."""
    most_gpus = capacity.most("GPU")
    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = space.gpus_per_trial if most_gpus else 0.0
    hint = ""
    if capacity.undeclared:
        hint = (f"; node type(s) {', '.join(capacity.undeclared)} declare no resources, so "
                "their GPUs are unknown until one runs: declare `resources` for them in the "
                "cluster config")
    elif capacity.config_path is None and opts.address:
        hint = ("; if the cluster's autoscaler can add such nodes, run the driver on the head "
                "(ray submit, ray job submit), where it reads the autoscaler's node types")
    if gpus > most_gpus:
        raise StudyError(f"--gpus-per-trial: {gpus} GPUs per trial, but no node of this cluster "
                         f"has more than {most_gpus:g}; use at most {most_gpus:g} (fractions "
                         f"pack trials on one GPU){hint}")
    # Only nodes with the trial's GPUs can host it: their CPUs bound the trial's.
    most_cpus = max((s.get("CPU", 0.0) for s in capacity.shapes if s.get("GPU", 0.0) >= gpus),
                    default=0.0)
    if opts.cpus_per_trial is None:  # the space's default, trimmed to fit
        cpus = min(space.cpus_per_trial, most_cpus)
    else:
        cpus = opts.cpus_per_trial
    if not most_cpus:
        raise StudyError(f"this cluster has no node{' with GPUs' if gpus else ''} with CPUs for "
                         f"a trial, alive or launchable{hint}")
    if cpus > most_cpus:
        where = f"with {gpus:g} GPUs " if gpus else ""
        raise StudyError(f"--cpus-per-trial: {cpus} CPUs per trial, but no node {where}has "
                         f"more than {most_cpus:g}{hint}")
    return {"cpu": cpus, "gpu": gpus}


def slots(per_trial: dict[str, float], max_concurrent: int | None = None) -> int:
    """How many trials the cluster's live nodes run at once (at least 1)."""
    import ray

    total = ray.cluster_resources()
    fits = [int(total.get(name, 0.0) // need + 1e-9)
            for name, need in (("CPU", per_trial["cpu"]), ("GPU", per_trial["gpu"])) if need]
    n = max(1, min(fits, default=1))
    return min(n, max_concurrent) if max_concurrent else n


# Tune stages one trial ahead of a searcher, so that it starts a study's workers one after
# the other: each waits for the one before to have started, its imports slowed by the trials
# already training (docs/performance.md, "Per-trial overhead"). Staging as many trials as
# slots starts them together; Tune does the same for a searcher under a ConcurrencyLimiter.
PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def trial_steps(opts: StudyOptions, space: Space) -> int:
    """The length of this study's trials: a search's top rung, or a reproduce run's."""
    return opts.total_steps or (space.total_steps if opts.mode == "search"
                                else space.full.total_steps)


def race_steps(opts: StudyOptions, space: Space) -> int:
    """The race's length: that of the runs --reproduce will make."""
    return opts.total_steps or space.full.total_steps


def racing(opts: StudyOptions) -> bool:
    return opts.mode == "search" and opts.race_finalists > 0


def _base_settings(opts: StudyOptions, space: Space) -> dict[str, Any]:
    """Trainer settings of every trial before its own values and length (run_trial scales
    the schedule to the length: study.spaces.scale_schedule)."""
    base = {"data_path": os.path.abspath(opts.data_path), "device": opts.device,
            "precision": opts.precision, "compile": opts.compile,
            "dataset": space.dataset, **space.fixed, "total_steps": trial_steps(opts, space),
            "full_schedule": asdict(space.full)}
    if opts.mode == "search":  # every search trial on one seed: compared on equal noise
        base.update(test_freq=space.test_freq,
                    seed=selection_seeds(space, opts.seed, opts.race_seeds)[0])
        if racing(opts):
            base["race_steps"] = race_steps(opts, space)
    if opts.test_freq:
        base["test_freq"] = opts.test_freq
    return base


def variants(opts: StudyOptions, space: Space) -> dict[str, dict[str, Any]]:
    """A reproduce study's arms, name -> searched values: tuned (the configuration chosen on
    validation), default, supervised. Tuned is trained even when the search chose the
    paper's values: the paired gain is then a measure of run-to-run noise alone."""
    paper = space.defaults()
    arms = {}
    if opts.config_source == "best":
        arms[layout.TUNED] = dict(opts.best_config or {})
    arms[layout.DEFAULT] = paper
    arms[layout.SUPERVISED] = {**paper, "method": "supervised"}
    return arms


def seeds(opts: StudyOptions, space: Space) -> list[int]:
    """Reproduce and ablation seeds: the paper's seed of the dataset, then the next ones
    (never those of a search or its race, study/race.py)."""
    first = base_seed(space)
    return [first + i for i in range(opts.seeds)]


def _param_space(opts: StudyOptions, space: Space) -> dict[str, Any]:
    from ray import tune

    if opts.mode == "search":
        return space.tune_space()
    if opts.mode == "ablation":
        return {**space.defaults(),
                "method": tune.grid_search(list(METHODS)),
                "seed": tune.grid_search(seeds(opts, space))}
    # The same seeds for every arm: the tuning gain is a difference paired over seeds.
    return {"variant": tune.grid_search(list(variants(opts, space))),
            "seed": tune.grid_search(seeds(opts, space))}


# A folder's fingerprint walks every file: once per driver, for study.json and the trials.
_fingerprint = functools.lru_cache(maxsize=4)(fingerprint)


def data_record(space: Space) -> dict[str, Any]:
    """study.json's record of data of your own: its path and fingerprint, which every trial
    checks against the copy on its node."""
    if not is_dataset_path(space.dataset):
        return {}
    return {"data": {"path": space.dataset, "fingerprint": _fingerprint(space.dataset)}}


def trial_base(opts: StudyOptions, space: Space, per_trial: dict[str, float]) -> dict[str, Any]:
    """What every trial gets besides its sampled values: trainer settings, and the keys
    run_trial takes out first (`gpu_share`: cap the GPU memory; `variants`: reproduce arms;
    `full_schedule`, `race_steps`: the schedule and the race's length; `checkpoint_every`:
    how often its reports carry a checkpoint)."""
    base = _base_settings(opts, space)
    base["checkpoint_every"] = opts.checkpoint_every
    if opts.cap_gpu_memory and 0 < per_trial["gpu"] < 1:
        base["gpu_share"] = per_trial["gpu"]  # study/gpu_share.py
    if opts.mode == "reproduce":
        base["variants"] = variants(opts, space)
    if is_dataset_path(space.dataset):
        base["data_fingerprint"] = _fingerprint(space.dataset)  # study/trainable.py checks it
    return base


def build_tuner(opts: StudyOptions, space: Space, per_trial: dict[str, float],
                trial_function=None, timing=None):
    """The study's Tuner. `trial_function(config, base)` is what each trial runs: the
    trainer (study.trainable.run_trial), or for the replay's check a recorded table
    (study.bench.replay.table_trial). `timing` (study.bench.overhead.DriverTiming) times
    the driver's callbacks and searcher."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from study.console import Console, NoTensorBoardCopy, trial_dirname
    from study.fatal import FatalWatch
    from study.trainable import run_trial
    from study.trust import SealCallback

    trainable = tune.with_resources(
        tune.with_parameters(trial_function or run_trial,
                             base=trial_base(opts, space, per_trial)), per_trial)
    if opts.resume:
        return tune.Tuner.restore(opts.path, trainable, resume_unfinished=True,
                                  resume_errored=True)
    watch = FatalWatch(opts.path)  # restored with the study when it resumes
    race = racing(opts)
    shown = [Console(opts.name, planned_trials(opts, space), trial_steps(opts, space),
                     race_steps(opts, space) if race else None,
                     (opts.race_finalists + 1) * opts.race_seeds if race else 0)
             ] if opts.verbose else []
    search_alg = scheduler = None
    num_samples = 1
    if opts.mode == "search":
        import optuna

        from study.search import RaceAwareASHA, RaceSearch, make_searcher

        if opts.verbose < 2:  # "A new study created in RDB": the console says what matters
            optuna.logging.set_verbosity(optuna.logging.WARNING)

        total = trial_steps(opts, space)
        search_alg = make_searcher(space, METRIC, MODE, opts.path, opts.name, opts.seed,
                                   opts.max_concurrent, total, opts.num_samples,
                                   opts.searcher)
        num_samples = opts.num_samples
        if racing(opts):
            race_seeds = selection_seeds(space, opts.seed, opts.race_seeds)[1]
            search_alg = RaceSearch(search_alg, opts.num_samples, opts.race_finalists,
                                    race_seeds, space.defaults(), opts.max_concurrent)
            num_samples += (opts.race_finalists + 1) * opts.race_seeds
        if opts.scheduler == "asha":
            scheduler = RaceAwareASHA(time_attr="step", max_t=total,
                                      grace_period=min(space.grace_steps, total),
                                      reduction_factor=space.reduction_factor)
    scheduler = scheduler or FIFOScheduler()
    callbacks = [watch, *([] if storage.is_uri(opts.path) else [SealCallback(opts.path)]),
                 NoTensorBoardCopy(), *shown]
    if timing is not None:
        callbacks, search_alg = timing.wrap(callbacks, search_alg)
    return tune.Tuner(
        trainable,
        param_space=_param_space(opts, space),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples,
            # A worker process serves trial after trial: torch is imported once per slot,
            # not once per trial (seconds each, on short trials most of their time).
            reuse_actors=True, trial_dirname_creator=trial_dirname,
            max_concurrent_trials=opts.max_concurrent if opts.mode != "search" else None),
        run_config=tune.RunConfig(
            name=opts.name, storage_path=opts.storage_path if storage.is_uri(
                opts.storage_path) else os.path.abspath(opts.storage_path),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=callbacks,
            # Ray's tables and result boxes only on request: the study has its own console
            verbose=3 if opts.verbose > 1 else 0),
    )


def opening(opts: StudyOptions, space: Space, per_trial: dict[str, float]) -> str:
    """What the study is about to do, and where to watch it live (README, "Watching a study")."""
    steps = trial_steps(opts, space)
    if opts.mode == "search":
        searcher = "TPE" if opts.searcher == "tpe" else "random search"
        what = (f"search of {opts.num_samples} trials ({searcher}, {opts.scheduler.upper()} up "
                f"to {steps} steps)")
        if racing(opts):
            what += (f", then a race of {opts.race_finalists} finalist"
                     f"{'s' if opts.race_finalists > 1 else ''} and the defaults on "
                     f"{opts.race_seeds} seeds at {race_steps(opts, space)} steps")
    else:
        arms = list(METHODS) if opts.mode == "ablation" else list(variants(opts, space))
        what = (f"{opts.mode} of {len(arms)} arms ({', '.join(arms)}) x {opts.seeds} seeds at "
                f"{steps} steps")
    share = f"{per_trial['cpu']:g} CPU" + (f" and {per_trial['gpu']:g} GPU"
                                           if per_trial["gpu"] else "")
    lines = [f"study {opts.name}: {what}; {share} per trial"]
    if not storage.is_uri(opts.path):
        views = ([f"optuna-dashboard sqlite:///{opts.path}/{layout.OPTUNA_DB}"]
                 if opts.mode == "search" else []) + [f"tensorboard --logdir {opts.path}"]
        lines.append("watch it live: " + " · ".join(views))
    return "\n".join(lines)


def _run_summary(trial_path: str) -> dict[str, Any] | None:
    """The trainer's summary.json of a trial on local storage, if it wrote one."""
    path = os.path.join(trial_path, rundir.RUN_DIR, rundir.SUMMARY)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def chosen_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The selection rule: the highest val_score among completed (full-length) trials;
    among trials stopped early only when none completed; None when nothing has a score."""
    scored = [t for t in trials if t["val_score"] is not None
              and t["status"] in ("completed", "stopped_early")]
    full = [t for t in scored if t["status"] == "completed"] or scored
    return max(full, key=lambda t: t["val_score"], default=None)


def summarise(opts: StudyOptions, space: Space, results, wall_seconds: float) -> dict[str, Any]:
    """study_summary.json: trial counts by outcome and the configuration chosen on validation.

    Without a race, the chosen configuration is the completed (full-length) search trial
    with the highest final validation score (trials stopped early compete only when none
    completed). With a race, it is the race's decision (study.race.decide). Test accuracy
    is recorded beside it and never read to choose.
    """
    trials = [_trial_record(opts, space, r) for r in results]
    search = [t for t in trials if t["phase"] != "race"]
    best = chosen_trial(search)
    race = race_summary(trials, search, space) if racing(opts) else None
    chosen = {"config": best["config"] if best else None,
              "val_score": best["val_score"] if best else None,
              "test": best["final_test_accuracy"] if best else None,
              "trial": best["trial_id"] if best else None}
    if race is not None:  # the race decides; where it could not run, the defaults stand
        entrant = race["entrants"].get(race["decision"]["choice"],
                                       {"config": space.defaults(), "race_mean": None})
        trial = next((t for t in search if t["trial_id"] == entrant.get("search_trial_id")),
                     {})
        chosen = {"config": entrant["config"], "val_score": entrant["race_mean"],
                  "test": trial.get("final_test_accuracy"), "trial": trial.get("trial_id")}
    among = ("the race: the defaults and the best search trials at full length on seeds of "
             "their own" if race is not None
             else "completed trials" if best and best["status"] == "completed"
             else "trials stopped early (none completed)")
    return {
        "name": opts.name, "space": space.name, "mode": opts.mode, "path": opts.path,
        "selection": {"metric": METRIC, "split": "validation", "num_val": space.fixed["num_val"],
                      "among": among},
        "num_trials": len(trials),
        "num_search_trials": len(search),
        "num_race_trials": len(trials) - len(search),
        "num_completed": sum(t["status"] == "completed" for t in trials),
        "num_stopped_early": sum(t["status"] == "stopped_early" for t in trials),
        "num_errored": sum(t["status"] == "error" for t in trials),
        "num_diverged": sum(t["status"] == "diverged" for t in trials),
        "best_config": chosen["config"],
        "best_val_score": chosen["val_score"],
        "best_trial_test_accuracy": chosen["test"],
        "best_trial_id": chosen["trial"],
        "race": race,
        "wall_seconds": wall_seconds, "trials": trials,
    }


def _trial_record(opts: StudyOptions, space: Space, r) -> dict[str, Any]:
    """One trial of the summary: its outcome and figures, from Tune and the trainer's files."""
    m = dict(r.metrics or {})
    config = dict(r.config or {})
    phase = config.pop("phase", "search" if opts.mode == "search" else opts.mode)
    entrant = config.pop("entrant", None)
    total = race_steps(opts, space) if phase == "race" else trial_steps(opts, space)
    run = _run_summary(r.path)
    if run and run.get("status") == "completed" and not r.error:
        # The trainer's own record wins: a trial restored (by a resumed study) from its
        # final checkpoint reports nothing more, and Tune's last result may be older.
        m.update(step=run["steps"], best_test_accuracy=run["best_test_accuracy"],
                 test_accuracy=run["final_test_accuracy"])
        if "final_val_score" in run:
            m.update(val_score=run["final_val_score"], val_accuracy=run["final_val_accuracy"])
    steps = int(m.get("step", 0))
    if r.error:
        status = "error"
    elif m.get("diverged"):  # the trainable ended it: NaN/inf loss, see run/summary.json
        status = "diverged"
    else:
        status = "stopped_early" if total and steps < total else "completed"
    number = layout.TRIAL_DIR.search(os.path.basename(r.path or ""))
    return {"trial_id": m.get("trial_id") or (r.config or {}).get("trial_id"),
            "number": int(number.group(2)) if number else None, "phase": phase,
            "entrant": entrant, "status": status, "steps": steps,
            "error": str(r.error).strip().splitlines()[-1][:300] if r.error else None,
            "val_score": m.get("val_score"),
            "final_val_accuracy": m.get("val_accuracy"),
            "final_test_accuracy": m.get("test_accuracy"),
            "best_test_accuracy": m.get("best_test_accuracy"),
            "config": config, "path": r.path}


def race_summary(trials: list[dict[str, Any]], search: list[dict[str, Any]],
                 space: Space) -> dict[str, Any]:
    """The race as it ran: each entrant's configuration, its search trial, its validation
    score per race seed, and the decision. Only validation scores are read."""
    names = list(space.defaults())
    entrants: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t["phase"] != "race":
            continue
        e = entrants.setdefault(t["entrant"], {
            "config": {k: t["config"][k] for k in names}, "val_scores": {}, "failed": []})
        if t["status"] == "completed" and t["val_score"] is not None:
            e["val_scores"][int(t["config"]["seed"])] = float(t["val_score"])
        else:
            e["failed"].append(int(t["config"]["seed"]))
    for e in entrants.values():
        match = next((t for t in search if same_config(
            {k: t["config"].get(k) for k in names}, e["config"])), None)
        if match is not None:  # the defaults' trial may be missing where a resume lost it
            e.update(search_trial_id=match["trial_id"], search_val_score=match["val_score"],
                     search_steps=match["steps"])
    num_val = space.fixed.get("num_val") or 0
    decision = decide({n: e["val_scores"] for n, e in entrants.items()},
                      resolution=1.0 / num_val if num_val else 0.0).to_dict()
    for name, e in entrants.items():
        e["race_mean"] = decision["means"].get(name)
    # JSON keys are strings: the seeds of each entrant's scores become text
    for e in entrants.values():
        e["val_scores"] = {str(k): v for k, v in sorted(e["val_scores"].items())}
    order = sorted(entrants, key=lambda n: (n != DEFAULTS, n))
    return {"entrants": {n: entrants[n] for n in order}, "decision": decision}


def reconcile(opts: StudyOptions, results) -> dict[str, Any]:
    """Account for what a driver killed mid-study left behind, once the study has finished.

    Tune restores a study from its last snapshot: a trial created after it was created again
    under a new id, and its first folder (never finished, known to no result) is moved into
    `orphaned/`, kept rather than deleted. Optuna trials asked for such trials stay RUNNING
    in optuna.db; they are told FAIL, so that Optuna's own tools count each trial once.
    """
    moved, failed = [], 0
    if storage.is_uri(opts.path):
        return {"orphaned_trial_dirs": moved, "optuna_orphans_failed": failed}
    known = {os.path.basename(r.path.rstrip("/")) for r in results}
    for name in sorted(os.listdir(opts.path)):
        if layout.is_trial_folder(name) and name not in known and os.path.isdir(
                os.path.join(opts.path, name)):
            os.makedirs(os.path.join(opts.path, "orphaned"), exist_ok=True)
            os.replace(os.path.join(opts.path, name), os.path.join(opts.path, "orphaned", name))
            moved.append(name)
    db = os.path.join(opts.path, layout.OPTUNA_DB)
    if opts.mode == "search" and os.path.isfile(db):
        import optuna

        study = optuna.load_study(study_name=opts.name, storage=f"sqlite:///{db}")
        for t in study.get_trials(deepcopy=False,
                                  states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            failed += 1
    return {"orphaned_trial_dirs": moved, "optuna_orphans_failed": failed}


def protocol(opts: StudyOptions, space: Space) -> dict[str, Any]:
    """How this study's numbers are obtained, in words, for study.json and its readers."""
    return {
        "validation": f"{space.fixed['num_val']} class-balanced training images held out "
                      + ("of the labeled budget" if space.fixed.get("val_from_labeled")
                         else "beside the labeled set"),
        "selects_on": f"{METRIC}: the mean validation accuracy of the second half of the "
                      "evaluations (searcher, ASHA, the race and the chosen configuration)",
        "test_set": "recorded for every trial; nothing that selects reads it",
        "stopped_early": "told to Optuna as PRUNED with their intermediate values",
        "precision": opts.precision,
        "seeds": seeds(opts, space) if opts.mode != "search" else None,
        **(_search_protocol(opts, space) if opts.mode == "search" else {}),
    }


def _search_protocol(opts: StudyOptions, space: Space) -> dict[str, Any]:
    search_seed, race_seeds = selection_seeds(space, opts.seed, opts.race_seeds)
    steps, full = trial_steps(opts, space), space.full.total_steps
    out: dict[str, Any] = {
        "search_seed": search_seed,
        "trial_length": f"{steps} steps" + ("" if steps == full else
                                            f" of the full {full}, warm-up and milestones "
                                            "scaled by the same factor"),
    }
    if racing(opts):
        out.update(race_seeds=race_seeds, race=(
            f"the defaults and the {opts.race_finalists} best search trials train "
            f"{race_steps(opts, space)} steps on each race seed; a finalist replaces the "
            "defaults only when its mean validation advantage, paired over the seeds, exceeds "
            "one validation image and the one-sided t threshold (docs/selection.md)"))
    return out


def planned_trials(opts: StudyOptions, space: Space) -> int:
    """The trials this study makes: a search's samples and its race, or arms x seeds."""
    if opts.mode == "search":
        return opts.num_samples + ((opts.race_finalists + 1) * opts.race_seeds
                                   if racing(opts) else 0)
    arms = len(METHODS) if opts.mode == "ablation" else len(variants(opts, space))
    return arms * opts.seeds


def trial_bytes(space: Space) -> int:
    """The disk one trial of this space needs in the study's storage (storage.trial_bytes)."""
    from trainer import resolve

    cfg = resolve(space.trainer_settings(space.defaults()))
    return storage.trial_bytes(cfg.architecture, cfg.dataset)


def _stopped(opts: StudyOptions) -> dict[str, str] | None:
    """Why FatalWatch stopped the study, if it did (study/fatal.py): its record in the study
    directory, or where the storage was full, in the driver's fallback file."""
    from study.fatal import STOPPED_FILE, fallback_file

    if storage.exists(opts.path + "/" + STOPPED_FILE):
        return storage.get_json(opts.path + "/" + STOPPED_FILE)
    if os.path.exists(fallback_file()):
        why = storage.get_json(fallback_file())
        os.unlink(fallback_file())
        return why
    return None


def _disk_full(error: BaseException) -> str | None:
    """What a driver error says of a full disk, if it is one: an OSError of a full disk, or
    SQLite's "database or disk is full" (optuna.db), anywhere in its chain of causes."""
    import sqlite3

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in rundir.DISK_FULL:
            return (f"writing {error.filename}: {error.strerror}" if error.filename
                    else str(error.strerror or error))
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
            return f"Optuna could not write optuna.db ({error})"
        error = error.__cause__ or error.__context__
    return None


def _full_storage(opts: StudyOptions, space: Space, what: str) -> rundir.DiskFull:
    """The driver's error for a storage that filled during the study: what could not be
    written, and the room that the trials not completed yet need."""
    per_trial = trial_bytes(space)
    completed = 0 if storage.is_uri(opts.path) else sum(
        (_run_summary(os.path.join(opts.path, d)) or {}).get("status") == "completed"
        for d in os.listdir(opts.path))
    left = max(planned_trials(opts, space) - completed, 1)
    return rundir.DiskFull(errno.ENOSPC, (
        f"{what}. A trial keeps about {rundir.size_text(per_trial)} there (checkpoints and "
        f"logs); the {left} trials not completed need up to "
        f"{rundir.size_text(left * per_trial)}. What the study wrote before is intact: free "
        "the room, then resume with --resume"))


def _stop_error(opts: StudyOptions, space: Space, why: dict[str, str]) -> Exception:
    """The driver's error for a study that FatalWatch stopped (study/fatal.py)."""
    if why.get("kind") == "storage_full":
        return _full_storage(opts, space, f"trial {why['trial_id']} stopped the study: "
                                          f"{why['message']}")
    return StudyError(
        f"trial {why['trial_id']} failed with an error that no retry can change, so the "
        f"study stopped: {why['message']}. Fix that, then resume with --resume")


@contextlib.contextmanager
def _environ(**values: str):
    """These environment variables while the block runs, then as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_study(opts: StudyOptions, trial_function=None, timing=None) -> dict[str, Any]:
    """Validate against the cluster, run (or resume) the study, write study_summary.json.
    `trial_function`: what each trial runs, the trainer by default; `timing`: see
    build_tuner."""
    import ray

    space = load_space(opts.space, opts.dataset)
    trusted = {}
    if opts.resume and not storage.is_uri(opts.path):
        # Before Ray unpickles anything of the study: only sealed state is left in place.
        from study.trust import verify  # imports Ray: after LOCAL_ONLY_ENV is set

        trusted = verify(opts.path)
        for kind, files in trusted.items():
            if files:
                print(f"resume: {kind.replace('_', ' ')}: {', '.join(files)}")
    stop = contextlib.ExitStack()
    received = stop.enter_context(graceful_stop())
    try:
        connect(opts)
        from study.fatal import STOPPED_FILE, fallback_file  # imports Ray: after connect()
        reassert()  # after ray.init(), whose own SIGTERM handler would exit at once
        per_trial = resources(opts, space)
        if opts.verbose:
            print(opening(opts, space, per_trial), flush=True)
        if not opts.resume:
            storage.put_json(f"{opts.path}/{layout.STUDY_FILE}", {
                "format": layout.STUDY_FORMAT, "options": asdict(opts),
                "space": space.to_dict(),
                "resources": per_trial, "protocol": protocol(opts, space), **data_record(space)})
        if not storage.is_uri(opts.storage_path):
            # Tune warns at every forced snapshot (num_to_keep makes them frequent); on a
            # local disk they cost nothing, so the warning is noise in the progress display.
            os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
                                  "0")
        with contextlib.ExitStack() as stack:
            if not storage.is_uri(opts.path):
                from study.trust import sealing_snapshots

                stack.enter_context(sealing_snapshots(opts.path))
            storage.remove(opts.path + "/" + STOPPED_FILE)  # the last stop's, fixed since
            storage.remove(fallback_file())
            if opts.verbose < 2:
                # Tune's newer output engine prints its experiment box and a TensorBoard
                # path of its own (not the study's) at any verbosity; the older one is silent
                # at 0, and the one Tune uses in notebooks anyway.
                stack.enter_context(_environ(RAY_AIR_NEW_OUTPUT="0"))
            if PENDING_ENV not in os.environ:  # the user's own setting wins
                stack.enter_context(_environ(**{
                    PENDING_ENV: str(slots(per_trial, opts.max_concurrent))}))
            tuner = build_tuner(opts, space, per_trial, trial_function, timing)
            t0 = time.perf_counter()
            try:
                results = tuner.fit()
            except Exception as e:  # Tune stops on an error of the driver's own
                full = _disk_full(e)
                if full is None:
                    raise
                raise _full_storage(opts, space, f"the study's storage {opts.storage_path} "
                                                 f"is full: {full}") from e
        why = _stopped(opts)
        if why is not None:
            raise _stop_error(opts, space, why)
        if received:
            # Not finished: no summary (nothing reads the study as finished), and no
            # reconciling (its cut-off trials are to continue on --resume, not fail).
            raise StudyInterrupted(received[0])
        summary = summarise(opts, space, results, time.perf_counter() - t0)
        summary.update(reconcile(opts, results), **trusted)
        storage.put_json(f"{opts.path}/{layout.SUMMARY_FILE}", summary)
        return summary
    except KeyboardInterrupt:  # a second signal, or one outside Tune's fit()
        raise StudyInterrupted(received[0] if received else signal.SIGINT) from None
    finally:
        ray.shutdown()
        stop.close()
