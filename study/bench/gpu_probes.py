"""The GPU check's own probes, each run in a process of its own by `study.bench.gpu_check`.

`memory_cap`: a process capped at a share of the GPU (study/gpu_share.py) fails to allocate
beyond the cap and succeeds below it. `own_data_host`: your own data kept in pinned host
memory and copied per batch trains, timed beside the same set held on the device.
Each returns (figures, failure): failure is None when the check held, else why not.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

GIB = 2**30
Probe = tuple[dict[str, Any], str | None]


def memory_cap(share: float = 0.25) -> Probe:
    """Allocate 90% of a `share` trial's cap, then 20% more (refused), then that 20% again
    with the cap lifted (granted: the memory was there, only the cap refused it)."""
    import torch

    from study.gpu_share import cap_cuda_memory

    if not torch.cuda.is_available():
        return {}, "no CUDA device: torch.cuda.is_available() is False"
    free, total = torch.cuda.mem_get_info()
    cap = cap_cuda_memory(share)
    figures: dict[str, Any] = {"share": share, "total_gib": total / GIB, "free_gib": free / GIB,
                               "cap_gib": cap / GIB if cap else None}
    if cap is None:
        return figures, f"cap_cuda_memory({share}) set no cap"
    if free < 1.2 * cap:  # else a refusal could be the device's, not the cap's
        return figures, (f"only {free / GIB:.1f} GiB of the GPU is free, the check needs "
                         f"{1.2 * cap / GIB:.1f} GiB: is another process using it?")
    below = torch.empty(int(0.9 * cap), dtype=torch.uint8, device="cuda")
    figures["below_cap_gib"] = below.numel() / GIB
    extra = int(0.2 * cap)
    figures["beyond_cap_error"] = _refusal(extra)
    torch.cuda.set_per_process_memory_fraction(1.0)
    figures["granted_without_cap"] = _refusal(extra) is None
    figures["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    if figures["beyond_cap_error"] is None:
        return figures, f"an allocation to 1.1x the {cap / GIB:.1f} GiB cap was not refused"
    if not figures["granted_without_cap"]:
        return figures, "the allocation refused under the cap failed without it too"
    return figures, None


def _refusal(nbytes: int) -> str | None:
    """None if `nbytes` more can be allocated on the GPU now, else the error's first line."""
    import torch

    try:
        block = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    except torch.OutOfMemoryError as e:
        return str(e).splitlines()[0][:300]
    del block
    return None


def own_data_host(device: str = "cuda", images: int = 20_000, size: int = 32, steps: int = 20,
                  batch_size: int | None = None, labels_per_class: int = 100) -> Probe:
    """A synthetic set of your own trained `steps` steps with its images in pinned host
    memory, then with them on the device; the host run must really be pinned."""
    from trainer.bench import own_data

    with tempfile.TemporaryDirectory(prefix="gpu-check-own-") as folder:
        args = argparse.Namespace(
            images=images, size=size, classes=10, labels_per_class=labels_per_class,
            steps=steps, batch_size=batch_size, device=device, precision="auto", dir=folder,
            host=True)
        host = own_data.bench(args)
        on_device = own_data.bench(argparse.Namespace(**{**vars(args), "host": False}))
    figures = {"host": host, "device": on_device,
               "host_over_device_step": host["ms_per_step"] / on_device["ms_per_step"]}
    if host["images_on"] != "cpu (pinned)":
        return figures, f"with --host the images were on {host['images_on']}, not pinned host"
    return figures, None


PROBES = {"memory-cap": memory_cap, "own-data-host": own_data_host}
