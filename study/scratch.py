"""Temporary folders of the trials on this machine, removed once their process is gone.

A trial copies checkpoints through temporary folders (a restored checkpoint, the one it
hands to Tune). Tune kills the process of a trial it stops early, or of a lost driver, so
such a trial never removes its own: over a night of early stops they would fill /tmp,
a checkpoint copy each. Each folder is named by its process (PID and start time), and
every trial that starts on the machine first removes the folders of processes gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from trainer.lock import process_alive, start_time

SCRATCH = "metasemi-trials"  # in the machine's temporary folder


def root() -> str:
    return os.path.join(tempfile.gettempdir(), SCRATCH)


def folder(kind: str) -> tempfile.TemporaryDirectory:
    """A new temporary folder of this process, removed on leaving its `with`."""
    os.makedirs(root(), exist_ok=True)
    return tempfile.TemporaryDirectory(
        prefix=f"{os.getpid()}.{start_time(os.getpid()) or 0}-{kind}-", dir=root())


def sweep() -> list[str]:
    """Remove the folders whose process is gone; returns their names."""
    try:
        names = os.listdir(root())
    except OSError:
        return []
    removed = []
    for name in names:
        pid, _, rest = name.partition(".")
        started = rest.split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid), None if started == "0" else started):
            continue
        shutil.rmtree(os.path.join(root(), name), ignore_errors=True)
        removed.append(name)
    return removed
