"""Does data of your own fit? Its decoded size, the host memory this process may use
(cgroup limits included), and where the images live while training: the device, or pinned
host memory."""

from __future__ import annotations

import os

import torch

from trainer.data.survey import (
    OwnDataError,
    _images_shape,
    has_key,
    image_files,
    stored_size,
)

# Loading holds about three copies at its peak (decoded images, their stack, the training
# array with unlabeled/ and val/ appended); training keeps one. On a GPU the data may take
# half of the free memory, the rest is the model's.
HOST_COPIES, DEVICE_SHARE = 3, 0.5


def estimate_bytes(path: str, image_size: int | None = None) -> int:
    """The decoded size of every image at `path` (uint8), from file counts and one header
    (folders: counted as colour, the larger case) or the arrays' headers (.npz)."""
    side = image_size or stored_size(path)
    if os.path.isdir(path):
        count = len(image_files(path))
        return count * 3 * side * side
    total = 0
    for key in ("x_train", "x_unlabeled", "x_val", "x_test"):
        if has_key(path, key):
            shape = _images_shape(path, key)
            nhwc = len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
            channels = 1 if len(shape) == 3 else shape[-1] if nhwc else shape[1]
            total += shape[0] * channels * side * side
    return total


def host_available(cgroup: str = "/sys/fs/cgroup") -> int:
    """Memory this process can still take, in bytes: the OS's MemAvailable, or less where a
    container's memory limit (cgroup v2 or v1, under `cgroup`) leaves less."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # A container sees the whole machine in /proc/meminfo; its limit is in its cgroup.
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            with open(os.path.join(cgroup, limit)) as f:
                cap = f.read().strip()
            with open(os.path.join(cgroup, usage)) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit():  # "max" (v2) or a huge number (v1) means no limit
            free = min(free, max(0, int(cap) - used))
        break
    return free


def _size(nbytes: float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if nbytes >= 2**shift:
            return f"{nbytes / 2**shift:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def placement(nbytes: int, device: torch.device, host_free: int,
              device_free: int | None) -> torch.device:
    """Where the images live while training: on `device` when they fit, else in (pinned)
    host memory, each batch copied over; refused, with the numbers, when the host cannot
    hold them either."""
    if HOST_COPIES * nbytes > host_free:
        raise OwnDataError(
            f"the images take {_size(nbytes)} decoded, and loading them needs about "
            f"{_size(HOST_COPIES * nbytes)} of host memory, but {_size(host_free)} is "
            "available; use --image-size to load them smaller, or fewer images")
    if device_free is not None and nbytes > DEVICE_SHARE * device_free:
        return torch.device("cpu")
    return device
