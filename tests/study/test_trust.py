"""Resume runs no one else's code: Ray's state files are sealed by the driver that wrote
them; on --resume anything unsealed is restored from its sealed copy or quarantined."""

import builtins
import glob
import json
import os
import pickle
import stat

import pytest

from study import trust
from study.trust import Sealer, UntrustedStudy, load_key, verify


class Payload:
    """A pickle that, when loaded, writes a marker file: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def key(tmp_path, monkeypatch):
    monkeypatch.setattr(trust, "KEY_FILE", str(tmp_path / "home" / "trust.key"))
    return load_key()


def fake_study(root):
    study = root / "study"
    (study / "run_trial_0000_1").mkdir(parents=True)
    files = {"tuner.pkl": pickle.dumps("tuner"), "searcher-state-1.pkl": pickle.dumps([1]),
             "experiment_state-1.json": b'{"trial_data": []}',
             "run_trial_0000_1/params.pkl": pickle.dumps({"lr": 0.1})}
    for rel, data in files.items():
        (study / rel).write_bytes(data)
    return study, files


def test_the_key_is_made_once_and_readable_by_its_owner_only(key):
    assert len(key) == 32 and load_key() == key
    assert stat.S_IMODE(os.stat(trust.KEY_FILE).st_mode) == 0o600


def test_tampered_state_is_restored_from_its_seal_and_unknown_pickles_quarantined(tmp_path, key):
    study, files = fake_study(tmp_path)
    Sealer(str(study)).seal(force=True)
    (study / "searcher-state-1.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "m")))
    (study / "run_trial_0000_1" / "error.pkl").write_bytes(b"planted")
    (study / "run_trial_0000_1" / "params.pkl").write_bytes(pickle.dumps({"lr": 9.9}))

    report = verify(str(study))
    assert report == {"restored_from_seal": ["searcher-state-1.pkl"],
                      "quarantined": ["run_trial_0000_1/error.pkl",
                                      "run_trial_0000_1/params.pkl"]}
    assert (study / "searcher-state-1.pkl").read_bytes() == files["searcher-state-1.pkl"]
    assert (study / "quarantine" / "run_trial_0000_1" / "error.pkl").read_bytes() == b"planted"
    assert not (study / "run_trial_0000_1" / "error.pkl").exists()
    assert verify(str(study)) == {"restored_from_seal": [], "quarantined": []}


def test_a_forged_or_missing_seal_refuses_the_resume(tmp_path, key):
    study, _ = fake_study(tmp_path)
    with pytest.raises(UntrustedStudy, match="--resume: .* carries no seal of this user's"):
        verify(str(study))
    Sealer(str(study)).seal(force=True)
    manifest = study / trust.SEALED / "manifest.json"
    forged = json.loads(manifest.read_text())
    forged["files"]["tuner.pkl"] = "0" * 64  # a seal rewritten without the key
    manifest.write_text(json.dumps(forged))
    with pytest.raises(UntrustedStudy):
        verify(str(study))
    with pytest.raises(UntrustedStudy):  # another user's key
        verify(str(study), key=b"k" * 32)


def test_a_half_written_file_is_sealed_only_once_it_is_whole(tmp_path, key):
    study, _ = fake_study(tmp_path)
    whole = pickle.dumps({"state": list(range(100))})
    (study / "searcher-state-1.pkl").write_bytes(whole[:len(whole) // 2])
    (study / "experiment_state-1.json").write_bytes(b'{"trial_data": [')
    sealer = Sealer(str(study), min_interval=0)
    sealer.seal()
    sealed = json.loads((study / trust.SEALED / "manifest.json").read_text())["files"]
    assert sorted(sealed) == ["run_trial_0000_1/params.pkl", "tuner.pkl"]
    (study / "searcher-state-1.pkl").write_bytes(whole)
    (study / "experiment_state-1.json").write_bytes(b'{"trial_data": []}')
    sealer.seal()
    assert verify(str(study)) == {"restored_from_seal": [], "quarantined": []}


def test_between_looks_at_every_trial_only_the_trials_tune_touched_are_read(tmp_path, key):
    # A look at every trial folder costs time in proportion to the study's trials: between
    # two such looks, the sealer reads the study's own files and the folders of trials
    # that started, ended or failed since (SealCallback touches them).
    study, _ = fake_study(tmp_path)
    sealer = Sealer(str(study), min_interval=0)
    sealer.seal()  # the first look reads every folder
    assert sealer.next_full > 0
    sealer.next_full = float("inf")  # no look at every folder is due
    for name in ("run_trial_0001_2", "run_trial_0002_3"):
        (study / name).mkdir()
        (study / name / "params.pkl").write_bytes(pickle.dumps({"lr": 0.2}))
    (study / "searcher-state-2.pkl").write_bytes(pickle.dumps([2]))
    sealer.touch("run_trial_0001_2")
    sealer.seal()
    sealed = json.loads((study / trust.SEALED / "manifest.json").read_text())["files"]
    assert "run_trial_0001_2/params.pkl" in sealed and "searcher-state-2.pkl" in sealed
    assert "run_trial_0002_3/params.pkl" not in sealed
    sealer.seal(force=True)  # the driver's last look, and any look due, read every folder
    assert verify(str(study)) == {"restored_from_seal": [], "quarantined": []}


def test_the_next_look_at_every_trial_waits_at_least_the_sealing_interval(tmp_path, key):
    study, _ = fake_study(tmp_path)
    sealer = Sealer(str(study), min_interval=5)
    before = trust.time.monotonic()
    sealer.seal()
    assert sealer.next_full >= before + 5
    (study / "run_trial_0009_9").mkdir()
    (study / "run_trial_0009_9" / "params.pkl").write_bytes(pickle.dumps({}))
    sealer.last = 0.0  # the interval between looks has passed; the one at every folder not
    sealer.seal()
    sealed = json.loads((study / trust.SEALED / "manifest.json").read_text())["files"]
    assert "run_trial_0009_9/params.pkl" not in sealed


def test_the_tune_callback_pickles_without_the_key(tmp_path, key):
    callback = trust.SealCallback(str(tmp_path))
    callback._seal(force=True)
    assert key not in pickle.dumps(callback)


@pytest.mark.slow
def test_a_planted_payload_does_not_run_on_resume(study, tmp_path):
    args = ("--space", "digits", "--name", "p", "--num-samples", "2", "--scheduler", "fifo",
            "--steps-per-trial", "40", "--test-freq", "20")
    rc, out = study.run(*args)
    assert rc == 0, out
    path = study.storage / "p"
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(Payload(marker))
    for name in ("tuner.pkl", *map(os.path.basename, glob.glob(f"{path}/searcher-state-*.pkl"))):
        (path / name).write_bytes(payload)
    trial = sorted(path.glob("run_trial_*"))[0]
    (trial / "error.pkl").write_bytes(payload)
    state_file = glob.glob(f"{path}/experiment_state-*.json")[0]
    state = open(state_file).read()
    start = state.index('"value": "') + len('"value": "')
    end = state.index('"', start)
    with open(state_file, "w") as f:  # a cloudpickle blob inside the JSON, replaced
        f.write(state[:start] + payload.hex() + state[end:])

    rc, out = study.run(*args, "--resume")
    assert rc == 0, out
    assert not marker.exists(), "the planted payload ran on the driver"
    assert "restored from seal" in out and "quarantined" in out
    assert (path / "quarantine" / trial.name / "error.pkl").read_bytes() == payload
    summary = json.loads((path / "study_summary.json").read_text())
    assert summary["num_completed"] == 2

    # Without any seal (a study this user's driver never ran), resume is refused.
    for name in ("tuner.pkl",):
        (path / name).write_bytes(payload)
    for sealed in (path / trust.SEALED).iterdir():
        sealed.unlink()
    rc, out = study.run(*args, "--resume")
    assert rc == 2 and "carries no seal of this user's" in out
    assert not marker.exists()


def test_a_snapshot_is_sealed_from_tunes_staging_before_it_reaches_the_study(tmp_path, key):
    study, files = fake_study(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    newer = pickle.dumps([1, 2])
    (staging / "searcher-state-1.pkl").write_bytes(newer)
    (staging / "experiment_state-2.json").write_bytes(b'{"trial_data": [1]}')
    sealer = Sealer(str(study))
    sealer.seal(force=True)
    sealer.seal_snapshot(str(staging))
    # the driver dies before Tune copies the snapshot into the study: the sealed copies
    # of the newer snapshot are used, none is lost
    report = verify(str(study))
    assert report["restored_from_seal"] == ["experiment_state-2.json", "searcher-state-1.pkl"]
    assert (study / "searcher-state-1.pkl").read_bytes() == newer
    assert (study / "experiment_state-2.json").read_bytes() == b'{"trial_data": [1]}'


def test_the_one_ray_method_the_seal_wraps_still_writes_the_snapshot_as_the_seal_expects():
    # study/trust.py `sealing_snapshots` wraps TuneController.save_to_dir (docs/architecture.md
    # says why no hook does): it must still be the one method that writes a whole snapshot
    # into the driver's staging folder, which the wrapper reads from `_storage`.
    import inspect

    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TuneController

    assert list(inspect.signature(TuneController.save_to_dir).parameters) == ["self"]
    body = inspect.getsource(TuneController.save_to_dir)
    for part in ("self._storage.experiment_driver_staging_path", "experiment_state_file_name",
                 "self._search_alg.save_to_dir", "self._callbacks.save_to_dir"):
        assert part in body, f"Ray's TuneController.save_to_dir no longer has {part}"
    assert "save_fn=self.save_to_dir" in inspect.getsource(TuneController.checkpoint)
    assert "self._storage = storage" in inspect.getsource(TuneController.__init__)
    assert isinstance(inspect.getattr_static(StorageContext, "experiment_driver_staging_path"),
                      property)


def test_sealing_snapshots_puts_ray_s_method_back_afterwards(tmp_path):
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.save_to_dir
    with trust.sealing_snapshots(str(tmp_path)):
        assert TuneController.save_to_dir is not original
    assert TuneController.save_to_dir is original


# Names of the project that a study's pickles (tuner.pkl, the searcher's state, Tune's
# experiment state) hold, read with pickletools from a study made by the code of 2026-12-02
# (commit 7ec2212), and Tune's trainable: a resumed study unpickles them, so they must stay.
PICKLED_NAMES = [("study.console", "trial_dirname"), ("study.fatal", "FatalWatch"),
                 ("study.search", "CappedTPESampler"), ("study.search", "RaceSearch"),
                 ("study.search", "StudySearch"), ("study.search", "RaceAwareASHA"),
                 ("study.trust", "SealCallback"), ("study.trainable", "run_trial")]


@pytest.mark.parametrize("module,name", PICKLED_NAMES)
def test_what_older_studies_pickled_still_resolves(module, name):
    import importlib

    assert callable(getattr(importlib.import_module(module), name))
