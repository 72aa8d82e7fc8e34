"""`python study/run.py`: parse and validate a study's options, run it, print the outcome."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sys

from study import layout, storage
from study.capacity import local_capacity
from study.driver import (
    CHECKPOINT_EVERY_S,
    LOCAL_ONLY_ENV,
    SEARCHERS,
    StudyOptions,
    check_address,
    plan_resources,
    planned_trials,
    run_study,
    trial_bytes,
    variants,
)
from study.errors import StudyError
from study.interrupt import StudyInterrupted, graceful_stop
from study.lock import StudyLocked, claim, refuse_existing
from study.printout import print_summary
from study.race import SEED_BLOCK, selection_seeds
from study.spaces import SpaceError, available, load_space
from trainer.config import DEVICES, PRECISIONS
from trainer.data import DatasetCorrupt, DatasetMissing, fetch, require_files
from trainer.data.survey import dataset_name
from trainer.rundir import DISK_FULL, DiskFull
from trainer.settings import resolve

# Options fixed when a study starts and taken from its study.json on --resume.
SHAPE_OF_A_STUDY = ("space", "dataset", "mode", "num_samples", "scheduler", "searcher", "seed",
                    "seeds", "config_source", "total_steps", "test_freq", "max_concurrent",
                    "best_config", "race_finalists", "race_seeds")

MODES_HELP = """modes:
  (default)       search: Optuna TPE over the space, ASHA early stopping, both reading only
                  the validation score; then the race: the best trials and the paper's
                  defaults at full length on seeds of their own, where a finalist replaces
                  the defaults only when it beats them by more than the noise; the test set
                  is recorded, never selected on
  --reproduce N   at full length, N seeds each: the configuration chosen on validation, the
                  paper's defaults and the supervised baseline (--config paper: no tuned arm)
  --then-reproduce N
                  the search, then --reproduce N: the whole pipeline in one command
  --ablation N    the trainer's four methods (supervised, mixup, meta, metasemi), N seeds each
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python study/run.py", epilog=MODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Hyperparameter study of MetaSemi with Ray Tune and Optuna.")
    a = p.add_argument
    a("--space", default="digits", help=f"a space of study/spaces ({', '.join(available())}) "
                                        "or the path of a .toml file (default digits)")
    a("--dataset", metavar="PATH",
      help="your own data (an image folder tree or an .npz file, docs/own-data.md) in place "
           "of the space's dataset; with --space custom, the template for data of your own")
    a("--name", help="study name (default: the space's name, or your data's folder or file "
                     "name with --space custom; -reproduce/-ablation appended)")
    a("--storage-path", default="./studies",
      help="where studies live: a folder, or a shared URI such as s3://bucket/studies")
    a("--address", help="a running Ray cluster (auto after ray up); default: a local instance "
                        "on 127.0.0.1, started and stopped here")
    a("--resume", action="store_true", help="continue the interrupted study of this name")
    a("--num-samples", type=int, default=16, help="trials to sample (search mode)")
    a("--scheduler", choices=("asha", "fifo"), default="asha")
    a("--searcher", choices=SEARCHERS, default="tpe",
      help="Optuna's sampler: tpe (default) or random search")
    a("--gpus-per-trial", type=float, help="fractional GPUs per trial (0.25 packs four on a "
                                           "GPU); default: the space's when there are GPUs")
    a("--no-gpu-memory-cap", dest="cap_gpu_memory", action="store_false",
      help="let a trial with a GPU fraction use any of the GPU's memory (by default its "
           "PyTorch allocator is capped at its share, less a margin for the CUDA context)")
    a("--cpus-per-trial", type=float)
    a("--max-concurrent", type=int, help="at most this many trials at once")
    a("--max-failures", type=int, default=2, help="retries of a crashed trial, each from its "
                                                  "last checkpoint")
    a("--checkpoint-every", type=float, default=CHECKPOINT_EVERY_S, metavar="SECONDS",
      help="a trial's reports carry a checkpoint (what a retry resumes from) at most this "
           f"often, and always its last (default {CHECKPOINT_EVERY_S:g}; 0: every evaluation)")
    a("--seed", type=int, default=0,
      help="the Optuna sampler's seed; it also picks the search's and the race's trainer "
           "seeds (never those of --reproduce)")
    a("--race-finalists", type=int, default=3, metavar="K",
      help="after the search, its K best trials race the paper's defaults at full length "
           "(default 3; 0: no race, the best search trial is chosen)")
    a("--race-seeds", type=int, default=3, metavar="S",
      help="seeds of the race, shared by its entrants (default 3, at least 2)")
    a("--reproduce", type=int, metavar="N",
      help="the chosen and default configurations and the supervised baseline at full "
           "length, N seeds each")
    a("--then-reproduce", type=int, metavar="N",
      help="after the search, run --reproduce N (search, then reproduce, in one command)")
    a("--config", choices=("best", "paper"), default="best",
      help="with --reproduce: best (the configuration the search chose on validation, beside "
           "the paper's defaults) or paper (the paper's defaults only)")
    a("--ablation", type=int, metavar="N", help="the four methods, N seeds each")
    a("--steps-per-trial", type=int, help="override the steps of every trial")
    a("--test-freq", type=int, help="override the evaluation/report interval")
    a("--data-path", default="./data", help="dataset folder on every node")
    a("--download", action="store_true",
      help="fetch the space's dataset into --data-path before the study starts (on this "
           "machine: a cluster's nodes need the files in their own --data-path)")
    a("--device", choices=DEVICES, default="auto")
    a("--precision", choices=PRECISIONS,
      help="trainer precision: auto = bf16 autocast on CUDA, fp32 on CPU (the default of a "
           "search); reproduce and ablation runs default to fp32, as the authors trained")
    a("--compile", action="store_true", help="compile each trial's model (torch.compile)")
    a("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    a("--num-gpus", type=float, help="GPUs of the local Ray instance (default: detected)")
    a("--verbose", type=int, choices=(0, 1, 2), default=1,
      help="0: only the summary at the end; 1 (default): a line per trial start and end "
           "and a status line; 2: also Ray's own tables, result boxes and log lines")
    return p


def options_from_args(args: argparse.Namespace) -> StudyOptions:
    """Check every option, the space, the storage and the cluster address; no trial runs yet."""
    _check_numbers(args)
    mode = _mode(args)
    space = load_space(args.space, args.dataset)
    try:
        selection_seeds(space, args.seed, args.race_seeds)
    except ValueError as e:
        raise StudyError(str(e)) from e
    search_name = _check_name(args.name or (dataset_name(space.dataset) if args.dataset
                                            else space.name))
    name = search_name if mode == "search" else f"{search_name}-{mode}"
    opts = StudyOptions(
        space=space.path, dataset=space.dataset if args.dataset else None,
        name=name, storage_path=args.storage_path, address=args.address,
        resume=args.resume, mode=mode, num_samples=args.num_samples, scheduler=args.scheduler,
        gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
        cap_gpu_memory=args.cap_gpu_memory,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures, seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        seeds=args.reproduce or args.ablation or 3, config_source=args.config,
        race_finalists=args.race_finalists, race_seeds=args.race_seeds,
        total_steps=args.steps_per_trial, test_freq=args.test_freq, data_path=args.data_path,
        device=args.device, compile=args.compile, searcher=args.searcher,
        # fp32 for the runs a table reports, until bf16 is shown equal on a GPU
        precision=args.precision or ("auto" if mode == "search" else "fp32"),
        num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        verbose=args.verbose)

    storage.check_writable(args.storage_path)
    arms = len(variants(dataclasses.replace(opts, config_source="best"), space))
    trials = planned_trials(opts, space) + arms * (args.then_reproduce or 0)
    storage.check_free_space(args.storage_path, trials * trial_bytes(space))
    cfg = resolve(space.trainer_settings(space.defaults()))
    if not args.address and not args.download:
        # A local study's trials read this machine's files: a missing dataset would fail
        # every trial on every retry. Refused here, before any directory or Ray.
        try:
            require_files(cfg.dataset, args.data_path)
        except DatasetMissing as e:
            raise StudyError(str(e)) from e
    if not args.address:  # and this machine's CPUs and GPUs, before Ray counts them
        plan_resources(opts, space, local_capacity(args.num_cpus, args.num_gpus))
    if args.resume and args.then_reproduce:  # the search's choice still that reproduced?
        _check_source(args.storage_path, search_name, f"{search_name}-reproduce")
    if args.resume:
        started = _as_started(opts)
        if mode == "reproduce":
            _check_source(args.storage_path, search_name, name)
        return started
    # The study itself is claimed atomically (study/lock.py) just before it runs.
    for path in [opts.path] + ([storage.study_path(args.storage_path, f"{name}-reproduce")]
                               if args.then_reproduce else []):
        if storage.exists(path):
            refuse_existing(path, os.path.basename(path))
    if mode == "reproduce" and args.config == "best":
        opts = dataclasses.replace(opts, best_config=_best_config(args.storage_path,
                                                                  search_name),
                                   source=_search_state(args.storage_path, search_name))
    if args.address:
        check_address(args.address)
    return opts


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts >= 1 (or >= 0), finite resource shares, and one mode per command."""
    def positive(name: str, value, allow_zero: bool = False) -> None:
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise StudyError(f"--{name.replace('_', '-')}: must be "
                             f"{'>= 0' if allow_zero else '>= 1'}, got {value}")

    for name in ("num_samples", "max_concurrent", "reproduce", "then_reproduce", "ablation",
                 "steps_per_trial", "test_freq"):
        positive(name, getattr(args, name))
    positive("max_failures", args.max_failures, allow_zero=True)
    if not (math.isfinite(args.checkpoint_every) and args.checkpoint_every >= 0):
        raise StudyError(f"--checkpoint-every: seconds >= 0 (0: every evaluation), got "
                         f"{args.checkpoint_every}")
    positive("race_finalists", args.race_finalists, allow_zero=True)
    if args.race_finalists and not 2 <= args.race_seeds < SEED_BLOCK:
        raise StudyError(f"--race-seeds: {args.race_seeds}: the race needs at least 2 seeds to "
                         f"measure the noise, and fewer than {SEED_BLOCK}; or --race-finalists "
                         "0 for no race")
    for name in ("reproduce", "then_reproduce", "ablation"):
        if (getattr(args, name) or 0) >= SEED_BLOCK:
            raise StudyError(f"--{name.replace('_', '-')}: at most {SEED_BLOCK - 1} seeds (the "
                             "seeds above them belong to searches and races)")
    positive("seed", args.seed, allow_zero=True)
    for name in ("gpus_per_trial", "cpus_per_trial"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise StudyError(f"--{name.replace('_', '-')}: must be a finite number, got {value}")
    positive("gpus_per_trial", args.gpus_per_trial, allow_zero=True)
    for name in ("gpus_per_trial", "cpus_per_trial", "num_gpus"):
        value = getattr(args, name)
        if value and abs(value * 1e4 - round(value * 1e4)) > 1e-6:
            raise StudyError(f"--{name.replace('_', '-')}: {value:g}: Ray counts resources in "
                             "steps of 0.0001; give a multiple of it, e.g. 0.25 for four "
                             "trials on one GPU")
    if args.cpus_per_trial is not None and not args.cpus_per_trial > 0:
        raise StudyError(f"--cpus-per-trial: must be > 0 (a trial needs a CPU to run on), got "
                         f"{args.cpus_per_trial}")
    if args.gpus_per_trial and args.gpus_per_trial > 1 and args.gpus_per_trial % 1:
        raise StudyError(f"--gpus-per-trial: {args.gpus_per_trial}: above 1 it must be whole "
                         "(Ray shares a GPU only in fractions of one)")
    if sum(bool(m) for m in (args.reproduce, args.ablation, args.then_reproduce)) > 1:
        raise StudyError("--reproduce, --then-reproduce and --ablation: choose one mode per "
                         "command")


def _mode(args: argparse.Namespace) -> str:
    return "reproduce" if args.reproduce else "ablation" if args.ablation else "search"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise StudyError(f"--name: {name!r}: use letters, digits, '.', '_' and '-' (not '.' or "
                         "'..' alone: those name the storage folder or its parent)")
    return name


def _as_started(opts: StudyOptions) -> StudyOptions:
    """A study to resume, with the shape it was started with: this command only runs it."""
    from ray.tune import Tuner

    if not storage.exists(opts.path) or not Tuner.can_restore(opts.path):
        raise StudyError(f"--resume: no study {opts.name!r} to resume at {opts.path}; check "
                         "--name and --storage-path, or drop --resume to start it")
    saved = storage.get_json(f"{opts.path}/{layout.STUDY_FILE}")
    return dataclasses.replace(opts, **shape_of(saved))


def shape_of(study_json: dict) -> dict:
    """The SHAPE_OF_A_STUDY options a study was started with, from its study.json; a key
    added since then is absent (the command's default stands)."""
    saved = dict(study_json["options"])
    if "extra" in saved:  # written before best_config had a field of its own
        saved.setdefault("best_config", (saved.pop("extra") or {}).get("best_config"))
    return {k: saved[k] for k in SHAPE_OF_A_STUDY if k in saved}


def _best_config(storage_path: str, search_name: str) -> dict:
    """The configuration the finished search study chose on validation."""
    summary_path = f"{storage.study_path(storage_path, search_name)}/{layout.SUMMARY_FILE}"
    if not storage.exists(summary_path):
        raise StudyError(f"--reproduce: no finished study {search_name!r} to take the best "
                         f"configuration from ({summary_path} missing); run the search "
                         "first, or pass --config paper")
    best = storage.get_json(summary_path).get("best_config")
    if not best:
        raise StudyError(f"--reproduce: the study {search_name!r} has no best configuration")
    return best


def _search_state(storage_path: str, search_name: str) -> dict[str, str]:
    """Which state of the search a reproduce study is made from: its summary's digest."""
    path = f"{storage.study_path(storage_path, search_name)}/{layout.SUMMARY_FILE}"
    text = json.dumps(storage.get_json(path), sort_keys=True)
    return {"study": search_name, "summary_sha256": hashlib.sha256(text.encode()).hexdigest()}


def _check_source(storage_path: str, search_name: str, reproduce_name: str) -> None:
    """Refuse to resume a reproduce study whose search has since chosen another
    configuration: its finished trials reproduce the old choice."""
    path = storage.study_path(storage_path, reproduce_name)
    summary = f"{storage.study_path(storage_path, search_name)}/{layout.SUMMARY_FILE}"
    if not storage.exists(f"{path}/{layout.STUDY_FILE}") or not storage.exists(summary):
        return  # not started, or the search is to finish first (then it is checked again)
    made = storage.get_json(f"{path}/{layout.STUDY_FILE}")["options"]
    if made.get("config_source") != "best":
        return
    now = storage.get_json(summary).get("best_config")
    if now != made.get("best_config"):
        raise StudyError(
            f"--resume: the reproduce study {reproduce_name!r} was made from the search "
            f"{search_name!r} when it chose {made.get('best_config')}; the search now chooses "
            f"{now}, so its trials reproduce a choice that no longer stands. Move {path} "
            "aside (or delete it) and run the command again to reproduce the new choice")


def _default_name(args: argparse.Namespace) -> str:
    return dataset_name(args.dataset) if args.dataset else load_space(args.space).name


def run_from_args(args: argparse.Namespace) -> dict:
    """Check, run and summarise the study (and the stage after it) that these parsed flags
    describe; returns the last stage's summary. Errors are raised, for main to word."""
    if not args.address and "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    opts = options_from_args(args)
    if args.download:  # once, on this machine, before any trial could race to it
        space = load_space(opts.space, opts.dataset)
        fetch(resolve(space.trainer_settings(space.defaults())).dataset, args.data_path)
    with graceful_stop() as received:  # over the pipeline: no stage after a signal
        summary = _claim_and_run(opts)
        if args.then_reproduce and received:  # the search finished, the signal came after
            stopped = StudyInterrupted(received[0])
            stopped.study = f"{opts.name}-reproduce"
            raise stopped
        if args.then_reproduce and summary["num_errored"] == 0:
            summary = _reproduce_after(args)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_from_args(args)
    except StudyInterrupted as e:
        print(f"interrupted ({e}): the study {getattr(e, 'study', args.name)!r} did not "
              "finish, and nothing after it ran. Finished trials are kept; resume with: "
              f"{resume_command(argv)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before any study started
        print("interrupted (SIGINT) before any study started", file=sys.stderr)
        return 130
    except DiskFull as e:  # its message names what was written and the room needed
        print(f"error: {e.strerror}:\n  {resume_command(argv)}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in DISK_FULL:
            print(f"error: the disk is full ({e.strerror}: {e.filename or args.storage_path}); "
                  "what the study wrote before is intact: free some room, then resume with: "
                  f"{resume_command(argv)}", file=sys.stderr)
            return 1
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StudyError, StudyLocked, SpaceError, DatasetCorrupt) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary["num_errored"] == 0 else 1


def resume_command(argv: list[str] | None) -> str:
    """The command line that resumes this one: the same options and --resume."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "study/run.py", *args,
                       *([] if "--resume" in args else ["--resume"])])


def _reproduce_after(args: argparse.Namespace) -> dict:
    """--then-reproduce: the reproduce study of the search just finished, resumed with it."""
    then = argparse.Namespace(**{**vars(args), "then_reproduce": None,
                                 "reproduce": args.then_reproduce, "config": "best"})
    # A resumed pipeline resumes its reproduce study too, if that had started.
    then.resume = args.resume and storage.exists(storage.study_path(
        args.storage_path, f"{args.name or _default_name(args)}-reproduce"))
    print()
    return _claim_and_run(options_from_args(then))


def _claim_and_run(opts: StudyOptions) -> dict:
    """Run the study as its only driver (study/lock.py), print and return its summary."""
    lock = claim(opts.path, opts.name, opts.resume)
    try:
        summary = run_study(opts)
    except StudyInterrupted as e:
        e.study = opts.name
        raise
    except BaseException:
        if not opts.resume:  # a new study that failed before its first trial: no remains
            _remove_if_unstarted(opts.path)
        raise
    finally:
        lock.release()
    print_summary(summary)
    return summary


def _remove_if_unstarted(path: str) -> None:
    """Delete a study directory (local) that holds no trial folder: nothing of value, and
    left in place it would block the next attempt as "already exists"."""
    if storage.is_uri(path) or not os.path.isdir(path):
        return
    if not any(layout.is_trial_folder(name) for name in os.listdir(path)):
        shutil.rmtree(path, ignore_errors=True)
