"""The training loop: data, model, evaluation, checkpoints, run directory, reporting hook."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer import checkpoint, rundir
from trainer.config import Config
from trainer.data import DeviceData, IndexStream, augment, check_batch, load_for
from trainer.device import Runtime, resolve_runtime, widen
from trainer.methods import METHODS, images_per_step
from trainer.models import build_model
from trainer.phases import PhaseClock
from trainer.progress import Progress
from trainer.rundir import copy_file, write_csv, write_json
from trainer.step import STAT_NAMES, Batch, consistency_weight, learning_rate, train_step
from trainer.threads import apply as set_threads

# Called at every evaluation with the metrics row and the path of the checkpoint just written.
ReportHook = Callable[[dict[str, float], str], None]


@dataclass(frozen=True)
class RunHooks:
    """Doors through which a caller takes part in a run; the defaults change nothing. The
    reliability tests inject their faults through them (tests/study/faults.py, reached from
    a study by METASEMI_TRIAL_HOOKS): nothing patches the trainer while it runs."""

    # save_checkpoint(path, state): how each checkpoint is written
    save_checkpoint: Callable[[str, dict[str, Any]], None] = checkpoint.save
    # loaded_data(data) -> data: the dataset once loaded, before any step
    loaded_data: Callable[[DeviceData], DeviceData] | None = None


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int = 0, last_good_step: int = 0):
        super().__init__(message)
        self.step, self.last_good_step = step, last_good_step


# Selection reads the mean validation accuracy of the second half of the evaluations so far:
# one small validation set is noisy (100 images: a 1% step per image), and a mean over the
# second half of training ranks configurations more steadily than the last evaluation or the
# last three do. Measured on the recorded tables of the search benchmark
# (docs/search-benchmark.md): it ranked configurations closer to their true error on
# other seeds, and its pick erred less.
SELECTION_FRACTION = 0.5


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: DeviceData, runtime: Runtime,
             batch_size: int = 1000, subset: str = "test"):
    """Mean cross-entropy and accuracy on the test (or validation) images, in eval mode,
    as device tensors."""
    if subset == "test":
        images, labels = data.test_x, data.test_y
    else:  # validation images are training images, seen without augmentation
        images, labels = data.train_x[data.val_index], data.train_y[data.val_index]
    model.eval()
    device = runtime.device
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    for i in range(0, len(labels), batch_size):
        # .to is a no-op for images on the device; host-resident ones come over per batch
        x = images[i:i + batch_size].to(device, non_blocking=True)
        x = runtime.prepare_input(data.normalize(x))
        with runtime.autocast():
            logits = widen(model(x))
        y = labels[i:i + batch_size].to(device, non_blocking=True)
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return loss / len(labels), correct / len(labels)


def selection_score(history: list[dict[str, float]]) -> float:
    """The validation score a study selects on: the mean validation accuracy of the second
    half of the evaluations so far (the last ceil(n / 2) of n)."""
    window = [row["val_accuracy"]
              for row in history[-math.ceil(len(history) * SELECTION_FRACTION):]]
    return sum(window) / len(window)


def draw(stream: IndexStream, data: DeviceData,
         runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The next augmented, normalised batch of a stream and its labels, all on the device."""
    idx = stream.next()
    # Images kept in host memory (too large for the device) are gathered there and copied.
    x = data.train_x[idx].to(runtime.device, non_blocking=True)
    y = data.train_y[idx].to(runtime.device, non_blocking=True)
    x = augment(x, data.spec.crop_padding, data.spec.flip)
    return runtime.prepare_input(data.normalize(x)), y


@dataclass
class Parts:
    """What a run trains: the model, its optimizer, the two index streams, mix-up's Beta, and
    whether the method reads unlabeled batches (looked up once, not at every step)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    labeled: IndexStream
    unlabeled: IndexStream
    beta: torch.distributions.Beta | None
    reads_unlabeled: bool = True

    def next_batch(self, cfg: Config, data: DeviceData, runtime: Runtime) -> Batch:
        """The step's labeled batch and, for a method that reads them, an unlabeled one."""
        x_l, y_l = draw(self.labeled, data, runtime)
        if not self.reads_unlabeled:
            return Batch(x_l, y_l)
        return Batch(x_l, y_l, *draw(self.unlabeled, data, runtime))


def build_parts(cfg: Config, data: DeviceData, runtime: Runtime) -> Parts:
    """A fresh model (seeded by cfg.seed), SGD, the seeded streams and Beta(alpha, alpha)."""
    torch.manual_seed(cfg.seed)
    model = runtime.prepare_model(
        build_model(cfg.architecture, data.spec.channels, data.spec.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    device = runtime.device
    beta = None
    if METHODS[cfg.method].mixup:
        a = torch.tensor(float(cfg.alpha), device=device)
        beta = torch.distributions.Beta(a, a)
    where = data.train_x.device  # the indices live with the images they select
    return Parts(model, optimizer,
                 IndexStream(data.labeled, cfg.batch_size, seed=cfg.seed, device=where),
                 IndexStream(data.unlabeled, cfg.batch_size, seed=cfg.seed + 1, device=where),
                 beta, METHODS[cfg.method].reads_unlabeled)


@dataclass
class Record:
    """What a run has achieved so far; every checkpoint keeps it, a resumed run restores it."""

    step: int = 0
    best: float = 0.0  # the best test accuracy, the authors' (optimistic) convention
    best_step: int = 0
    best_val: float = 0.0
    best_val_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    elapsed_before: float = 0.0  # seconds trained before this process started


def restore(state: dict[str, Any], cfg: Config, parts: Parts,
            device: torch.device) -> Record:
    """Load a checkpoint's model, optimizer, data streams and RNG into `parts`; its record."""
    try:
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise checkpoint.CheckpointError(
            f"resume: {cfg.resume} does not fit a {cfg.architecture} for {cfg.dataset} "
            f"({str(e).splitlines()[0][:200]})") from e
    parts.labeled.load_state_dict(state["streams"]["labeled"])
    parts.unlabeled.load_state_dict(state["streams"]["unlabeled"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return Record(state["step"], state["best_test_accuracy"], state["best_step"],
                  state.get("best_val_accuracy", 0.0), state.get("best_val_step", 0),
                  list(state["history"]), state["elapsed_seconds"])


def save_checkpoint(path: str, cfg: Config, parts: Parts, record: Record,
                    split_digests: dict[str, str], device: torch.device,
                    save: Callable[[str, dict[str, Any]], None] = checkpoint.save) -> None:
    """The whole training state at record.step: enough to resume bit for bit."""
    save(path, {
        "step": record.step, "config": cfg.to_dict(), "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(), "best_test_accuracy": record.best,
        "best_step": record.best_step, "best_val_accuracy": record.best_val,
        "best_val_step": record.best_val_step, "history": record.history,
        "elapsed_seconds": record.history[-1]["elapsed_seconds"],
        "streams": {"labeled": parts.labeled.state_dict(),
                    "unlabeled": parts.unlabeled.state_dict()},
        "split_digests": split_digests,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}})


def evaluate_step(model: torch.nn.Module, data: DeviceData, runtime: Runtime,
                  record: Record) -> dict[str, float]:
    """Test (and validation) loss and accuracy at record.step; updates the bests."""
    test_loss, test_acc = (v.item() for v in evaluate(model, data, runtime))
    first = not record.history
    if first or test_acc > record.best:
        record.best, record.best_step = test_acc, record.step
    out = {}
    if len(data.split.val):  # num_val drawn, or your data's own val/
        val_loss, val_acc = (v.item() for v in evaluate(model, data, runtime, subset="val"))
        if first or val_acc > record.best_val:
            record.best_val, record.best_val_step = val_acc, record.step
        out = {"val_loss": val_loss, "val_accuracy": val_acc,
               "val_score": selection_score([*record.history, {"val_accuracy": val_acc}])}
    return {**out, "test_loss": test_loss, "test_accuracy": test_acc}


def _log_row(writer, row: dict[str, float]) -> None:
    """A metrics row into TensorBoard: test/*, val/* and train/* groups."""
    for key, value in row.items():
        if key != "step":
            group = key.split("_")[0] if key.startswith(("test", "val")) else "train"
            writer.add_scalar(f"{group}/{key}", value, row["step"])
    writer.flush()


ESTIMATE_STEPS = 5  # timed steps behind the run's time estimate
LONG_ON_CPU_S = 30 * 60


def estimate(cfg: Config, step: int, steps_per_s: float, device: torch.device) -> str:
    """The run's remaining time from a few timed steps; on a CPU, a long one says how to
    make it shorter."""
    seconds = (cfg.total_steps - step) / steps_per_s
    text = (f"estimate: {cfg.total_steps - step} steps at {steps_per_s:.1f} steps/s (timed "
            f"over {ESTIMATE_STEPS}) take about {_about(seconds)} on {device.type}, "
            "plus the evaluations")
    if device.type == "cpu" and seconds > LONG_ON_CPU_S:
        text += ("; long for a CPU: fewer --total-steps, a smaller --architecture, or a GPU "
                 "(--device cuda)")
    return text


def _about(seconds: float) -> str:
    minutes = seconds / 60
    return (f"{seconds:.0f} s" if seconds < 90 else f"{minutes:.0f} min" if minutes < 90
            else f"{minutes / 60:.1f} h")


def train(cfg: Config, report: ReportHook | None = None, show_progress: bool = True,
          hooks: RunHooks = RunHooks(), existing: rundir.Existing | None = None,
          lock: bool = True, clock: PhaseClock | None = None) -> dict[str, Any]:
    """Run (or resume) one training run; return the summary also written to summary.json.

    The run directory is claimed first (rundir.claim): one trainer writes it at a time,
    and a run already there is refused unless `existing` says otherwise. By default a run
    resumed into its own directory continues it; a resumed run given another directory
    starts that one afresh, leaving its source as it was. `lock=False` leaves the lock out
    (a study trial's folder, Tune's alone). `clock`, if given, is told where the time
    goes (trainer/phases.py; the study's overhead benchmark reads it)."""
    clock = clock or PhaseClock()
    state, resumed_file = None, None
    if cfg.resume:
        state, resumed_file = checkpoint.load_latest(cfg.resume)
        checkpoint.check_compatible(state, cfg.to_dict(), cfg.resume)
    if existing is None:
        here = resumed_file is not None and os.path.abspath(
            os.path.dirname(resumed_file)) == os.path.abspath(cfg.save_path)
        existing = "continue" if here else "refuse"
    held = rundir.claim(cfg.save_path, existing, lock)
    try:
        clock.lap("resume")
        return _train(cfg, state, resumed_file, report, show_progress, hooks, clock)
    finally:
        if held is not None:
            held.release()


def _train(cfg: Config, state: dict[str, Any] | None, resumed_file: str | None,
           report: ReportHook | None, show_progress: bool, hooks: RunHooks,
           clock: PhaseClock) -> dict[str, Any]:
    runtime = resolve_runtime(cfg)
    device = runtime.device
    threads, why = set_threads(cfg.threads)  # before the first kernel: data loading's too
    clock.lap("setup")
    data = load_for(cfg, device)
    if hooks.loaded_data is not None:
        data = hooks.loaded_data(data)
    check_batch(cfg, len(data.labeled), len(data.unlabeled))  # before a model or run directory
    split = data.split_record()
    if state is not None:
        checkpoint.check_same_split(state, split, cfg.resume)
    split_digests = checkpoint.split_digests(split)
    clock.lap("data")
    parts = build_parts(cfg, data, runtime)
    record = restore(state, cfg, parts, device) if state is not None else Record()
    clock.lap("build")

    run = cfg.save_path
    paths = {name: os.path.join(run, name) for name in (
        rundir.CONFIG, rundir.SPLIT, rundir.METRICS, rundir.CHECKPOINT, rundir.BEST,
        rundir.SUMMARY)}
    os.makedirs(run, exist_ok=True)
    write_json(paths[rundir.CONFIG], cfg.to_dict())
    write_json(paths[rundir.SPLIT], split)
    write_csv(paths[rundir.METRICS], record.history)  # drops rows a crash left after the checkpoint
    from tensorboardX import SummaryWriter  # here, so the benchmark runs without it

    writer = SummaryWriter(logdir=run, purge_step=record.step if state is not None else None)
    progress = Progress(cfg.total_steps, record.step, enabled=show_progress)
    progress.message(f"{cfg.method} on {cfg.dataset} ({cfg.num_label} labels, "
                     f"{cfg.architecture}, {runtime.describe()}, {threads} CPU thread"
                     f"{'s' if threads > 1 else ''}: {why}) -> {run}"
                     + (f", resumed at step {record.step}" if state is not None else ""))
    clock.lap("files")

    sums = torch.zeros(len(STAT_NAMES), device=device)  # since the last log line
    nonfinite = torch.zeros((), device=device)
    count, count_since_start, t_start = 0, 0, time.perf_counter()
    t_interval = t_start
    try:
        while record.step < cfg.total_steps:
            lr, weight = learning_rate(cfg, record.step), consistency_weight(cfg, record.step)
            stats = train_step(parts.model, parts.optimizer, cfg,
                               parts.next_batch(cfg, data, runtime), lr, weight, parts.beta,
                               runtime.autocast)
            sums += stats
            nonfinite += ~torch.isfinite(stats[0])
            count += 1
            count_since_start += 1
            record.step += 1
            step = record.step
            if count_since_start == 1:  # the rest of the steps: lapped at the log interval
                clock.lap("first_step")
            if count_since_start in (1, 1 + ESTIMATE_STEPS) and step < cfg.total_steps:
                if device.type == "cuda":  # queued steps are not done steps: wait for them
                    torch.cuda.synchronize(device)
                if count_since_start == 1:  # the first step builds kernels and caches: untimed
                    t_timed = time.perf_counter()
                else:
                    progress.message(estimate(cfg, step, ESTIMATE_STEPS
                                              / (time.perf_counter() - t_timed), device))
            evaluating = step % cfg.test_freq == 0 or step == cfg.total_steps
            if not (evaluating or step % cfg.log_freq == 0):
                continue
            # The one host-device synchronisation between evaluations.
            *means, bad = torch.cat([sums / count, nonfinite.view(1)]).tolist()
            if bad:
                _diverged(paths[rundir.SUMMARY], paths[rundir.CHECKPOINT], record, int(bad),
                          count)
            stats_now = dict(zip(STAT_NAMES, means))
            progress.show(step, stats_now, record.best if record.history else None)
            clock.lap("steps")
            if not evaluating:
                continue

            scores = evaluate_step(parts.model, data, runtime, record)
            clock.lap("evaluate")
            now = time.perf_counter()
            row = {"step": step, "lr": lr, "weight": weight, **stats_now, **scores,
                   "best_test_accuracy": record.best,
                   "elapsed_seconds": record.elapsed_before + now - t_start,
                   "images_per_second": count * images_per_step(cfg) / max(now - t_interval, 1e-9)}
            record.history.append(row)
            save_checkpoint(paths[rundir.CHECKPOINT], cfg, parts, record, split_digests, device,
                            hooks.save_checkpoint)
            if record.best_step == step:
                copy_file(paths[rundir.CHECKPOINT], paths[rundir.BEST])
            clock.lap("checkpoint")
            write_csv(paths[rundir.METRICS], record.history)
            _log_row(writer, row)
            progress.message(f"step {step}: test accuracy {scores['test_accuracy']:.4f} "
                             f"(best {record.best:.4f} at step {record.best_step})")
            if step == cfg.total_steps:  # before the hook: a study may sync the run dir then
                write_json(paths[rundir.SUMMARY], _summary(cfg, runtime, record))
            clock.lap("logs")
            if report is not None:
                report(row, paths[rundir.CHECKPOINT])
                clock.lap("report")
            sums.zero_()
            count, t_interval = 0, time.perf_counter()
    finally:
        progress.close()
        writer.close()
        clock.lap("files")

    summary = _summary(cfg, runtime, record)
    if not count_since_start:  # resumed a finished run: complete its (maybe new) directory
        if os.path.abspath(resumed_file) != os.path.abspath(paths[rundir.CHECKPOINT]):
            copy_file(resumed_file, paths[rundir.CHECKPOINT])
        write_json(paths[rundir.SUMMARY], summary)
    return summary


def _diverged(summary_path: str, checkpoint_path: str, record: Record, bad: int,
              count: int) -> None:
    """Write a diverged summary naming the last good checkpoint, and raise TrainingDiverged."""
    last = record.history[-1]["step"] if record.history else 0
    step = record.step
    message = (f"loss became NaN or infinite in {bad} of the steps {step - count + 1}..{step} "
               f"(the last {count} steps); the last good checkpoint ({checkpoint_path}, step "
               f"{last}) is kept. Lower --lr or --weight, or check the data.")
    write_json(summary_path, {"status": "diverged", "error": message, "steps": last,
                              "best_test_accuracy": record.best, "best_step": record.best_step})
    raise TrainingDiverged(message, step=step, last_good_step=last)


def _summary(cfg: Config, runtime: Runtime, record: Record) -> dict[str, Any]:
    """summary.json. best_test_* is the authors' convention (the maximum over evaluations,
    an optimistic figure); final_test_* is the last evaluation, what tables report."""
    history, best, best_step = record.history, record.best, record.best_step
    best_val_step = record.best_val_step
    last = history[-1]
    summary = {
        "status": "completed", "dataset": cfg.dataset, "method": cfg.method,
        "architecture": cfg.architecture, "num_label": cfg.num_label, "seed": cfg.seed,
        "num_val": cfg.num_val, "split": cfg.split, "precision": runtime.precision_name,
        "steps": last["step"], "final_test_accuracy": last["test_accuracy"],
        "best_test_accuracy": best, "best_step": best_step,
        "final_test_error": 1.0 - last["test_accuracy"], "best_test_error": 1.0 - best,
        "wall_seconds": last["elapsed_seconds"],
    }
    if "val_accuracy" in last:  # a validation set: num_val drawn, or your data's val/
        at_best = next(r for r in history if r["step"] == best_val_step)
        summary.update(final_val_accuracy=last["val_accuracy"], final_val_score=last["val_score"],
                       best_val_accuracy=at_best["val_accuracy"], best_val_step=best_val_step)
    return summary
