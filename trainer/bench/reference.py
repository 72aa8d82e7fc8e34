"""A reference loop that behaves like the authors' implementation, to measure our speed-up.

It reproduces the behaviour of their training scripts, written here from scratch:
PIL images transformed one sample at a time (random crop, flip, ToTensor, Normalize)
in a torch DataLoader with worker processes, over a pre-shuffled list of indices;
the batch copied to the device each step; fp32, eager; cuDNN in benchmark and
deterministic mode; the meta step perturbs the parameters in place and restores
them, reading the step size back from the device for every parameter; the step's
statistics read back with `.item()` every step.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from trainer.data import DeviceData
from trainer.models import build_model


class PilPairs(Dataset):
    """Item i: a labeled and (if `pairs`) an unlabeled image as PIL, transformed, with labels."""

    def __init__(self, data: DeviceData, length: int, batch_size: int, pairs: bool, seed: int):
        x = data.train_x.cpu().numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC, as PIL wants
        self.images = x[..., 0] if x.shape[-1] == 1 else x
        self.labels = data.train_y.cpu().numpy()
        rng = np.random.default_rng(seed)

        def repeated(indices: np.ndarray) -> np.ndarray:  # shuffled epoch after epoch
            epochs = length * batch_size // len(indices) + 1
            return np.concatenate([rng.permutation(indices) for _ in range(epochs)])

        self.length = length * batch_size
        self.labeled = repeated(data.labeled)
        self.unlabeled = repeated(data.unlabeled) if pairs else None
        spec = data.spec
        mean = data.mean.flatten().tolist()
        std = data.std.flatten().tolist()
        steps = [transforms.RandomCrop(spec.size, padding=spec.crop_padding)]
        if spec.flip:
            steps.append(transforms.RandomHorizontalFlip())
        self.transform = transforms.Compose(
            steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return self.length

    def _item(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])

    def __getitem__(self, i: int):
        x_l, y_l = self._item(self.labeled[i])
        if self.unlabeled is None:
            return x_l, y_l
        return (x_l, y_l, *self._item(self.unlabeled[i]))


def _meta_step(model, optimizer, batch, lr: float, weight: float, epsilon: float, beta,
               num_classes: int) -> list[float]:
    x_l, y_l, x_u, y_u = batch
    params = list(model.parameters())
    model.eval()
    label_logits = model(x_l)
    label_loss = F.cross_entropy(label_logits, y_l)
    grads = torch.autograd.grad(label_loss, params)
    with torch.no_grad():
        pseudo = F.softmax(model(x_u), dim=1)
        eps = epsilon / torch.cat([g.reshape(-1) for g in grads]).norm()
        for p, g in zip(params, grads):
            p.add_(g, alpha=eps.item())
        plus = model(x_u)
        for p, g in zip(params, grads):
            p.sub_(g, alpha=2 * eps.item())
        minus = model(x_u)
        for p, g in zip(params, grads):
            p.add_(g, alpha=eps.item())
        pseudo.sub_((F.softmax(plus, 1) - F.softmax(minus, 1)) / eps, alpha=lr).relu_()
        sums = pseudo.sum(1, keepdim=True)
        pseudo /= torch.where(sums == 0, torch.ones_like(sums), sums)
    model.train()
    with torch.no_grad():
        lam = beta.sample((len(x_l),)).to(x_l.device)  # drawn on the CPU, then copied
        x_mix = x_l * lam.view(-1, 1, 1, 1) + x_u * (1 - lam.view(-1, 1, 1, 1))
        y_mix = F.one_hot(y_l, num_classes).float() * lam + pseudo * (1 - lam)
    mix_loss = F.kl_div(F.log_softmax(model(x_mix), 1), y_mix, reduction="batchmean")
    unlabel_logits = model(x_u)
    unlabel_loss = (F.softmax(unlabel_logits, 1) - pseudo).pow(2).sum(1).mean()
    optimizer.zero_grad()
    (mix_loss + weight * unlabel_loss).backward()
    optimizer.step()
    label_acc = (label_logits.argmax(1) == y_l).float().mean()
    unlabel_acc = (unlabel_logits.argmax(1) == y_u).float().mean()
    return [v.item() for v in (label_loss, unlabel_loss, label_acc, unlabel_acc, mix_loss)]


def _supervised_step(model, optimizer, batch) -> list[float]:
    x, y = batch
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return [loss.item(), (logits.argmax(1) == y).float().mean().item()]


def measure(data: DeviceData, architecture: str, method: str, batch_size: int, steps: int,
            warmup: int, workers: int, alpha: float = 1.0, epsilon: float = 1e-2,
            lr: float = 0.1, weight: float = 1.0) -> dict[str, Any]:
    """ms per step, images/s and the fraction of time waiting for data, of the reference loop."""
    if method not in ("supervised", "metasemi"):
        raise ValueError(f"the reference loop has supervised and metasemi steps, not {method!r}")
    device = data.train_x.device
    pairs = method == "metasemi"
    loader = DataLoader(PilPairs(data, warmup + steps, batch_size, pairs, seed=0),
                        batch_size=batch_size, num_workers=workers, shuffle=False)
    torch.manual_seed(0)
    spec = data.spec
    model = build_model(architecture, spec.channels, spec.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    beta = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))
    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batches = iter(loader)  # starts the workers
    try:
        data_s = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                data_s, t0 = 0.0, time.perf_counter()
            t_data = time.perf_counter()
            batch = [t.to(device) for t in next(batches)]
            data_s += time.perf_counter() - t_data
            if pairs:
                _meta_step(model, optimizer, batch, lr, weight, epsilon, beta, spec.num_classes)
            else:
                _supervised_step(model, optimizer, batch)
        step_s = (time.perf_counter() - t0) / steps  # .item() above has synchronised
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags
        del batches
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    images = batch_size * (2 if pairs else 1)
    return {"method": method, "ms": 1e3 * step_s, "images_per_s": images / step_s,
            "data_fraction": data_s / steps / step_s, "peak_memory_mb": peak,
            "workers": workers}
