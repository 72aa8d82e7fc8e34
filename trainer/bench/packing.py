"""The packing curve: aggregate images/s of n trials sharing one GPU through Ray's fractional GPUs.

Each trial is a Ray task asking for 1/n of a GPU (as `study/run.py --gpus-per-trial`
does); all n warm up, meet at a barrier, then time the same number of MetaSemi
steps. Without a GPU the trials share the CPU cores instead, 1/n of them each.

Ray's fractional GPUs only schedule: they do not partition the device. So where
Ray is not installed (a bare GPU box with only torch), the same n trials run as
plain processes and measure the same sharing; the result says which launcher ran.
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import torch

# Loopback only for the local Ray instance, as study/driver.py does.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _trial(settings: dict[str, Any], steps: int, warmup: int, threads: int | None,
           wait: Callable[[], None]) -> dict[str, float]:
    from trainer.bench.ours import build, sync
    from trainer.methods import images_per_step

    if threads:
        torch.set_num_threads(threads)
    t = build(settings)
    for _ in range(warmup):
        t.step()
    sync(t.runtime.device)
    wait()
    start = time.time()
    for _ in range(steps):
        t.step()
    sync(t.runtime.device)
    return {"start": start, "end": time.time(), "images": steps * images_per_step(t.cfg)}


def _ray_trial(settings, steps, warmup, threads, barrier) -> dict[str, float]:
    import ray

    return _trial(settings, steps, warmup, threads, lambda: ray.get(barrier.wait.remote()))


def _process_trial(settings, steps, warmup, threads, barrier, results) -> None:
    results.put(_trial(settings, steps, warmup, threads, barrier.wait))


def recommend(points: list[dict[str, Any]], gain: float = 1.1) -> float | None:
    """GPUs per trial at the most trials that still added `gain`x aggregate images/s."""
    if not points or not points[0]["gpus_per_trial"]:
        return None  # a CPU curve says nothing about sharing a GPU
    best = points[0]
    for prev, cur in zip(points, points[1:]):
        if cur["images_per_s"] < gain * prev["images_per_s"]:
            break
        best = cur
    return best["gpus_per_trial"]


def curve(settings: dict[str, Any], levels: list[int], steps: int, warmup: int, gpu: bool,
          launcher: str = "auto") -> list[dict[str, Any]]:
    """For each n in levels: n concurrent trials, their aggregate and per-trial images/s.

    launcher: "ray", "processes", or "auto" (Ray when it is installed).
    """
    cores = os.cpu_count() or 1
    if launcher == "auto":
        launcher = "ray" if importlib.util.find_spec("ray") else "processes"
    runner = {"ray": _with_ray, "processes": _with_processes}[launcher]
    out = []
    for n, runs in runner(settings, levels, steps, warmup, gpu, cores):
        wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
        out.append({
            "trials": n, "gpus_per_trial": 1 / n if gpu else 0.0, "launcher": launcher,
            "images_per_s": sum(r["images"] for r in runs) / wall,
            "per_trial_images_per_s": [r["images"] / (r["end"] - r["start"]) for r in runs],
        })
    return out


def _threads(gpu: bool, cores: int, n: int) -> int | None:
    return None if gpu else max(1, cores // n)


def _with_ray(settings, levels, steps, warmup, gpu, cores):
    """Yield (n, runs) per level, all levels on one local Ray instance."""
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray

    ray.init(address="local", num_cpus=cores, num_gpus=1 if gpu else 0,
             include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        @ray.remote(num_cpus=0)
        class Barrier:
            def __init__(self, n: int):
                self.n, self.event = n, asyncio.Event()

            async def wait(self) -> None:
                self.n -= 1
                if self.n <= 0:
                    self.event.set()
                await self.event.wait()

        task = ray.remote(max_calls=1)(_ray_trial)  # a fresh process per trial, as Tune gives
        for n in levels:
            if gpu:
                options = {"num_gpus": 1 / n, "num_cpus": min(1.0, cores / n)}
            else:
                options = {"num_cpus": cores / n, "num_gpus": 0}
            barrier = Barrier.remote(n)
            yield n, ray.get([task.options(**options).remote(
                settings, steps, warmup, _threads(gpu, cores, n), barrier) for _ in range(n)])
    finally:
        ray.shutdown()


def _with_processes(settings, levels, steps, warmup, gpu, cores):
    """Yield (n, runs) per level, each trial a spawned process."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    for n in levels:
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_process_trial,
                             args=(settings, steps, warmup, _threads(gpu, cores, n), barrier,
                                   results)) for _ in range(n)]
        for p in procs:
            p.start()
        runs: list[dict[str, float]] = []
        try:
            while len(runs) < n:
                try:
                    runs.append(results.get(timeout=5))
                except queue.Empty:
                    failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    if failed:
                        raise RuntimeError(f"a packed trial process failed (exit codes "
                                           f"{failed}); its error is printed above") from None
        finally:
            for p in procs:
                if p.is_alive() and len(runs) < n:
                    p.terminate()
                p.join()
        yield n, runs
