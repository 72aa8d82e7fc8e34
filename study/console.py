"""The study's own console: a line per trial event and a compact status line (a Tune callback).

Ray's tables and result boxes show about twenty metrics per trial; a researcher watching a
study wants to know which trial ended how, at what step and validation score, and how far the
study has come. `--verbose 2` brings Ray's own output back.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from study import layout
from trainer.config import SHORT_NAMES

# What names a trial of a race, a reproduce or an ablation study, rather than its values.
LABELS = ("entrant", "variant", "method")
# Not shown: the race's marker, and keys a trial's config carries for the trainer.
HIDDEN = ("phase", "trial_id")
# The validation set of the smallest space (digits) has a few hundred images, and a score is
# a mean over evaluations: four decimals separate any two trials that differ.
SCORE = "{:.4f}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def short_params(config: dict[str, Any], sep: str = " ") -> str:
    """A trial's values in short form, e.g. `w=1.25 a=0.519 lr=0.0777 wu=164`; a race,
    reproduce or ablation trial starts with its entrant, arm or method and seed."""
    head = [str(config[k]) for k in LABELS if config.get(k) is not None]
    if "seed" in config and (head or config.get("phase") == "race"):
        head.append(f"seed={config['seed']}")
    rest = [f"{SHORT_NAMES.get(k, k)}={_value(v)}" for k, v in config.items()
            if k not in (*LABELS, *HIDDEN, "seed") and not isinstance(v, dict)]
    if head and config.get("variant") is not None:
        rest = []  # an arm's values are the arm's: its name says them
    return sep.join(head + rest)


def trial_number(trial) -> int | None:
    """Tune's number of a trial in its study (1, 2, ...): the head of its experiment tag."""
    head = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return int(head) if head.isdigit() else None


def trial_dirname(trial) -> str:
    """A trial folder named for TensorBoard and people: Tune's `run_trial_ID_NUMBER_` head
    (which analysis/results.py reads), then the short values, in place of Tune's long
    parameter list and date."""
    params = short_params(trial.config or {}, sep=",").replace("/", "_")
    return layout.trial_folder(trial.trial_id, trial_number(trial) or 0, params)


class NoTensorBoardCopy(TBXLoggerCallback):
    """Takes the place of Tune's TensorBoard logger, so that Tune adds none: the trainer writes
    its own events into the trial's run/, and Tune's copy made two runs per trial."""

    def __init__(self):  # Tune's opens a writer per trial; this one writes nothing
        pass

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


def duration(seconds: float) -> str:
    """1m05s, 2h03m, 42s."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Console(Callback):
    """Prints trial starts and ends, and a status line: in place on a terminal, every
    `every_s` seconds as a new line elsewhere (a log file, a notebook, CI)."""

    def __init__(self, study: str, planned: int, steps: int, race_steps: int | None = None,
                 race_trials: int = 0, every_s: float = 30.0, redraw_s: float = 2.0):
        self.study, self.planned, self.steps, self.race_steps = study, planned, steps, race_steps
        self.race_trials = race_trials  # of the planned trials, the race's (at race_steps)
        self.every_s, self.redraw_s = every_s, redraw_s
        self.setup()

    def setup(self, **info) -> None:  # each fit, also of a restored study
        self.t0 = time.monotonic()
        self.last_status = self.t0
        self.ended: dict[str, str] = {}  # trial id -> how it ended
        self.latest: dict[str, tuple[float, int | None]] = {}  # trial id -> score, number
        self.step: dict[str, int] = {}  # trial id -> its latest step
        self.best: tuple[float, int | None] | None = None
        self.drawn = False  # a status line stands at the cursor (terminal only)
        self.resumed: int | None = None  # trials ended before this fit: counted at its start

    def __getstate__(self) -> dict:  # pickled with the Tuner; the clock is per driver
        return {k: v for k, v in self.__dict__.items() if k in (
            "study", "planned", "steps", "race_steps", "race_trials", "every_s", "redraw_s")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.setup()

    # -- output -------------------------------------------------------------------------------

    def _write(self, line: str) -> None:
        out = sys.stdout
        if self.drawn:
            out.write("\r\x1b[K")
            self.drawn = False
        out.write(line + "\n")
        out.flush()

    def _trial_line(self, trial, what: str) -> None:
        number = trial_number(trial)
        self._write(f"trial {number if number is not None else trial.trial_id:>3} {what:<42} "
                    f"{short_params(trial.config or {})}")

    def status(self, trials) -> str:
        """One line: counts by state, the best validation score so far, time and what is left."""
        counts = {k: 0 for k in ("completed", "stopped early", "diverged", "failed")}
        for how in self.ended.values():
            counts[how] += 1
        running = sum(t.status == "RUNNING" for t in trials)
        elapsed = time.monotonic() - self.t0
        done = sum(counts.values())
        best = ("best val -" if self.best is None else
                f"best val {SCORE.format(self.best[0])} (trial {self.best[1]})")
        seconds = self.seconds_left(trials, elapsed)
        left = "" if seconds is None else f" · about {duration(seconds)} left"
        return (f"[{duration(elapsed):>6}] {self.study}: {running} running, {done}/{self.planned}"
                f" done ({', '.join(f'{v} {k}' for k, v in counts.items() if v) or 'none yet'})"
                f" · {best}{left}")

    def seconds_left(self, trials, elapsed: float) -> float | None:
        """The steps still to train at the rate trained so far: a running trial to its end
        (a search trial to the mean length of those ended, as ASHA cut them), and the
        trials not made yet at the search's mean or the race's length."""
        trained = sum(self.step.values())
        if not trained or len(self.ended) >= self.planned:
            return None
        race = {t.trial_id for t in trials if (t.config or {}).get("phase") == "race"}
        ended = [self.step.get(t, 0) for t in self.ended if t not in race]
        search_mean = sum(ended) / len(ended) if ended else self.steps
        left = 0.0
        for t in trials:
            if t.trial_id not in self.ended:
                total = self.race_steps if t.trial_id in race else search_mean
                left += max(0.0, (total or 0) - self.step.get(t.trial_id, 0))
        made_race = len(race)
        made_search = len(trials) - made_race
        left += max(0, self.planned - self.race_trials - made_search) * search_mean
        left += max(0, self.race_trials - made_race) * (self.race_steps or 0)
        return left * elapsed / trained

    # -- Tune's events ------------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._trial_line(trial, "started")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "step" in result:
            self.step[trial.trial_id] = int(result["step"])
        score = result.get("val_score")
        if score is not None:  # a trial's latest score counts (a diverged one's is 0)
            self.latest[trial.trial_id] = (float(score), trial_number(trial))
            self.best = max(self.latest.values(), key=lambda s: s[0])

    def _ending(self, trial) -> tuple[str, str]:
        """How a finished trial ended (a status count) and its line's words."""
        last = trial.last_result or {}
        step, score = int(last.get("step", 0)), last.get("val_score")
        total = self.race_steps if (trial.config or {}).get("phase") == "race" else self.steps
        if last.get("diverged"):
            return "diverged", f"diverged at step {step} (loss not finite)"
        how, what = (("stopped early", f"stopped early at step {step}/{total}")
                     if total and step < total else ("completed", f"completed {step} steps"))
        return how, what + (f", val {SCORE.format(score)}" if score is not None else "")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id], what = self._ending(trial)
        self._trial_line(trial, what)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        step = (trial.last_result or {}).get("step")
        self._trial_line(trial, f"crashed at step {step}, retrying" if step else
                         "crashed, retrying")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = "failed"
        step = (trial.last_result or {}).get("step", 0)
        self._trial_line(trial, f"failed at step {step} (see its error.txt)")

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self.resumed is None:  # a resumed study: count what ended before this driver
            self.resumed = 0
            for trial in trials:
                if trial.status in ("TERMINATED", "ERROR"):
                    self.ended[trial.trial_id] = ("failed" if trial.status == "ERROR"
                                                  else self._ending(trial)[0])
                    self.on_trial_result(iteration, trials, trial, trial.last_result or {})
                    self.resumed += 1
            if self.resumed:
                self._write(f"{self.study}: resumed with {self.resumed} trials ended before")

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if sys.stdout.isatty():
            if now - self.last_status >= self.redraw_s:
                self.last_status = now
                sys.stdout.write("\r\x1b[K" + self.status(trials))
                sys.stdout.flush()
                self.drawn = True
        elif now - self.last_status >= self.every_s:
            self.last_status = now
            self._write(self.status(trials))

    def on_experiment_end(self, trials, **info) -> None:
        self._write(self.status(trials))
