"""A small MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381) for 8x8/28x28 images and 1-D signals.

Written the way torchvision writes ``mobilenet_v2`` (not its quantizable variant): ReLU6 modules, depthwise
convolutions (``groups`` = channels), linear bottlenecks, and the inverted residual as a plain functional
``x + self.conv(x)``; nothing is edited for quantization, so the zoo exercises what users' models contain.
"""

from __future__ import annotations

from torch import nn

from .conv_nd import conv_layers


def conv_bn_act(ndim: int, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BN, then ReLU6 unless ``act`` is False (the linear bottleneck's projection)."""
    conv, bn, _ = conv_layers(ndim)
    layers: list[nn.Module] = [conv(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), bn(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1, ReLU6) → depthwise 3x3 (stride s, ReLU6) → project (1x1, linear), Sandler et al. Table 1;
    the input is added back when the stride is 1 and the channels match (Fig. 3b)."""

    def __init__(self, ndim: int, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(ndim, cin, hidden, kernel=1))
        layers += [conv_bn_act(ndim, hidden, hidden, stride=stride, groups=hidden),
                   conv_bn_act(ndim, hidden, cout, kernel=1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:  # fixed at construction: torch.fx traces the taken branch only
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Tiny(nn.Module):
    """Stem conv3x3(16) → bottlenecks (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2) → conv1x1(128)
    → global average pool → dropout 0.2 → Linear. The stem has stride 1 (inputs are 8x8 to 28x28, not 224)."""

    #: (expansion t, output channels c, repeats n, first stride s), as in Sandler et al. Table 2.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, stem: int = 16, last: int = 128):
        super().__init__()
        ndim = len(input_shape) - 1
        _, _, pool = conv_layers(ndim)
        layers: list[nn.Module] = [conv_bn_act(ndim, input_shape[0], stem)]
        cin = stem
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(ndim, cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_act(ndim, cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = pool(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)
