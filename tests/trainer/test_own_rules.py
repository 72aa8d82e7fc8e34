"""Data of your own is counted once and checked by the same rules in every form: each
image read once whatever links a folder holds, the test set apart from training, and the
folder and .npz forms refusing the same mistakes with a message naming the file and fix."""

import os

import numpy as np
import pytest
from PIL import Image

from tests.trainer.helpers import write_folder
from trainer.cli import main
from trainer.config import ConfigError
from trainer.own_data import OwnDataError, class_counts, fingerprint, load_own
from trainer.settings import resolve


def identity(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def write_npz(path, classes=("cat", "dog"), per_class=6, size=8, **arrays):
    rng = np.random.default_rng(0)
    k = len(classes) if classes is not None else 2
    n = per_class * k
    fields = {"x_train": rng.integers(0, 256, (n, size, size), dtype=np.uint8),
              "y_train": np.arange(n) % k,
              "classes": np.array(classes) if classes is not None else None, **arrays}
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return str(path)


def make(form, tmp_path, **kwargs):
    if form == "folder":
        return write_folder(tmp_path / "d", ["train"], **kwargs)
    return write_npz(tmp_path / "d.npz", **kwargs)


# --- links ---------------------------------------------------------------------------------

def test_an_image_reached_by_two_links_is_read_once(tmp_path):
    root = write_folder(tmp_path / "d", ["train"], per_class=10)
    cat = tmp_path / "d" / "train" / "cat"
    os.symlink(cat / "000.png", cat / "000-again.png")
    os.link(cat / "001.png", cat / "001-hard.png")
    os.makedirs(cat / "nested")
    os.symlink(cat / "002.png", cat / "nested" / "002.png")
    own = load_own(root)
    assert len(own.train_x) + len(own.test_x) == 20  # not 23
    assert list(class_counts(root)[0]) == [7, 7]  # the counts the presets read agree
    training = {identity(os.path.join(root, f)) for f in own.files["train"]}
    held_out = {identity(os.path.join(root, f)) for f in own.files["test"]}
    assert not training & held_out  # the held-out test set shares no file with training


def test_a_test_image_that_is_also_a_training_image_is_refused_naming_both(tmp_path):
    root = write_folder(tmp_path / "d", ["train", "test"], per_class=4)
    leak = tmp_path / "d" / "test" / "dog" / "from-train.png"
    os.link(tmp_path / "d" / "train" / "dog" / "003.png", leak)
    with pytest.raises(OwnDataError, match=r"train/dog/003\.png and .*test/dog/from-train\.png "
                                           r"are one file \(a link\): test/ would share an "
                                           r"image with train/"):
        load_own(root)


def test_one_file_under_two_classes_is_refused(tmp_path):
    root = write_folder(tmp_path / "d", ["train"])
    os.symlink(tmp_path / "d" / "train" / "cat" / "000.png",
               tmp_path / "d" / "train" / "dog" / "cat-or-dog.png")
    with pytest.raises(OwnDataError, match=r"one file \(a link\) under two classes, 'cat' and "
                                           r"'dog'"):
        load_own(root)


def test_an_unlabeled_copy_of_a_training_image_is_counted_once(tmp_path):
    root = write_folder(tmp_path / "d", ["train", "unlabeled"], per_class=4)
    os.symlink(tmp_path / "d" / "train" / "cat" / "000.png",
               tmp_path / "d" / "unlabeled" / "cat.png")
    assert len(load_own(root).unlabeled_x) == 4  # not 5
    assert class_counts(root)[1] == 4


def test_a_dangling_link_is_named(tmp_path):
    root = write_folder(tmp_path / "d", ["train"])
    os.symlink(tmp_path / "gone.png", tmp_path / "d" / "train" / "cat" / "gone.png")
    with pytest.raises(OwnDataError, match=r"train/cat/gone\.png: cannot be read"):
        load_own(root)


# --- the same rules in both forms ----------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "npz"])
def test_a_single_class_is_refused_in_either_form(tmp_path, form):
    path = make(form, tmp_path, classes=("cat",))
    with pytest.raises(ConfigError, match=r"1 class\(es\); a classifier needs at least two"):
        resolve({"dataset": path})


def test_an_npz_whose_labels_are_all_one_class_is_refused(tmp_path):
    # Before: it trained, and reported a perfect score.
    path = write_npz(tmp_path / "d.npz", classes=None, y_train=np.zeros(12, np.int64))
    with pytest.raises(ConfigError, match="1 class"):
        resolve({"dataset": path})


def test_duplicate_class_names_in_an_npz_are_refused(tmp_path):
    path = write_npz(tmp_path / "d.npz", classes=("cat", "cat"))
    with pytest.raises(ConfigError, match=r"the class name 'cat' appears twice"):
        resolve({"dataset": path})


def test_a_class_without_training_images_is_refused_in_either_form(tmp_path):
    path = write_npz(tmp_path / "d.npz", classes=("cat", "dog", "fox"),
                     y_train=np.arange(18) % 2)
    with pytest.raises(ConfigError, match=r"class 'fox' has no image in y_train"):
        resolve({"dataset": path})
    root = write_folder(tmp_path / "f", ["train"])
    os.makedirs(tmp_path / "f" / "train" / "fox")
    with pytest.raises(OwnDataError, match=r"train/fox: an empty class folder"):
        load_own(root)


def test_string_labels_with_classes_are_refused_with_the_fix(tmp_path):
    path = write_npz(tmp_path / "d.npz", y_train=np.array(["cat", "dog"] * 6))
    with pytest.raises(ConfigError, match=r"y_train must be a 1-D array of integer labels .*"
                                          r"<U3.*np\.searchsorted"):
        resolve({"dataset": path})


def test_an_object_array_is_refused_and_never_unpickled(tmp_path):
    path = tmp_path / "d.npz"
    x = np.empty(12, dtype=object)
    x[:] = [np.zeros((8, 8), np.uint8)] * 12
    np.savez(path, x_train=x, y_train=np.arange(12) % 2)
    with pytest.raises(OwnDataError, match=r"x_train is an array of Python objects .*never read"):
        load_own(str(path))
    np.savez(path, x_train=np.zeros((12, 8, 8), np.uint8), y_train=np.arange(12) % 2,
             classes=np.array([object(), object()]))
    with pytest.raises(ConfigError, match="classes is an array of Python objects"):
        resolve({"dataset": str(path)})


@pytest.mark.parametrize("form", ["folder", "npz"])
def test_images_too_small_for_the_network_are_refused_naming_its_minimum(tmp_path, form):
    path = make(form, tmp_path, size=8)
    with pytest.raises(ConfigError, match=r"convlarge takes images of at least 12x12 .*are 8 "
                                          r"pixels on a side; pass --image-size 12 or more"):
        resolve({"dataset": path, "architecture": "convlarge"})
    assert resolve({"dataset": path, "architecture": "convlarge", "image_size": 12})
    with pytest.raises(ConfigError, match="digits's are 8 pixels on a side; choose another"):
        resolve({"dataset": "digits", "architecture": "convlarge"})


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "d", ["train"])
    Image.new("L", (5000, 5000)).save(tmp_path / "d" / "train" / "dog" / "bomb.png")
    with pytest.raises(OwnDataError, match=r"bomb\.png: 5000x5000 pixels, more than the "
                                           r"16,777,216 one image may have"):
        load_own(root)
    # Pillow's own guard (its DecompressionBombError) is named as well, not a traceback.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(OwnDataError, match=r"not a readable PNG or JPEG image .*decompression "
                                           r"bomb"):
        load_own(root)


# --- flags that do not apply ---------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--image-size", "16"], "image_size: resizes data of your own only; digits is built in"),
    (["--download"], "download: digits is embedded in scikit-learn: there is nothing to "
                     "download"),
    (["--data-path", "data"], "--data-path: digits is embedded in scikit-learn and reads no "
                              "--data-path"),
])
def test_a_flag_that_does_not_apply_to_the_dataset_is_refused(tmp_path, capsys, argv,
                                                              message):
    assert main([*argv, "--save-path", str(tmp_path / "run"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_own_data_refuses_data_path_and_download(tmp_path, capsys):
    root = write_folder(tmp_path / "d", ["train"])
    assert main(["--dataset", root, "--data-path", "x", "--quiet"]) == 2
    assert "reads no --data-path" in capsys.readouterr().err
    assert main(["--dataset", root, "--download", "--quiet"]) == 2
    assert "is your own, read from --dataset: there is nothing to download" in \
        capsys.readouterr().err


def test_file_names_that_are_not_utf8_are_fingerprinted(tmp_path):
    root = write_folder(tmp_path / "d", ["train"])
    os.rename(os.path.join(root, "train", "cat", "000.png"),
              os.fsencode(os.path.join(root, "train", "cat")) + b"/caf\xe9.png")
    assert len(fingerprint(root)) == 16
    assert len(load_own(root).train_x) + len(load_own(root).test_x) == 12
