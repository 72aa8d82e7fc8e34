"""`python -m study.bench.gpu_check` (`bash .ci/gpu`): every GPU-only check in one call.

On one CUDA GPU, in at most five minutes: the CUDA-only tests, `python -m trainer.bench`, its
packing curve, the memory cap of a fractional trial, the own-data pinned-host path and
`python -m trainer.bench.precision`. Each part runs in a process of its own under a time
budget; a part that fails or overruns is recorded and the next one runs. Every figure goes
into docs/bench/gpu-check-<gpu>.json and .md. Needs torch, never Ray; a part whose
dependency is missing is skipped and says why. `--plan` lists the parts without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from study.bench.gpu_report import write_report

REPO = Path(__file__).resolve().parents[2]
TOTAL_BUDGET_S = 300  # the whole check; a GPU session has about 15 minutes in all
WRITE_MARGIN_S = 10  # kept back from the last part for the start-up and the final write
MIN_PART_S = 5  # a part with less time left than this is skipped, not started
NO_GPU = 2
TAIL_CHARS = 3000

# The tests that skip without CUDA, each with the modules it needs beyond torch, torchvision,
# numpy, Pillow and pytest (tests/study/bench/test_gpu_check.py keeps this list complete).
CUDA_TESTS: dict[str, tuple[str, ...]] = {
    "tests/trainer/test_device.py::test_a_cuda_metasemi_step_never_waits_for_the_device": (),
    "tests/trainer/test_device.py::"
    "test_on_cuda_bf16_and_channels_last_steps_stay_close_to_fp32": (),
    "tests/trainer/test_own_data.py::"
    "test_images_in_pinned_host_memory_train_as_images_on_the_gpu": ("sklearn", "tensorboardX"),
    "tests/study/test_gpu_share.py::"
    "test_on_cuda_an_allocation_beyond_the_share_fails_in_that_process": (),
    # not CUDA-only, but its check of the GPU's defaults for your data runs only on a GPU
    "tests/trainer/test_cli.py::"
    "test_your_data_on_a_cpu_gets_a_run_of_minutes_and_the_flags_of_the_full_one": (),
}
# The GPU targets of docs/performance.md, for ConvLarge at batch 128.
TARGETS = (("speedup_over_reference", ">=", 4.0), ("meta_over_supervised", "<=", 4.2))


@dataclass
class Finished:
    """A part's process, ended: its exit status, its output, its scratch folder."""

    returncode: int
    output: str
    scratch: Path


Outcome = tuple[str, str | None, dict[str, Any]]  # status, reason, figures


@dataclass(frozen=True)
class Part:
    """One part of the check: a command, run from the repository root under a time budget,
    and how to read its result. "{python}" and "{scratch}" in it are filled in to run."""

    name: str
    budget_s: float
    about: str
    command: tuple[str, ...]
    read: Callable[[Finished], Outcome]
    skip: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def argv(self, python: str = "python", scratch: str = "SCRATCH") -> list[str]:
        return [a.replace("{python}", python).replace("{scratch}", scratch)
                for a in self.command]

    def shown(self) -> str:
        return shlex.join(self.argv())


def module_available(name: str) -> bool:
    """Whether `name` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --- reading what a part left -------------------------------------------------------------

def _last_line(done: Finished) -> str:
    lines = [ln for ln in done.output.splitlines() if ln.strip()]
    return f"exit status {done.returncode}" + (f": {lines[-1][:300]}" if lines else "")


def _load(done: Finished, name: str) -> Any:
    """The JSON file `name` the part wrote in its scratch folder; a failure if it wrote none."""
    path = done.scratch / name
    if not path.exists():
        raise PartFailed(_last_line(done))
    return json.loads(path.read_text())


class PartFailed(Exception):
    """A part's result says it failed; the message is the reason recorded."""


def junit_tests(path: Path) -> list[dict[str, Any]]:
    """Each test case of a pytest JUnit XML file: its node id, outcome, seconds, message."""
    outcomes = {"failure": "failed", "error": "error", "skipped": "skipped"}
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in outcomes:
                outcome, message = outcomes[child.tag], child.get("message")
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        tests.append({"test": node, "outcome": outcome, "message": message,
                      "seconds": float(case.get("time") or 0)})
    return tests


def read_tests(done: Finished, not_run: dict[str, str]) -> Outcome:
    """Every selected test must pass: on a GPU, a CUDA-only test that skips is a failure."""
    path = done.scratch / "junit.xml"
    if not path.exists():
        raise PartFailed(_last_line(done))
    tests = junit_tests(path)
    figures = {"tests": tests, "counts": dict(Counter(t["outcome"] for t in tests)),
               "not_run": not_run}
    bad = [t for t in tests if t["outcome"] != "passed"]
    if not tests or bad or done.returncode:
        named = ", ".join(f"{t['test'].split('::')[-1]} {t['outcome']}" for t in bad)
        return "failed", named or _last_line(done), figures
    not_run_note = f", {len(not_run)} not run" if not_run else ""
    return "ok", f"{len(tests)} passed{not_run_note}", figures


def read_bench(done: Finished) -> Outcome:
    """trainer.bench's JSON, with the GPU targets checked (a missed target is a figure)."""
    result = _load(done, "bench.json")
    failures = [f"{arch} {key}: {m['error']}" for arch, net in result["networks"].items()
                for key, m in net["ours"].items() if "error" in m]
    targets = []
    for key, op, bound in TARGETS if "convlarge" in result["networks"] else ():
        value = result["networks"]["convlarge"].get(key)
        met = value is not None and (value >= bound if op == ">=" else value <= bound)
        targets.append({"target": f"convlarge {key} {op} {bound:g}", "value": value,
                        "met": met})
    figures = {"result": result, "targets": targets}
    if failures or done.returncode:
        return "failed", "; ".join(failures) or _last_line(done), figures
    missed = [t["target"] for t in targets if not t["met"]]
    return "ok", ("missed: " + ", ".join(missed)) if missed else None, figures


def read_packing(done: Finished, launcher: str) -> Outcome:
    """The packing curve of each network; its trials must have run as `launcher`."""
    result = _load(done, "bench.json")
    networks = {arch: {"launcher": net["packing"][0]["launcher"], "points": net["packing"],
                       "recommended_gpus_per_trial": net.get("recommended_gpus_per_trial")}
                for arch, net in result["networks"].items() if net.get("packing")}
    figures = {"networks": networks, "environment": result["environment"]}
    if not networks or done.returncode:
        return "failed", _last_line(done), figures
    wrong = [f"{arch} ran as {n['launcher']}" for arch, n in networks.items()
             if n["launcher"] != launcher]
    if wrong:
        return "failed", f"expected {launcher}: " + ", ".join(wrong), figures
    recommended = ", ".join(f"{a} {n['recommended_gpus_per_trial']}" for a, n in networks.items())
    return "ok", f"{launcher}; recommended --gpus-per-trial: {recommended}", figures


def read_precision(done: Finished) -> Outcome:
    """The rows of trainer.bench.precision's Markdown table."""
    table = [ln for ln in done.output.splitlines() if ln.startswith("| ")]
    if done.returncode or len(table) < 2:
        raise PartFailed(_last_line(done))
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
            for ln in table[1:] if not set(ln) <= set("|-: ")]
    return "ok", None, {"rows": rows, "on": "the CPU (TF32 and bf16 are simulated there)"}


def read_probe(done: Finished) -> Outcome:
    """A probe's figures (study/bench/gpu_probes.py) and whether its check held."""
    written = _load(done, "probe.json")
    if written["failure"] or done.returncode:
        return "failed", written["failure"] or _last_line(done), written["figures"]
    return "ok", None, written["figures"]


# --- the plan -----------------------------------------------------------------------------

def tests_part(has: Callable[[str], bool]) -> Part:
    """The CUDA-only tests that can run here; the others named with the module they lack."""
    not_run = {t: "needs " + ", ".join(m for m in needs if not has(m)) + " (not installed)"
               for t, needs in CUDA_TESTS.items() if not all(has(m) for m in needs)}
    runnable = [t for t in CUDA_TESTS if t not in not_run]
    skip = None
    if not has("pytest"):
        skip = "pytest is not installed (only this part needs it)"
    elif not runnable:
        skip = "every CUDA-only test needs a module that is not installed"
    return Part("cuda-tests", 40, "The tests that skip without CUDA, by pytest.",
                ("{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                 "{scratch}/junit.xml", *runnable),
                partial(read_tests, not_run=not_run), skip, not_run)


def _bench_skip(has: Callable[[str], bool]) -> str | None:
    missing = [m for m in ("torchvision", "PIL", "numpy") if not has(m)]
    return ", ".join(missing) + " not installed (trainer.bench needs it)" if missing else None


def probe_part(name: str, budget_s: float, about: str) -> Part:
    return Part(name, budget_s, about,
                ("{python}", "-m", "study.bench.gpu_check", "--run-part", name, "--part-out",
                 "{scratch}/probe.json"), read_probe)


def build_parts(has: Callable[[str], bool] = module_available) -> list[Part]:
    """The check's parts in the order they run, each with its budget (280 s in all)."""
    launcher = "ray" if has("ray") else "processes"
    return [
        tests_part(has),
        probe_part("memory-cap", 20, "A process capped at a quarter of the GPU "
                   "(study/gpu_share.py) allocates 90% of its cap, is refused 20% more, and "
                   "is granted the same 20% once the cap is lifted."),
        probe_part("own-data-host", 25, "20,000 images of 32 px of your own, kept in pinned "
                   "host memory and copied per batch, 20 MetaSemi steps; then the same set "
                   "on the device."),
        Part("bench", 80, "`python -m trainer.bench`: ours against the reference loop, both "
             "networks, the default 20 timed steps after 5 of warm-up; packing apart.",
             ("{python}", "-m", "trainer.bench", "--steps", "20", "--warmup", "5",
              "--packing", "none", "--out", "{scratch}/bench.json"),
             read_bench, _bench_skip(has)),
        Part("packing", 85, f"trainer.bench's packing curve, 1, 2 and 4 trials on the GPU, "
             f"30 timed steps each; trials launched as {launcher} (Ray "
             f"{'installed' if has('ray') else 'not installed'}).",
             ("{python}", "-m", "trainer.bench", "--no-reference", "--steps", "5", "--warmup",
              "3", "--packing", "1,2,4", "--packing-steps", "30", "--out",
              "{scratch}/bench.json"),
             partial(read_packing, launcher=launcher), _bench_skip(has)),
        Part("precision", 30, "`python -m trainer.bench.precision`, one seed: the "
             "meta-gradient's accuracy per precision (computed on the CPU).",
             ("{python}", "-m", "trainer.bench.precision", "--seeds", "1"), read_precision),
    ]


def plan_text(parts: list[Part]) -> str:
    """The parts, their budgets and commands, as `--plan` prints them."""
    total = sum(p.budget_s for p in parts)
    lines = [f"GPU check: {len(parts)} parts, {total:g} s of budgets (the whole check stops "
             f"at {TOTAL_BUDGET_S} s); each runs from {REPO}"]
    for i, p in enumerate(parts, 1):
        lines += [f"{i}. {p.name} ({p.budget_s:g} s): {p.about}", f"   {p.shown()}"]
        lines += [f"   skipped: {p.skip}"] if p.skip else []
        lines += [f"   not run: {t}: {why}" for t, why in p.notes.items()]
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------------

def _result(part: Part, status: str, seconds: float, reason: str | None = None,
            figures: dict[str, Any] | None = None, output: str = "") -> dict[str, Any]:
    return {"status": status, "seconds": round(seconds, 2), "budget_s": part.budget_s,
            "command": part.shown(), "about": part.about, "reason": reason,
            "figures": figures or {}, "output_tail": output[-TAIL_CHARS:]}


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the tree's own modules, also in the processes a part spawns (packing's trials)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_part(part: Part, scratch_root: Path, time_left: float) -> dict[str, Any]:
    """Run one part in its own process group, killed at its budget; never raises."""
    if part.skip:
        return _result(part, "skipped", 0.0, part.skip)
    if time_left < min(part.budget_s, MIN_PART_S):
        return _result(part, "skipped", 0.0, f"only {max(time_left, 0):.0f} s of the check's "
                       f"{TOTAL_BUDGET_S} s were left")
    timeout = min(part.budget_s, time_left)
    scratch = scratch_root / part.name
    scratch.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(part.argv(sys.executable, str(scratch)), cwd=REPO,
                                env=_child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)
    except OSError as e:
        return _result(part, "failed", time.monotonic() - start, f"could not start: {e}")
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = _kill(proc)
        return _result(part, "failed", time.monotonic() - start,
                       f"over its budget: stopped after {timeout:.0f} s", output=output)
    except BaseException:  # Ctrl-C or SIGTERM: its own session would outlive the check
        _kill(proc)
        raise
    done = Finished(proc.returncode, output, scratch)
    return _read(part, done, time.monotonic() - start)


def _kill(proc: subprocess.Popen) -> str:
    """End the part's whole process group (its spawned trials and workers too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    output, _ = proc.communicate()
    return output or ""


def _read(part: Part, done: Finished, seconds: float) -> dict[str, Any]:
    try:
        status, reason, figures = part.read(done)
    except PartFailed as e:
        return _result(part, "failed", seconds, str(e), output=done.output)
    except Exception as e:  # noqa: BLE001 (a reader's bug fails its part, not the check)
        return _result(part, "failed", seconds, f"reading its result: {type(e).__name__}: {e}",
                       output=done.output)
    return _result(part, status, seconds, reason, figures, done.output)


def run_parts(parts: list[Part], scratch_root: Path, deadline: float,
              on_result: Callable[[dict[str, dict[str, Any]]], None] | None = None
              ) -> dict[str, dict[str, Any]]:
    """Run every part in turn until `deadline` (time.monotonic()); each result as it comes."""
    results: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(parts, 1):
        print(f"[gpu check] {i}/{len(parts)} {part.name} (budget {part.budget_s:g} s): "
              f"{part.shown()}", flush=True)
        results[part.name] = result = run_part(part, scratch_root, deadline - time.monotonic())
        print(f"[gpu check] {part.name}: {result['status']} in {result['seconds']:.1f} s"
              + (f": {result['reason']}" if result["reason"] else ""), flush=True)
        if on_result:
            on_result(results)
    return results


def exit_status(results: dict[str, dict[str, Any]]) -> int:
    """1 if any part failed, else 0 (skipped parts say why in the record)."""
    return int(any(r["status"] == "failed" for r in results.values()))


# --- the machine --------------------------------------------------------------------------

def cuda_problem() -> str | None:
    """Why this machine cannot run the check (one line), or None when it has a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return "torch is not installed: the check needs a CUDA build of torch (it installs " \
               "nothing)"
    if torch.cuda.is_available():
        return None
    build = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
             else f"torch {torch.__version__}, built for CUDA {torch.version.cuda}")
    return (f"no CUDA device: torch.cuda.is_available() is False ({build}); run `bash .ci/gpu` "
            "on a machine with an NVIDIA GPU (`bash .ci/gpu --plan` lists what it runs)")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, timeout=5,
                              capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def environment(argv: list[str]) -> dict[str, Any]:
    """The date, the GPU and the software the figures were taken with."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"check": "study.bench.gpu_check",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "gpu": props.name, "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": props.total_memory / 2**30,
            "compute_capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "torchvision": _version("torchvision"), "ray": _version("ray"),
            "pytest": _version("pytest"), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "commit": _commit(),
            "command": shlex.join(["python", "-m", "study.bench.gpu_check", *argv])}


def check(parts: list[Part], out_dir: str, argv: list[str], start: float) -> int:
    """Run the parts, writing the record after each, until TOTAL_BUDGET_S after `start`
    (time.monotonic()); the exit status of the check."""
    report = {**environment(argv), "budget_s": TOTAL_BUDGET_S, "complete": False,
              "exit_status": None, "seconds": 0.0, "parts": {}}

    def record(results: dict[str, dict[str, Any]]) -> tuple[str, str]:
        report.update(parts=results, seconds=round(time.monotonic() - start, 1))
        return write_report(report, out_dir)

    # SIGTERM as an exception, so that the running part's process group is ended with it
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
            results = run_parts(parts, Path(scratch),
                                start + TOTAL_BUDGET_S - WRITE_MARGIN_S, record)
    finally:
        signal.signal(signal.SIGTERM, previous)
    status = exit_status(results)
    report.update(complete=True, exit_status=status)
    paths = record(results)
    print(f"[gpu check] {report['gpu']}: " + ", ".join(
        f"{n} {r['status']}" for n, r in results.items()) + f"; {report['seconds']:.0f} s. "
        f"Written: {paths[0]}, {paths[1]}")
    return status


def run_probe(name: str, out: str) -> int:
    """Run one probe of study/bench/gpu_probes.py and write what it found to `out`."""
    from study.bench.gpu_probes import PROBES
    from trainer.rundir import write_json

    figures, failure = PROBES[name]()
    write_json(out, {"figures": figures, "failure": failure})
    return 1 if failure else 0


# --- the command --------------------------------------------------------------------------

def build_parser(names: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", action="store_true",
                   help="print the parts, their budgets and commands, and run nothing")
    p.add_argument("--only", help=f"run these parts only, comma-separated ({', '.join(names)})")
    p.add_argument("--out-dir", default=str(REPO / "docs" / "bench"),
                   help="where gpu-check-<gpu>.json and .md go (default: docs/bench)")
    p.add_argument("--run-part", choices=("memory-cap", "own-data-host"),
                   help=argparse.SUPPRESS)  # a probe, in the process the check starts for it
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    parts = build_parts()
    names = [p.name for p in parts]
    parser = build_parser(names)
    args = parser.parse_args(argv)
    if args.run_part:
        return run_probe(args.run_part, args.part_out)
    if args.only:
        chosen = args.only.split(",")
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            parser.error(f"--only: no part {', '.join(unknown)}; the parts: {', '.join(names)}")
        parts = [p for p in parts if p.name in chosen]
    if args.plan:
        print(plan_text(parts))
        return 0
    problem = cuda_problem()
    if problem:
        print(f"gpu check: {problem}", file=sys.stderr)
        return NO_GPU
    return check(parts, args.out_dir, argv, start)


if __name__ == "__main__":
    raise SystemExit(main())
