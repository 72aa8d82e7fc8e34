"""The training loop: data, model, evaluation, checkpoints, run directory, reporting hook."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer import checkpoint
from trainer.config import Config
from trainer.data import DeviceData, IndexStream, augment, check_batch, load_for
from trainer.device import Runtime, resolve_runtime, widen
from trainer.models import build_model
from trainer.progress import Progress
from trainer.rundir import copy_file, write_csv, write_json
from trainer.step import STAT_NAMES, Batch, consistency_weight, learning_rate, train_step

# Called at every evaluation with the metrics row and the path of the checkpoint just written.
ReportHook = Callable[[dict[str, float], str], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int = 0, last_good_step: int = 0):
        super().__init__(message)
        self.step, self.last_good_step = step, last_good_step


# Selection reads the mean validation accuracy of this many last evaluations: one small
# validation set is noisy (100 images: a 1% step per image), and a mean over the end of
# training ranks configurations more steadily than a single evaluation does.
SELECTION_WINDOW = 3


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
    """The validation score a study selects on: the mean validation accuracy of the last
    SELECTION_WINDOW evaluations (fewer at the start)."""
    window = [row["val_accuracy"] for row in history[-SELECTION_WINDOW:]]
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
    """What a run trains: the model, its optimizer, the two index streams, mix-up's Beta."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    labeled: IndexStream
    unlabeled: IndexStream
    beta: torch.distributions.Beta | None

    def next_batch(self, cfg: Config, data: DeviceData, runtime: Runtime) -> Batch:
        """The step's labeled batch and, unless supervised, its unlabeled one."""
        x_l, y_l = draw(self.labeled, data, runtime)
        if cfg.method == "supervised":
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
    if cfg.uses_mixup:
        a = torch.tensor(float(cfg.alpha), device=device)
        beta = torch.distributions.Beta(a, a)
    where = data.train_x.device  # the indices live with the images they select
    return Parts(model, optimizer,
                 IndexStream(data.labeled, cfg.batch_size, seed=cfg.seed, device=where),
                 IndexStream(data.unlabeled, cfg.batch_size, seed=cfg.seed + 1, device=where),
                 beta)


def train(cfg: Config, report: ReportHook | None = None,
          show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) one training run; return the summary also written to summary.json."""
    runtime = resolve_runtime(cfg)
    device = runtime.device
    state = None
    if cfg.resume:
        state, resumed_file = checkpoint.load_latest(cfg.resume)
        checkpoint.check_compatible(state, cfg.to_dict(), cfg.resume)
    data = load_for(cfg, device)
    check_batch(cfg, len(data.labeled), len(data.unlabeled))  # before a model or run directory
    split = data.split_record()
    if state is not None:
        checkpoint.check_same_split(state, split, cfg.resume)
    split_digests = checkpoint.split_digests(split)

    parts = build_parts(cfg, data, runtime)
    model, optimizer, labeled, unlabeled = (parts.model, parts.optimizer, parts.labeled,
                                            parts.unlabeled)
    step, best, best_step, history, elapsed_before = 0, 0.0, 0, [], 0.0
    best_val, best_val_step = 0.0, 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise checkpoint.CheckpointError(
                f"resume: {cfg.resume} does not fit a {cfg.architecture} for {cfg.dataset} "
                f"({str(e).splitlines()[0][:200]})") from e
        labeled.load_state_dict(state["streams"]["labeled"])
        unlabeled.load_state_dict(state["streams"]["unlabeled"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        step, best, best_step = state["step"], state["best_test_accuracy"], state["best_step"]
        history, elapsed_before = list(state["history"]), state["elapsed_seconds"]
        best_val, best_val_step = state.get("best_val_accuracy", 0.0), state.get("best_val_step", 0)

    run = cfg.save_path
    paths = {name: os.path.join(run, name) for name in (
        "config.json", "split.json", "metrics.csv", "checkpoint.pt", "best.pt", "summary.json")}
    os.makedirs(run, exist_ok=True)
    write_json(paths["config.json"], cfg.to_dict())
    write_json(paths["split.json"], split)
    write_csv(paths["metrics.csv"], history)  # drops rows a crash left after the checkpoint
    from tensorboardX import SummaryWriter  # here, so the benchmark runs without it

    writer = SummaryWriter(logdir=run, purge_step=step if state is not None else None)

    progress = Progress(cfg.total_steps, step, enabled=show_progress)
    progress.message(f"{cfg.method} on {cfg.dataset} ({cfg.num_label} labels, "
                     f"{cfg.architecture}, {runtime.describe()}) -> {run}"
                     + (f", resumed at step {step}" if state is not None else ""))

    sums = torch.zeros(len(STAT_NAMES), device=device)
    nonfinite = torch.zeros((), device=device)
    count, count_since_start, t_start = 0, 0, time.perf_counter()
    t_interval = t_start
    try:
        while step < cfg.total_steps:
            lr, weight = learning_rate(cfg, step), consistency_weight(cfg, step)
            stats = train_step(model, optimizer, cfg, parts.next_batch(cfg, data, runtime),
                               lr, weight, parts.beta, runtime.autocast)
            sums += stats
            count_since_start += 1
            nonfinite += ~torch.isfinite(stats[0])
            count += 1
            step += 1

            evaluating = step % cfg.test_freq == 0 or step == cfg.total_steps
            if not (evaluating or step % cfg.log_freq == 0):
                continue
            # The one host-device synchronisation between evaluations.
            *means, bad = torch.cat([sums / count, nonfinite.view(1)]).tolist()
            if bad:
                last = history[-1]["step"] if history else 0
                message = (f"loss became NaN or infinite in {int(bad)} of the steps "
                           f"{step - count + 1}..{step} (the last {count} steps); the last good "
                           f"checkpoint ({paths['checkpoint.pt']}, step {last}) is kept. "
                           "Lower --lr or --weight, or check the data.")
                write_json(paths["summary.json"], {
                    "status": "diverged", "error": message, "steps": last,
                    "best_test_accuracy": best, "best_step": best_step})
                raise TrainingDiverged(message, step=step, last_good_step=last)
            stats_now = dict(zip(STAT_NAMES, means))
            progress.show(step, stats_now, best if history else None)
            if not evaluating:
                continue

            test_loss, test_acc = (v.item() for v in evaluate(model, data, runtime))
            if not history or test_acc > best:
                best, best_step = test_acc, step
            val = {}
            if len(data.split.val):  # num_val drawn, or your data's own val/
                val_loss, val_acc = (v.item() for v in evaluate(model, data, runtime,
                                                                subset="val"))
                if not history or val_acc > best_val:
                    best_val, best_val_step = val_acc, step
                val = {"val_loss": val_loss, "val_accuracy": val_acc,
                       "val_score": selection_score([*history, {"val_accuracy": val_acc}])}
            now = time.perf_counter()
            row = {"step": step, "lr": lr, "weight": weight, **stats_now, **val,
                   "test_loss": test_loss, "test_accuracy": test_acc,
                   "best_test_accuracy": best,
                   "elapsed_seconds": elapsed_before + now - t_start,
                   "images_per_second": count * cfg.images_per_step / max(now - t_interval, 1e-9)}
            history.append(row)
            checkpoint.save(paths["checkpoint.pt"], {
                "step": step, "config": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "best_test_accuracy": best,
                "best_step": best_step, "best_val_accuracy": best_val,
                "best_val_step": best_val_step, "history": history,
                "elapsed_seconds": row["elapsed_seconds"],
                "streams": {"labeled": labeled.state_dict(),
                            "unlabeled": unlabeled.state_dict()},
                "split_digests": split_digests,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda"
                        else None}})
            if best_step == step:
                copy_file(paths["checkpoint.pt"], paths["best.pt"])
            write_csv(paths["metrics.csv"], history)
            for key, value in row.items():
                if key != "step":
                    group = key.split("_")[0] if key.startswith(("test", "val")) else "train"
                    writer.add_scalar(f"{group}/{key}", value, step)
            writer.flush()
            progress.message(f"step {step}: test accuracy {test_acc:.4f} "
                             f"(best {best:.4f} at step {best_step})")
            if step == cfg.total_steps:  # before the hook: a study may sync the run dir then
                write_json(paths["summary.json"],
                           _summary(cfg, runtime, history, best, best_step, best_val_step))
            if report is not None:
                report(row, paths["checkpoint.pt"])
            sums.zero_()
            count, t_interval = 0, time.perf_counter()
    finally:
        progress.close()
        writer.close()

    summary = _summary(cfg, runtime, history, best, best_step, best_val_step)
    if not count_since_start:  # resumed a finished run: complete its (maybe new) directory
        if os.path.abspath(resumed_file) != os.path.abspath(paths["checkpoint.pt"]):
            copy_file(resumed_file, paths["checkpoint.pt"])
        write_json(paths["summary.json"], summary)
    return summary


def _summary(cfg: Config, runtime: Runtime, history: list[dict], best: float, best_step: int,
             best_val_step: int) -> dict[str, Any]:
    """summary.json. best_test_* is the authors' convention (the maximum over evaluations,
    an optimistic figure); final_test_* is the last evaluation, what tables report."""
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
