"""The validation split: held out, class-balanced, disjoint from everything else, evaluated
at every evaluation, recorded in split.json and kept on resume; and the authors' split."""

import csv
import glob
import json
import random
import struct

import numpy as np
import pytest
import torch
from tensorboardX.proto.event_pb2 import Event

from tests.trainer.helpers import write_cifar10, write_cifar100, write_svhn
from trainer import resolve, train
from trainer.checkpoint import CheckpointError
from trainer.config import ConfigError
from trainer.data import DATASETS, load_data, make_split
from trainer.settings import replace

CPU = torch.device("cpu")
WRITERS = {"cifar10": (write_cifar10, {"per_batch": 60}),
           "cifar100": (write_cifar100, {"train": 600}), "svhn": (write_svhn, {"train": 120})}
# (dataset, labels, validation images): fits the files the writers make, in both protocols
CASES = [("digits", 100, 50), ("cifar10", 100, 50), ("cifar100", 300, 200), ("svhn", 60, 40)]


def load(tmp_path, dataset, num_label, num_val, from_labeled, split="random", seed=3):
    if dataset != "digits":
        writer, kwargs = WRITERS[dataset]
        if not any(tmp_path.iterdir()):
            writer(str(tmp_path), **kwargs)
    return load_data(dataset, str(tmp_path), False, num_label, seed, CPU, num_val=num_val,
                     val_from_labeled=from_labeled, split=split)


def per_class(labels, idx, num_classes):
    return np.bincount(labels[idx], minlength=num_classes)


@pytest.mark.parametrize("split", ["random", "authors"])
@pytest.mark.parametrize("from_labeled", [False, True], ids=["beside-labels", "from-labels"])
@pytest.mark.parametrize("dataset,num_label,num_val", CASES)
def test_the_validation_set_is_balanced_and_disjoint_on_every_loader(
        tmp_path, dataset, num_label, num_val, from_labeled, split):
    data = load(tmp_path, dataset, num_label, num_val, from_labeled, split)
    y = data.train_y.numpy()
    classes = DATASETS[dataset].num_classes
    labeled, unlabeled, val = data.labeled, data.unlabeled, data.split.val

    assert len(val) == num_val
    assert (per_class(y, val, classes) == num_val // classes).all()
    expected_labels = num_label - num_val if from_labeled else num_label
    assert (per_class(y, labeled, classes) == expected_labels // classes).all()
    assert not set(val) & set(labeled) and not set(val) & set(unlabeled)
    assert not set(labeled) & set(unlabeled)
    if from_labeled:  # the validation images are labeled images, never used as unlabeled
        assert len(labeled) + len(val) + len(unlabeled) == len(y)
    else:
        assert len(labeled) == num_label
        assert len(labeled) + len(val) + len(unlabeled) == len(y)
    # the test set is separate arrays; the validation images are training images
    assert val.max() < len(y)


def test_a_validation_set_beside_the_labels_leaves_the_labeled_set_unchanged(tmp_path):
    without = load(tmp_path, "digits", 50, 0, False)
    with_val = load(tmp_path, "digits", 50, 100, False)
    assert np.array_equal(without.labeled, with_val.labeled)
    assert len(with_val.unlabeled) == len(without.unlabeled) - 100


def test_the_authors_split_is_their_loaders_procedure():
    labels = np.random.default_rng(0).integers(0, 10, 3000)
    for seed in (7788, 8469, 1):
        # Independently: random.seed(seed), shuffle range(n), the first k of each class.
        random.seed(seed)
        order = list(range(len(labels)))
        random.shuffle(order)
        counts, expected = [0] * 10, []
        for i in order:
            if counts[labels[i]] < 40:
                counts[labels[i]] += 1
                expected.append(i)
        split = make_split(labels, 10, 400, seed, method="authors")
        assert split.labeled.tolist() == sorted(expected)
        assert split.method == "authors"
    assert not np.array_equal(make_split(labels, 10, 400, 1, method="authors").labeled,
                              make_split(labels, 10, 400, 1, method="random").labeled)


def test_impossible_validation_requests_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="num_val.*multiple of 10"):
        resolve({"dataset": "digits", "num_val": 15})
    with pytest.raises(ConfigError, match="num_val.*0 < num_val < num_label"):
        resolve({"dataset": "digits", "num_val": 50, "val_from_labeled": True})
    with pytest.raises(ConfigError, match="num_val: must be a non-negative integer"):
        resolve({"dataset": "digits", "num_val": -10})
    with pytest.raises(ConfigError, match="split: unknown split 'mine'"):
        resolve({"dataset": "digits", "split": "mine"})
    labels = np.arange(100) % 10
    with pytest.raises(ValueError, match="num_val: 9 validation images per class.*smaller"):
        make_split(labels, 10, 20, 0, num_val=90)


def tensorboard_scalars(folder) -> dict[str, list[float]]:
    """Every scalar of the event files in `folder`, by tag (TFRecord framing, Event protos)."""
    out: dict[str, list[float]] = {}
    for path in sorted(glob.glob(f"{folder}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(value.simple_value)
    return out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def tiny(tmp_path, name="run", **overrides):
    base = dict(dataset="digits", total_steps=60, test_freq=20, log_freq=10, batch_size=32,
                warmup=10, milestones="[50]", device="cpu", num_val=50,
                save_path=str(tmp_path / name))
    return resolve({**base, **overrides})


def test_every_evaluation_logs_validation_beside_test(tmp_path):
    reports = []
    cfg = tiny(tmp_path)
    summary = train(cfg, report=lambda row, ckpt: reports.append(row), show_progress=False)
    rows = read_csv(f"{cfg.save_path}/metrics.csv")

    for row in (rows[0], reports[0]):
        assert {"val_loss", "val_accuracy", "val_score", "test_accuracy"} <= set(row)
    accs = [float(r["val_accuracy"]) for r in rows]
    # the selection score: the mean validation accuracy of the second half of the
    # evaluations so far (1 of 1, the last 1 of 2, the last 2 of 3)
    assert len(accs) == 3 and [float(r["val_score"]) for r in rows] == pytest.approx(
        [accs[0], accs[1], (accs[1] + accs[2]) / 2])
    assert [r["val_accuracy"] for r in reports] == pytest.approx(accs)

    # accuracy on the held-out images, recomputed from the final checkpoint
    split = json.load(open(f"{cfg.save_path}/split.json"))
    assert len(split["val"]) == 50 and split["split"] == "random"
    assert split["val_from_labeled"] is False
    assert summary["final_val_accuracy"] == pytest.approx(accs[-1])
    assert summary["best_val_accuracy"] == pytest.approx(max(accs))
    assert summary["final_val_score"] == pytest.approx((accs[1] + accs[2]) / 2)
    assert summary["num_val"] == 50 and summary["precision"] == "fp32"

    scalars = tensorboard_scalars(cfg.save_path)
    assert scalars["val/val_accuracy"] == pytest.approx(accs)
    assert "test/test_accuracy" in scalars and "val/val_score" in scalars


def test_without_a_validation_set_the_run_is_the_papers_protocol(tmp_path):
    cfg = tiny(tmp_path, num_val=0, total_steps=20)
    summary = train(cfg, show_progress=False)
    assert "val_accuracy" not in read_csv(f"{cfg.save_path}/metrics.csv")[0]
    assert "final_val_accuracy" not in summary
    assert json.load(open(f"{cfg.save_path}/split.json"))["val"] == []


class Interrupt(Exception):
    pass


def test_resume_keeps_the_split_and_refuses_another(tmp_path):
    cfg = tiny(tmp_path, num_val=30, val_from_labeled=True, split="authors")

    def stop(row, ckpt):
        if row["step"] == 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, report=stop, show_progress=False)
    before = json.load(open(f"{cfg.save_path}/split.json"))
    with pytest.raises(CheckpointError, match="num_val: checkpoint 30, config 0"):
        train(replace(cfg, resume=cfg.save_path, num_val=0, val_from_labeled=False),
              show_progress=False)
    with pytest.raises(CheckpointError, match="split: checkpoint 'authors', config 'random'"):
        train(replace(cfg, resume=cfg.save_path, split="random"), show_progress=False)
    train(replace(cfg, resume=cfg.save_path), show_progress=False)
    after = json.load(open(f"{cfg.save_path}/split.json"))
    assert after == before and after["split"] == "authors" and after["val_from_labeled"]
    assert len(after["labeled"]) == 20 and len(after["val"]) == 30
    assert [int(r["step"]) for r in read_csv(f"{cfg.save_path}/metrics.csv")] == [20, 40, 60]
