"""The replay: the study's own searcher, ASHA and race on a table, with simulated workers."""

import math

import pytest

from study.bench.replay import STRATEGIES, Replay, simulate
from study.bench.table import read_table
from tests.study.bench.tables import write


@pytest.fixture
def replay(tmp_path):
    return Replay(read_table(str(write(tmp_path / "t.json.gz", noise=0.002))))


def test_proposals_snap_to_the_nearest_level_on_each_parameters_scale(replay):
    c = replay.snap({"weight": 0.6, "lr": 0.05, "alpha": 0.2, "warmup": 170})
    # weight 0.6 is nearer 1.0 than 0.3 on a log scale (not on a linear one)
    assert replay.table.configs[c] == {"weight": 1.0, "lr": 0.03, "alpha": 1.0, "warmup": 100}
    assert replay.table.configs[replay.snap({"weight": 2.0, "lr": 0.06, "alpha": 1,
                                             "warmup": 0})]["lr"] == 0.1


def test_a_study_seed_takes_the_tables_seeds_in_turn(replay):
    assert replay.seed_roles(0, 3) == (0, [1, 2, 3])
    assert replay.seed_roles(5, 3) == (1, [2, 3, 0])
    with pytest.raises(ValueError, match="needs a table of more than 4 seeds"):
        replay.seed_roles(0, 4)


def test_a_replayed_study_is_the_same_for_the_same_seed_and_workers_run_side_by_side(replay):
    one = simulate(replay, STRATEGIES["tpe+asha"], 3, workers=1, num_samples=8)
    again = simulate(replay, STRATEGIES["tpe+asha"], 3, workers=1, num_samples=8)
    assert [t["table_index"] for t in one.trials] == [t["table_index"] for t in again.trials]
    assert one.makespan == pytest.approx(one.cost)  # one worker: one trial at a time
    two = simulate(replay, STRATEGIES["random"], 3, workers=2, num_samples=8)
    assert two.makespan == pytest.approx(two.cost / 2)  # equal trials, two at once
    assert {t["status"] for t in two.trials} == {"completed"}  # no ASHA: all full length
    assert any(t["status"] == "stopped_early" for t in one.trials)  # ASHA stopped some


def test_a_budget_buys_trials_until_it_is_spent(replay):
    full = 6.0  # trainer seconds of a full-length run of this table
    small = simulate(replay, STRATEGIES["random"], 0, workers=2, budget=5 * full)
    large = simulate(replay, STRATEGIES["random"], 0, workers=2, budget=20 * full)
    assert len(large.trials) > len(small.trials)
    for out, budget in ((small, 5 * full), (large, 20 * full)):
        # launched while the budget lasted; the trials in flight then may run past it
        assert budget <= out.cost <= budget + 2 * full


def test_a_diverged_run_reports_the_worst_score_at_its_end(tmp_path):
    replay = Replay(read_table(str(write(tmp_path / "t.json.gz", diverge={(4, 8788)}))))
    events = replay.run_events(4, 0)
    assert [r["step"] for _, r in events] == [50, 100, 150, 200, 250]
    assert events[-1][1] == {"step": 250, "val_score": 0.0, "diverged": 1}
    assert math.isclose(events[-1][0], replay.table.end_seconds[4, 0])


def test_the_race_replaces_the_defaults_only_when_the_table_shows_a_clear_winner(tmp_path):
    clear = Replay(read_table(str(write(tmp_path / "a.json.gz", noise=0.001))))
    out = simulate(clear, STRATEGIES["tpe+asha+race"], 0, workers=2, num_samples=8)
    best = clear.table.index_of({"weight": 3.0, "lr": 0.1, "alpha": 1.0, "warmup": 100})
    assert out.race["decision"]["replaced"] and out.pick == best
    assert out.regret(clear) == pytest.approx(0.0)
    noisy = Replay(read_table(str(write(tmp_path / "b.json.gz", noise=0.05, seed=1))))
    replaced = sum(simulate(noisy, STRATEGIES["tpe+asha+race"], s, workers=2, num_samples=8)
                   .race["decision"]["replaced"] for s in range(6))
    assert replaced <= 1  # a lead of 2 images under a noise of 5 is no winner
    assert sum(t["phase"] == "race" for t in out.trials) == (3 + 1) * 3


def test_the_short_budget_baseline_trains_only_its_best_k_to_the_end(replay):
    out = simulate(replay, STRATEGIES["random, top-k after a short budget"], 0, num_samples=6)
    assert sum(t["status"] == "completed" for t in out.trials) == 3
    assert {t["steps"] for t in out.trials if t["status"] == "stopped_early"} == {100}
