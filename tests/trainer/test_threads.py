"""torch's CPU threads: as many as the process may use, unless told otherwise."""

import os
import subprocess
import sys
import time

import pytest
import torch

from trainer.config import ConfigError
from trainer.loop import estimate
from trainer.settings import resolve
from trainer.threads import apply, busy_cpus, choose, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def cgroup(tmp_path, v2: str | None = None, quota: int | None = None, period: int = 100000):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if quota is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return str(tmp_path)


def test_a_container_quota_caps_the_threads_at_its_cpus_rounded_up(tmp_path):
    assert usable_cpus(cgroup(tmp_path, v2="50000 100000")) == 1  # half a CPU: one thread
    assert usable_cpus(cgroup(tmp_path, v2="100000 100000")) == 1
    assert usable_cpus(cgroup(tmp_path, v2=f"{AFFINITY * 400000} 100000")) == AFFINITY


def test_without_a_quota_the_affinity_decides(tmp_path):
    assert usable_cpus(cgroup(tmp_path, v2="max 100000")) == AFFINITY
    assert usable_cpus(str(tmp_path / "absent")) == AFFINITY
    (tmp_path / "v1").mkdir()
    assert usable_cpus(cgroup(tmp_path / "v1", quota=-1)) == AFFINITY  # v1: -1 is no limit


def test_a_cgroup_v1_quota_is_read_too(tmp_path):
    assert usable_cpus(cgroup(tmp_path, quota=100000, period=100000)) == 1


def test_the_flag_wins_then_omp_num_threads_then_the_usable_cpus(tmp_path, monkeypatch):
    quota = cgroup(tmp_path, v2="100000 100000")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose(5, quota) == (5, "--threads")
    assert choose(0, quota) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose(0, quota) == (1, "1 CPU this process may use")


@pytest.mark.skipif(AFFINITY < 2, reason="one CPU: nothing to leave to a neighbour")
def test_a_busy_neighbour_is_left_its_cpu_where_no_quota_reserves_ours(tmp_path):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy, cpus = busy_cpus(sample_s=0.5)
        assert busy >= 0.7  # the spinner's core, seen from /proc/stat
        n, why = choose(0, cgroup=str(tmp_path / "no-quota"))
        assert n < AFFINITY  # the spinner's core is left to it
        assert why.endswith("kept busy by other processes")
    finally:
        spinner.kill()
        spinner.wait()


def test_apply_sets_torchs_intra_op_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert apply(1) == (1, "--threads") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_is_a_setting_checked_at_the_edge():
    assert resolve({"threads": 2}).threads == 2
    with pytest.raises(ConfigError, match="threads: must be a non-negative integer, got -1"):
        resolve({"threads": -1})


def test_the_estimate_names_the_time_and_on_a_cpu_how_to_shorten_a_long_run():
    cfg = resolve({"total_steps": 3100})
    short = estimate(cfg, 6, 100.0, torch.device("cpu"))
    assert short == ("estimate: 3094 steps at 100.0 steps/s (timed over 5) take about 31 s on "
                     "cpu, plus the evaluations")
    long = estimate(cfg, 6, 0.5, torch.device("cpu"))
    assert "about 1.7 h on cpu" in long and "fewer --total-steps" in long
    assert "fewer" not in estimate(cfg, 6, 0.5, torch.device("cuda"))
