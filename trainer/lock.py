"""An exclusive lock file naming its holder: one trainer per run directory (and, through
study/lock.py, one driver per study).

The lock is created with O_EXCL and holds its holder (host, PID, start time). A lock left
by a killed process is stale: on the same host its process is gone (or its PID now belongs
to a younger process); from another host its heartbeat, the lock's modification time,
which the holder touches every HEARTBEAT_SECONDS, is older than STALE_AFTER_SECONDS. A
stale lock is taken over by renaming it aside first, so that of two processes taking it
over at once only one wins.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0  # six missed heartbeats: a process busy or paused that long is gone
RUN_LOCK = ".run.lock"  # in a trainer's run directory


class Locked(RuntimeError):
    """Another live process holds the lock; the message names it and the fix."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # when the lock was claimed, unix time
    process_start: str | None  # the PID's start time in /proc, against PID reuse
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host}, PID {self.pid}, since {when}"


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> Holder:
    """A new holder for the calling process."""
    return Holder(socket.gethostname(), os.getpid(), time.time(),
                  start_time(os.getpid()), uuid.uuid4().hex)


def process_alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `started`
    (start_time's value; None: any process of that PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return started is None or start_time(pid) == started


def _alive(holder: Holder) -> bool:
    return process_alive(holder.pid, holder.process_start)


def read_holder(path: str) -> Holder | None:
    """The holder written in a lock file; None if there is none (or it is half-written)."""
    try:
        with open(path) as f:
            return Holder(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def is_stale(path: str, holder: Holder | None) -> bool:
    """True when the lock's holder is certainly gone (see the module docstring)."""
    if holder is not None and holder.host == socket.gethostname():
        return not _alive(holder)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    return age > STALE_AFTER_SECONDS


class Lock:
    """A held lock: the heartbeat runs until release()."""

    def __init__(self, path: str, holder: Holder, created: tuple[str, ...] = ()):
        self.path, self.holder, self.created = path, holder, created
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass  # lost (storage gone): the next claim will find it stale

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still ours; a directory this
        claim created (`created`, deepest first) and nothing else used is removed too
        (nothing empty is left)."""
        self._stop.set()
        self._thread.join(timeout=5)
        current = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            os.unlink(self.path)
        for folder in self.created:
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                break

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: str, holder: Holder) -> bool:
    """Create the lock file exclusively with the holder in it; False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(holder), f)
        f.flush()
        os.fsync(f.fileno())
    return True


def wait_for_holder(path: str, seconds: float = 2.0) -> Holder | None:
    """The holder of a lock that may be a moment from written (created, not yet filled)."""
    deadline = time.time() + seconds
    while (holder := read_holder(path)) is None and time.time() < deadline:
        if not os.path.exists(path):
            return None
        time.sleep(0.05)
    return holder


def acquire(path: str, busy: Callable[[Holder | None], str],
            created: tuple[str, ...] = ()) -> Lock:
    """Take the lock at `path`, taking over a stale one; raise Locked(busy(holder)) when a
    live process holds it."""
    holder = this_process()
    if _create(path, holder):
        return Lock(path, holder, created)
    current = wait_for_holder(path)
    if not is_stale(path, current):
        raise Locked(busy(current))
    aside = f"{path}.stale-{holder.token}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass  # another process moved it first; the create below decides
    else:
        os.unlink(aside)
    if _create(path, holder):
        return Lock(path, holder, created)
    raise Locked(busy(wait_for_holder(path)))
