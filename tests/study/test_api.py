"""A study from Python: run_study takes the command line's options as keywords, runs the
same checks, and returns the summary and the study's directory."""

import json
import subprocess
import sys
import textwrap

import pytest

from study import StudyError, StudyOptions, run_study
from study.api import study_argv
from tests.study.helpers import REPO


def test_keywords_are_the_command_lines_flags():
    assert study_argv("digits", num_samples=4, resume=True, scheduler="fifo", address=None,
                      then_reproduce=None) == [
        "--space", "digits", "--num-samples", "4", "--resume", "--scheduler", "fifo"]
    assert StudyOptions(space="digits", name="x").num_samples == 16  # the typed options


def test_an_unknown_or_refused_option_raises_before_any_work(tmp_path):
    with pytest.raises(StudyError, match="num_sample: not an option of a study; the options "
                                         r"are \[.*'num_samples'"):
        run_study("digits", num_sample=3)
    with pytest.raises(StudyError, match="--scheduler: invalid choice: 'bogus'"):
        run_study("digits", scheduler="bogus", storage_path=tmp_path)
    with pytest.raises(StudyError, match="--reproduce, --then-reproduce and --ablation"):
        run_study("digits", reproduce=2, ablation=2, storage_path=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing made


NOTEBOOK = """
    import json, sys
    from study import StudyError, run_study

    options = dict(name="nb", num_samples=2, scheduler="fifo", steps_per_trial=20,
                   test_freq=10, race_finalists=0, storage_path=sys.argv[1], verbose=0)
    first = run_study("digits", **options)
    try:
        run_study("digits", **options)  # the same name again, without resume
    except StudyError as e:
        refused = str(e)
    again = run_study("digits", resume=True, **options)  # a second Ray start, one process
    print(json.dumps({"path": first.path, "summary": first.summary, "refused": refused,
                      "again": again.summary["num_completed"]}))
"""


@pytest.mark.ray
def test_a_study_runs_from_python_and_returns_its_summary_and_directory(tmp_path):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(NOTEBOOK), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["path"] == str(tmp_path / "nb")
    first = result["summary"]
    assert first["num_completed"] == 2 and first["path"] == result["path"]
    assert "already exists" in result["refused"] and "--resume" in result["refused"]
    # The resumed study (its summary now on disk): the same two trials, none run again.
    on_disk = json.loads((tmp_path / "nb" / "study_summary.json").read_text())
    assert result["again"] == 2 and on_disk["best_config"] == first["best_config"]
    assert {t["trial_id"] for t in on_disk["trials"]} == {t["trial_id"] for t in first["trials"]}
