"""A study directory's names, written once. The driver and the CLI write the files; the
lock, the seal, the rehearsal, the console and the analysis find them here. It imports
nothing of the project (nor Ray), so that the analysis may read it too."""

from __future__ import annotations

import re

STUDY_FILE = "study.json"  # options, space, resources, protocol: written at the start
SUMMARY_FILE = "study_summary.json"  # counts by outcome and the choice: written at the end
OPTUNA_DB = "optuna.db"  # the searcher's trials (sqlite)
# The layout of study.json and the study's files, for their readers (analysis/results.py
# refuses a format it does not know). 1: the first, also meant by a study.json without it.
STUDY_FORMAT = 1

# A trial's folder: Ray Tune's TRAINABLE_ID_NUMBER_... (trial_folder names it so); the id
# is 8 hex digits for trials a searcher suggests (run_trial_1aef82c0_11_...) and 5 hex + a
# 5-digit index for a grid (run_trial_53563_00002_2_...). Groups: the id, the number.
TRIAL_MARK = "_trial_"  # in every trial folder's name and in no other entry of a study
TRIAL_PREFIX = "run_trial_"  # Tune's trainable name, run_trial, then _ID_NUMBER_
TRIAL_GLOB = TRIAL_PREFIX + "*"
TRIAL_DIR = re.compile(r"_trial_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})_(\d+)")
FOLDER_NAME_MAX = 100  # characters of a trial folder's name

# A reproduce study's arms, in the order they are trained and tabled: the configuration
# chosen on validation, the paper's defaults, the supervised baseline.
TUNED, DEFAULT, SUPERVISED = "tuned", "default", "supervised"
ARMS = (TUNED, DEFAULT, SUPERVISED)


def is_trial_folder(name: str) -> bool:
    """Whether an entry of a study directory is (named like) a trial's folder."""
    return TRIAL_MARK in name


def trial_folder(trial_id: str, number: int, values: str) -> str:
    """A trial folder's name: Tune's `run_trial_ID_NUMBER_` head, then the short values."""
    return f"{TRIAL_PREFIX}{trial_id}_{number}_{values}"[:FOLDER_NAME_MAX]
