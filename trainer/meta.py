"""The MetaSemi meta step: pseudo labels moved against the labeled loss (paper, Eq. 16).

The pseudo labels `y` of an unlabeled batch are chosen so that one virtual SGD step
on the consistency loss `sum_i ||softmax(f(x_u_i)) - y_i||^2` lowers the labeled loss.
Its gradient with respect to `y`, at `y = p`, is exactly `2 * eta * J g` for any virtual
step `eta` (J: Jacobian of the unlabeled softmax, g: labeled-loss gradient): at `y = p`
the consistency gradient, hence the virtual step, is zero. The authors estimate `2 J g`
with a central finite difference along `g` (fd); `jvp_meta_gradient` computes 2 J g by
forward-mode differentiation, and `exact_meta_gradient` by differentiating through the
virtual step (second order): both are fd's limit as epsilon goes to 0, and an independent
check of each other. All return the same scale, so the update
`y = normalize(relu(p - lr * d))` is shared. docs/algorithm.md has the whole derivation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainer.config import META_GRADS
from trainer.device import widen


def labeled_gradient(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor):
    """Labeled cross-entropy gradient g (one tensor per parameter) and the labeled logits."""
    _, params = _trainable(model)
    logits = model(x_l)
    grads = torch.autograd.grad(F.cross_entropy(widen(logits), y_l), params)
    return grads, logits.detach()


def _trainable(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


@torch.no_grad()
def fd_meta_gradient(model: nn.Module, grads, x_u: torch.Tensor, epsilon: float):
    """Softmax of the unlabeled batch p and d = (p(theta + e g) - p(theta - e g)) / e.

    e = epsilon / ||g||. The perturbed forwards run on copies through functional_call,
    so the model's own parameters are never written and stay bit-identical.
    """
    names, params = _trainable(model)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    # A zero gradient carries no information; keep e finite, d is then exactly zero.
    eps = epsilon / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    buffers = dict(model.named_buffers())
    step = torch._foreach_mul(list(grads), eps)  # one fused kernel per list, no host sync

    def probs_at(moved: list[torch.Tensor]) -> torch.Tensor:
        out = functional_call(model, {**dict(zip(names, moved)), **buffers}, (x_u,))
        # Softmax in fp32 even under bf16 autocast: the difference of two bf16 softmaxes
        # loses the signal (cosine to the exact derivative 0.97; with fp32 softmax 0.9995,
        # python -m trainer.bench.precision).
        return F.softmax(widen(out), dim=1)

    p = F.softmax(widen(model(x_u)), dim=1)
    d = (probs_at(torch._foreach_add(params, step)) - probs_at(torch._foreach_sub(params, step)))
    return p, d / eps


@torch.no_grad()
def jvp_meta_gradient(model: nn.Module, grads, x_u: torch.Tensor):
    """Softmax p and d = 2 J g by forward-mode differentiation: the limit of fd as epsilon -> 0.

    One forward carrying a tangent costs about what fd's three forwards cost, and it has no
    cancellation, so it is accurate in bf16. Under autocast it runs in the autocast dtype.
    """
    names, params = _trainable(model)
    kind = x_u.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    # Autocast does not cast forward-mode dual tensors consistently, so cast by hand.
    buffers = {n: cast(b) for n, b in model.named_buffers()}
    x = cast(x_u)

    def probs(ps: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(kind, enabled=False):
            out = functional_call(model, {**ps, **buffers}, (x,))
        return F.softmax(widen(out), dim=1)

    p, jg = torch.func.jvp(probs, ({n: cast(q) for n, q in zip(names, params)},),
                           ({n: cast(g) for n, g in zip(names, grads)},))
    return p, 2 * jg


def exact_meta_gradient(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor,
                        x_u: torch.Tensor, eta: float):
    """Softmax p and d = grad_y CE(f(x_l; theta - eta grad_theta L_cons(theta, y))) / eta at y = p.

    Second order (differentiates through the virtual step); dividing by eta puts d on
    the finite difference's scale. eta must be > 0.
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        p = F.softmax(widen(model(x_u)), dim=1)  # fp32 under autocast, as fd's and jvp's

    def labeled_loss_after_virtual_step(y: torch.Tensor) -> torch.Tensor:
        def consistency(ps):
            out = widen(functional_call(model, ({**ps, **buffers}), (x_u,)))
            return (F.softmax(out, dim=1) - y).pow(2).sum()

        step = torch.func.grad(consistency)(params)
        moved = {n: params[n] - eta * step[n] for n in params}
        return F.cross_entropy(widen(functional_call(model, ({**moved, **buffers}), (x_l,))),
                               y_l)

    d = torch.func.grad(labeled_loss_after_virtual_step)(p) / eta
    return p, d


def update_pseudo_labels(p: torch.Tensor, d: torch.Tensor, lr: float) -> torch.Tensor:
    """One meta step: relu(p - lr * d), rows renormalised to sum to 1 (zero rows stay zero)."""
    y = torch.relu(p - lr * d)
    sums = y.sum(dim=1, keepdim=True)
    return y / torch.where(sums == 0, torch.ones_like(sums), sums)


def pseudo_labels(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor,
                  lr: float, epsilon: float, method: str = "fd"):
    """MetaSemi pseudo labels for x_u (model must be in eval mode) and the labeled logits."""
    if method not in META_GRADS:
        raise ValueError(f"meta-gradient method {method!r}: choose fd, jvp or exact")
    if method == "exact":
        with torch.no_grad():
            logits = widen(model(x_l))
        if lr <= 0:  # no virtual step to differentiate through; the update is zero anyway
            with torch.no_grad():
                return F.softmax(widen(model(x_u)), dim=1), logits
        p, d = exact_meta_gradient(model, x_l, y_l, x_u, lr)
    else:
        grads, logits = labeled_gradient(model, x_l, y_l)
        if method == "jvp":
            p, d = jvp_meta_gradient(model, grads, x_u)
        else:
            p, d = fd_meta_gradient(model, grads, x_u, epsilon)
    return update_pseudo_labels(p, d, lr), logits
