"""The MetaSemi meta step: pseudo labels moved against the labeled loss (DESIGN.md 2, step 4).

The pseudo labels `y` of an unlabeled batch are chosen so that one virtual SGD step
on the consistency loss `sum_i ||softmax(f(x_u_i)) - y_i||^2` lowers the labeled loss.
Its gradient with respect to `y`, at `y = p`, is `2 * eta * J g` to first order in
the virtual step `eta` (J: Jacobian of the unlabeled softmax, g: labeled-loss
gradient). The authors estimate `2 J g` with a central finite difference along `g`;
`exact_meta_gradient` differentiates through the virtual step itself (second order).
Both return the same scale, so the update `y = normalize(relu(p - lr * d))` is shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def labeled_gradient(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor):
    """Labeled cross-entropy gradient g (one tensor per parameter) and the labeled logits."""
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(x_l)
    grads = torch.autograd.grad(F.cross_entropy(logits, y_l), params)
    return grads, logits.detach()


@torch.no_grad()
def fd_meta_gradient(model: nn.Module, grads, x_u: torch.Tensor, epsilon: float):
    """Softmax of the unlabeled batch p and d = (p(theta + e g) - p(theta - e g)) / e.

    e = epsilon / ||g||. The perturbed forwards run on copies through functional_call,
    so the model's own parameters are never written and stay bit-identical.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    # A zero gradient carries no information; keep e finite, d is then exactly zero.
    eps = epsilon / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    buffers = dict(model.named_buffers())

    def probs_at(sign: float) -> torch.Tensor:
        moved = {n: p + sign * eps * g for n, p, g in zip(names, params, grads)}
        return F.softmax(functional_call(model, ({**moved, **buffers}), (x_u,)), dim=1)

    p = F.softmax(model(x_u), dim=1)
    d = (probs_at(+1.0) - probs_at(-1.0)) / eps
    return p, d


def exact_meta_gradient(model: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor,
                        x_u: torch.Tensor, eta: float):
    """Softmax p and d = grad_y CE(f(x_l; theta - eta grad_theta L_cons(theta, y))) / eta at y = p.

    Second order (differentiates through the virtual step); dividing by eta puts d on
    the finite difference's scale. eta must be > 0.
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        p = F.softmax(model(x_u), dim=1)

    def labeled_loss_after_virtual_step(y: torch.Tensor) -> torch.Tensor:
        def consistency(ps):
            out = functional_call(model, ({**ps, **buffers}), (x_u,))
            return (F.softmax(out, dim=1) - y).pow(2).sum()

        step = torch.func.grad(consistency)(params)
        moved = {n: params[n] - eta * step[n] for n in params}
        return F.cross_entropy(functional_call(model, ({**moved, **buffers}), (x_l,)), y_l)

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
    if method == "exact":
        with torch.no_grad():
            logits = model(x_l)
        if lr <= 0:  # no virtual step to differentiate through; the update is zero anyway
            with torch.no_grad():
                return F.softmax(model(x_u), dim=1), logits
        p, d = exact_meta_gradient(model, x_l, y_l, x_u, lr)
    else:
        grads, logits = labeled_gradient(model, x_l, y_l)
        p, d = fd_meta_gradient(model, grads, x_u, epsilon)
    return update_pseudo_labels(p, d, lr), logits
