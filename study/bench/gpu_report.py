"""The GPU check's record: one JSON file and one Markdown file per GPU, in docs/bench/.

Both are written atomically (a temporary file, then a rename), after every part, so a check
cut short still leaves a complete record of the parts it ran.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from trainer.rundir import atomic_write

STATUSES = ("ok", "failed", "skipped")


def slug(name: str) -> str:
    """A file-name form of a GPU's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def paths(report: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Where `report` is written: docs/bench/gpu-check-<gpu>.json and .md."""
    base = os.path.join(out_dir, f"gpu-check-{slug(report['gpu'])}")
    return base + ".json", base + ".md"


def write_report(report: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Write the JSON and the Markdown of `report`; both are rendered before either is
    written, so a report that cannot be rendered leaves the old files as they were."""
    json_text = json.dumps(report, indent=2, sort_keys=True, allow_nan=True) + "\n"
    md_text = markdown(report)
    json_path, md_path = paths(report, out_dir)
    atomic_write(json_path, lambda f: f.write(json_text.encode()))
    atomic_write(md_path, lambda f: f.write(md_text.encode()))
    return json_path, md_path


def markdown(report: dict[str, Any]) -> str:
    """The whole record: the machine, a table of every part's status, then each part's figures."""
    lines = [f"# GPU check: {report['gpu']}", "", _machine(report), "",
             "| part | status | seconds | budget s | note |",
             "| --- | --- | ---: | ---: | --- |"]
    for name, part in report["parts"].items():
        note = (part.get("reason") or "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.1f} | "
                     f"{part['budget_s']:g} | {note} |")
    for name, part in report["parts"].items():
        lines += ["", f"## {name}: {part['status']}", "", part.get("about", ""), "",
                  f"`{part['command']}`", ""]
        lines += _figures(name, part)
        if part["status"] == "failed" and part.get("output_tail"):
            lines += ["", "Last lines of its output:", "", "```",
                      *part["output_tail"].splitlines()[-15:], "```"]
    return "\n".join(lines) + "\n"


def _machine(report: dict[str, Any]) -> str:
    done = "complete" if report.get("complete") else "incomplete (still running or cut short)"
    return (f"{report['date']}. {report['gpu']} ({report.get('gpu_memory_gib', 0):.1f} GiB, "
            f"compute capability {report.get('compute_capability')}), "
            f"{report.get('cpu_count')} CPU cores; torch {report['torch']} (CUDA "
            f"{report.get('cuda')}, cuDNN {report.get('cudnn')}), torchvision "
            f"{report.get('torchvision')}, Python {report.get('python')}, ray "
            f"{report.get('ray') or 'not installed'}, pytest "
            f"{report.get('pytest') or 'not installed'}; commit {report.get('commit') or '-'}. "
            f"Command: `{report.get('command')}`: {report.get('seconds', 0):.0f} s of a "
            f"{report.get('budget_s', 0):g} s budget, {done}, exit status "
            f"{report.get('exit_status')}.")


def _figures(name: str, part: dict[str, Any]) -> list[str]:
    figures = part.get("figures") or {}
    if not figures:
        return ["No figures."]
    try:
        return RENDERERS.get(name, _generic)(figures)
    except Exception as e:  # noqa: BLE001 (the JSON keeps the figures; say why here)
        return [f"Figures not rendered ({type(e).__name__}: {e}); see the JSON file."]


def _generic(figures: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for key, value in figures.items():
        if isinstance(value, dict):
            lines += _generic(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            lines.append(f"- {prefix}{key}: {_value(value)}")
    return lines


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tests(figures: dict[str, Any]) -> list[str]:
    lines = ["| test | outcome | seconds | message |", "| --- | --- | ---: | --- |"]
    for t in figures["tests"]:
        message = (t.get("message") or "").replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| `{t['test']}` | {t['outcome']} | {t['seconds']:.2f} | {message} |")
    lines += [f"- not run: `{test}`: {why}" for test, why in figures.get("not_run", {}).items()]
    return lines


def _bench(figures: dict[str, Any]) -> list[str]:
    from trainer.bench.__main__ import report

    lines = report(figures["result"]).splitlines()
    return lines + ["", *(f"- target {t['target']}: {_value(t['value'])}, "
                          f"{'met' if t['met'] else 'missed'}" for t in figures["targets"])]


def _packing(figures: dict[str, Any]) -> list[str]:
    lines = []
    for arch, net in figures["networks"].items():
        lines += [f"{arch}, trials launched as {net['launcher']}; recommended "
                  f"`--gpus-per-trial` {net['recommended_gpus_per_trial']}:", "",
                  "| trials | share each | images/s in all | images/s per trial |",
                  "| ---: | ---: | ---: | --- |"]
        for p in net["points"]:
            per = ", ".join(f"{r:.0f}" for r in p["per_trial_images_per_s"])
            lines.append(f"| {p['trials']} | {p['gpus_per_trial']:g} | {p['images_per_s']:.0f} "
                         f"| {per} |")
        lines.append("")
    return lines


def _precision(figures: dict[str, Any]) -> list[str]:
    columns = list(figures["rows"][0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in figures["rows"]]


def _own_data(figures: dict[str, Any]) -> list[str]:
    keys = ("images_on", "architecture", "batch_size", "device", "load_seconds", "ms_per_step",
            "images_per_second", "peak_device_gib")
    lines = ["| figure | images in pinned host memory | images on the device |",
             "| --- | --- | --- |"]
    lines += [f"| {k} | {_value(figures['host'][k])} | {_value(figures['device'][k])} |"
              for k in keys]
    return lines + ["", f"- host / device step time: {figures['host_over_device_step']:.2f}x"]


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "cuda-tests": _tests, "bench": _bench, "packing": _packing, "precision": _precision,
    "own-data-host": _own_data}
