"""Networks by name: ConvLarge, Shake-Shake-26 2x96d, WRN-28-2 and a small CNN for 8x8 digits.

Every model is `head(features(x))`, so penultimate features (the paper's Figure 3)
are one call away.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class Classifier(nn.Module):
    """A feature extractor followed by a linear head."""

    def __init__(self, features: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn_lrelu(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=pad, bias=False), nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.1, inplace=True)]


def convlarge(in_channels: int, num_classes: int) -> nn.Module:
    """The 13-layer CNN of Laine & Aila / Tarvainen & Valpola, as the MetaSemi paper uses it."""
    layers: list[nn.Module] = []
    for cin, cout in [(in_channels, 128), (128, 128), (128, 128)]:
        layers += _conv_bn_lrelu(cin, cout, 3, 1)
    layers += [nn.MaxPool2d(2), nn.Dropout2d(0.5)]
    for cin, cout in [(128, 256), (256, 256), (256, 256)]:
        layers += _conv_bn_lrelu(cin, cout, 3, 1)
    layers += [nn.MaxPool2d(2), nn.Dropout2d(0.5)]
    layers += _conv_bn_lrelu(256, 512, 3, 0)  # "valid" convolution: 8x8 -> 6x6
    layers += _conv_bn_lrelu(512, 256, 1, 0)
    layers += _conv_bn_lrelu(256, 128, 1, 0)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), 128, num_classes)


def digitscnn(in_channels: int, num_classes: int) -> nn.Module:
    """A small ConvLarge-shaped CNN for 8x8 images; dropout gives the consistency loss a view."""
    layers: list[nn.Module] = []
    layers += _conv_bn_lrelu(in_channels, 32, 3, 1) + _conv_bn_lrelu(32, 32, 3, 1)
    layers += [nn.MaxPool2d(2), nn.Dropout2d(0.2)]
    layers += _conv_bn_lrelu(32, 64, 3, 1) + _conv_bn_lrelu(64, 64, 3, 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), 64, num_classes)


# --- Shake-Shake 26 2x96d (Gastaldi 2017), with shift-conv downsampling --------------------

class _ShakeMix(torch.autograd.Function):
    """Mix two branches with a random gate forward and an independent random gate backward."""

    @staticmethod
    def forward(ctx, a, b, training: bool):
        if training:
            gate = a.new_empty(a.shape[0], 1, 1, 1).uniform_()
        else:
            gate = a.new_full((a.shape[0], 1, 1, 1), 0.5)
        return a * gate + b * (1 - gate)

    @staticmethod
    def backward(ctx, grad):
        gate = grad.new_empty(grad.shape[0], 1, 1, 1).uniform_()
        return grad * gate, grad * (1 - gate), None


class _ShakeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.ReLU(), nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout))

        self.a, self.b = branch(), branch()
        if cin == cout and stride == 1:
            self.shortcut = None
        elif stride == 1:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = _ShiftConv(cin, cout)

    def forward(self, x):
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + _ShakeMix.apply(self.a(x), self.b(x), self.training)


class _ShiftConv(nn.Module):
    """Halve the resolution: two pixel-shifted subsamplings, concatenated, then a grouped 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * cin, cout, 1, groups=2)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 1::2]], dim=1)
        return self.bn(self.conv(torch.relu(x)))


def shakeshake26(in_channels: int, num_classes: int, width: int = 96) -> nn.Module:
    """Shake-Shake-26 2x96d: three stages of four shake blocks at 32, 16 and 8 pixels."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)]
    cin = 16
    for stage, cout in enumerate([width, 2 * width, 4 * width]):
        for i in range(4):
            layers.append(_ShakeBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), cin, num_classes)
    _he_init(model)
    return model


# --- Wide ResNet 28-2 (pre-activation, as in modern SSL benchmarks) ------------------------

class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activate_shortcut: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.activate_shortcut = activate_shortcut

    def forward(self, x):
        out = self.act(self.bn1(x))
        if self.activate_shortcut:
            x = out
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return (x if self.shortcut is None else self.shortcut(x)) + out


def wrn28_2(in_channels: int, num_classes: int) -> nn.Module:
    """WRN-28-2: 1.5M parameters, the network of modern SSL benchmarks."""
    widths, n = [16, 32, 64, 128], 4  # (28 - 4) / 6 blocks per stage, widen factor 2
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
    for stage in range(3):
        for i in range(n):
            cin = widths[stage] if i == 0 else widths[stage + 1]
            stride = 2 if (stage > 0 and i == 0) else 1
            layers.append(_WideBlock(cin, widths[stage + 1], stride, stage == 0 and i == 0))
    layers += [nn.BatchNorm2d(widths[3], momentum=0.001), nn.LeakyReLU(0.1),
               nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), widths[3], num_classes)
    _he_init(model)
    nn.init.xavier_normal_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


def _he_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))


def resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 for images of 64 px and more: a 3x3 stride-1 stem without
    max-pooling (with the ImageNet stem's 7x7 stride 2 and pool, a 64 px image is 2x2 in the
    last stage), any number of input channels."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # the head is the Classifier's, over these 512 features
    return Classifier(net, 512, num_classes)


MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "convlarge": convlarge,
    "shakeshake26": shakeshake26,
    "wrn28-2": wrn28_2,
    "digitscnn": digitscnn,
    "resnet18": resnet18,
}
# The smallest image side each network takes: its pooling and "valid" convolutions shrink
# the image, and below this nothing is left (tests/trainer/test_models.py measures each).
MIN_IMAGE_SIZE = {"convlarge": 12, "shakeshake26": 4, "wrn28-2": 1, "digitscnn": 2,
                  "resnet18": 1}
# Names the authors' scripts accept, mapped to ours.
ALIASES = {"shakeshake": "shakeshake26", "wrn28": "wrn28-2", "wideresnet28": "wrn28-2"}


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """Construct a registered network for inputs of `in_channels` and `num_classes` outputs."""
    return MODELS[ALIASES.get(name, name)](in_channels, num_classes)
