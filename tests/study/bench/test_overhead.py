"""python -m study.bench overhead: a study's slot-seconds, split by where they went."""

import pytest

from study.bench.overhead import FIRST_BUILD, TRAINING, breakdown, table


def events(pid, trial, t0, phases, stopped=False):
    """A worker's events for one trial that entered at t0 and reported twice."""
    out = [{"event": "enter", "t": t0, "pid": pid, "trial": trial},
           {"event": "train", "t": t0 + 0.1, "pid": pid, "trial": trial},
           {"event": "report", "t": t0 + 1.0, "pid": pid, "trial": trial, "step": 5,
            "placement": 0.01, "phases": {k: v / 2 for k, v in phases.items()}},
           {"event": "reported", "t": t0 + 1.05, "pid": pid, "trial": trial, "seconds": 0.04},
           {"event": "report", "t": t0 + 2.0, "pid": pid, "trial": trial, "step": 10,
            "placement": 0.01, "phases": phases}]
    if not stopped:
        out += [{"event": "reported", "t": t0 + 2.05, "pid": pid, "trial": trial,
                 "seconds": 0.04},
                {"event": "trained", "t": t0 + 2.1, "pid": pid, "trial": trial,
                 "phases": phases},
                {"event": "exit", "t": t0 + 2.15, "pid": pid, "trial": trial}]
    return out


def test_the_rows_add_up_to_the_slots_from_tunes_start_to_the_last_trials_end():
    phases = {"data": 0.1, "build": 0.5, "first_step": 0.2, "steps": 1.0, "evaluate": 0.1}
    driver = {"fit_start": 100.0, "slots": 2, "trials": {
        "a": {"start": 101.0, "end": 103.3}, "b": {"start": 102.0, "end": 104.2},
        "c": {"start": 103.4, "end": 105.5}}}
    workers = {"a": events(1, "a", 101.05, phases), "b": events(2, "b", 102.0, phases),
               "c": events(1, "c", 103.45, phases, stopped=True)}
    rows = breakdown(driver, workers, imports=0.6)
    assert sum(rows.values()) == pytest.approx((105.5 - 100.0) * 2)
    # the first trial of each worker built its optimiser with torch's compiler imports
    assert rows[FIRST_BUILD] == pytest.approx(1.0)
    assert rows["model and optimiser build"] == pytest.approx(0.5)
    assert rows["worker start: imports"] == pytest.approx(1.2)  # two workers
    assert rows["worker start: process, scheduling"] == pytest.approx(1.0 + 2.0 - 1.2)
    assert rows["stopped trial: the last report, Tune's stop, reset"] == pytest.approx(
        105.5 - 105.45)
    assert rows["report: checkpoint to storage, driver's answer"] == pytest.approx(0.04 * 5)
    training = sum(rows[k] for k in TRAINING)
    assert training == pytest.approx(3 * 1.3)
    measured = [{"variant": "after", "rows": rows, "slot_seconds": sum(rows.values()),
                 "training": training, "trials": 3, "results": 6,
                 "driver": {"wall": 6.0, "driver_cpu": 1.0, "driver_peak_mb": 500, "slots": 2,
                            "seconds": {"searcher.suggest": 0.03},
                            "calls": {"searcher.suggest": 3}}}]
    shown = table(measured)
    assert "| **slot-seconds** (Tune's start to the last trial's end x slots) | 11.0 s |" in shown
    assert "| searcher.suggest | 30 ms in 3 |" in shown


def test_the_share_from_rays_start_counts_the_setup_before_tunes_start():
    rows = {"training steps": 90.0, "slots idle between trials, and at the end": 10.0}
    measured = [{"variant": "after", "rows": rows, "slot_seconds": 100.0, "training": 90.0,
                 "before_fit": 20.0, "trials": 1, "results": 1,
                 "driver": {"wall": 60.0, "driver_cpu": 1.0, "driver_peak_mb": 500,
                            "slots": 2, "seconds": {}, "calls": {}}}]
    shown = table(measured)
    assert "| **trainer seconds** (first step, steps, evaluations) | 90.0 s (90.0 %) |" in shown
    assert "| **trainer seconds, of those** | 75.0 % |" in shown
