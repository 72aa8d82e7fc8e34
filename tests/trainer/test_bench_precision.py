"""`python -m trainer.bench.precision`: why fd widens the logits before the softmax."""

from trainer.bench.precision import compare, round_to_tf32


def test_tf32_rounding_keeps_ten_mantissa_bits():
    import torch

    x = torch.tensor([1.0 + 2**-10, 1.0 + 2**-12, 3.0])
    assert round_to_tf32(x).tolist() == [1.0 + 2**-10, 1.0, 3.0]


def test_fd_in_bf16_tracks_the_exact_derivative_only_with_an_fp32_softmax():
    c = compare("digitscnn", batch=32, seed=0)
    assert c["fd_fp32"] > 0.9999 and c["fd_tf32"] > 0.9999
    assert c["jvp_bf16"] > 0.9999
    assert c["fd_bf16"] > 0.999
    assert c["fd_bf16_softmax"] < c["fd_bf16"]  # what widening the logits buys
