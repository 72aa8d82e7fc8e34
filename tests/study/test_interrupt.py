"""An interrupted driver says so, exits 128 + the signal, and a pipeline never goes on from
an unfinished stage; --resume finishes each stage and every trial counts once."""

import json
import os
import signal
from pathlib import Path

import optuna
import pandas as pd

from tests.study.helpers import assert_each_trial_once, trial_dirs, wait_for

PIPELINE = ("--space", "digits", "--name", "p", "--num-samples", "4", "--scheduler", "fifo",
            "--max-concurrent", "1", "--steps-per-trial", "40", "--test-freq", "20",
            "--seed", "1", "--then-reproduce", "1")


def test_a_pipeline_interrupted_at_each_stage_resumes_and_counts_every_trial_once(study):
    search, reproduce = study.storage / "p", study.storage / "p-reproduce"

    # SIGTERM (as a scheduler or `kill` sends) once the search has its first trial
    proc = study.start(*PIPELINE)
    wait_for(lambda: len(trial_dirs(search)) >= 1, proc, "the first search trial")
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    assert "interrupted (SIGTERM): the study 'p' did not finish" in out
    assert out.rstrip().endswith("--resume")  # the command that resumes this one
    assert not (search / "study_summary.json").exists()  # nothing reads it as finished
    assert not reproduce.exists()  # the next stage never started

    # resumed; Ctrl-C (SIGINT to the driver) while the search has its second trial
    proc = study.start(*PIPELINE, "--resume")
    wait_for(lambda: len(trial_dirs(search)) >= 2, proc, "the second search trial")
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "interrupted (SIGINT): the study 'p' did not finish, and nothing after it ran" in out
    resume = next(line for line in out.splitlines() if "resume with: " in line)
    assert resume.split("resume with: ")[1].startswith("python study/run.py --space digits")
    assert resume.count("--resume") == 1  # the command as given, which resumes already
    assert not (search / "study_summary.json").exists()
    assert not reproduce.exists()

    # resumed; Ctrl-C again once the reproduction runs
    proc = study.start(*PIPELINE, "--resume")
    wait_for(lambda: any(Path(d, "run", "placement.json").exists()
                         for d in trial_dirs(reproduce)), proc, "a reproduce trial")
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "interrupted (SIGINT): the study 'p-reproduce' did not finish" in out
    assert (search / "study_summary.json").exists()
    assert not (reproduce / "study_summary.json").exists()

    rc, out = study.run(*PIPELINE, "--resume")
    assert rc == 0, out
    summary = assert_each_trial_once(search, 4, [20, 40])
    assert summary["num_completed"] == 4
    # Optuna's record agrees with the summary: four trials, each COMPLETE once
    db = optuna.load_study(study_name="p", storage=f"sqlite:///{search / 'optuna.db'}")
    assert [t.state for t in db.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    # the reproduction trains the search's final choice, on its three arms
    repro = json.loads((reproduce / "study_summary.json").read_text())
    assert repro["num_trials"] == repro["num_completed"] == len(trial_dirs(reproduce)) == 3
    for d in trial_dirs(reproduce):  # the interrupted one continued: each step once
        assert pd.read_csv(Path(d, "run", "metrics.csv"))["step"].tolist() == [20, 40], d
    chosen = json.loads((search / "study_summary.json").read_text())["best_config"]
    tuned = next(json.loads(Path(d, "run", "config.json").read_text())
                 for d in trial_dirs(reproduce)
                 if json.loads(Path(d, "params.json").read_text())["variant"] == "tuned")
    # (its warm-up the chosen one scaled from the full 600 steps to these runs' 40)
    assert {k: tuned[k] for k in chosen} == {**chosen, "warmup": round(chosen["warmup"] / 15)}
    made = json.loads((reproduce / "study.json").read_text())["options"]
    assert made["best_config"] == chosen and made["source"]["study"] == "p"

    # The search's state changes under the finished reproduction (re-run, edited): resuming
    # the pipeline is refused, naming both choices, before Ray starts.
    summary_file = search / "study_summary.json"
    changed = json.loads(summary_file.read_text())
    changed["best_config"] = {**chosen, "lr": chosen["lr"] * 2}
    summary_file.write_text(json.dumps(changed))
    rc, out = study.run(*PIPELINE, "--resume")
    assert rc == 2, out
    assert "--resume: the reproduce study 'p-reproduce' was made from the search 'p' when it " \
        "chose" in out and "so its trials reproduce a choice that no longer stands" in out
    assert "Started a local Ray instance" not in out
