"""The meta step: the finite difference tracks the exact meta-gradient, and pseudo labels
move against the labeled loss."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainer.meta import (
    exact_meta_gradient,
    fd_meta_gradient,
    jvp_meta_gradient,
    labeled_gradient,
    pseudo_labels,
    update_pseudo_labels,
)


def tiny_problem(seed=0, dtype=torch.float64):
    """A small conv net with BatchNorm (eval mode, as the meta step runs) and two batches."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).to(dtype)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 1, 6, 6, dtype=dtype))
    model.eval()
    x_l, y_l = torch.randn(12, 1, 6, 6, dtype=dtype), torch.randint(0, 5, (12,))
    x_u = torch.randn(20, 1, 6, 6, dtype=dtype)
    return model, x_l, y_l, x_u


def labeled_loss_after_virtual_step(model, x_l, y_l, x_u, y, eta):
    """CE on the labeled batch after one SGD step of size eta on the consistency loss to y."""
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    out = functional_call(model, {**params, **buffers}, (x_u,))
    cons = (F.softmax(out, dim=1) - y).pow(2).sum()
    grads = torch.autograd.grad(cons, list(params.values()))
    moved = {n: p - eta * g for (n, p), g in zip(params.items(), grads)}
    with torch.no_grad():
        return F.cross_entropy(functional_call(model, {**moved, **buffers}, (x_l,)), y_l).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finite_difference_agrees_with_exact_meta_gradient(seed):
    model, x_l, y_l, x_u = tiny_problem(seed)
    grads, _ = labeled_gradient(model, x_l, y_l)
    p_fd, d_fd = fd_meta_gradient(model, grads, x_u, epsilon=1e-4)
    p_ex, d_ex = exact_meta_gradient(model, x_l, y_l, x_u, eta=1e-5)

    assert torch.allclose(p_fd, p_ex)
    cosine = F.cosine_similarity(d_fd.flatten(), d_ex.flatten(), dim=0).item()
    assert cosine >= 0.99, cosine
    # Same scale too, so one meta learning rate serves both (constant factors folded in).
    assert d_fd.norm().item() == pytest.approx(d_ex.norm().item(), rel=0.05)


def test_finite_difference_leaves_parameters_bit_identical():
    model, x_l, y_l, x_u = tiny_problem(dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pseudo_labels(model, x_l, y_l, x_u, lr=0.1, epsilon=1e-2, method="fd")
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name


def test_pseudo_labels_are_distributions_and_zero_rows_stay_zero():
    torch.manual_seed(0)
    p = F.softmax(torch.randn(64, 10), dim=1)
    d = torch.randn(64, 10) * 5
    d[0] = 1.0  # this row's every entry is pushed below zero: relu leaves nothing
    y = update_pseudo_labels(p, d, lr=1.0)

    assert (y >= 0).all()
    assert torch.equal(y[0], torch.zeros(10))
    sums = y[1:].sum(1)
    assert torch.allclose(sums, torch.ones_like(sums))
    assert not torch.allclose(y, p)  # the update did something


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_mode_is_the_limit_of_the_finite_difference(seed):
    model, x_l, y_l, x_u = tiny_problem(seed)
    grads, _ = labeled_gradient(model, x_l, y_l)
    p_fd, d_fd = fd_meta_gradient(model, grads, x_u, epsilon=1e-5)
    p_jvp, d_jvp = jvp_meta_gradient(model, grads, x_u)
    _, d_ex = exact_meta_gradient(model, x_l, y_l, x_u, eta=1e-6)

    assert torch.allclose(p_jvp, p_fd)
    assert torch.allclose(d_jvp, d_fd, rtol=1e-4, atol=1e-8)
    assert cosine(d_jvp, d_ex) >= 0.99


def test_under_bf16_autocast_the_meta_gradient_stays_accurate():
    # fp32 model, bf16 autocast on the CPU: what the default CUDA run does.
    model, x_l, y_l, x_u = tiny_problem(seed=4, dtype=torch.float32)
    grads, _ = labeled_gradient(model, x_l, y_l)
    _, d_ref = fd_meta_gradient(model, grads, x_u, epsilon=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p_fd, d_fd = fd_meta_gradient(model, grads, x_u, epsilon=1e-2)
        p_jvp, d_jvp = jvp_meta_gradient(model, grads, x_u)
    # Softmax in fp32 keeps the bf16 difference on the fp32 one's direction and scale.
    assert cosine(d_fd, d_ref) >= 0.99
    assert d_fd.norm().item() == pytest.approx(d_ref.norm().item(), rel=0.05)
    assert cosine(d_jvp, d_ref) >= 0.999
    for p in (p_fd, p_jvp):
        assert p.dtype == torch.float32
        assert torch.allclose(p.sum(1), torch.ones(len(p)))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("eta", [1e-3, 0.1, 10.0])
def test_the_exact_meta_gradient_is_forward_modes_for_any_virtual_step(eta):
    # At y = p the consistency gradient is zero: the virtual step does not move, and the
    # second-order derivative is 2 J g exactly, whatever its size.
    model, x_l, y_l, x_u = tiny_problem(seed=5)
    grads, _ = labeled_gradient(model, x_l, y_l)
    _, d_jvp = jvp_meta_gradient(model, grads, x_u)
    _, d_ex = exact_meta_gradient(model, x_l, y_l, x_u, eta=eta)
    assert torch.allclose(d_ex, d_jvp, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("method", ["fd", "jvp", "exact"])
def test_under_bf16_autocast_every_method_returns_fp32_pseudo_labels(method):
    model, x_l, y_l, x_u = tiny_problem(seed=6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = pseudo_labels(model, x_l, y_l, x_u, lr=0.1, epsilon=1e-2, method=method)
    assert y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(len(y)))


def test_an_unknown_meta_gradient_method_is_refused():
    model, x_l, y_l, x_u = tiny_problem()
    with pytest.raises(ValueError, match="choose fd, jvp or exact"):
        pseudo_labels(model, x_l, y_l, x_u, lr=0.1, epsilon=1e-2, method="fdd")


@pytest.mark.parametrize("method", ["fd", "jvp", "exact"])
def test_one_meta_update_lowers_labeled_loss_after_the_virtual_step(method):
    model, x_l, y_l, x_u = tiny_problem(seed=3)
    eta = 0.5
    with torch.no_grad():
        p = F.softmax(model(x_u), dim=1)
        base = F.cross_entropy(model(x_l), y_l).item()
    y_hat, _ = pseudo_labels(model, x_l, y_l, x_u, lr=0.5, epsilon=1e-3, method=method)

    # Training towards p changes nothing (its consistency gradient is zero) ...
    assert labeled_loss_after_virtual_step(model, x_l, y_l, x_u, p, eta) == pytest.approx(base)
    # ... towards the meta pseudo labels lowers the labeled loss, against them raises it.
    better = labeled_loss_after_virtual_step(model, x_l, y_l, x_u, y_hat, eta)
    worse = labeled_loss_after_virtual_step(model, x_l, y_l, x_u, (2 * p - y_hat).clamp_min(0),
                                            eta)
    assert better < base < worse
