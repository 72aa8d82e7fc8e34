"""The one-call GPU check (`bash .ci/gpu`): what it does without a GPU, its plan, its part
runner and its record, all on the CPU (the GPU parts themselves run only on a GPU)."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from study.bench import gpu_check
from study.bench.gpu_check import (
    CUDA_TESTS,
    TOTAL_BUDGET_S,
    WRITE_MARGIN_S,
    Finished,
    Part,
    build_parts,
    exit_status,
    junit_tests,
    main,
    plan_text,
    read_bench,
    read_precision,
    read_probe,
    read_tests,
    run_part,
    run_parts,
)
from study.bench.gpu_probes import memory_cap, own_data_host
from study.bench.gpu_report import markdown, slug, write_report

REPO = Path(__file__).resolve().parents[3]
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
NO_GPU_LINE = "gpu check: no CUDA device: torch.cuda.is_available() is False"


def blocking(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose Python processes cannot import `modules`, as on a bare GPU box."""
    folder = tmp_path / "block"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(folder),
                OMP_NUM_THREADS="1")


def ci_gpu(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
           script: Path = REPO / ".ci" / "gpu") -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


# --- without a GPU --------------------------------------------------------------------------

@no_gpu_here
def test_without_a_gpu_ci_gpu_fails_at_once_naming_the_problem_and_the_fix(tmp_path):
    start = time.monotonic()
    done = ci_gpu("--out-dir", str(tmp_path / "out"), cwd=tmp_path)  # from anywhere
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(NO_GPU_LINE), done.stderr
    assert "run `bash .ci/gpu` on a machine with an NVIDIA GPU" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
    assert time.monotonic() - start < 60  # torch's import, not a part


@no_gpu_here
def test_without_a_gpu_the_module_returns_2_before_running_a_part(tmp_path, capsys,
                                                                   monkeypatch):
    def no_part(*args):
        raise AssertionError("a part was started")

    monkeypatch.setattr(gpu_check, "run_parts", no_part)
    assert main(["--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(NO_GPU_LINE) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@no_gpu_here
def test_a_copy_of_the_tree_without_ray_or_pytest_plans_and_refuses_from_its_own_root(tmp_path):
    copy = tmp_path / "copy"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in (".ci", "trainer", "study", "tests"):
        shutil.copytree(REPO / folder, copy / folder, ignore=ignore)
    env = blocking(tmp_path, "ray", "pytest", "sklearn", "tensorboardX")
    plan = ci_gpu("--plan", cwd=tmp_path, env=env, script=copy / ".ci" / "gpu")
    assert plan.returncode == 0, plan.stderr
    assert f"each runs from {copy}" in plan.stdout  # the copy's modules, not this tree's
    assert "skipped: pytest is not installed" in plan.stdout
    assert "trials launched as processes (Ray not installed)" in plan.stdout
    refused = ci_gpu(cwd=tmp_path, env=env, script=copy / ".ci" / "gpu")
    assert refused.returncode == 2 and refused.stderr.startswith(NO_GPU_LINE)


# --- the plan -------------------------------------------------------------------------------

def test_the_plan_names_every_part_its_budget_and_its_command(capsys):
    assert main(["--plan"]) == 0  # no GPU needed to see it
    out = capsys.readouterr().out
    parts = build_parts()
    assert [p.name for p in parts] == ["cuda-tests", "memory-cap", "own-data-host", "bench",
                                       "packing", "precision"]
    assert sum(p.budget_s for p in parts) <= TOTAL_BUDGET_S - WRITE_MARGIN_S
    for p in parts:
        assert f"{p.name} ({p.budget_s:g} s)" in out and p.shown() in out
    bench = parts[3].argv()
    assert bench[:3] == ["python", "-m", "trainer.bench"] and "--out" in bench
    assert bench[bench.index("--packing") + 1] == "none"  # the packing part has its own budget
    packing = parts[4].argv()
    assert packing[packing.index("--packing") + 1] == "1,2,4"
    assert parts[5].argv()[:3] == ["python", "-m", "trainer.bench.precision"]
    assert parts[2].argv()[3:5] == ["--run-part", "own-data-host"]


def test_only_picks_parts_and_an_unknown_one_is_refused_with_the_names(capsys):
    assert main(["--plan", "--only", "bench,precision"]) == 0
    out = capsys.readouterr().out
    assert "1. bench" in out and "2. precision" in out and "cuda-tests" not in out
    with pytest.raises(SystemExit) as e:
        main(["--only", "bench,nope"])
    assert e.value.code == 2
    assert "no part nope; the parts: cuda-tests, memory-cap" in capsys.readouterr().err


def test_a_missing_module_skips_what_needs_it_and_says_why():
    parts = {p.name: p for p in build_parts(has=lambda m: m not in ("pytest", "ray"))}
    assert parts["cuda-tests"].skip == "pytest is not installed (only this part needs it)"
    assert "as processes (Ray not installed)" in parts["packing"].about
    assert parts["bench"].skip is None and parts["precision"].skip is None
    tests = build_parts(has=lambda m: m not in ("sklearn",))[0]
    own = next(t for t in CUDA_TESTS if "pinned_host" in t)
    assert tests.skip is None and own not in tests.argv()
    assert tests.notes == {own: "needs sklearn (not installed)"}
    assert f"not run: {own}: needs sklearn" in plan_text([tests])
    no_vision = {p.name: p for p in build_parts(has=lambda m: m != "torchvision")}
    assert no_vision["bench"].skip == "torchvision not installed (trainer.bench needs it)"
    skipped = run_part(no_vision["bench"], Path("/nonexistent"), 100)  # starts nothing
    assert (skipped["status"], skipped["reason"]) == ("skipped", no_vision["bench"].skip)


SKIPS_WITHOUT_CUDA = re.compile(r"skipif\(\s*not\s+torch\.cuda\.is_available\(\)")


def skips_without_cuda(source: str) -> bool:
    return SKIPS_WITHOUT_CUDA.search(source) is not None


def cuda_only_tests() -> set[str]:
    """Every test function under tests/ with a skip-unless-CUDA decorator, or one named for it."""
    found = set()
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        markers = {t.id for node in tree.body if isinstance(node, ast.Assign)
                   and skips_without_cuda(ast.get_source_segment(text, node.value))
                   for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and any(
                    skips_without_cuda(ast.get_source_segment(text, d))
                    or ast.get_source_segment(text, d) in markers for d in node.decorator_list):
                found.add(f"{path.relative_to(REPO)}::{node.name}")
    return found


def test_the_check_runs_every_test_that_skips_without_cuda_and_each_it_names_exists():
    found = cuda_only_tests()
    assert len(found) >= 4  # the scan sees the ones known today
    assert found <= set(CUDA_TESTS), f"add to CUDA_TESTS: {sorted(found - set(CUDA_TESTS))}"
    for test in CUDA_TESTS:
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), test


# --- the part runner ------------------------------------------------------------------------

def python_part(name: str, code: str, budget_s: float = 30, read=read_probe) -> Part:
    return Part(name, budget_s, f"{name} part", ("{python}", "-c", code), read)


WRITES_OK = ("import json, sys; json.dump({'figures': {'x': 1}, 'failure': None}, "
             "open('{scratch}/probe.json', 'w'))")


def gone(pid: int, wait_s: float = 5) -> bool:
    """Whether process `pid` has ended (exited, or a zombie no one has reaped yet)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_a_failing_or_overrunning_part_is_recorded_and_the_next_ones_still_run(tmp_path):
    grandchild = tmp_path / "grandchild.pid"
    parts = [
        python_part("raises", "raise RuntimeError('boom')"),
        python_part("overruns", "import subprocess, sys, time; p = subprocess.Popen("
                    "[sys.executable, '-c', 'import time; time.sleep(60)']); "
                    f"open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)",
                    budget_s=3),
        python_part("bad-reader", "pass", read=lambda done: {}["missing"]),
        python_part("fine", WRITES_OK),
    ]
    seen = []
    start = time.monotonic()
    results = run_parts(parts, tmp_path, time.monotonic() + 100,
                        on_result=lambda r: seen.append(list(r)))
    assert time.monotonic() - start < 30  # the overrunning part was stopped at its budget
    assert seen == [["raises"], ["raises", "overruns"], ["raises", "overruns", "bad-reader"],
                    ["raises", "overruns", "bad-reader", "fine"]]
    assert results["raises"]["status"] == "failed"
    assert "RuntimeError: boom" in results["raises"]["reason"]
    assert "RuntimeError: boom" in results["raises"]["output_tail"]
    over = results["overruns"]
    assert over["status"] == "failed" and over["reason"] == "over its budget: stopped after 3 s"
    assert 3 <= over["seconds"] < 20
    assert gone(int(grandchild.read_text()))  # its whole process group was ended
    assert results["bad-reader"]["status"] == "failed"
    assert results["bad-reader"]["reason"] == "reading its result: KeyError: 'missing'"
    assert results["fine"] == {**results["fine"], "status": "ok", "figures": {"x": 1}}
    assert exit_status(results) == 1
    assert exit_status({"fine": results["fine"]}) == 0


def test_the_check_records_after_each_part_and_ends_with_its_exit_status(tmp_path,
                                                                         monkeypatch, capsys):
    # the machine's description needs a GPU; everything after it is the check's own
    monkeypatch.setattr(gpu_check, "environment", lambda argv: {"gpu": "Test GPU", "date": "d",
                                                                "torch": "t"})
    snapshots = []

    def write(report: dict, out: str) -> tuple[str, str]:
        snapshots.append((list(report["parts"]), report["complete"]))
        return write_report(report, out)

    monkeypatch.setattr(gpu_check, "write_report", write)
    parts = [python_part("fine", WRITES_OK), python_part("raises", "raise SystemExit(3)")]
    assert gpu_check.check(parts, str(tmp_path), [], time.monotonic()) == 1
    assert snapshots == [(["fine"], False), (["fine", "raises"], False),
                         (["fine", "raises"], True)]
    written = json.loads((tmp_path / "gpu-check-test-gpu.json").read_text())
    assert (written["complete"], written["exit_status"]) == (True, 1)
    assert written["parts"]["raises"]["reason"] == "exit status 3"
    assert "| raises | failed |" in (tmp_path / "gpu-check-test-gpu.md").read_text()
    assert "Test GPU: fine ok, raises failed" in capsys.readouterr().out


def test_parts_past_the_checks_deadline_are_skipped_not_started(tmp_path):
    marker = tmp_path / "started"
    parts = [python_part("first", WRITES_OK + "; import time; time.sleep(2)", budget_s=10),
             python_part("late", f"open({str(marker)!r}, 'w')", budget_s=60)]
    # the first runs (6 s left), then less than MIN_PART_S is left for the second
    results = run_parts(parts, tmp_path, time.monotonic() + 6)
    assert results["first"]["status"] == "ok"
    assert results["late"]["status"] == "skipped"
    assert f"of the check's {TOTAL_BUDGET_S} s were left" in results["late"]["reason"]
    assert not marker.exists()
    assert exit_status(results) == 0  # a skipped part says why; it is not a failure


# --- reading the parts' results -------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.trainer.test_device" name="test_a[fd]" time="1.5" />
<testcase classname="tests.trainer.test_device" name="test_b" time="0.2">
<failure message="AssertionError: not close">trace</failure></testcase>
<testcase classname="tests.study.test_gpu_share" name="test_c" time="0.0">
<skipped type="pytest.skip" message="needs a CUDA GPU">skip</skipped></testcase>
</testsuite></testsuites>"""


def test_the_tests_part_reads_each_outcome_and_fails_on_a_failure_or_a_skip(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    tests = junit_tests(tmp_path / "junit.xml")
    assert tests[0] == {"test": "tests/trainer/test_device.py::test_a[fd]", "outcome": "passed",
                        "message": None, "seconds": 1.5}
    assert [t["outcome"] for t in tests] == ["passed", "failed", "skipped"]
    status, reason, figures = read_tests(Finished(1, "", tmp_path), {"t": "needs sklearn"})
    assert status == "failed" and reason == "test_b failed, test_c skipped"
    assert figures["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert figures["not_run"] == {"t": "needs sklearn"}
    (tmp_path / "junit.xml").write_text(JUNIT.split("<testcase classname=\"tests.trainer."
                                                    "test_device\" name=\"test_b")[0]
                                        + "</testsuite></testsuites>")
    assert read_tests(Finished(0, "", tmp_path), {})[:2] == ("ok", "1 passed")


def test_the_bench_part_fails_on_a_failed_step_and_reports_a_missed_target(tmp_path):
    def net(jvp: dict, speedup: float) -> dict:
        return {"ours": {"supervised": {"ms": 1.0}, "metasemi_jvp": jvp},
                "speedup_over_reference": speedup, "meta_over_supervised": 3.9}

    result = {"networks": {"convlarge": net({"ms": 4.0}, 3.5)}}
    (tmp_path / "bench.json").write_text(json.dumps(result))
    status, reason, figures = read_bench(Finished(0, "", tmp_path))
    assert (status, reason) == ("ok", "missed: convlarge speedup_over_reference >= 4")
    assert figures["result"] == result
    assert [t["met"] for t in figures["targets"]] == [False, True]
    result["networks"]["digitscnn"] = net({"error": "RuntimeError: jvp"}, 5.0)
    (tmp_path / "bench.json").write_text(json.dumps(result))
    assert read_bench(Finished(0, "", tmp_path))[:2] == (
        "failed", "digitscnn metasemi_jvp: RuntimeError: jvp")


def test_the_precision_part_keeps_the_tables_rows():
    out = ("warning\n| network | seed | fd fp32 | jvp bf16 |\n| --- | ---: | ---: | ---: |\n"
           "| convlarge | 0 | 0.99999 | 1.00000 |\n")
    status, _, figures = read_precision(Finished(0, out, Path()))
    assert status == "ok"
    assert figures["rows"] == [{"network": "convlarge", "seed": "0", "fd fp32": "0.99999",
                                "jvp bf16": "1.00000"}]
    with pytest.raises(gpu_check.PartFailed, match="exit status 1: Traceback"):
        read_precision(Finished(1, "Traceback", Path()))


# --- the probes, on the CPU -----------------------------------------------------------------

@no_gpu_here
def test_the_memory_cap_probe_without_cuda_fails_and_says_so(tmp_path):
    assert memory_cap() == ({}, "no CUDA device: torch.cuda.is_available() is False")
    assert gpu_check.run_probe("memory-cap", str(tmp_path / "probe.json")) == 1
    assert json.loads((tmp_path / "probe.json").read_text())["failure"].startswith("no CUDA")


def test_the_own_data_probe_times_both_placements_and_fails_unless_pinned(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    figures, failure = own_data_host(device="cpu", images=300, size=8, steps=1, batch_size=8,
                                     labels_per_class=2)
    # on a CPU the host is the device: nothing is pinned, which the probe must notice
    assert failure == "with --host the images were on cpu, not pinned host"
    assert figures["host"]["images_on"] == figures["device"]["images_on"] == "cpu"
    assert figures["host"]["ms_per_step"] > 0 and figures["host_over_device_step"] > 0


# --- the record -----------------------------------------------------------------------------

def part_result(status: str, reason: str | None = None, figures=None) -> dict:
    return {"status": status, "seconds": 1.25, "budget_s": 20, "command": "python -c pass",
            "about": "a part", "reason": reason, "figures": figures or {}, "output_tail": "end"}


def report(**parts) -> dict:
    return {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-12-02T10:00:00+00:00",
            "torch": "2.14.1+cu130", "cuda": "13.0", "budget_s": 300, "seconds": 42.0,
            "complete": True, "exit_status": 1, "parts": parts}


def test_the_record_is_one_json_and_one_markdown_with_every_parts_status(tmp_path):
    r = report(**{"cuda-tests": part_result("failed", "test_b failed"),
                  "memory-cap": part_result("ok", figures={"cap_gib": 19.0, "share": 0.25}),
                  "precision": part_result("skipped", "no time left")})
    json_path, md_path = write_report(r, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu-check-nvidia-h100-80gb-hbm3.json", "gpu-check-nvidia-h100-80gb-hbm3.md"]
    assert json.loads(Path(json_path).read_text()) == r
    md = Path(md_path).read_text()
    assert md.startswith("# GPU check: NVIDIA H100 80GB HBM3\n\n2026-12-02T10:00:00+00:00.")
    assert "torch 2.14.1+cu130 (CUDA 13.0" in md
    assert "| cuda-tests | failed | 1.2 | 20 | test_b failed |" in md
    assert "| memory-cap | ok | 1.2 | 20 |  |" in md
    assert "| precision | skipped | 1.2 | 20 | no time left |" in md
    assert "- cap_gib: 19" in md
    assert "## cuda-tests: failed" in md and md.count("```") == 2  # the failed part's output


def test_a_record_that_cannot_be_written_leaves_the_last_one_whole(tmp_path):
    json_path, md_path = write_report(report(bench=part_result("ok")), str(tmp_path))
    before = Path(json_path).read_bytes(), Path(md_path).read_bytes()
    with pytest.raises(TypeError):
        write_report(report(bench=part_result("ok", figures={"x": {1, 2}})), str(tmp_path))
    assert (Path(json_path).read_bytes(), Path(md_path).read_bytes()) == before
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left behind


def test_figures_that_cannot_be_rendered_are_said_so_and_the_rest_is_written():
    md = markdown(report(bench=part_result("ok", figures={"no": "result"}),
                         packing=part_result("failed", "exit status 1")))
    assert "Figures not rendered (KeyError: 'result'); see the JSON file." in md
    assert "| packing | failed | 1.2 | 20 | exit status 1 |" in md


def test_a_gpu_name_becomes_a_file_name():
    assert slug("NVIDIA H200") == "nvidia-h200"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("???") == "gpu"


# --- the real commands' output, on the CPU --------------------------------------------------

@pytest.mark.slow  # runs trainer.bench twice and the precision bench: about 30 s on 2 cores
def test_the_readers_understand_what_the_benchmarks_really_print_without_ray(tmp_path,
                                                                          monkeypatch):
    # the parts' processes and the packing trials they spawn cannot import Ray, as on a bare
    # GPU box: the packing curve must run as plain processes
    monkeypatch.setenv("PYTHONPATH", blocking(tmp_path, "ray")["PYTHONPATH"])
    parts = {p.name: p for p in build_parts(has=lambda m: m != "ray")}
    on_cpu = ("--device", "cpu", "--networks", "digitscnn", "--steps", "1", "--warmup", "0")
    chosen = [Part("bench", 120, "", (*parts["bench"].command, *on_cpu), parts["bench"].read),
              Part("packing", 120, "", (*parts["packing"].command, *on_cpu, "--packing", "1,2",
                                        "--packing-steps", "2"), parts["packing"].read),
              Part("precision", 120, "", (*parts["precision"].command, "--networks",
                                          "digitscnn"), parts["precision"].read)]
    results = run_parts(chosen, tmp_path, time.monotonic() + 400)
    assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(
        ("bench", "packing", "precision"), "ok"), results
    assert results["bench"]["figures"]["result"]["networks"]["digitscnn"]["reference"]
    packing = results["packing"]["figures"]["networks"]["digitscnn"]
    assert packing["launcher"] == "processes"
    assert [p["trials"] for p in packing["points"]] == [1, 2]
    assert results["precision"]["figures"]["rows"][0]["network"] == "digitscnn"
    md = markdown(report(**results))
    assert "| ours metasemi |" in md and "| 2 | 0 |" in md and "| digitscnn | 0 |" in md
