"""The search benchmark's accounting (study/bench/live.py): an equal budget for both strategies,
the pick within it, and the paired difference over seeds."""

from study.bench.live import aggregate, random_samples, summarise_run, within_budget


def trial(i, seconds, status="completed", val=0.5, test_error=0.2, steps=100):
    return {"trial_id": f"t{i}", "run_dir": f"r{i}", "status": status, "val_score": val,
            "test_error": test_error, "seconds": seconds, "steps": steps, "config": {"i": i}}


def test_the_budget_keeps_the_trials_that_finished_within_it_in_order():
    trials = [trial(0, 10), trial(1, 20), trial(2, 5), trial(3, 1)]
    assert [t["trial_id"] for t in within_budget(trials, 30, "seconds")] == ["t0", "t1"]
    assert [t["trial_id"] for t in within_budget(trials, 35, "seconds")] == ["t0", "t1", "t2"]
    assert within_budget(trials, 5, "seconds") == []


def test_the_pick_is_the_best_validation_score_within_the_budget():
    trials = [trial(0, 10, val=0.6, test_error=0.3), trial(1, 10, val=0.8, test_error=0.1),
              trial(2, 10, val=0.9, test_error=0.05)]  # best, but past the budget
    run = summarise_run({"strategy": "random", "seed": 0, "trials": trials}, 20, "seconds")
    assert run["trials_within_budget"] == 2 and run["budget_reached"]
    assert run["pick"]["trial_id"] == "t1" and run["pick"]["test_error"] == 0.1
    assert [t["kept"] for t in trials] == [True, True, False]
    assert run["curve"] == [(10.0, 0.6), (20.0, 0.8)]


def test_random_search_gets_enough_trials_to_spend_the_budget():
    full = [trial(0, 10), trial(1, 3, status="stopped_early", steps=30)]
    assert random_samples(full, 100, "seconds", num_samples=16, total_steps=100) == 12
    stopped = [trial(0, 3, status="stopped_early", steps=30)]  # cost per step, extrapolated
    assert random_samples(stopped, 100, "seconds", num_samples=16, total_steps=100) == 12
    assert random_samples(full, 10_000, "seconds", num_samples=4, total_steps=100) == 16


def test_the_difference_is_paired_over_the_seeds_both_strategies_finished():
    def run(strategy, seed, error):
        return {"strategy": strategy, "seed": seed,
                "pick": {"test_error": error, "val_score": 0.5}}
    runs = [run("tpe+asha", 0, 0.10), run("random", 0, 0.14),
            run("tpe+asha", 1, 0.12), run("random", 1, 0.13), run("tpe+asha", 2, 0.5)]
    diff = aggregate(runs)["test_error_random_minus_search"]
    assert diff["n"] == 2 and abs(diff["mean"] - 0.025) < 1e-12
