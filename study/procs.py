"""The processes of this machine and their command lines, read from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator


def command_lines(proc: str = "/proc") -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process whose command line can be read, in pid order; nothing
    where there is no /proc."""
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:  # gone since listed, or not ours to read
            continue
        if raw:
            yield pid, raw.rstrip(b"\0").decode(errors="replace").split("\0")
