"""Progress display: one live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Progress:
    """Shows step, losses, accuracies, steps/s and ETA; speed counts only this session's steps."""

    def __init__(self, total_steps: int, start_step: int, stream: TextIO | None = None,
                 enabled: bool = True):
        self.total, self.start = total_steps, start_step
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.width = 0

    def line(self, step: int, stats: dict[str, float], best: float | None) -> str:
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        parts = [f"step {step}/{self.total}", f"loss {stats['loss']:.4f}",
                 f"main {stats['main_loss']:.4f}", f"cons {stats['cons_loss']:.4f}",
                 f"train acc {stats['train_accuracy']:.3f}"]
        if best is not None:
            parts.append(f"best test acc {best:.4f}")
        parts += [f"{rate:.1f} steps/s", f"ETA {_duration(eta) if rate > 0 else '?'}"]
        return " | ".join(parts)

    def show(self, step: int, stats: dict[str, float], best: float | None = None) -> None:
        if not self.enabled:
            return
        text = self.line(step, stats, best)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that stays (evaluations, warnings), above the live line on a terminal."""
        if not self.enabled:
            return
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
