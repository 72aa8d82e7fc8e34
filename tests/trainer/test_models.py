"""Models: every registered network maps its dataset's images to class logits."""

import pytest
import torch

from trainer.models import MIN_IMAGE_SIZE, MODELS, build_model


@pytest.mark.parametrize("name,params_millions", [
    # Published sizes: ConvLarge 3.1M, WRN-28-2 1.5M, Shake-Shake-26 2x96d 26.2M.
    ("convlarge", (3.0, 3.2)), ("wrn28-2", (1.4, 1.6)), ("shakeshake26", (26.0, 26.5))])
def test_cifar_networks_have_their_published_size_and_output_shape(name, params_millions):
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, num_classes=100).eval()
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_millions[0] <= millions <= params_millions[1], millions
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100) and torch.isfinite(out).all()


def test_digits_network_takes_8x8_greyscale():
    model = build_model("digitscnn", in_channels=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_penultimate_features_feed_the_head(name):
    model = build_model(name, in_channels=3, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.head(model.features(x)), model(x))


def test_shake_shake_is_stochastic_in_training_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = build_model("shakeshake26", in_channels=3, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))  # a fresh random gate per forward
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_network_takes_images_down_to_its_minimum_size_and_no_smaller(name):
    model = build_model(name, in_channels=3, num_classes=10).eval()
    side = MIN_IMAGE_SIZE[name]
    with torch.no_grad():
        assert model(torch.zeros(2, 3, side, side)).shape == (2, 10)
        if side > 1:
            with pytest.raises(RuntimeError):
                model(torch.zeros(2, 3, side - 1, side - 1))
