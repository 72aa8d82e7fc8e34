"""One driver per study: a lock file claimed atomically before Ray starts.

A new study is claimed by creating its directory (mkdir is atomic, also on NFS) and then
`.driver.lock` in it with O_EXCL; a resumed one by the O_EXCL create alone. The lock names
its holder (host, PID, start time). A lock left by a killed driver is stale: on the same
host its process is gone (or its PID now belongs to a younger process); from another host
its heartbeat, the lock's modification time, which the holder touches every
HEARTBEAT_SECONDS, is older than STALE_AFTER_SECONDS. A stale lock is taken over by
renaming it aside first, so that of two drivers taking it over at once only one wins.

Object stores (s3://, gs://) offer no exclusive create through pyarrow: their lock lives
on the driver's machine (~/.metasemi/locks), which protects studies whose drivers run on
one machine (a Ray cluster's head, where `ray job submit` runs them), not drivers on two
machines writing one bucket (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from study import storage

LOCK_NAME = ".driver.lock"
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0  # six missed heartbeats: a driver busy or paused that long is gone
LOCAL_LOCKS = os.path.join(os.path.expanduser("~"), ".metasemi", "locks")


class StudyLocked(RuntimeError):
    """Another driver runs this study (or it exists and no resume was asked for)."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # when the driver claimed the study, unix time
    process_start: str | None  # the PID's start time in /proc, against PID reuse
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host}, PID {self.pid}, since {when}"


def _process_start(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: Holder) -> bool:
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return holder.process_start is None or _process_start(holder.pid) == holder.process_start


def lock_path(study_path: str) -> str:
    """Where the lock of a study lives: in its directory, or locally for an object store."""
    if storage.is_uri(study_path):
        digest = hashlib.sha256(study_path.encode()).hexdigest()[:32]
        return os.path.join(LOCAL_LOCKS, f"{digest}.lock")
    return os.path.join(study_path, LOCK_NAME)


def read_holder(path: str) -> Holder | None:
    """The holder written in a lock file; None if there is none (or it is half-written)."""
    try:
        with open(path) as f:
            return Holder(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def is_stale(path: str, holder: Holder | None) -> bool:
    """True when the lock's driver is certainly gone (see the module docstring)."""
    if holder is not None and holder.host == socket.gethostname():
        return not _alive(holder)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    return age > STALE_AFTER_SECONDS


class StudyLock:
    """A claimed study: the heartbeat runs until release()."""

    def __init__(self, path: str, holder: Holder, created_dir: str | None):
        self.path, self.holder, self.created_dir = path, holder, created_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="study-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass  # lost (storage gone): the next claim will find it stale

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still ours; a study directory
        this claim created and nothing else used is removed too (no empty study left)."""
        self._stop.set()
        self._thread.join(timeout=5)
        current = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            os.unlink(self.path)
        if self.created_dir is not None:
            try:
                os.rmdir(self.created_dir)  # only when empty
            except OSError:
                pass


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


def claim(study_path: str, name: str, resume: bool) -> StudyLock:
    """Claim the study for this driver or raise StudyLocked naming the holder and the fix."""
    holder = Holder(socket.gethostname(), os.getpid(), time.time(),
                    _process_start(os.getpid()), uuid.uuid4().hex)
    path = lock_path(study_path)
    created = None
    if storage.is_uri(study_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    elif not resume:
        os.makedirs(os.path.dirname(study_path), exist_ok=True)
        try:
            os.mkdir(study_path)
            created = study_path
        except FileExistsError:
            refuse_existing(study_path, name, path)
    if _create(path, holder):
        return StudyLock(path, holder, created)
    current = _wait_for_holder(path)
    if not is_stale(path, current):
        raise StudyLocked(_running_message(name, current))
    # Take the stale lock over: of several drivers doing so, one rename succeeds.
    aside = f"{path}.stale-{holder.token}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass  # another driver moved it first; the create below decides
    else:
        os.unlink(aside)
    if _create(path, holder):
        return StudyLock(path, holder, created)
    raise StudyLocked(_running_message(name, _wait_for_holder(path)))


def _wait_for_holder(path: str, seconds: float = 2.0) -> Holder | None:
    """The holder of a lock that may be a moment from written (created, not yet filled)."""
    deadline = time.time() + seconds
    while (holder := read_holder(path)) is None and time.time() < deadline:
        if not os.path.exists(path):
            return None
        time.sleep(0.05)
    return holder


def _running_message(name: str, holder: Holder | None) -> str:
    who = holder.describe() if holder else "a driver that has not written its name yet"
    return (f"--name: the study {name!r} is being run by another driver ({who}); wait for "
            "it to finish, or stop it first; a killed driver's lock is taken over "
            f"automatically by --resume (after {STALE_AFTER_SECONDS:.0f} s from another host)")


def refuse_existing(study_path: str, name: str, path: str | None = None) -> None:
    """Raise StudyLocked for a study that exists: naming its driver if one runs it."""
    path = path or lock_path(study_path)
    # A driver that has just made the directory writes its lock a moment later.
    deadline = time.time() + 2.0
    while not os.path.exists(path) and time.time() < deadline and not storage.exists(
            study_path.rstrip("/") + "/study.json"):
        time.sleep(0.05)
    holder = _wait_for_holder(path) if os.path.exists(path) else None
    if holder is not None and not is_stale(path, holder):
        raise StudyLocked(_running_message(name, holder))
    raise StudyLocked(f"--name: a study {name!r} already exists at {study_path}; pass "
                      "--resume to continue it, or another --name to start a new one")
