"""LeNet-5 as used by TWN, BNN/BinaryConnect and XNOR-Net on MNIST."""

from __future__ import annotations

from torch import nn


class LeNet5(nn.Module):
    """32-C5 → MP2 → 64-C5 → MP2 → 512-FC → 10 (Li & Liu 2016, TWN, §4.1: "LeNet-5 (32-C5 + MP2 + 64-C5 + MP2 +
    512FC + SVM)"), with BN after every conv/FC as in TWN's training set-up; softmax instead of the SVM layer.
    For 1x28x28 inputs: 28 → 24 → 12 → 8 → 4, so the FC sees 64·4·4 = 1024 features.
    """

    def __init__(self, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * fh * fw, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
