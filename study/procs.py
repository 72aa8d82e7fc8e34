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


def parent_pids(proc: str = "/proc") -> dict[int, int]:
    """pid -> parent pid of every process that can be read; empty where there is no /proc."""
    parents = {}
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return parents
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(roots: set[int], proc: str = "/proc") -> set[int]:
    """Every process started, directly or not, by one of `roots` (the roots excluded)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_pids(proc).items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in roots:
                found.add(child)
                todo.append(child)
    return found
