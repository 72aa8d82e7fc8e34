import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.study.helpers import Study, ray_processes
from trainer import resolve, train


def _set_ray_tmpdir(path: str | None) -> None:
    if path is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = path


@pytest.fixture(scope="session", autouse=True)
def ray_temp_root():
    """A private Ray temp root for the session, removed afterwards: a suite starts Ray about
    sixty times and each start leaves a session folder of logs (2 GB after a few runs in
    /tmp/ray, where a local start was once seen taking 19 s instead of 4)."""
    before = os.environ.get("RAY_TMPDIR")
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are limited
    _set_ray_tmpdir(root)
    yield root
    _set_ray_tmpdir(before)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_ray_temp_dir(ray_temp_root):
    """Each test's Ray instances and clusters start from an empty temp dir."""
    path = tempfile.mkdtemp(prefix="t", dir=ray_temp_root)
    _set_ray_tmpdir(path)
    yield
    _set_ray_tmpdir(ray_temp_root)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_ray_process_outlives_its_test():
    """Every Ray process a test starts is gone after it, whether the test passed or failed.
    It wraps the tests marked `ray` only: it scans every process of the machine, so a Ray
    started by anything else at the same time would be blamed on the test."""
    before = ray_processes()
    yield
    deadline = time.time() + 15
    while (left := ray_processes() - before) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left running by this test: {sorted(left)}"


# One set of real results, shared by the analysis tests and the study tests that read
# finished studies: a digits search study, a reproduce study and an ablation study run by
# study/run.py on a local Ray, and standalone trainer runs.
def run_study(storage: Path, *args: str) -> None:
    study = Study(storage.parent)
    try:
        rc, out = study.run("--space", "digits", *args, "--storage-path", storage)
    finally:  # never leave a Ray instance behind
        study.close()
    assert rc == 0, out


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    studies = root / "studies"
    # FIFO: all five trials complete, so importance has five points (the study tests show
    # ASHA stopping trials; test_results shows how such a trial is read). Then a race of
    # the best one against the defaults on two seeds.
    run_study(studies, "--num-samples", "5", "--scheduler", "fifo", "--steps-per-trial", "100",
              "--test-freq", "50", "--seed", "1", "--race-finalists", "1", "--race-seeds", "2")
    # The configuration the search chose, the paper's defaults and the supervised baseline.
    run_study(studies, "--reproduce", "2", "--steps-per-trial", "40", "--test-freq", "20",
              "--max-concurrent", "2")
    run_study(studies, "--ablation", "2", "--steps-per-trial", "40", "--test-freq", "20",
              "--max-concurrent", "2")
    runs = root / "runs"
    for seed in (1, 2):
        train(resolve({"seed": seed, "total_steps": 100, "test_freq": 50, "device": "cpu",
                       "save_path": str(runs / f"metasemi-{seed}")}), show_progress=False)
    return {"root": root, "studies": studies, "search": studies / "digits",
            "reproduce": studies / "digits-reproduce", "ablation": studies / "digits-ablation",
            "runs": runs}



# Tests that start Ray (a study, a cluster) or read the analysis' shared results (made by
# three studies) are marked `ray`, and every `ray` test is slow: `pytest -m "not slow"` is
# the fast tier. A test that starts Ray some other way is marked `ray` by hand.
RAY_FIXTURES = {"study", "cluster", "results"}


def pytest_collection_modifyitems(items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)
            item.fixturenames.insert(0, "no_ray_process_outlives_its_test")  # outermost
