"""Datasets: CIFAR/SVHN read from their real on-disk formats, digits embedded, balanced splits,
and the batched augmentation."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tests.trainer.helpers import write_cifar10, write_cifar100, write_svhn
from trainer.data import (
    DATASETS,
    TRAIN_SIZES,
    DatasetCorrupt,
    DatasetMissing,
    IndexStream,
    augment,
    check_sizes,
    digits_test_indices,
    labeled_split,
    load_data,
    load_digits_arrays,
)
from trainer.loop import train
from trainer.settings import replace, resolve


def test_cifar10_reads_the_python_batches(tmp_path):
    written = write_cifar10(tmp_path)
    arrays = DATASETS["cifar10"].load(str(tmp_path), False)

    assert arrays.train_x.shape == (150, 3, 32, 32) and arrays.train_x.dtype == np.uint8
    assert arrays.test_x.shape == (20, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # Row-major 3072 bytes are R, G, B planes of 32x32: image 0 of batch 2 is train image 30.
    assert np.array_equal(arrays.train_x[30], data[0].reshape(3, 32, 32))
    assert arrays.train_y[30:60].tolist() == labels
    assert arrays.test_split == "official"


def test_cifar100_reads_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    arrays = DATASETS["cifar100"].load(str(tmp_path), False)

    assert arrays.train_x.shape == (300, 3, 32, 32)
    assert arrays.train_y.tolist() == written["train"][1]
    assert arrays.test_y.max() == 99


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    written = write_svhn(tmp_path)
    arrays = DATASETS["svhn"].load(str(tmp_path), False)

    assert arrays.train_x.shape == (60, 3, 32, 32)
    assert arrays.train_y.tolist() == written["train"][1].tolist()
    assert set(arrays.train_y.tolist()) == set(range(10))
    x = written["train"][0]
    assert np.array_equal(arrays.train_x[7], np.transpose(x[:, :, :, 7], (2, 0, 1)))  # HWC -> CHW


@pytest.mark.parametrize("dataset,writer,num_label", [
    ("cifar10", write_cifar10, 40), ("cifar100", write_cifar100, 200), ("svhn", write_svhn, 20)])
def test_load_data_gives_a_class_balanced_split(tmp_path, dataset, writer, num_label):
    writer(tmp_path)
    data = load_data(dataset, str(tmp_path), False, num_label, seed=5, device=torch.device("cpu"))
    classes = DATASETS[dataset].num_classes

    counts = np.bincount(data.train_y[data.labeled].numpy(), minlength=classes)
    assert counts.tolist() == [num_label // classes] * classes
    assert len(np.intersect1d(data.labeled, data.unlabeled)) == 0
    assert len(data.labeled) + len(data.unlabeled) == len(data.train_y)
    assert data.train_x.dtype == torch.uint8 and data.mean.shape == (3, 1, 1)


def test_missing_files_name_what_is_expected_where(tmp_path):
    with pytest.raises(DatasetMissing) as e:
        DATASETS["cifar10"].load(str(tmp_path), False)
    assert "data_batch_1" in str(e.value) and "--download" in str(e.value)
    with pytest.raises(DatasetMissing, match="train_32x32.mat"):
        DATASETS["svhn"].load(str(tmp_path), False)
    with pytest.raises(DatasetMissing, match="cifar-100-python"):
        DATASETS["cifar100"].load(str(tmp_path), False)


def test_dataset_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps({"data": os.system}))
    with pytest.raises(DatasetCorrupt, match="refusing to load posix.system"):
        DATASETS["cifar100"].load(str(tmp_path), False)


def _pickled(entry):
    return pickle.dumps(entry, protocol=2)


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # truncated, as by an interrupted download
    lambda data: b"",
    lambda data: b"<html>404 not found</html>",
    lambda data: _pickled({"labels": [0, 1]}),  # no images
    lambda data: _pickled({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}),
    lambda data: _pickled({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),
    lambda data: _pickled([1, 2, 3]),
])
def test_a_corrupt_cifar_batch_is_named_with_the_fix(tmp_path, damage):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetCorrupt, match=r"data_batch_3 is corrupt or not a CIFAR python "
                                             r"batch .*--download"):
        DATASETS["cifar10"].load(str(tmp_path), False)


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(path.read_bytes()[:1000]),
    lambda path: path.write_bytes(b"\x00" * 64),
    lambda path: scipy.io.savemat(path, {"y": np.ones((3, 1), np.uint8)}),  # no images
    lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                         "y": np.ones((3, 1), np.uint8)}),
])
def test_a_corrupt_svhn_file_is_named_with_the_fix(tmp_path, damage):
    write_svhn(tmp_path)
    damage(tmp_path / "train_32x32.mat")
    with pytest.raises(DatasetCorrupt, match=r"train_32x32.mat is corrupt or not an SVHN "
                                             r"cropped-digits .mat file .*--download"):
        DATASETS["svhn"].load(str(tmp_path), False)


def test_the_known_training_set_sizes_are_the_real_ones():
    digits = DATASETS["digits"].load("", False)
    assert TRAIN_SIZES["digits"] == DATASETS["digits"].train_size == len(digits.train_y)
    assert DATASETS["digits"].test_size == len(digits.test_y)


@pytest.mark.parametrize("overrides,message", [
    ({"num_label": 1250, "num_val": 10},
     r"num_label: 1250 labeled \+ 10 validation images asked for, but digits has only 1258 "
     r"training images; lower --num-label or --num-val"),
    ({"num_label": 1200, "batch_size": 64},
     r"batch_size: 64 is larger than the 58 unlabeled training images left after num_label "
     r"1200 and num_val 0; use --batch-size 58 or less"),
    ({"num_label": 1100, "num_val": 100, "batch_size": 64},
     r"batch_size: 64 is larger than the 58 unlabeled"),
])
def test_a_split_or_batch_the_training_set_cannot_hold_is_refused_by_name(tmp_path, overrides,
                                                                           message):
    cfg = resolve({**overrides, "device": "cpu"})
    with pytest.raises(ValueError, match=message):
        check_sizes(cfg, TRAIN_SIZES["digits"])  # from the counts, before loading
    field = message.split(":")[0]
    save = tmp_path / "run"
    with pytest.raises(ValueError, match=f"^{field}: "):  # and by train() from the real split
        train(replace(cfg, save_path=str(save)), show_progress=False)
    assert not save.exists()  # refused before the model and the run directory


def test_a_labeled_batch_larger_than_the_labels_is_allowed_and_supervised_needs_no_pool():
    # The digits preset draws batches of 64 from 50 labels (the stream straddles epochs).
    preset = resolve({})
    assert preset.batch_size > preset.num_label
    check_sizes(preset, TRAIN_SIZES["digits"])
    check_sizes(resolve({"num_label": 1250, "method": "supervised"}), TRAIN_SIZES["digits"])


def test_digits_split_is_fixed_stratified_and_disjoint():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    test = digits_test_indices(labels)
    assert np.array_equal(test, digits_test_indices(labels))  # fixed, not seed-dependent
    per_class = np.bincount(labels[test], minlength=10) / np.bincount(labels, minlength=10)
    assert np.allclose(per_class, 0.3, atol=0.01)

    arrays = DATASETS["digits"].load("", False)
    assert len(arrays.train_y) + len(arrays.test_y) == 1797
    assert arrays.test_split == test.tolist()
    assert arrays.train_x.shape[1:] == (1, 8, 8) and arrays.train_x.max() == 255


def test_labeled_split_depends_on_the_seed_and_rejects_impossible_requests():
    labels = np.repeat(np.arange(10), 20)
    a, _ = labeled_split(labels, 50, 10, seed=1)
    b, _ = labeled_split(labels, 50, 10, seed=1)
    c, _ = labeled_split(labels, 50, 10, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="num_label.*only 200"):
        labeled_split(labels, 300, 10, seed=0)
    with pytest.raises(ValueError, match="class 3 has only 5"):
        labeled_split(np.concatenate([labels[labels != 3], [3] * 5]), 100, 10, seed=0)


def test_index_stream_covers_every_index_once_per_epoch():
    stream = IndexStream(np.arange(100, 110), batch_size=4, seed=0)
    drawn = torch.cat([stream.next() for _ in range(5)]).tolist()  # two epochs
    assert sorted(drawn[:10]) == list(range(100, 110))
    assert sorted(drawn[10:]) == list(range(100, 110))


def test_augment_flips_half_the_images_and_nothing_without_padding_or_flips():
    torch.manual_seed(0)
    x = torch.zeros(8100, 1, 8, 8, dtype=torch.uint8)
    x[:, 0, 0, 0] = 255  # one bright pixel at the left: a flip moves it to the right
    flipped = augment(x, padding=0, flip=True)
    right = (flipped[:, 0, 0, 7] == 255).float().mean().item()
    assert right == pytest.approx(0.5, abs=0.03)
    assert torch.equal(augment(x, padding=0, flip=False), x)


def test_crop_offsets_are_uniform_over_all_9x9_positions():
    torch.manual_seed(1)
    n, size, pad = 81 * 200, 8, 4
    # An all-ones image padded with zeros: the zero rows and columns that come into view
    # on each side give the crop offset (oy, ox) exactly.
    out = augment(torch.ones(n, 1, size, size, dtype=torch.uint8), padding=pad, flip=False)
    rows, cols = out[:, 0].amax(2) == 0, out[:, 0].amax(1) == 0
    top, bottom = rows[:, :pad].sum(1), rows[:, -pad:].sum(1)
    left, right = cols[:, :pad].sum(1), cols[:, -pad:].sum(1)
    oy, ox = pad - top + bottom, pad - left + right
    counts = torch.bincount(oy * 9 + ox, minlength=81).float()
    assert len(counts) == 81
    # 200 expected per position (sd about 14): every one of the 81 within 25%.
    assert counts.min() > 150 and counts.max() < 250, counts


def test_svhn_is_cropped_but_never_flipped_cifar_both():
    for name in ("cifar10", "cifar100"):
        assert (DATASETS[name].crop_padding, DATASETS[name].flip) == (4, True)
    assert (DATASETS["svhn"].crop_padding, DATASETS["svhn"].flip) == (4, False)


def test_index_stream_lives_on_its_device_and_checkpoints_a_compact_copy():
    stream = IndexStream(np.arange(1000), batch_size=10, seed=0, device="cpu")
    stream.next()
    state = stream.state_dict()
    # The saved order is its own storage, not a view of the epoch's.
    assert state["order"].untyped_storage().nbytes() == 990 * 8
    again = IndexStream(np.arange(1000), batch_size=10, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again.next(), stream.next())


def test_digits_are_scikit_learns_images_read_without_importing_it():
    code = ("import sys; from trainer.data import load_digits_arrays; a = load_digits_arrays("
            "'', False); print(len(a.train_y) + len(a.test_y), 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == ["1797", "False"]  # scipy and sklearn stay unimported
    from sklearn.datasets import load_digits

    d = load_digits()
    a = load_digits_arrays("", False)
    images = np.concatenate([a.train_x, a.test_x])[:, 0]
    labels = np.concatenate([a.train_y, a.test_y])
    order = np.concatenate([np.setdiff1d(np.arange(len(d.target)), np.array(a.test_split)),
                            np.array(a.test_split)])
    assert np.array_equal(labels, d.target[order])
    assert np.array_equal(images, np.rint(d.images[order] * 255 / 16).astype(np.uint8))
