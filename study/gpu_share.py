"""A trial keeps to its GPU share: Ray divides GPUs in fractions but never their memory.

A trial granted a fraction f < 1 of a GPU caps PyTorch's caching allocator at about f of
the device's memory, less a margin for what lives outside the allocator (the CUDA context,
cuDNN and cuBLAS workspaces), so that one trial cannot run its neighbours out of memory.
An allocation beyond the cap fails in that trial alone, with PyTorch's out-of-memory
error. `--no-gpu-memory-cap` turns it off (docs/performance.md, next to the packing curve).
"""

from __future__ import annotations

# Outside PyTorch's allocator per process: the CUDA context (about 500 MiB on H100) and
# library workspaces; 1 GiB leaves room for both.
CONTEXT_MARGIN_BYTES = 1 << 30


def memory_fraction(share: float, total_bytes: int,
                    margin_bytes: int = CONTEXT_MARGIN_BYTES) -> float | None:
    """The allocator's cap, as a fraction of the device's memory, for a trial granted
    `share` of a GPU; None for a whole GPU or more (no cap needed)."""
    if share >= 1:
        return None
    if share <= 0:
        raise ValueError(f"gpus_per_trial: a trial without a GPU share ({share}) has no "
                         "GPU memory to cap")
    fraction = share - margin_bytes / total_bytes
    if fraction <= 0:
        raise ValueError(
            f"gpus_per_trial: a share of {share:g} of a {total_bytes / 2**30:.1f} GiB GPU "
            f"is less than the {margin_bytes / 2**30:.1f} GiB a CUDA process needs outside "
            "PyTorch's allocator; give each trial a larger share")
    return fraction


def cap_cuda_memory(share: float) -> int | None:
    """Cap this process's allocator on its CUDA device at its share; the cap in bytes, or
    None when there is no CUDA device or the share is a whole GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = memory_fraction(share, total)
    if fraction is None:
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return int(fraction * total)
