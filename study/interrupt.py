"""Ctrl-C and SIGTERM stop a study the way Ray Tune stops on Ctrl-C, and say so.

Tune, on its own, ends `fit()` normally after a SIGINT, and a SIGTERM kills the driver
outright: the caller cannot tell an interrupted study from a finished one, and a pipeline
(`--then-reproduce`) would go on from a search that never finished. Here both signals go
to Tune's own graceful stop (its SIGUSR1 handler: the trials are checkpointed and the
experiment state saved), and the signal is remembered so that the study ends in
StudyInterrupted; a second signal stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StudyInterrupted(Exception):
    """The driver was stopped by a signal before its study finished."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextlib.contextmanager
def graceful_stop() -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM ask Tune to stop; yields the signals received.
    Nested (a pipeline around its studies), the outer one's handler and record stand."""
    outer = signal.getsignal(signal.SIGINT)
    if hasattr(outer, "received"):
        yield outer.received
        return
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers belong to the main thread: Tune's defaults stand
        return

    def handler(signum, frame):
        received.append(signum)
        tune_stop = signal.getsignal(signal.SIGUSR1)  # installed by tune.run() while it runs
        if len(received) == 1 and callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)
        else:
            raise KeyboardInterrupt

    handler.received = received
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    # Tune's SIGINT handler would replace this one during fit(); its SIGUSR1 handler stays.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def reassert() -> None:
    """Put graceful_stop's handler back on SIGTERM: ray.init() sets its own, which exits
    the driver at once (sys.exit), leaving no word of what happened."""
    ours = signal.getsignal(signal.SIGINT)
    if hasattr(ours, "received") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, ours)
