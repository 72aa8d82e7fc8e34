"""The packing curve: aggregate images/s of n trials sharing one GPU through Ray's fractional GPUs.

Each trial is a Ray task asking for 1/n of a GPU (as `study/run.py --gpus-per-trial`
does); all n warm up, meet at a barrier, then time the same number of MetaSemi
steps. Without a GPU the trials share the CPU cores instead, 1/n of them each.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import torch

# Loopback only for the local Ray instance, as study/driver.py does.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _trial(settings: dict[str, Any], steps: int, warmup: int, threads: int | None,
           barrier) -> dict[str, float]:
    import ray

    from trainer.bench.ours import build, sync

    if threads:
        torch.set_num_threads(threads)
    t = build(settings)
    for _ in range(warmup):
        t.step()
    sync(t.runtime.device)
    ray.get(barrier.wait.remote())
    start = time.time()
    for _ in range(steps):
        t.step()
    sync(t.runtime.device)
    return {"start": start, "end": time.time(), "images": steps * t.images_per_step}


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


def curve(settings: dict[str, Any], levels: list[int], steps: int, warmup: int,
          gpu: bool) -> list[dict[str, Any]]:
    """For each n in levels: n concurrent trials, their aggregate and per-trial images/s."""
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray

    cores = os.cpu_count() or 1
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

        task = ray.remote(max_calls=1)(_trial)  # a fresh process per trial, as Tune gives
        out = []
        for n in levels:
            if gpu:
                options = {"num_gpus": 1 / n, "num_cpus": min(1.0, cores / n)}
                threads = None
            else:
                options = {"num_cpus": cores / n, "num_gpus": 0}
                threads = max(1, cores // n)
            barrier = Barrier.remote(n)
            runs = ray.get([task.options(**options).remote(settings, steps, warmup, threads,
                                                           barrier) for _ in range(n)])
            wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
            out.append({
                "trials": n, "gpus_per_trial": 1 / n if gpu else 0.0,
                "images_per_s": sum(r["images"] for r in runs) / wall,
                "per_trial_images_per_s": [r["images"] / (r["end"] - r["start"]) for r in runs],
            })
        return out
    finally:
        ray.shutdown()
