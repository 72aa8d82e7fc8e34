"""`python -m trainer.bench.precision`: how accurate is the meta-gradient in each precision?

For a network trained a few steps on random data, the cosine between the meta-gradient
d = 2 J g of each way of computing it and a float64 forward-mode reference: fd in
fp32; fd with every conv/linear operand rounded to TF32 (what fp32 convolutions do on
Ampere and Hopper by default); fd under bf16 autocast as the trainer runs it (softmax
in fp32); the same with the softmax left in bf16 (what the trainer avoids); jvp in bf16.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from trainer.meta import fd_meta_gradient, jvp_meta_gradient, labeled_gradient
from trainer.models import build_model

SHAPES = {"digitscnn": (1, 8, 8), "convlarge": (3, 32, 32)}


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 rounded to nearest with TF32's 10 explicit mantissa bits."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def compare(arch: str, batch: int = 64, seed: int = 0, epsilon: float = 1e-2) -> dict[str, float]:
    """Cosine to the float64 reference of fd (fp32, TF32, bf16) and jvp (bf16)."""
    torch.manual_seed(seed)
    shape = SHAPES[arch]
    model = build_model(arch, shape[0], 10)
    x, y, x_u = torch.randn(batch, *shape), torch.randint(0, 10, (batch,)), torch.randn(
        batch, *shape)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):  # away from the initialisation
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    grads, _ = labeled_gradient(model, x, y)

    exact = build_model(arch, shape[0], 10).double()
    exact.load_state_dict(model.state_dict())
    exact.eval()
    names = [n for n, _ in exact.named_parameters()]
    buffers = dict(exact.named_buffers())
    _, jg = jvp(lambda ps: F.softmax(functional_call(exact, {**ps, **buffers}, (x_u.double(),)),
                                     dim=1),
                ({n: p.detach() for n, p in exact.named_parameters()},),
                ({n: g.double() for n, g in zip(names, grads)},))
    reference = 2 * jg

    out = {"fd_fp32": _cosine(fd_meta_gradient(model, grads, x_u, epsilon)[1], reference),
           "fd_tf32": _cosine(_fd_by_hand(model, grads, x_u, epsilon, tf32=True), reference),
           "fd_bf16_softmax": _cosine(_fd_by_hand(model, grads, x_u, epsilon, bf16=True),
                                      reference)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out["fd_bf16"] = _cosine(fd_meta_gradient(model, grads, x_u, epsilon)[1], reference)
        out["jvp_bf16"] = _cosine(jvp_meta_gradient(model, grads, x_u)[1], reference)
    return out


@torch.no_grad()
def _fd_by_hand(model: nn.Module, grads, x_u: torch.Tensor, epsilon: float, tf32: bool = False,
                bf16: bool = False) -> torch.Tensor:
    """fd's central difference with TF32-rounded conv/linear operands, or all in bf16."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    buffers = dict(model.named_buffers())
    e = epsilon / torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_pre_hook(lambda m, args: (round_to_tf32(args[0]),))
             for m in layers] if tf32 else []

    def probs(sign: float) -> torch.Tensor:
        moved = {n: p + sign * e * g for n, p, g in zip(names, params, grads)}
        if tf32:  # the weights are operands too
            moved = {n: round_to_tf32(v) if v.dim() > 1 else v for n, v in moved.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = functional_call(model, {**moved, **buffers}, (x_u,))
            return F.softmax(out if bf16 else out.float(), 1)  # CPU autocast keeps bf16 here

    try:
        return (probs(1.0) - probs(-1.0)) / e
    finally:
        for h in hooks:
            h.remove()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.bench.precision", description=__doc__)
    p.add_argument("--networks", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    print("| network | seed | fd fp32 | fd TF32 (simulated) | fd bf16 (ours) | "
          "fd bf16, bf16 softmax | jvp bf16 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arch in args.networks:
        for seed in range(args.seeds):
            c = compare(arch, seed=seed)
            print(f"| {arch} | {seed} | {c['fd_fp32']:.5f} | {c['fd_tf32']:.5f} | "
                  f"{c['fd_bf16']:.5f} | {c['fd_bf16_softmax']:.5f} | {c['jvp_bf16']:.5f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
