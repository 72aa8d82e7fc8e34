"""`python -m trainer`: the authors' train_meta.py / train_baseline.py flags in one command."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from trainer import checkpoint
from trainer.config import DEVICES, MEMORY_FORMATS, META_GRADS, PRECISIONS, Config, ConfigError
from trainer.config_file import read_settings
from trainer.data import DATASETS, FILES, SPLITS, DatasetMissing
from trainer.data.survey import dataset_name, is_dataset_path
from trainer.lock import Locked
from trainer.loop import TrainingDiverged, train
from trainer.methods import METHODS, with_mixup
from trainer.models import ALIASES, MODELS
from trainer.rundir import DiskFull, NotWritable, RunDirTaken, check_writable
from trainer.settings import PRESETS, replace, resolve


def preset(field: str) -> str:
    """What a flag is where it is left out, per dataset: ' (digits 50; cifar10 4000; ...)'."""
    values: dict[str, list[str]] = {}
    for name in sorted(PRESETS, key=lambda n: n != "digits"):  # the default dataset first
        value = PRESETS[name].get(field, getattr(Config, field))
        if isinstance(value, tuple):
            value = list(value)
        values.setdefault(str(value), []).append(name)
    if len(values) == 1:
        return f" (default {next(iter(values))})"
    return " (" + "; ".join(f"{', '.join(names)} {v}" for v, names in values.items()) + ")"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train MetaSemi (or one of its ablations) on one dataset. Every flag left "
                    "out takes the dataset's preset (the paper's settings; small ones for "
                    "digits).")
    a = p.add_argument
    a("--dataset", metavar="NAME|PATH",
      help=f"{', '.join(sorted(DATASETS))} (default: digits, embedded, no download), or the "
           "path of your own data: an image folder tree (train/<class>/..., optional "
           "unlabeled/, val/, test/) or an .npz file (docs/own-data.md)")
    a("--image-size", type=int,
      help="your own data: resize every image to SxS once, at load (default: as stored; "
           "images of different sizes need it)")
    a("--no-flip", action="store_true", default=None,
      help="no random horizontal flips (for digits, text, house numbers; the default for "
           "your data)")
    a("--flip", dest="no_flip", action="store_false", default=None,
      help="random horizontal flips (natural images); for your data, where they are off "
           "by default")
    a("--data-path", help="folder holding the dataset files (default ./data)")
    a("--download", action="store_true", default=None,
      help="download CIFAR/SVHN into --data-path if missing")
    a("--num-label", type=int, help="number of labeled images, a multiple of the class count"
                                   + preset("num_label"))
    a("--labels-per-class", type=int, metavar="N",
      help="instead of --num-label: N labeled images of each class")
    a("--num-val", type=int,
      help="hold out this many class-balanced training images as a validation set (default 0, "
           "the paper's protocol); drawn from outside the labeled set")
    a("--val-from-labeled", action="store_true", default=None,
      help="take the validation images out of the --num-label budget (the realistic protocol)")
    a("--split", choices=SPLITS,
      help="random (default): class-balanced, numpy-seeded; authors: the authors' loader "
           "(Python's random.seed(seed), one shuffle, the first k of each class)")
    a("-a", "--architecture", choices=sorted(MODELS) + sorted(ALIASES),
      help="the network" + preset("architecture") + "; your data: chosen by its size")
    a("--method", choices=list(METHODS),
      help="; ".join(f"{m.name}: {m.about}" for m in METHODS.values()) + " (default: metasemi)")
    a("--mix-up", action="store_true",
      help="the authors' flag: adds mix-up to the method (meta -> metasemi, "
           "supervised -> mixup)")
    a("--meta-grad", choices=META_GRADS,
      help="fd: the authors' finite difference (default); jvp: its limit by forward-mode "
           "differentiation, accurate in bf16; exact: the same limit, second order through the "
           "virtual step")
    a("--alpha", type=float, help="mix-up Beta(alpha, alpha) concentration" + preset("alpha"))
    a("--weight", type=float, help="consistency-loss weight after warm-up" + preset("weight"))
    a("--epsilon", type=float,
      help="finite-difference step, divided by ||g||" + preset("epsilon"))
    a("--total-steps", type=int, help="training steps" + preset("total_steps"))
    a("--batch-size", type=int,
      help="labeled and unlabeled batch size each" + preset("batch_size"))
    a("--lr", type=float,
      help="peak learning rate (also the meta learning rate)" + preset("lr"))
    a("--warmup", type=int,
      help="steps of linear warm-up of lr and consistency weight" + preset("warmup"))
    a("--milestones", help="steps where lr is multiplied by gamma, e.g. '[300000, 350000]'"
                           + preset("milestones"))
    a("--gamma", type=float, help="learning-rate decay at each milestone" + preset("gamma"))
    a("--weight-decay", type=float, help="L2 penalty of SGD" + preset("weight_decay"))
    a("--momentum", type=float, help="SGD momentum" + preset("momentum"))
    a("--seed", type=int, help="seed of the labeled split, the initialisation and the batches"
                               + preset("seed"))
    a("--test-freq", type=int,
      help="evaluate and checkpoint every this many steps" + preset("test_freq"))
    a("--log-freq", type=int, help="progress line every this many steps" + preset("log_freq"))
    a("--device", choices=DEVICES)
    a("--precision", choices=PRECISIONS,
      help="auto (default): bf16 autocast on CUDA, fp32 on CPU; fp32 turns mixed precision off")
    a("--memory-format", choices=MEMORY_FORMATS,
      help="auto (default): channels_last on CUDA, contiguous on CPU")
    a("--compile", action="store_true", default=None,
      help="compile the model with torch.compile (slower start, faster steps)")
    a("--threads", type=int, metavar="N",
      help="torch's CPU threads (default: OMP_NUM_THREADS if set, else the CPUs this process "
           "may use: its affinity and its container's CPU quota)")
    a("--config", metavar="FILE",
      help="start from the settings in FILE: an earlier run's config.json (to run it again) "
           "or a .toml file of name = value settings (names as these flags', with "
           "underscores); flags given here override it")
    a("--save-path", help="run directory (default runs/DATASET-METHOD-seedSEED)")
    a("--resume", help="checkpoint.pt or run directory to continue; its config is reused, "
                       "flags given here override it. With --save-path elsewhere, the run "
                       "continues there and the source is left as it was")
    a("--overwrite", action="store_true",
      help="replace the run that --save-path already holds (its checkpoints, metrics and "
           "TensorBoard logs); without it such a run is refused")
    a("--quiet", action="store_true", help="no progress display")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Turn parsed flags into a validated Config (checkpoint config first when resuming)."""
    return settings_from_args(args)[0]


def settings_from_args(args: argparse.Namespace) -> tuple[Config, list[str]]:
    """The validated Config of these flags, and the notes its start prints: what the
    defaults chose for your data, and why."""
    given = {k: v for k, v in vars(args).items()
             if k not in ("mix_up", "quiet", "overwrite", "config")}
    base: dict = {}
    if args.config and args.resume:
        raise ConfigError("--config and --resume: a resumed run continues with its own "
                          "settings (flags given beside --resume override them); give one")
    if args.config:
        base = read_settings(args.config)
    if args.resume:
        with warnings.catch_warnings():  # train() warns about a fallback, once
            warnings.simplefilter("ignore", checkpoint.CheckpointFallbackWarning)
            base = dict(checkpoint.load_latest(args.resume)[0]["config"])
        base.pop("resume", None)
        if args.save_path is None:
            given["save_path"] = os.path.dirname(os.path.abspath(
                checkpoint.checkpoint_file(args.resume)))
    if args.mix_up:
        method = given.get("method") or base.get("method") or "metasemi"
        given["method"] = with_mixup(method) if method in METHODS else method
    if args.labels_per_class is not None:
        base.pop("num_label", None)  # a resumed run's own count gives way to the per-class one
    merged = {**base, **{k: v for k, v in given.items() if v is not None}}
    cfg = resolve(merged)
    notes = []
    if is_dataset_path(cfg.dataset) and not args.resume:
        cfg, notes = _fit_to_cpu(cfg, merged)
        if "no_flip" not in merged:
            notes.append(FLIP_NOTE if cfg.no_flip else "")
    if args.data_path is not None and cfg.dataset not in FILES:
        what = ("embedded in scikit-learn" if cfg.dataset in DATASETS
                else "read from --dataset PATH")
        raise ConfigError(f"--data-path: {cfg.dataset} is {what} and reads no --data-path; "
                          "leave it out")
    if args.save_path is None and not args.resume:
        name = dataset_name(cfg.dataset) if is_dataset_path(cfg.dataset) else cfg.dataset
        cfg = replace(cfg, save_path=os.path.join("runs", f"{name}-{cfg.method}-seed{cfg.seed}"))
    return cfg, [n for n in notes if n]


# Your data on a CPU: a small network and at most this many steps, a run of minutes (the
# size-based defaults, made for a GPU, took about 2 hours on 2 busy cores for 5,000 images
# of 28 pixels); the note names the flags of the full setting.
CPU_ARCHITECTURE, CPU_STEPS = "digitscnn", 1500


FLIP_NOTE = ("flips: OFF, the default for your data: a flip destroys digits and text, "
             "while leaving it out costs natural images a point or two. --flip turns them "
             "on; a study (--space custom) settles it on validation")


def _fit_to_cpu(cfg: Config, merged: dict) -> tuple[Config, list[str]]:
    """Your data's defaults, made for a GPU, shortened on a CPU unless the network or the
    length was given; the note names what changed and the flags of the full setting."""
    from trainer.device import resolve_device

    if resolve_device(cfg.device).type != "cpu" or {"architecture", "total_steps"} & set(merged):
        return cfg, []
    change = {}
    if cfg.architecture != CPU_ARCHITECTURE:
        change["architecture"] = CPU_ARCHITECTURE
    if cfg.total_steps > CPU_STEPS:
        change["total_steps"] = CPU_STEPS  # the preset's schedule follows it
    if not change:
        return cfg, []
    short = resolve({**merged, **change})
    full = " ".join(f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in change)
    return short, [f"on a CPU: {short.architecture} for {short.total_steps} steps, a run of "
                   f"minutes; the setting for your data's size, made for a GPU: {full}"]


# What a run prints at start: the settings a user most often needs to see, resolved.
SHOWN = ("dataset", "architecture", "method", "num_label", "num_val", "batch_size",
         "total_steps", "test_freq", "lr", "warmup", "milestones", "alpha", "weight",
         "weight_decay", "seed", "image_size", "no_flip")


def describe(cfg) -> str:
    """One line of the run's resolved settings; for data of your own, where they came from."""
    source = ("preset" if cfg.dataset in DATASETS
              else "defaults for your data, from its image size and count")
    shown = ", ".join(f"{k}={getattr(cfg, k)}" for k in SHOWN
                      if k not in ("image_size", "no_flip") or getattr(cfg, k))
    return f"settings ({source}, then your flags): {shown}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, notes = settings_from_args(args)
        check_writable(cfg.save_path, "--save-path")  # before data and model load
        if not args.quiet:
            print(describe(cfg))
            for note in notes:
                print(note)
        summary = train(cfg, show_progress=not args.quiet,
                        existing="overwrite" if args.overwrite else None)
    except (ConfigError, checkpoint.CheckpointError, DatasetMissing, NotWritable,
            RunDirTaken, Locked, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    except DiskFull as e:
        print(f"error: {e.strerror} {cfg.save_path}", file=sys.stderr)
        return 1
    val = (f"final validation accuracy {summary['final_val_accuracy']:.4f}, "
           if "final_val_accuracy" in summary else "")
    print(f"done: {val}final test accuracy {summary['final_test_accuracy']:.4f} "
          f"(error {100 * summary['final_test_error']:.2f}%; best during training "
          f"{summary['best_test_accuracy']:.4f}), {summary['steps']} steps in "
          f"{summary['wall_seconds']:.1f}s -> {cfg.save_path}")
    return 0
