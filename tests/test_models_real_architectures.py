"""The zoo's MobileNetV2 and ResNet-8 contain what users' models contain (depthwise convs, ReLU6, functional
residual adds, a shared in-place ReLU), in 2-D and 1-D; the generic build/trace checks are in test_models.py."""

import operator

import pytest
import torch
from torch import nn

from quantzoo.models import MobileNetV2Tiny, ResNet8


def _adds(model: nn.Module) -> list:
    gm = torch.fx.symbolic_trace(model.eval())
    return [n.target for n in gm.graph.nodes if n.op == "call_function" and n.target in (operator.add, operator.iadd)]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_mobilenetv2_has_depthwise_relu6_and_functional_residuals(shape):
    net = MobileNetV2Tiny(shape, 10)
    conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
    depthwise = [m for m in net.modules() if isinstance(m, conv) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 5  # one per inverted residual block: 1 + 2 + 2
    assert any(isinstance(m, nn.ReLU6) for m in net.modules())
    # residual adds where stride 1 and channels match: the 16-channel block and the second 24-/32-channel ones
    assert _adds(net) == [operator.add] * 3
    assert net(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_resnet8_is_torchvision_style(shape):
    net = ResNet8(shape, 10)
    assert _adds(net) == [operator.add] * 3  # `out += identity` in every block (fx records it as add)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) - 2 + len(linears) == 8  # 6n + 2 weighted layers, n = 1 (the 2 shortcut 1x1 convs aside)
    assert net(torch.randn(2, *shape)).shape == (2, 10)
