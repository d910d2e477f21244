"""Models for MNIST-1D (1 channel × 40 steps)."""

from __future__ import annotations

from torch import nn


class CNN1d(nn.Module):
    """3 × (Conv1d k5 stride 2 + BN + ReLU) with 32-64-64 channels, then Linear — the shape of the CNN in
    Greydanus 2020 (arXiv:2011.14439, §3: 3 conv layers, kernel 5, stride 2; 94% reported), with BN added."""

    def __init__(self, input_shape: tuple[int, ...] = (1, 40), num_classes: int = 10):
        super().__init__()
        c, length = input_shape
        chans = (32, 64, 64)
        layers: list[nn.Module] = []
        for cout in chans:
            layers += [nn.Conv1d(c, cout, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]
            c = cout
            length = (length + 2 * 2 - 5) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * length, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class GRU1d(nn.Module):
    """A GRU over the 40 steps (input size = channels) whose last hidden state feeds a Linear classifier
    (Greydanus 2020 report 91% for their GRU). The workload of dynamic GRU quantization."""

    def __init__(self, input_shape: tuple[int, ...] = (1, 40), num_classes: int = 10, hidden: int = 64):
        super().__init__()
        self.gru = nn.GRU(input_shape[0], hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, _ = self.gru(x.transpose(1, 2))  # (N, C, L) -> (N, L, C)
        return self.fc(out[:, -1])
