"""Where a run's time goes: wall seconds summed per phase (data, model, steps, evaluations...).

Each `lap(phase)` gives the time since the previous lap to `phase`, so the phases add up to
the run's wall time with nothing counted twice. On a GPU the steps are queued, not done,
until the next synchronisation: their time lands in the phase that waits for them (the log
interval's read-back, an evaluation); on a CPU each phase is its own.
"""

from __future__ import annotations

import time
from collections import defaultdict


class PhaseClock:
    """Seconds per phase, since the clock was made (or `restart`ed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def restart(self) -> None:
        """Count from now: what happened since the last lap belongs to no phase."""
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """The time since the last lap (or restart) was spent in `phase`."""
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now

    def snapshot(self) -> dict[str, float]:
        """The seconds per phase so far, as a plain dict."""
        return dict(self.seconds)
