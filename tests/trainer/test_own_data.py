"""Data of your own (--dataset PATH): image folder trees and .npz files load as the built-in
sets do, name their classes and files, and bad data is refused naming the file."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.helpers import write_folder
from trainer.config import ConfigError
from trainer.data import load_for
from trainer.models import build_model
from trainer.own_data import (
    OwnDataError,
    estimate_bytes,
    host_available,
    load_own,
    load_own_for,
    own_preset,
    placement,
)
from trainer.settings import replace, resolve

CPU = torch.device("cpu")


def test_a_folder_tree_loads_with_class_names_files_and_a_recorded_held_out_test_set(tmp_path):
    root = write_folder(tmp_path / "pets", ["train", "unlabeled"], per_class=10)
    own = load_own(root)
    assert own.name == "pets" and own.classes == ["cat", "dog"]
    assert own.train_x.shape == (14, 1, 8, 8) and own.test_x.shape == (6, 1, 8, 8)
    assert own.unlabeled_x.shape == (10, 1, 8, 8)
    assert own.test_split == {"held_out_of": "train/", "fraction": 0.3, "seed": 0}
    assert sorted(own.files["test"] + own.files["train"]) == sorted(
        f"train/{c}/{i:03d}.png" for c in ("cat", "dog") for i in range(10))

    cfg = resolve({"dataset": root, "num_label": 4, "batch_size": 4, "total_steps": 10})
    data = load_for(cfg, CPU)
    record = data.split_record()
    assert record["classes"] == ["cat", "dog"] and record["layout"] == "folder"
    # unlabeled/ joins the pool: the 10 train/ images not drawn as labeled, plus its 10
    assert len(data.labeled) == 4 and len(data.unlabeled) == 10 + 10
    assert (data.train_y[torch.as_tensor(data.unlabeled[-10:])] == -1).all()
    assert all(f.startswith("train/") for f in record["files"]["labeled"])
    assert record["files"]["test"] == own.files["test"]


def test_val_and_test_folders_are_used_as_given(tmp_path):
    root = write_folder(tmp_path / "d", ["train", "val", "test"], per_class=4)
    cfg = resolve({"dataset": root, "num_label": 4, "batch_size": 2, "total_steps": 10})
    data = load_for(cfg, CPU)
    assert data.test_split == "test/" and len(data.test_y) == 8
    assert len(data.split.val) == 8 and len(data.unlabeled) == 4
    assert sorted(data.split_record()["files"]["val"]) == sorted(
        f"val/{c}/{i:03d}.png" for c in ("cat", "dog") for i in range(4))
    with pytest.raises(OwnDataError, match="has a validation set of its own"):
        load_for(replace(cfg, num_val=2), CPU)


def test_greyscale_and_colour_images_mix_as_colour(tmp_path):
    root = write_folder(tmp_path / "d", ["train"], mode="L")
    write_folder(tmp_path / "d", ["test"], mode="RGB", per_class=2)
    own = load_own(root)
    assert own.train_x.shape[1] == own.test_x.shape[1] == 3
    grey = own.train_x[0]
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()


def test_mixed_sizes_are_refused_naming_two_files_unless_resized(tmp_path):
    root = write_folder(tmp_path / "d", ["train"], size=8)
    Image.new("L", (12, 10)).save(tmp_path / "d" / "train" / "dog" / "odd.png")
    with pytest.raises(OwnDataError, match=r"cat/000\.png is 8x8, .*dog/odd\.png is 12x10; "
                                           r"pass --image-size"):
        load_own(root)
    assert load_own(root, image_size=16).train_x.shape[-2:] == (16, 16)


@pytest.mark.parametrize("damage, message", [
    (lambda r: open(os.path.join(r, "train", "cat", "000.png"), "wb").write(b"not a png"),
     r"train/cat/000\.png: not a readable PNG or JPEG image"),
    (lambda r: os.makedirs(os.path.join(r, "train", "fox")),
     r"train/fox: an empty class folder"),
    (lambda r: write_folder(r, ["test"], classes=("cat", "cow")),
     r"test/cow: class 'cow' is not a class of train/"),
])
def test_bad_folders_are_refused_naming_the_file(tmp_path, damage, message):
    root = write_folder(tmp_path / "d", ["train"])
    damage(root)
    with pytest.raises(OwnDataError, match=message):
        load_own(root)


def test_npz_in_either_layout_and_its_label_check(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "hwc.npz", x_train=x, y_train=y, classes=np.array(["a", "b"]))
    np.savez(tmp_path / "chw.npz", x_train=x.transpose(0, 3, 1, 2), y_train=y)
    a, b = load_own(str(tmp_path / "hwc.npz")), load_own(str(tmp_path / "chw.npz"))
    assert (a.train_x == b.train_x).all() and a.train_x.shape[1:] == (3, 8, 8)
    assert a.classes == ["a", "b"] and b.classes == ["0", "1"]
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y + 1, classes=np.array(["a", "b"]))
    with pytest.raises(OwnDataError, match=r"bad\.npz: y_train has label 2, outside \[0, 2\)"):
        load_own(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "float.npz", x_train=x.astype(np.float32), y_train=y)
    with pytest.raises(OwnDataError, match="x_train has dtype float32; give uint8"):
        load_own(str(tmp_path / "float.npz"))


def test_too_few_images_per_class_for_num_label_is_refused(tmp_path):
    root = write_folder(tmp_path / "d", ["train"], per_class=10)  # 7 each, less the test set
    for i in range(10):  # 14 dogs: enough images in all, too few cats
        Image.new("L", (8, 8), i).save(tmp_path / "d" / "train" / "dog" / f"x{i}.png")
    cfg = resolve({"dataset": root, "num_label": 16, "batch_size": 2})
    with pytest.raises(ValueError, match="num_label: 8 labels per class asked for, but class 'cat' "
                                         "has only 7"):
        load_for(cfg, CPU)


def test_a_missing_path_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"no such folder or file"):
        resolve({"dataset": str(tmp_path / "nothing")})


@pytest.mark.parametrize("size, architecture", [(8, "digitscnn"), (32, "wrn28-2"),
                                                (64, "resnet18"), (96, "resnet18")])
def test_the_architecture_follows_the_image_size(tmp_path, size, architecture):
    root = write_folder(tmp_path / "d", ["train"], size=size, per_class=3)
    assert own_preset(root, {})["architecture"] == architecture


def test_resnet18_trains_a_few_steps_on_64px_images():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 5
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


DIGITS = dict(architecture="digitscnn", num_label=50, batch_size=64, total_steps=200, lr=0.1,
              warmup=50, milestones=(150,), weight_decay=5e-4, test_freq=100, seed=7788,
              no_flip=True, device="cpu")


# Measured 2026-11-27 on this tree, 300 steps: test accuracy of MetaSemi with unlabeled/ minus
# supervised without it, +7.6, +6.7, +7.8 points on seeds 1-3 (and +5.6, +0.6, +5.9, +6.1 on
# seeds 4-7: mean +5.8, every seed a win). The test asks for a win on each of seeds 1-3 and a
# mean gain of 3 points, well under the 7.4 measured.
SSL_SEEDS = (1, 2, 3)
SSL_MARGIN = 0.03


@pytest.mark.slow
def test_digits_as_npz_and_as_png_folder_train_as_the_built_in_set(tmp_path):
    from sklearn.datasets import load_digits

    from trainer.loop import train

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # as trainer/data/builtin.py
    np.savez(tmp_path / "digits.npz", x_train=images, y_train=d.target)
    for i, (im, y) in enumerate(zip(images, d.target)):
        os.makedirs(tmp_path / "digits" / "train" / str(y), exist_ok=True)
        Image.fromarray(im).save(tmp_path / "digits" / "train" / str(y) / f"{i:04d}.png")
    acc = {}
    for name, dataset in [("built-in", "digits"), ("npz", str(tmp_path / "digits.npz")),
                          ("folder", str(tmp_path / "digits"))]:
        cfg = resolve({**DIGITS, "dataset": dataset, "save_path": str(tmp_path / name)})
        acc[name] = train(cfg, show_progress=False)["final_test_accuracy"]
    print(acc)
    # The .npz holds the same images in the same order: the same run, to the last bit.
    assert acc["npz"] == acc["built-in"]
    # The folder holds them grouped by class: the same labeled and test images (the same
    # held-out test set), drawn in another order, so another run. Within 3 points of
    # accuracy: five seeds of this 200-step built-in run spread over 2.4 points (standard
    # deviation 1.0; measured 2026-11-27).
    split = json.loads((tmp_path / "folder" / "split.json").read_text())
    assert len(split["files"]["test"]) == 539
    assert abs(acc["folder"] - acc["built-in"]) < 0.03


def digits_folder_with_unlabeled(root):
    """Digits as a user with few labels has them: train/ holds 5 labeled images per class,
    unlabeled/ (nested, no labels) the other 1208 training images, test/ the 539 test images
    of the built-in set. Returns the tree, and the same tree without unlabeled/."""
    from sklearn.datasets import load_digits

    from trainer.data import digits_test_indices

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    test = digits_test_indices(d.target)
    seen = dict.fromkeys(range(10), 0)
    for i in range(len(d.target)):
        y = int(d.target[i])
        if i in test:
            part = f"test/{y}"
        else:
            part = f"train/{y}" if seen[y] < 5 else f"unlabeled/batch{i % 3}"
            seen[y] += 1
        os.makedirs(root / "with" / part, exist_ok=True)
        Image.fromarray(images[i]).save(root / "with" / part / f"{i:04d}.png")
    os.makedirs(root / "without")
    for part in ("train", "test"):
        os.symlink(root / "with" / part, root / "without" / part)
    return str(root / "with"), str(root / "without")


@pytest.mark.slow
def test_an_unlabeled_folder_is_what_metasemi_learns_from(tmp_path):
    from trainer.loop import train

    with_unlabeled, without = digits_folder_with_unlabeled(tmp_path)
    settings = {**DIGITS, "num_label": 50, "total_steps": 300, "warmup": 50,
                "milestones": (225,), "test_freq": 300}
    # Without unlabeled/ the 50 labels are all there is: MetaSemi has nothing to use.
    with pytest.raises(ValueError, match="no unlabeled training images are left"):
        train(resolve({**settings, "dataset": without, "save_path": str(tmp_path / "x")}),
              show_progress=False)
    gain = []
    for seed in SSL_SEEDS:
        acc = {}
        for name, dataset, method in [("sup", without, "supervised"),
                                      ("meta", with_unlabeled, "metasemi")]:
            cfg = resolve({**settings, "dataset": dataset, "method": method, "seed": seed,
                           "save_path": str(tmp_path / f"{name}-{seed}")})
            acc[name] = train(cfg, show_progress=False)["final_test_accuracy"]
        gain.append(acc["meta"] - acc["sup"])
    split = json.loads((tmp_path / f"meta-{SSL_SEEDS[0]}" / "split.json").read_text())
    assert len(split["labeled"]) == 50 and len(split["unlabeled"]) == 1208
    print(f"MetaSemi with unlabeled/ minus supervised without, seeds {SSL_SEEDS}: {gain}")
    assert all(g > 0 for g in gain)
    assert sum(gain) / len(gain) >= SSL_MARGIN


def test_the_held_out_test_set_is_recorded_and_the_same_on_resume(tmp_path):
    from trainer.checkpoint import CheckpointError
    from trainer.loop import train

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    cfg = resolve({"dataset": str(tmp_path / "d.npz"), "architecture": "digitscnn",
                   "num_label": 9, "batch_size": 8, "total_steps": 4, "test_freq": 2,
                   "warmup": 1, "milestones": "[3]", "device": "cpu", "no_flip": True,
                   "save_path": str(tmp_path / "run")})
    first = train(replace(cfg, total_steps=2), show_progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    held = split["test"]
    assert held["held_out_of"] == "x_train" and held["fraction"] == 0.3
    assert len(held["indices"]) == 18 and len(split["labeled"]) == 9
    resumed = train(replace(cfg, resume=cfg.save_path), show_progress=False)
    assert (first["steps"], resumed["steps"]) == (2, 4)
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == split
    # One image fewer: another held-out test set. The run refuses to go on with it.
    np.savez(tmp_path / "d.npz", x_train=x[1:], y_train=y[1:])
    with pytest.raises(CheckpointError, match=r"another split of d \(.*test.* changed"):
        train(replace(cfg, resume=cfg.save_path, total_steps=6), show_progress=False)


def test_the_size_is_estimated_before_loading(tmp_path):
    x = np.zeros((20, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 2,
             x_unlabeled=np.zeros((30, 8, 8, 3), np.uint8))
    assert estimate_bytes(str(tmp_path / "d.npz")) == 50 * 3 * 8 * 8
    assert estimate_bytes(str(tmp_path / "d.npz"), image_size=16) == 50 * 3 * 16 * 16
    root = write_folder(tmp_path / "f", ["train"], per_class=5)  # greyscale, counted as colour
    own = load_own(root)
    assert estimate_bytes(root) == 10 * 3 * 8 * 8 >= own.train_x.nbytes + own.test_x.nbytes


def test_images_stay_on_the_device_when_they_fit_else_on_the_host_else_refused():
    gib = 2**30
    cuda = torch.device("cuda")
    assert placement(1 * gib, cuda, host_free=64 * gib, device_free=80 * gib) == cuda
    # a 200k-image 96 px colour set (5.2 GiB) beside a model on a GPU with 8 GiB free
    assert placement(200_000 * 3 * 96 * 96, cuda, 64 * gib, 8 * gib) == torch.device("cpu")
    with pytest.raises(OwnDataError, match=r"the images take 10\.0 GiB decoded, and loading them "
                                           r"needs about 30\.0 GiB of host memory, but 16\.0 GiB"):
        placement(10 * gib, cuda, host_free=16 * gib, device_free=80 * gib)
    assert placement(1 * gib, CPU, host_free=64 * gib, device_free=None) == CPU


def test_a_containers_memory_limit_is_what_the_host_has(tmp_path):
    machine = host_available(str(tmp_path / "no-cgroup"))
    assert machine > 0
    (tmp_path / "v2").mkdir()  # cgroup v2: a 3 GiB limit, 1 GiB of it used
    (tmp_path / "v2" / "memory.max").write_text(f"{3 * 2**30}\n")
    (tmp_path / "v2" / "memory.current").write_text(f"{2**30}\n")
    assert host_available(str(tmp_path / "v2")) == min(machine, 2 * 2**30)
    (tmp_path / "v2" / "memory.max").write_text("max\n")  # no limit
    assert abs(host_available(str(tmp_path / "v2")) - machine) < 2**28
    (tmp_path / "v1" / "memory").mkdir(parents=True)
    (tmp_path / "v1" / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
    (tmp_path / "v1" / "memory" / "memory.usage_in_bytes").write_text("1073741824\n")
    assert host_available(str(tmp_path / "v1")) == 0


def test_data_too_big_for_the_host_is_refused_before_loading(tmp_path, monkeypatch):
    import trainer.data.own
    from trainer.loop import train

    root = write_folder(tmp_path / "d", ["train"], per_class=10, size=16, mode="RGB")
    # A host with 4 KiB to spare: the 20 colour images of 16x16 take 15 KiB decoded.
    monkeypatch.setattr(trainer.data.own, "host_available", lambda: 4096)
    cfg = resolve({"dataset": root, "num_label": 4, "batch_size": 2, "total_steps": 2,
                   "device": "cpu", "save_path": str(tmp_path / "run")})
    with pytest.raises(OwnDataError, match=r"the images take 15\.0 KiB decoded, and loading "
                                           r"them needs about 45\.0 KiB of host memory, but "
                                           r"4\.0 KiB is available; use --image-size"):
        train(cfg, show_progress=False)
    assert not (tmp_path / "run").exists()  # refused before any run directory


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_images_in_pinned_host_memory_train_as_images_on_the_gpu(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    import trainer.data.own
    from trainer.loop import train

    d = load_digits()
    np.savez(tmp_path / "digits.npz", x_train=np.rint(d.images * 255 / 16).astype(np.uint8),
             y_train=d.target)
    cfg = resolve({**DIGITS, "dataset": str(tmp_path / "digits.npz"), "device": "cuda",
                   "precision": "fp32", "save_path": str(tmp_path / "gpu")})
    host = load_own_for(cfg, torch.device("cuda"), storage=CPU)
    assert host.train_x.device == CPU and host.train_x.is_pinned()
    on_gpu = train(cfg, show_progress=False)["final_test_accuracy"]
    # A GPU too small for the images: they stay in pinned host memory, batches copied over.
    monkeypatch.setattr(trainer.data.own, "placement", lambda *a: CPU)
    via_host = train(replace(cfg, save_path=str(tmp_path / "host")),
                     show_progress=False)["final_test_accuracy"]
    split = json.loads((tmp_path / "host" / "split.json").read_text())
    assert split["images_on"] == "host"
    assert abs(via_host - on_gpu) <= 0.01, (via_host, on_gpu)  # the same batches and steps
