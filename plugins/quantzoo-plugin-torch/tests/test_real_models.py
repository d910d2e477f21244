"""Every method of the plugin on models nobody edited for quantization: the zoo's ResNet-8 (torchvision's
BasicBlock idiom) and MobileNetV2, an embedding + LSTM classifier and an nn.TransformerEncoder classifier.
Each (method, model) either gives a model that runs (eval and train mode, with and without autograd) with
finite outputs and lists what stayed float, or refuses with a quantzoo error; nothing else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantzoo.errors import QuantzooError
from quantzoo.models import MobileNetV2Tiny, ResNet8
from quantzoo.training import TrainConfig, fit
from quantzoo_plugin_torch import QUANTIZERS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class LSTMClassifier(nn.Module):
    """Token ids → embedding → LSTM → last step → Linear."""

    def __init__(self, vocab: int = 50, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, classes)

    def forward(self, ids):
        out, _ = self.lstm(self.emb(ids))
        return self.fc(out[:, -1])


class EncoderClassifier(nn.Module):
    """Features → Linear → nn.TransformerEncoder (2 layers, batch first) → mean over tokens → Linear."""

    def __init__(self, features: int = 8, classes: int = 4):
        super().__init__()
        self.embed = nn.Linear(features, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.encoder(self.embed(x)).mean(1))


MODELS = {
    "resnet8": (lambda: ResNet8((1, 8, 8), 4), lambda g: torch.rand(8, 1, 8, 8, generator=g)),
    "mobilenetv2": (lambda: MobileNetV2Tiny((1, 8, 8), 4), lambda g: torch.rand(8, 1, 8, 8, generator=g)),
    "lstm": (LSTMClassifier, lambda g: torch.randint(0, 50, (8, 6), generator=g)),
    "encoder": (EncoderClassifier, lambda g: torch.randn(8, 6, 8, generator=g)),
}
AVAILABLE = [q for q in QUANTIZERS if q.is_available()[0]]
MUST_SUCCEED = {("torch-static", "resnet8"), ("torch-static", "mobilenetv2"), ("torch-qat", "resnet8"),
                ("torch-qat", "mobilenetv2")}


def _bn_statistics_from_data(model: nn.Module, batches) -> nn.Module:
    """Random init with BN statistics set from data (as a trained model has), then eval."""
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    return model.eval()


def _quantize(cls, model: nn.Module, batches) -> nn.Module:
    q = cls(cls.config_for_bits(8, cls.a_bits_supported[0]))
    prepared = q.prepare(model)
    if q.capabilities.needs_training:
        targets = [torch.randint(0, 4, (len(b),)) for b in batches]
        fit(q, prepared, list(zip(batches, targets)), TrainConfig(epochs=1, lr=1e-3))
    else:
        q.calibrate(prepared, batches)
    return q.convert(prepared)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", AVAILABLE, ids=lambda c: c.name)
def test_method_on_real_model_runs_or_refuses(method, model_name):
    build, data = MODELS[model_name]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batches = [data(g)]  # one batch: enough for observers/one QAT step, and the battery stays fast
    model = _bn_statistics_from_data(build(), batches)
    try:
        converted = _quantize(method, model, batches)
    except QuantzooError as exc:  # a refusal is allowed, but it must be one quantzoo line, not a raw error
        assert (method.name, model_name) not in MUST_SUCCEED, f"{method.name} must run {model_name}: {exc}"
        assert "\n" not in str(exc)
        return
    x = data(g)
    with torch.no_grad():
        out = converted(x)
    assert out.shape == (8, 4) and torch.isfinite(out).all()
    converted.train()
    assert torch.isfinite(converted(x)).all()  # train mode, autograd on: still runs
    assert isinstance(converted._quantzoo_float_layers, dict)
