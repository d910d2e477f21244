"""Every installed method on architectures nobody in the project tuned for: a ResNet-style CNN with functional
residual adds, a MobileNetV2-style CNN (depthwise convs, ReLU6, inverted residuals), an embedding + LSTM
classifier and an ``nn.TransformerEncoder`` classifier, all built here.

Each (method, model) either succeeds — finite outputs in eval and train mode, with and without gradients, and
a quantization report that lists every weighted layer — or refuses with a quantzoo error. No other
exception, no NaN, no model that fails when called.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantzoo
from quantzoo.testing import check_config
from quantzoo import QuantzooError, QuantzooWarning
from quantzoo.pipeline import run_pipeline
from quantzoo.testing import HARNESS_SETTINGS


class ResidualCNN(nn.Module):
    """ResNet-style: conv stem, two basic blocks with functional ``+`` skips, avg-pool, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.down, self.bd = nn.Conv2d(8, 16, 1, stride=2), nn.BatchNorm2d(16)
        self.c3, self.b3 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        x = F.relu(self.bd(self.down(x)) + self.b3(self.c3(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


class MobileNetV2Style(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8), InvertedResidual(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 24, batch_first=True)
        self.head = nn.Linear(24, 5)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


class EncoderClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.encoder(self.inp(x)).mean(dim=1))


def _models():
    gen = torch.Generator().manual_seed(0)
    return {
        "resnet-style": (ResidualCNN, lambda: torch.randn(8, 1, 8, 8, generator=gen)),
        "mobilenetv2-style": (MobileNetV2Style, lambda: torch.randn(8, 1, 8, 8, generator=gen)),
        "lstm": (LSTMClassifier, lambda: torch.randint(0, 50, (8, 7), generator=gen)),
        "transformer-encoder": (EncoderClassifier, lambda: torch.randn(8, 6, 8, generator=gen)),
    }


def _setting(cls) -> tuple[int, int | None] | None:
    """W8A8 where the method has it, else its first harness setting."""
    for w, a in ((8, 8), *HARNESS_SETTINGS):
        if cls.capabilities.supports(w, a):
            return w, a
    return None


def _train_step(x):
    def train(model, q):
        model.train()
        opt = torch.optim.SGD(q.param_groups(model, 1e-3, 0.0), lr=1e-3)
        q.on_epoch_start(model, 0, 1)
        out = model(x)
        out.square().mean().backward()
        q.before_optimizer_step(model)
        opt.step()
        q.after_optimizer_step(model)
        model.eval()

    return train


def _finite_everywhere(model: nn.Module, x) -> None:
    for training in (False, True):
        model.train(training)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            assert torch.isfinite(out).all(), f"non-finite output (train={training}, grad={grad})"
    model.eval()


REG = quantzoo.get_registry()
#: Eager int8 must run residual CNNs unedited (the plugin's automatic FloatFunctional/stub preparation).
MUST_SUCCEED = {(m, a) for m in ("torch-static", "torch-qat") for a in ("resnet-style", "mobilenetv2-style")}


@pytest.mark.parametrize("arch", list(_models()))
@pytest.mark.parametrize("method", REG.names("quantizer"))
def test_method_on_a_real_architecture_succeeds_or_refuses_clearly(method, arch):
    torch.manual_seed(0)
    cls = REG.get("quantizer", method)
    setting = _setting(cls)
    assert setting is not None, f"{method} supports no harness setting"
    build, data = _models()[arch]
    model = build().eval()
    x = data()
    try:
        quantizer = cls(check_config(cls, *setting), registry=REG)
        mode = "ptq" if cls.capabilities.ptq else "qat"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QuantzooWarning)
            result = run_pipeline(quantizer, model, mode=mode, calibration=[data() for _ in range(2)],
                                  train=_train_step(x) if mode == "qat" else None, example_input=x)
    except QuantzooError as e:
        assert (method, arch) not in MUST_SUCCEED, f"{method} must run {arch}: {e}"
        assert str(e) and "\n" not in str(e).strip(), f"a refusal is one line naming the problem: {e!r}"
        return
    converted = result.model
    _finite_everywhere(converted, x)
    report = quantzoo.report(converted)
    assert report.layers, "the report lists the model's layers"
    weighted = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.LSTM, nn.Embedding))]
    assert any(lay.quantized for lay in report.layers), f"{method} quantized nothing on {arch}: {report.layers}"
    for lay in report.layers:
        assert lay.quantized or lay.reason, f"float layer {lay.name} has no reason"
    assert len(report.layers) >= 1 and weighted


def test_generic_methods_quantize_the_attention_projections():
    model = EncoderClassifier().eval()
    x = torch.randn(8, 6, 8)
    q = quantzoo.quantize(model, "uniform", calibration=[x])
    names = {lay.name for lay in quantzoo.report(q).layers if lay.quantized}
    for i in (0, 1):
        assert {f"encoder.layers.{i}.self_attn.{p}_proj" for p in "qkv"} | {f"encoder.layers.{i}.linear1"} <= names
    # calibration reached the encoder's quantizers: the converted model runs outside no_grad and in train mode
    _finite_everywhere(q, x)


def test_layers_left_float_are_reported_with_a_reason():
    q = quantzoo.quantize(LSTMClassifier().eval(), "uniform", calibration=[torch.randint(0, 50, (8, 7))])
    floats = quantzoo.report(q).float_layers()
    assert set(floats) == {"embed", "lstm"}
    assert "does not quantize LSTM" in floats["lstm"]
