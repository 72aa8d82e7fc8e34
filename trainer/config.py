"""The one typed configuration of a training run: defaults, dataset presets, validation."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

META_GRADS = ("fd", "jvp", "exact")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# Sane ranges of the float settings: (low, high, low allowed, high allowed). Outside them a run
# trains silently wrong instead of failing: Beta(inf, inf) draws about 1e-38, an inf weight or
# decay swamps every gradient. The bounds are far beyond any published setting; lr and gamma
# keep room for a rate that makes SGD blow up, which the loop reports as diverged (tests
# provoke that with lr 1000 and gamma 1e6), so their bounds only catch typos and overflow.
FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "alpha": (0.0, 100.0, False, True),  # Beta(alpha, alpha); at 100 the mix is already ~0.5
    "epsilon": (0.0, 1.0, False, True),  # finite-difference step, a fraction of ||g||
    "weight": (0.0, 1e4, True, True),  # consistency weight; 0 turns the loss off
    "lr": (0.0, 1e4, False, True),
    "gamma": (0.0, 1e6, False, True),  # lr factor at a milestone; 0 would stop training
    "weight_decay": (0.0, 1.0, True, False),  # a decay of 1 or more wipes the weights each step
    "momentum": (0.0, 1.0, True, False),  # SGD momentum of 1 or more never forgets, diverges
}
# Short names of the searched settings, for console lines, trial folders and plot legends.
SHORT_NAMES = {"weight": "w", "alpha": "a", "lr": "lr", "warmup": "wu", "no_flip": "noflip"}
# numpy, torch and Python take seeds below 2**32; the trainer also seeds with seed + 1.
MAX_SEED = 2**32 - 2


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class Config:
    """Every hyperparameter and switch of one training run (the paper's algorithm and settings)."""

    dataset: str = "digits"
    data_path: str = "./data"
    download: bool = False
    num_label: int = 4000
    # Validation images held out of the training set (0: the paper's protocol, none). From
    # outside the labeled set, or with val_from_labeled out of the num_label budget.
    num_val: int = 0
    val_from_labeled: bool = False
    split: str = "random"  # how the labeled set is drawn: random, or the authors' procedure
    # Data of your own (dataset = a folder or .npz path, trainer/data/own.py): resize every
    # image to image_size x image_size at load (0: keep the stored size).
    image_size: int = 0
    no_flip: bool = False  # no random horizontal flips (digits, text, house numbers)
    architecture: str = "convlarge"
    method: str = "metasemi"
    meta_grad: str = "fd"
    alpha: float = 1.0
    weight: float = 1.0
    epsilon: float = 1e-2
    total_steps: int = 400_000
    batch_size: int = 128
    lr: float = 0.1
    warmup: int = 4000
    milestones: tuple[int, ...] = (300_000, 350_000)
    gamma: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    seed: int = 8469
    test_freq: int = 400
    log_freq: int = 100
    device: str = "auto"
    # How the step runs, not what it computes: none of these must match to resume.
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    memory_format: str = "auto"  # auto: channels_last on CUDA, contiguous on CPU
    compile: bool = False
    threads: int = 0  # torch's CPU threads; 0: the CPUs this process may use (trainer/threads.py)
    save_path: str = "./runs/latest"
    resume: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def parse_milestones(text: str | list | tuple) -> tuple[int, ...]:
    """Parse '[300000, 350000]', '300000,350000' or '300000 350000' into increasing ints."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        body = str(text).strip()
        if body.startswith("[") and body.endswith("]"):
            body = body[1:-1]
        items = [t for t in re.split(r"[,\s]+", body.strip()) if t]
    out = []
    for item in items:
        if isinstance(item, bool) or not re.fullmatch(r"\d+", str(item).strip()):
            raise ConfigError(
                f"milestones: {text!r} is malformed; give step numbers as integers, "
                "e.g. --milestones '[300000, 350000]' or 300000,350000"
            )
        out.append(int(str(item).strip()))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"milestones: {out} must be strictly increasing")
    return tuple(out)


# Fields added after the first checkpoints and config.json files were written: a file without
# one meant what the field's default means now (checkpoint.py and the analysis read it).
ADDED_LATER = ("num_val", "val_from_labeled", "split")
ABSENT_MEANS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Config)
                                if f.name in ADDED_LATER}
