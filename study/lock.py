"""One driver per study: a lock file claimed atomically before Ray starts.

A new study is claimed by creating its directory (mkdir is atomic, also on NFS) and then
`.driver.lock` in it with O_EXCL (trainer/lock.py: the holder named, stale locks of killed
drivers recognised and taken over); a resumed one by the O_EXCL create alone.

Object stores (s3://, gs://) offer no exclusive create through pyarrow: their lock lives
on the driver's machine (~/.metasemi/locks), which protects studies whose drivers run on
one machine (a Ray cluster's head, where `ray job submit` runs them), not drivers on two
machines writing one bucket (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import os
import time

from study import layout, storage
from trainer.lock import (  # noqa: F401  (Holder, is_stale, read_holder: this module's API)
    STALE_AFTER_SECONDS,
    Holder,
    Lock,
    Locked,
    acquire,
    is_stale,
    read_holder,
    wait_for_holder,
)

LOCK_NAME = ".driver.lock"
LOCAL_LOCKS = os.path.join(os.path.expanduser("~"), ".metasemi", "locks")


class StudyLocked(RuntimeError):
    """Another driver runs this study (or it exists and no resume was asked for)."""


def lock_path(study_path: str) -> str:
    """Where the lock of a study lives: in its directory, or locally for an object store."""
    if storage.is_uri(study_path):
        digest = hashlib.sha256(study_path.encode()).hexdigest()[:32]
        return os.path.join(LOCAL_LOCKS, f"{digest}.lock")
    return os.path.join(study_path, LOCK_NAME)


def claim(study_path: str, name: str, resume: bool) -> Lock:
    """Claim the study for this driver or raise StudyLocked naming the holder and the fix."""
    path = lock_path(study_path)
    created: tuple[str, ...] = ()
    if storage.is_uri(study_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    elif not resume:
        os.makedirs(os.path.dirname(study_path), exist_ok=True)
        try:
            os.mkdir(study_path)
            created = (study_path,)
        except FileExistsError:
            refuse_existing(study_path, name, path)
    try:
        return acquire(path, lambda holder: _running_message(name, holder), created)
    except Locked as e:
        raise StudyLocked(str(e)) from None


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
            f"{study_path.rstrip('/')}/{layout.STUDY_FILE}"):
        time.sleep(0.05)
    holder = wait_for_holder(path) if os.path.exists(path) else None
    if holder is not None and not is_stale(path, holder):
        raise StudyLocked(_running_message(name, holder))
    raise StudyLocked(f"--name: a study {name!r} already exists at {study_path}; pass "
                      "--resume to continue it, or another --name to start a new one")
