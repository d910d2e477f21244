"""The int8 engine backends: re-packing for the engine, engine scoping, sizes, spec checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.backends.base import state_dict_bytes
from quantzoo.errors import UnsupportedError
from quantzoo.models import LeNet5
from quantzoo.nn import fold_batch_norms
from quantzoo_plugin_torch import TorchDynamicQuantizer, TorchStaticQuantizer
from quantzoo_plugin_torch.backends import EngineModule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def lenet_int8():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(32, 1, 28, 28)
    q = TorchStaticQuantizer()
    p = q.prepare(model)
    q.calibrate(p, [x])
    return model, q.convert(p), x


def test_lowering_repacks_for_each_engine(lenet_int8):
    model, conv, x = lenet_int8
    ref = conv(x)
    # converted for x86: lowering on x86 keeps the packed weights, bit for bit
    assert torch.equal(quantzoo.get_backend("torch-x86").lower(conv)(x), ref)
    # setting the engine alone does not change kernels (the packed weights carry them) ...
    assert torch.equal(EngineModule(conv, "qnnpack")(x), ref)
    # ... re-packing does: QNNPACK's Linear requantizes differently, so the int8 outputs move slightly
    lowered = quantzoo.get_backend("torch-qnnpack").lower(conv)
    out = lowered(x)
    assert not torch.equal(out, ref) and (out - ref).abs().max() < 0.05
    assert isinstance(lowered, EngineModule) and lowered.engine == "qnnpack"
    assert torch.equal(conv(x), ref)  # lowering copied; the converted model is untouched
    onednn = quantzoo.get_backend("torch-onednn").lower(conv)(x)
    assert (onednn - ref).abs().max() < 0.05


def test_engine_restored_after_forward(lenet_int8):
    _, conv, x = lenet_int8
    before = torch.backends.quantized.engine
    quantzoo.get_backend("torch-qnnpack").lower(conv)(x)
    assert torch.backends.quantized.engine == before


def test_int8_model_is_about_four_times_smaller(lenet_int8):
    model, conv, _ = lenet_int8
    backend = quantzoo.get_backend("torch-x86")
    ratio = state_dict_bytes(fold_batch_norms(model)) / backend.model_size_bytes(backend.lower(conv))
    assert 3.5 < ratio <= 4.0  # 32/8 = 4 for the weights; scales, biases and headers lower it


def test_lower_refuses_float_models():
    with pytest.raises(UnsupportedError, match="no int8 layer"):
        quantzoo.get_backend("torch-x86").lower(nn.Sequential(nn.Linear(2, 2)))


def test_dynamic_gru_lowers_on_every_engine():
    from quantzoo.models import GRU1d

    torch.manual_seed(0)
    conv = TorchDynamicQuantizer().convert(TorchDynamicQuantizer().prepare(GRU1d()))
    x = torch.randn(4, 1, 40)
    for name in ("torch-x86", "torch-onednn", "torch-qnnpack"):
        assert (quantzoo.get_backend(name).lower(conv)(x) - conv(x)).abs().max() < 0.05
