"""Selection never sees the test set, in the search or in its race, and trials ASHA stopped
reach Optuna as PRUNED."""

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from analysis.results import TRIAL_DIR
from tests.study.faults import PERMUTE_TEST_ENV, fault_env
from tests.study.helpers import reported_steps, trial_dirs

STEPS = 150


def searches(study, envs: dict[str, dict | None]) -> dict[str, Path]:
    """Seeded digits searches, one trial at a time in each: the order of events in a study
    is deterministic. The studies run side by side (two local Ray instances), a core each."""
    procs = {name: study.start("--space", "digits", "--name", name, "--num-samples", "6",
                               "--max-concurrent", "1", "--cpus-per-trial", "1",
                               "--num-cpus", "1", "--steps-per-trial", STEPS,
                               "--test-freq", "50", "--seed", "4", "--race-finalists", "1",
                               "--race-seeds", "2", env=env)
             for name, env in envs.items()}
    for proc in procs.values():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    return {name: study.storage / name for name in envs}


def trials_in_order(path):
    """(params, metrics) of each trial, in the order the searcher created them."""
    dirs = sorted(trial_dirs(path), key=lambda d: int(TRIAL_DIR.search(d).group(2)))
    return [(json.loads(Path(d, "params.json").read_text()),
             pd.read_csv(Path(d, "run", "metrics.csv")), d) for d in dirs]


@pytest.mark.slow
def test_selection_is_blind_to_the_test_set(study):
    paths = searches(study, {"plain": None, "permuted": fault_env(**{PERMUTE_TEST_ENV: "1"})})
    plain, permuted = trials_in_order(paths["plain"]), trials_in_order(paths["permuted"])

    assert len(plain) == len(permuted) == 6 + 2 * 2  # the search, then its race
    race = [p for p, _, _ in plain if p.get("phase") == "race"]
    assert {(p["entrant"], p["seed"]) for p in race} == {
        (e, s) for e in ("defaults", "finalist-1") for s in (12789, 12790)}
    for (params_a, metrics_a, _), (params_b, metrics_b, _) in zip(plain, permuted):
        assert params_a == params_b  # the searcher proposed the same configurations
        assert metrics_a["step"].tolist() == metrics_b["step"].tolist()  # same ASHA decisions
        assert metrics_a["val_score"].tolist() == metrics_b["val_score"].tolist()
        # ...while the test figures differ: the permutation did reach the trials, and put
        # test accuracy at chance. (Not at every evaluation: an early model that predicts
        # one class scores the same under any permutation of the labels.)
        assert metrics_b["test_accuracy"].max() < 0.25
        assert metrics_a["test_accuracy"].iloc[-1] != metrics_b["test_accuracy"].iloc[-1]
    stopped = [m["step"].iloc[-1] < STEPS for p, m, _ in plain if "phase" not in p]
    assert any(stopped) and not all(stopped)  # ASHA had decisions to make
    assert all(m["step"].iloc[-1] == STEPS for p, m, _ in plain if "phase" in p)  # not ASHA's
    a, b = (json.loads((study.storage / n / "study_summary.json").read_text())
            for n in ("plain", "permuted"))
    for summary in (a, b):  # Ray's trial ids differ between the two studies
        for entrant in summary["race"]["entrants"].values():
            del entrant["search_trial_id"]
    assert a["race"] == b["race"]  # every entrant's scores per seed, and the decision
    assert a["best_config"] == b["best_config"]
    assert a["race"]["entrants"][a["race"]["decision"]["choice"]]["config"] == a["best_config"]

    # Optuna's record: finished trials COMPLETE with their final validation score, stopped
    # ones PRUNED with the validation scores of the steps they reached.
    db = optuna.load_study(study_name="plain",
                           storage=f"sqlite:///{study.storage / 'plain' / 'optuna.db'}")
    by_params = {json.dumps(t.params, sort_keys=True): t for t in db.trials}
    assert len(db.trials) == 6  # the race trains known configurations: not Optuna's trials
    for params, metrics, trial_dir in (t for t in plain if "phase" not in t[0]):
        t = by_params[json.dumps(params, sort_keys=True)]
        scores = dict(zip(metrics["step"], metrics["val_score"]))
        assert t.intermediate_values == pytest.approx(scores)
        assert reported_steps(trial_dir) == list(scores)
        if metrics["step"].iloc[-1] < STEPS:
            assert t.state == optuna.trial.TrialState.PRUNED
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.value == pytest.approx(metrics["val_score"].iloc[-1])
