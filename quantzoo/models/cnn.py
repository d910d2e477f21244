"""A small Conv+BN+ReLU network for 8x8 digits and 28x28 MNIST."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """Conv3x3(32)-BN-ReLU → Conv3x3(64)-BN-ReLU → MP2 → Conv3x3(64)-BN-ReLU → AdaptiveAvgPool(2) → Linear.

    Every conv is followed by BN and ReLU, the pattern static int8 quantization fuses (Jacob et al. 2018).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            *conv_bn_relu(c, 32), *conv_bn_relu(32, 64), nn.MaxPool2d(2), *conv_bn_relu(64, 64),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
