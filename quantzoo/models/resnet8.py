"""ResNet-8 (He et al. 2016, arXiv:1512.03385 §4.2: the CIFAR family with 6n+2 layers, n = 1, widths
16-32-64) for 8x8/28x28 images and 1-D signals, written in torchvision's ``BasicBlock`` idiom: one in-place
ReLU module called twice, the residual added in place (``out += identity``), a ``downsample`` branch.
Nothing is edited for quantization, so the zoo exercises what users' ResNets contain."""

from __future__ import annotations

from torch import nn

from .conv_nd import conv_layers


class BasicBlock1or2d(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, ``out += identity`` (1x1 conv + BN on the identity when the shape changes),
    ReLU: torchvision's ``BasicBlock.forward`` line for line, in 1-D or 2-D."""

    def __init__(self, ndim: int, cin: int, cout: int, stride: int = 1):
        super().__init__()
        conv, bn, _ = conv_layers(ndim)
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet8(nn.Module):
    """Stem conv3x3(16)-BN-ReLU → blocks 16, 32 (stride 2), 64 (stride 2) → global average pool → Linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        ndim = len(input_shape) - 1
        conv, bn, pool = conv_layers(ndim)
        w1, w2, w3 = widths
        self.conv1 = conv(input_shape[0], w1, 3, 1, 1, bias=False)
        self.bn1 = bn(w1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock1or2d(ndim, w1, w1)
        self.layer2 = BasicBlock1or2d(ndim, w1, w2, stride=2)
        self.layer3 = BasicBlock1or2d(ndim, w2, w3, stride=2)
        self.avgpool = pool(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))
