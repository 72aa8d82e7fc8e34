"""Where and how a step runs: the device, mixed precision, memory format and compilation.

These choices change speed, not the algorithm: "auto" means bf16 autocast and
channels-last on CUDA (tensor cores want both) and plain fp32, contiguous on CPU,
where neither measured a clear gain and the results stay bit-identical to earlier
versions (docs/performance.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import Config, ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without one is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device; "
                          "use --device cpu or --device auto")
    return torch.device(name)


def widen(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits as fp32 for softmax and losses; fp32 and fp64 unchanged.

    CUDA's autocast does this for softmax itself, the CPU's does not; doing it here
    gives both the same numerics.
    """
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one run."""

    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for plain fp32
    channels_last: bool
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to amp_dtype on this device, or nothing."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move the model to the device in the chosen memory format; compile it if asked."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            model.compile()  # in place: state_dict keys and functional_call stay as they are
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Lay a batch out in the model's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def precision_name(self) -> str:
        """What the forwards ran in: "fp32" or "bf16" (recorded in summary.json)."""
        return {None: "fp32", torch.bfloat16: "bf16"}[self.amp_dtype]

    def describe(self) -> str:
        return (f"{self.device}, {self.precision_name}, "
                f"{'channels-last' if self.channels_last else 'contiguous'}"
                f"{', compiled' if self.compile else ''}")


def resolve_runtime(cfg: Config) -> Runtime:
    """Turn the config's auto/bf16/fp32 and memory-format choices into concrete settings."""
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    if cfg.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: bf16 was asked for but this GPU does not support it; "
                          "use --precision fp32")
    amp = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    channels_last = cfg.memory_format == "channels_last" or (
        cfg.memory_format == "auto" and cuda)
    if cuda:
        # Fixed shapes every step: let cuDNN pick its fastest kernels once.
        torch.backends.cudnn.benchmark = True
    return Runtime(device, torch.bfloat16 if amp else None, channels_last, cfg.compile)
