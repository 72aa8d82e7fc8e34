"""The study's console: short values, trial lines, the status line on a terminal and in a log."""

import io
import re
from types import SimpleNamespace

from study.console import Console, duration, short_params, trial_dirname


def trial(number, config, status="RUNNING", last=None, trial_id=None):
    return SimpleNamespace(trial_id=trial_id or f"{number:08x}", experiment_tag=f"{number}_x",
                           config=config, status=status, last_result=last or {})


SEARCHED = {"weight": 1.2521, "alpha": 0.51903, "lr": 0.077688, "warmup": 164}


def test_values_are_shortened_to_three_figures_and_a_race_trial_names_its_entrant():
    assert short_params(SEARCHED) == "w=1.25 a=0.519 lr=0.0777 wu=164"
    race = {**SEARCHED, "phase": "race", "entrant": "finalist-1", "seed": 8789}
    assert short_params(race) == "finalist-1 seed=8789 w=1.25 a=0.519 lr=0.0777 wu=164"
    assert short_params({"variant": "tuned", "seed": 1}) == "tuned seed=1"
    assert short_params({**SEARCHED, "method": "mixup", "seed": 2}).startswith("mixup seed=2 ")


def test_a_trial_folder_is_named_for_its_number_and_values_and_analysis_still_reads_it():
    from study.layout import TRIAL_DIR

    name = trial_dirname(trial(7, SEARCHED, trial_id="1aef82c0"))
    assert name == "run_trial_1aef82c0_7_w=1.25,a=0.519,lr=0.0777,wu=164"
    assert TRIAL_DIR.search(name).groups() == ("1aef82c0", "7")


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (4.4, 65, 3600 + 180)] == ["4s", "1m05s", "1h03m"]


def capture(monkeypatch, tty: bool) -> io.StringIO:
    out = io.StringIO()
    out.isatty = lambda: tty
    monkeypatch.setattr("sys.stdout", out)
    return out


def test_each_start_and_end_is_a_line_that_says_how_the_trial_ended(monkeypatch):
    out = capture(monkeypatch, tty=False)
    console = Console("s", planned=3, steps=200)
    a, b, c = (trial(n, SEARCHED) for n in (1, 2, 3))
    for t in (a, b, c):
        console.on_trial_start(0, [a, b, c], t)
    a.last_result = {"step": 200, "val_score": 0.91234}
    b.last_result = {"step": 60, "val_score": 0.85}
    c.last_result = {"step": 40, "val_score": 0.0, "diverged": 1}
    for t in (a, b, c):
        console.on_trial_result(0, [a, b, c], t, t.last_result)
        console.on_trial_complete(0, [a, b, c], t)
    lines = out.getvalue().splitlines()
    assert lines[3].startswith("trial   1 completed 200 steps, val 0.9123 ")
    assert lines[4].startswith("trial   2 stopped early at step 60/200, val 0.8500 ")
    assert lines[5].startswith("trial   3 diverged at step 40 (loss not finite) ")
    for t in (a, b, c):
        t.status = "TERMINATED"
    assert console.status([a, b, c]).endswith(
        "s: 0 running, 3/3 done (1 completed, 1 stopped early, 1 diverged) · best val 0.9123 "
        "(trial 1)")


def test_the_best_score_is_each_trials_latest_not_a_peak_it_fell_from(monkeypatch):
    capture(monkeypatch, tty=False)
    console = Console("s", planned=2, steps=100)
    a, b = trial(1, SEARCHED), trial(2, SEARCHED)
    console.on_trial_result(0, [a, b], a, {"step": 50, "val_score": 0.9})
    console.on_trial_result(0, [a, b], b, {"step": 50, "val_score": 0.8})
    console.on_trial_result(0, [a, b], a, {"step": 100, "val_score": 0.7})
    assert "best val 0.8000 (trial 2)" in console.status([a, b])


def test_on_a_terminal_the_status_line_is_redrawn_in_place_and_cleared_before_a_trial_line(
        monkeypatch):
    out = capture(monkeypatch, tty=True)
    console = Console("s", planned=4, steps=100, redraw_s=0.0)
    a = trial(1, SEARCHED)
    console.on_step_end(0, [a])
    console.on_step_end(1, [a])
    assert out.getvalue().count("\r\x1b[K") == 2 and "\n" not in out.getvalue()
    console.on_trial_start(2, [a], a)
    assert re.search(r"best val -\r\x1b\[Ktrial   1 started +w=1.25 a=0.519 lr=0.0777 wu=164\n$",
                     out.getvalue())


def test_in_a_log_the_status_line_is_a_new_line_every_interval_and_at_the_end(monkeypatch):
    out = capture(monkeypatch, tty=False)
    console = Console("s", planned=4, steps=100, every_s=3600.0)
    a = trial(1, SEARCHED)
    console.on_step_end(0, [a])
    assert out.getvalue() == ""  # not yet an interval
    console.every_s = 0.0
    console.on_step_end(1, [a])
    console.on_experiment_end([a])
    assert out.getvalue().count("s: 1 running, 0/4 done (none yet) · best val -") == 2


def test_a_resumed_study_counts_the_trials_that_ended_before_it(monkeypatch):
    out = capture(monkeypatch, tty=False)
    console = Console("s", planned=3, steps=100)
    done = trial(1, SEARCHED, "TERMINATED", {"step": 100, "val_score": 0.9})
    stopped = trial(2, SEARCHED, "TERMINATED", {"step": 20, "val_score": 0.5})
    console.on_step_begin(0, [done, stopped, trial(3, SEARCHED, "PENDING")])
    assert "resumed with 2 trials ended before" in out.getvalue()
    assert "2/3 done (1 completed, 1 stopped early) · best val 0.9000 (trial 1) · about" in (
        console.status([done, stopped]))


def test_what_is_left_is_the_steps_still_to_train_at_the_rate_trained_so_far(monkeypatch):
    capture(monkeypatch, tty=False)
    console = Console("s", planned=6, steps=100, race_steps=300, race_trials=2)
    a, b, c = trial(1, SEARCHED), trial(2, SEARCHED), trial(3, SEARCHED)
    for t, step in ((a, 40), (b, 60), (c, 20)):
        console.on_trial_result(0, [a, b, c], t, {"step": step, "val_score": 0.5})
    for t in (a, b):
        console.on_trial_complete(0, [a, b, c], t)
    # ended search trials average 50 steps: c has 30 to go, one search trial is still to be
    # made (50), and the race's two (300 each): 680 steps at 120 steps per 12 s
    assert console.seconds_left([a, b, c], elapsed=12.0) == 68.0
