"""Resume runs no one else's code: the driver seals the files Ray Tune would unpickle.

`--resume` goes through Ray Tune's restore, which unpickles `tuner.pkl`, the searcher's
state and the cloudpickle blobs inside `experiment_state-*.json` (and a trial's
`error.pkl`): whoever can write those files can run code on the driver. So while a study
runs, its driver seals them: an HMAC-SHA256 of each, with a key that never leaves the
user's home (~/.metasemi/trust.key, mode 0600), in `.sealed/manifest.json` (itself
authenticated), and a copy of each sealed study-level file in `.sealed/`. Before a resume,
`verify` checks every such file: a sealed one is used; one that differs from its seal is
replaced by its sealed copy (a driver killed between Tune's snapshot and the seal resumes
from the snapshot before, as after any kill); anything else is moved to `quarantine/`.
Nothing unsealed is ever unpickled. Checkpoint files are loaded with
`torch.load(weights_only=True)` and need no seal.

Object stores (s3://, gs://) are not sealed: their access control is the trust boundary,
and the README and docs/reliability.md say so.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import pickletools
import re
import secrets
import shutil
import time

from ray.tune import Callback

from study import layout
from study.errors import StudyError
from trainer.rundir import atomic_write

KEY_FILE = os.path.join(os.path.expanduser("~"), ".metasemi", "trust.key")
SEALED = ".sealed"
QUARANTINE = "quarantine"
# What Ray Tune 2.60 deserialises with (cloud)pickle when it restores an experiment:
# tuner.pkl, searcher-state-*.pkl, callback-states-*.pkl, experiment_state-*.json (with
# cloudpickle blobs inside), search_gen_state-*.json (a pickle despite its name).
STUDY_FILES = ("*.pkl", "experiment_state-*.json", "search_gen_state-*.json",
               "basic-variant-state-*.json")
TRIAL_FILES = ("*.pkl",)  # error.pkl, params.pkl in a trial folder (checkpoints excluded)
STUDY_NAME = re.compile("|".join(fnmatch.translate(p) for p in STUDY_FILES))
TRIAL_NAME = re.compile("|".join(fnmatch.translate(p) for p in TRIAL_FILES))
# A look at every trial folder took 25 ms per thousand trials on a 2-core machine
# (docs/performance.md, "Ten thousand trials"): once at least 100 times its own length
# apart, it keeps to 1 % of the driver's time at any study size.
FULL_LOOK_SPACING = 100


class UntrustedStudy(StudyError):
    """The study's state carries no valid seal of this user's; resuming would run it."""


def load_key(path: str | None = None) -> bytes:
    """This user's sealing key, created on first use (readable by its owner only)."""
    path = path or KEY_FILE
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another driver made it a moment ago
            return load_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    if len(key) < 32:
        raise UntrustedStudy(f"{path}: the sealing key is damaged; remove it (studies sealed "
                             "with it can then only be started again, not resumed)")
    return key


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _state_files(study: str, trials: set[str] | None = None) -> list[str]:
    """Paths, relative to the study, of every file that a restore would deserialise: the
    study's own, and those of the trial folders named in `trials` (all if None)."""
    entries = os.listdir(study)
    found = [name for name in entries if STUDY_NAME.match(name)]
    for entry in entries if trials is None else sorted(trials):
        trial = os.path.join(study, entry)
        if layout.is_trial_folder(entry) and os.path.isdir(trial):
            found += [f"{entry}/{name}" for name in os.listdir(trial) if TRIAL_NAME.match(name)]
    return sorted(found)


def _manifest_path(study: str) -> str:
    return os.path.join(study, SEALED, "manifest.json")


def _read_manifest(study: str, key: bytes) -> dict[str, str] | None:
    """The sealed MACs by relative path, or None if there is no authentic manifest."""
    try:
        with open(_manifest_path(study)) as f:
            manifest = json.load(f)
        files = manifest["files"]
        body = json.dumps(files, sort_keys=True).encode()
        if isinstance(files, dict) and hmac.compare_digest(manifest["mac"], _mac(key, body)):
            return files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _complete(data: bytes) -> bool:
    """Whether a state file is whole: JSON that parses, or a pickle whose opcodes run to STOP
    (read with pickletools, which never executes them). Tune's `search_gen_state-*.json`
    is a pickle despite its name."""
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # a truncated pickle fails in many ways
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


class Sealer:
    """Seals a running study's state files as Tune writes them (see the module docstring)."""

    def __init__(self, study: str, key: bytes | None = None, min_interval: float = 0.2):
        self.study, self.key = study, key or load_key()
        self.min_interval, self.last = min_interval, 0.0
        self.seen: dict[str, tuple[int, int]] = {}  # (mtime, size) at the last look
        # Trial folders of trials that started, ended or failed since the last look at every
        # folder (SealCallback): the looks in between read only these, and a look at every
        # folder comes no more often than FULL_LOOK_SPACING times its own length, so that
        # sealing keeps to a bounded share of the driver as the study grows.
        self.touched: set[str] = set()
        self.next_full = 0.0
        self.files = _read_manifest(study, self.key) or {}

    def seal_snapshot(self, staging: str) -> None:
        """Seal Tune's snapshot as it is written: the study-level state files in the
        driver's staging folder, before Tune copies them into the study. A driver killed
        before that copy resumes from these sealed copies: nothing of the snapshot is lost."""
        for name in sorted(os.listdir(staging)):
            path = os.path.join(staging, name)
            if not STUDY_NAME.match(name) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            self._record(name, data)
        self._write_manifest()

    def _record(self, rel: str, data: bytes, mac: str | None = None) -> bool:
        """Note a file's MAC (and keep a study-level file's sealed copy); True if new."""
        mac = mac or _mac(self.key, data)
        if self.files.get(rel) == mac:
            return False
        if "/" not in rel:  # study-level state: keep the sealed copy to fall back on
            atomic_write(os.path.join(self.study, SEALED, rel), lambda f: f.write(data))
        self.files[rel] = mac
        return True

    def _write_manifest(self) -> None:
        body = json.dumps(self.files, sort_keys=True)
        text = json.dumps({"files": self.files, "mac": _mac(self.key, body.encode())})
        atomic_write(_manifest_path(self.study), lambda f: f.write(text.encode()))

    def touch(self, trial_folder: str) -> None:
        """Tune may have written state files into this trial folder: look at it next."""
        self.touched.add(trial_folder)

    def seal(self, force: bool = False) -> None:
        """Seal every state file that changed since the last look and is complete (at most
        once a min_interval unless forced): the study's own and those of the trial folders
        touched since the last look at every folder, or, when that is due (or forced), of
        every folder. Tune copies its snapshots into the study in place, so a file may be
        caught half-written: it is sealed at a later look."""
        now = time.monotonic()
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        if not os.path.isdir(self.study):
            return
        full = force or now >= self.next_full
        changed = False
        if full:
            self.touched = set()
        for rel in _state_files(self.study, None if full else self.touched):
            path = os.path.join(self.study, rel)
            try:
                st = os.stat(path)
                if self.seen.get(rel) == (st.st_mtime_ns, st.st_size):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            # Tune's copy of a snapshot sealed from its staging already (seal_snapshot): the
            # MAC says so at once, without parsing megabytes of JSON to know it is whole.
            mac = _mac(self.key, data)
            if self.files.get(rel) != mac and not _complete(data):
                continue
            self.seen[rel] = (st.st_mtime_ns, st.st_size)
            changed = self._record(rel, data, mac) or changed
        if changed:
            self._write_manifest()
        if full:
            took = time.monotonic() - now
            self.next_full = time.monotonic() + max(self.min_interval, FULL_LOOK_SPACING * took)


def verify(study: str, key: bytes | None = None) -> dict[str, list[str]]:
    """Make a study safe to restore: every state file sealed, restored from its sealed copy,
    or quarantined; raise UntrustedStudy if the study has no authentic seal at all."""
    key = key or load_key()
    files = _read_manifest(study, key)
    if files is None:
        raise UntrustedStudy(
            f"--resume: {study} carries no seal of this user's (.sealed/manifest.json missing "
            "or not made with ~/.metasemi/trust.key), so its Ray state may run someone else's "
            "code when restored; resume only studies this user's driver ran, or start a new "
            "study (another --name)")
    restored, quarantined = [], []
    present = _state_files(study)
    # A snapshot sealed but not yet copied into the study when the driver died: its copy.
    missing = [rel for rel in files if "/" not in rel and rel not in present]
    for rel in sorted(present + missing):
        path = os.path.join(study, rel)
        if rel in present:
            with open(path, "rb") as f:
                if hmac.compare_digest(_mac(key, f.read()), files.get(rel, "")):
                    continue
        copy = os.path.join(study, SEALED, rel)
        if "/" not in rel and rel in files and os.path.isfile(copy):
            with open(copy, "rb") as f:
                data = f.read()
            if hmac.compare_digest(_mac(key, data), files[rel]):
                atomic_write(path, lambda f, d=data: f.write(d))
                restored.append(rel)
                continue
        if rel not in present:
            continue  # its sealed copy is damaged: there is nothing to restore or move
        target = os.path.join(study, QUARANTINE, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(path, target)
        quarantined.append(rel)
    return {"restored_from_seal": restored, "quarantined": quarantined}


# The sealer of each study this process is running: one manifest, one writer.
_ACTIVE: dict[str, Sealer] = {}


@contextlib.contextmanager
def sealing_snapshots(study: str):
    """While a Tuner fits in this process, seal each of Tune's snapshots of the study as
    Tune writes it (TuneController.save_to_dir, Ray 2.60), so that no snapshot exists that
    is not sealed. Studies on object stores are not sealed (see the module docstring)."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.save_to_dir
    sealer = _ACTIVE[study] = Sealer(study)

    def save_to_dir(controller: TuneController) -> None:
        original(controller)
        sealer.seal_snapshot(controller._storage.experiment_driver_staging_path)

    TuneController.save_to_dir = save_to_dir
    try:
        yield sealer
    finally:
        TuneController.save_to_dir = original
        sealer.seal(force=True)
        del _ACTIVE[study]


class SealCallback(Callback):
    """A Ray Tune callback that seals the study's state after each step of the driver's
    loop and at the end. Only the study path is pickled with it (into tuner.pkl): the key
    stays in the user's home."""

    def __init__(self, study: str):
        self.study = study
        self._sealer: Sealer | None = None

    def __getstate__(self) -> dict:
        return {"study": self.study}

    def __setstate__(self, state: dict) -> None:
        self.study, self._sealer = state["study"], None

    def _get(self) -> Sealer:
        if self._sealer is None:
            self._sealer = _ACTIVE.get(self.study) or Sealer(self.study)
        return self._sealer

    def _seal(self, force: bool) -> None:
        self._get().seal(force)

    def _touch(self, trial) -> None:
        # Tune writes a trial's params.pkl when it starts and error.pkl when it fails; the
        # look at the end of this driver step, after Tune's own callbacks, reads them.
        self._get().touch(os.path.basename(trial.path.rstrip("/")))

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._touch(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial, **info) -> None:
        self._touch(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._touch(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._touch(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._touch(trial)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._seal(force=False)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._seal(force=True)
