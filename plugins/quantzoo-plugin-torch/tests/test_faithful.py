"""The plugin is a faithful wrapper: given the same float weights and calibration batches, it produces exactly
the model torch.ao's own documented flows produce (``torch.equal`` on the outputs)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from quantzoo.models import ResNet8, ResNetTiny, SmallCNN
from quantzoo_plugin_torch import TorchDynamicQuantizer, TorchFXQuantizer, TorchStaticQuantizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class EditedSmallCNN(nn.Module):
    """What the torch.ao tutorial asks the user to write: the model edited by hand with QuantStub/DeQuantStub."""

    def __init__(self, float_model: SmallCNN):
        super().__init__()
        self.quant = tq.QuantStub()
        self.features = copy.deepcopy(float_model.features)
        self.classifier = copy.deepcopy(float_model.classifier)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.classifier(self.features(self.quant(x))))


def _calibration(shape, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((32, *shape), generator=g) for _ in range(n)]


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics so that fusion matters (fresh BN layers are the identity)."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _torch_eager_flow(edited: nn.Module, groups: list[list[str]], batches, x) -> torch.Tensor:
    """torch.ao's documented eager flow on a model edited by hand (qconfig -> fuse_modules -> prepare ->
    calibrate -> convert), x86 engine: its output on ``x``."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        edited.qconfig = tq.get_default_qconfig("x86")
        ref = tq.prepare(tq.fuse_modules(edited.eval(), groups))
        with torch.no_grad():
            for b in batches:
                ref(b)
        return tq.convert(ref)(x)
    finally:
        torch.backends.quantized.engine = old


def test_static_eager_equals_documented_flow():
    torch.manual_seed(0)
    float_model = _trained_like(SmallCNN((1, 8, 8), 10))
    batches = _calibration((1, 8, 8))
    x = torch.rand(64, 1, 8, 8)

    expected = _torch_eager_flow(EditedSmallCNN(float_model), [["features.0", "features.1", "features.2"],
                                                              ["features.3", "features.4", "features.5"],
                                                              ["features.7", "features.8", "features.9"]], batches, x)

    q = TorchStaticQuantizer()  # defaults: x86, histogram activations, per-channel minmax weights
    prepared = q.prepare(float_model)
    assert prepared._quantzoo_fused == [["features.0", "features.1", "features.2"],
                                        ["features.3", "features.4", "features.5"],
                                        ["features.7", "features.8", "features.9"]]
    q.calibrate(prepared, batches)
    got = q.convert(prepared)(x)
    assert torch.equal(got, expected)
    assert not torch.equal(got, float_model(x))  # and it is really quantized


class HandQuantizableBlock(nn.Module):
    """A ResNet-8 block as torchvision's ``QuantizableBasicBlock`` writes it by hand: its own ReLU module,
    the residual through ``FloatFunctional.add_relu``."""

    def __init__(self, block):
        super().__init__()
        self.conv1, self.bn1, self.relu = copy.deepcopy(block.conv1), copy.deepcopy(block.bn1), nn.ReLU()
        self.conv2, self.bn2 = copy.deepcopy(block.conv2), copy.deepcopy(block.bn2)
        self.downsample = copy.deepcopy(block.downsample)
        self.add_relu = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.add_relu.add_relu(out, identity)


class HandQuantizableResNet8(nn.Module):
    """ResNet-8 edited by hand for eager mode (QuantStub/DeQuantStub, the blocks above)."""

    def __init__(self, net: ResNet8):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv1, self.bn1, self.relu = copy.deepcopy(net.conv1), copy.deepcopy(net.bn1), nn.ReLU()
        self.layer1, self.layer2, self.layer3 = (HandQuantizableBlock(b) for b in (net.layer1, net.layer2, net.layer3))
        self.avgpool, self.fc = copy.deepcopy(net.avgpool), copy.deepcopy(net.fc)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.quant(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.dequant(self.fc(torch.flatten(self.avgpool(x), 1)))


def test_automatic_rewrite_equals_hand_written_floatfunctional_resnet():
    """torch's eager flow on a ResNet edited by hand (FloatFunctional add_relu, one ReLU per call, stubs) and
    the plugin on the unedited torchvision-style ResNet-8 (shared in-place ReLU, ``out += identity``) give
    the same int8 model: identical outputs."""
    torch.manual_seed(0)
    float_model = _trained_like(ResNet8((1, 8, 8), 10))
    batches = _calibration((1, 8, 8))
    x = torch.rand(16, 1, 8, 8)

    groups = [["conv1", "bn1", "relu"]]
    for layer in ("layer1", "layer2", "layer3"):
        groups += [[f"{layer}.conv1", f"{layer}.bn1", f"{layer}.relu"], [f"{layer}.conv2", f"{layer}.bn2"]]
    groups += [[f"{layer}.downsample.0", f"{layer}.downsample.1"] for layer in ("layer2", "layer3")]
    expected = _torch_eager_flow(HandQuantizableResNet8(float_model), groups, batches, x)

    q = TorchStaticQuantizer()
    prepared = q.prepare(float_model)
    q.calibrate(prepared, batches)
    converted = q.convert(prepared)
    assert torch.equal(converted(x), expected)
    assert sorted(map(sorted, prepared._quantzoo_fused)) == sorted(map(sorted, groups))
    assert sum(isinstance(m, torch.ao.nn.quantized.QFunctional) for m in converted.modules()) == 3


def test_fx_equals_documented_flow_on_resnet_with_residual_adds():
    torch.manual_seed(0)
    float_model = _trained_like(ResNetTiny((1, 8, 8), 10))
    batches = _calibration((1, 8, 8))
    x = torch.rand(16, 1, 8, 8)

    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        ref = prepare_fx(copy.deepcopy(float_model), tq.get_default_qconfig_mapping("x86"), example_inputs=(x,))
        with torch.no_grad():
            for b in batches:
                ref(b)
        ref = convert_fx(ref)
        expected = ref(x)
    finally:
        torch.backends.quantized.engine = old

    q = TorchFXQuantizer()
    prepared = q.prepare(float_model)
    q.calibrate(prepared, batches)
    converted = q.convert(prepared)
    assert torch.equal(converted(x), expected)
    assert "quantized.add" in converted.code  # the residual adds run as int8 ops, not dequantized


def test_dynamic_equals_quantize_dynamic():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(32, 40)
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = tq.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)(x)
    finally:
        torch.backends.quantized.engine = old
    q = TorchDynamicQuantizer()
    got = q.convert(q.prepare(model))(x)
    assert torch.equal(got, expected)
