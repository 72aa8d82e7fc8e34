"""`python -m trainer.bench`: our supervised and MetaSemi steps against an authors'-style loop.

For each network, in one run on one device: ms per step and images/s of our steps
and of the reference loop (trainer/bench/reference.py), their ratios, the fraction
of step time spent on data, peak device memory, the packing curve of concurrent
trials on one GPU, and the projected wall time of a 400k-step run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from typing import Any

import torch

from trainer.bench import ours, packing, reference
from trainer.config import DEVICES, MEMORY_FORMATS, PRECISIONS, ConfigError
from trainer.device import resolve_device
from trainer.rundir import write_json

# The networks benchmarked: the paper's CIFAR-10 ConvLarge and our digits CNN, each at the
# batch size its preset trains with.
NETWORKS = {"convlarge": ("cifar10", 128), "digitscnn": ("digits", 64)}
FULL_RUN_STEPS, TEST_EVERY = 400_000, 400  # the paper's CIFAR-10 schedule
# A default run's work, by device. On a GPU, the measurements of docs/performance.md. On a
# CPU the same measurements, scaled to about three minutes on 2 cores: ConvLarge at batch
# 32 (a MetaSemi step takes about 3 s there, 11 s at 128), fewer steps, two packing levels,
# and the evaluation timed on 1000 test images and scaled to the whole test set (a pass
# over CIFAR's 10,000 takes about 100 s). An option given on the command line wins.
DEVICE_DEFAULTS = {
    "cuda": {"steps": 20, "warmup": 5, "packing": [1, 2, 4], "reference_workers": 4,
             "batch_size": None, "eval_images": None},
    "cpu": {"steps": 3, "warmup": 1, "packing": [1, 2], "reference_workers": 1,
            "batch_size": 32, "eval_images": 1000},
}
OUR_ROWS = {"supervised": "ours supervised", "metasemi": "ours metasemi",
            "metasemi_jvp": "ours metasemi (jvp)"}


def bench_network(arch: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every figure of one network; see the module docstring."""
    dataset, batch = NETWORKS[arch]
    batch = args.batch_size or batch
    base = {"dataset": dataset, "architecture": arch, "batch_size": batch, "warmup": 0,
            "device": device.type, "precision": args.precision,
            "memory_format": args.memory_format, "compile": args.compile}
    data = ours.synthetic_data(dataset, device)  # one copy for every measurement here
    mine = {
        "supervised": ours.measure({**base, "method": "supervised"}, args.steps, args.warmup,
                                   data=data),
        # Only this one times an evaluation: the projection needs it once.
        "metasemi": ours.measure({**base, "method": "metasemi"}, args.steps, args.warmup,
                                 evaluation=True, data=data, eval_images=args.eval_images),
        # The alternative, not the default: a failure here is reported, not fatal.
        "metasemi_jvp": _attempt(ours.measure, {**base, "method": "metasemi",
                                                "meta_grad": "jvp"}, args.steps, args.warmup,
                                 False, data),
    }
    jvp_ms = mine["metasemi_jvp"].get("ms")
    out: dict[str, Any] = {
        "architecture": arch, "dataset": dataset, "batch_size": batch, "ours": mine,
        "meta_over_supervised": mine["metasemi"]["ms"] / mine["supervised"]["ms"],
        "meta_over_supervised_jvp": jvp_ms and jvp_ms / mine["supervised"]["ms"],
        "reference": None, "speedup_over_reference": None,
        "supervised_speedup_over_reference": None, "packing": None,
    }
    if args.reference:
        ref = {m: reference.measure(data, arch, m, batch, args.steps, args.warmup,
                                    args.reference_workers) for m in ("supervised", "metasemi")}
        out["reference"] = ref
        out["reference_meta_over_supervised"] = ref["metasemi"]["ms"] / ref["supervised"]["ms"]
        out["speedup_over_reference"] = ref["metasemi"]["ms"] / mine["metasemi"]["ms"]
        out["supervised_speedup_over_reference"] = (ref["supervised"]["ms"]
                                                    / mine["supervised"]["ms"])
    if args.packing:
        out["packing"] = packing.curve({**base, "method": "metasemi"}, args.packing,
                                       args.packing_steps or args.steps, args.warmup,
                                       gpu=device.type == "cuda")
        out["recommended_gpus_per_trial"] = packing.recommend(out["packing"])
    meta = mine["metasemi"]
    train_h = FULL_RUN_STEPS * meta["ms"] / 1e3 / 3600
    eval_h = FULL_RUN_STEPS // TEST_EVERY * meta["eval_s"] / 3600
    out["projected_400k_hours"] = {"total": train_h + eval_h, "steps": train_h,
                                   "evaluation": eval_h}
    return out


def _attempt(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 (reported in the tables and the JSON)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


def environment(device: torch.device) -> dict[str, Any]:
    import importlib.metadata

    import torchvision

    try:
        ray_version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray_version = None  # the packing curve then runs trials as plain processes

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "ray": ray_version, "python": platform.python_version(),
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": "python -m trainer.bench " + shlex.join(sys.argv[1:])}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(result: dict[str, Any]) -> str:
    """The figures as Markdown tables: readable in a terminal, pasted into docs/performance.md."""
    env = result["environment"]
    lines = [f"Device: {env['device']} ({env['device_name']}, {env['threads']} CPU threads); "
             f"torch {env['torch']}, torchvision {env['torchvision']}, ray {env['ray']}, "
             f"CUDA {env['cuda'] or '-'}, Python {env['python']}; {env['date']}.",
             f"Command: `{env['command']}`.",
             f"Each step figure rests on {result['steps']} timed steps after "
             f"{result['warmup']} warm-up; each packing point on {result['packing_steps']} "
             "timed steps per trial; the evaluation on "
             + (f"{result['eval_images']} test images, scaled to the whole test set."
                if result["eval_images"] else "the whole test set.")]
    for net in result["networks"].values():
        b = net["batch_size"]
        lines += ["", f"### {net['architecture']} on {net['dataset']} shapes, batch {b} "
                      f"(+{b} unlabeled for MetaSemi)", "",
                  f"Ours: {net['ours']['metasemi']['runtime']}. Reference: fp32, eager, "
                  "PIL transforms in a DataLoader.", "",
                  "| step | ms/step | images/s | data % | peak MiB |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        rows = [(label, net["ours"][key]) for key, label in OUR_ROWS.items()]
        rows += [(f"reference {key}", net["reference"][key])
                 for key in ("supervised", "metasemi") if net["reference"]]
        for label, m in rows:
            if "error" in m:
                lines.append(f"| {label} | failed: {m['error']} | | | |")
                continue
            lines.append(f"| {label} | {m['ms']:.1f} | {m['images_per_s']:.0f} | "
                         f"{100 * m['data_fraction']:.1f} | {_fmt(m['peak_memory_mb'], '.0f')} |")
        lines += ["", f"- metasemi / supervised step time: ours "
                      f"{net['meta_over_supervised']:.2f}x (jvp "
                      f"{_fmt(net['meta_over_supervised_jvp'], '.2f')}x)"
                  + (f", reference {net['reference_meta_over_supervised']:.2f}x"
                     if net["reference"] else "")]
        if net["reference"]:
            lines.append(f"- speed-up over the reference: metasemi "
                         f"{net['speedup_over_reference']:.2f}x, supervised "
                         f"{net['supervised_speedup_over_reference']:.2f}x")
        proj = net["projected_400k_hours"]
        lines.append(f"- projected 400k-step run: {proj['total']:.1f} h ({proj['steps']:.1f} h "
                     f"of steps + {proj['evaluation']:.2f} h of evaluation every {TEST_EVERY} "
                     "steps)")
        if net["packing"]:
            lines += ["", "| concurrent MetaSemi trials | share each | images/s in all | "
                          "images/s per trial |", "| ---: | --- | ---: | --- |"]
            for point in net["packing"]:
                share = (f"{point['gpus_per_trial']:g} GPU" if point["gpus_per_trial"]
                         else f"1/{point['trials']} of the CPU cores")
                per = ", ".join(f"{r:.0f}" for r in point["per_trial_images_per_s"])
                lines.append(f"| {point['trials']} | {share} | {point['images_per_s']:.0f} | "
                             f"{per} |")
            lines.append(f"\nTrials launched by: {net['packing'][0]['launcher']}.")
            if net.get("recommended_gpus_per_trial"):
                lines.append(f"\nRecommended `--gpus-per-trial`: "
                             f"{net['recommended_gpus_per_trial']:g} (the most trials that "
                             "still add 10% images/s).")
    return "\n".join(lines)


def _levels(text: str) -> list[int]:
    if text.strip().lower() in ("", "none", "0"):
        return []
    try:
        levels = [int(t) for t in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give trial counts like 1,2,4, or none")
    return levels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__)
    a = p.add_argument
    a("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    a("--batch-size", type=int, help="override the networks' batch sizes (128 and 64 on a "
      "GPU; 32 on a CPU)")
    a("--device", default="auto", choices=DEVICES)
    a("--precision", default="auto", choices=PRECISIONS, help="ours only; reference is fp32")
    a("--memory-format", default="auto", choices=MEMORY_FORMATS)
    a("--compile", action="store_true", help="compile our model (the warm-up absorbs it)")
    a("--steps", type=int, help="timed steps per measurement (default: 20 on a GPU, 3 on a CPU)")
    a("--warmup", type=int,
      help="untimed steps before each measurement (default: 5 on a GPU, 1 on a CPU)")
    a("--reference-workers", type=int,
      help="DataLoader workers of the reference loop (default: 4, the authors'; 1 on a CPU)")
    a("--eval-images", type=int, help="time the evaluation on this many test images and scale "
      "it to the whole test set (default: all on a GPU, 1000 on a CPU)")
    a("--no-reference", dest="reference", action="store_false", help="skip the reference")
    a("--packing", type=_levels,
      help="concurrent trials of the packing curve, e.g. 1,2,4 (default on a GPU; 1,2 on a "
           "CPU), or none")
    a("--packing-steps", type=int, help="timed steps per packed trial (default --steps)")
    a("--json", action="store_true", help="print one JSON object instead of tables")
    a("--out", help="also write the JSON object to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        p.error(str(e))
    for key, value in DEVICE_DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if (args.steps < 1 or args.warmup < 0 or args.reference_workers < 0
            or (args.batch_size is not None and args.batch_size < 1)
            or (args.eval_images is not None and args.eval_images < 1)
            or (args.packing_steps is not None and args.packing_steps < 1)):
        p.error("--steps, --batch-size, --eval-images and --packing-steps must be >= 1, "
                "--warmup and --reference-workers >= 0")
    result = {"environment": environment(device), "steps": args.steps, "warmup": args.warmup,
              "packing_steps": args.packing_steps or args.steps,
              "eval_images": args.eval_images,
              "networks": {arch: bench_network(arch, args, device) for arch in args.networks}}
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
