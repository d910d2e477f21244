"""The automatic eager-mode preparation: what it rewrites, where it puts stubs, what it leaves float, and that
its list of ops that run on int8 tensors as they are is true of this torch."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

import quantzoo
from quantzoo.errors import UnsupportedError
from quantzoo_plugin_torch import TorchStaticQuantizer
from quantzoo_plugin_torch.eager_prepare import (
    PASSTHROUGH_FUNCTIONS,
    PASSTHROUGH_METHODS,
    PASSTHROUGH_MODULES,
    FunctionalOp,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

Q = torch.quantize_per_tensor(torch.randn(2, 4, 6, 6), 0.05, 128, torch.quint8)
Q1 = torch.quantize_per_tensor(torch.randn(2, 4, 6), 0.05, 128, torch.quint8)
Q3 = torch.quantize_per_tensor(torch.randn(2, 4, 4, 4, 4), 0.05, 128, torch.quint8)

_FUNCTION_CALLS = {
    operator.getitem: lambda: operator.getitem(Q, (slice(None), 0)), torch.flatten: lambda: torch.flatten(Q, 1),
    torch.reshape: lambda: torch.reshape(Q, (2, -1)), torch.transpose: lambda: torch.transpose(Q, 1, 2),
    torch.permute: lambda: torch.permute(Q, (0, 2, 3, 1)), torch.squeeze: lambda: torch.squeeze(Q[:, :1], 1),
    torch.unsqueeze: lambda: torch.unsqueeze(Q, 0), torch.chunk: lambda: torch.chunk(Q, 2, 1)[0],
    torch.split: lambda: torch.split(Q, 2, 1)[0], torch.mean: lambda: torch.mean(Q, (2, 3)),
    torch.clamp: lambda: torch.clamp(Q, 0, 1), torch.sigmoid: lambda: torch.sigmoid(Q),
    torch.tanh: lambda: torch.tanh(Q), F.adaptive_avg_pool1d: lambda: F.adaptive_avg_pool1d(Q1, 1),
    F.adaptive_avg_pool2d: lambda: F.adaptive_avg_pool2d(Q, 1),
    F.adaptive_avg_pool3d: lambda: F.adaptive_avg_pool3d(Q3, 1),
    F.max_pool1d: lambda: F.max_pool1d(Q1, 2), F.max_pool2d: lambda: F.max_pool2d(Q, 2),
    F.max_pool3d: lambda: F.max_pool3d(Q3, 2), F.avg_pool1d: lambda: F.avg_pool1d(Q1, 2),
    F.avg_pool2d: lambda: F.avg_pool2d(Q, 2), F.avg_pool3d: lambda: F.avg_pool3d(Q3, 2),
    F.dropout: lambda: F.dropout(Q, 0.1, training=False), F.interpolate: lambda: F.interpolate(Q, scale_factor=2),
    F.pad: lambda: F.pad(Q, (1, 1, 1, 1)), F.hardtanh: lambda: F.hardtanh(Q), F.gelu: lambda: F.gelu(Q),
    F.leaky_relu: lambda: F.leaky_relu(Q), F.hardsigmoid: lambda: F.hardsigmoid(Q), F.relu6: lambda: F.relu6(Q),
}
_METHOD_ARGS = {"view": (2, -1), "reshape": (2, -1), "flatten": (1,), "unflatten": (1, (2, 2)),
                "permute": (0, 2, 3, 1), "transpose": (1, 2), "contiguous": (), "squeeze": (), "unsqueeze": (0,),
                "expand": (2, 4, 6, 6), "chunk": (2, 1), "split": (2, 1), "mean": ((2, 3),), "clamp": (0, 1),
                "sigmoid": (), "tanh": (), "__getitem__": ((slice(None), 0),)}
_MODULES = {nn.MaxPool1d: (2,), nn.MaxPool2d: (2,), nn.MaxPool3d: (2,), nn.AvgPool1d: (2,), nn.AvgPool2d: (2,),
            nn.AvgPool3d: (2,), nn.AdaptiveAvgPool1d: (1,), nn.AdaptiveAvgPool2d: (1,), nn.AdaptiveAvgPool3d: (1,),
            nn.Unflatten: (1, (2, 2)), nn.Upsample: (None, 2)}


def _int8_result(out) -> bool:
    out = out[0] if isinstance(out, tuple) else out
    return out.is_quantized


def test_passthrough_functions_and_methods_run_on_int8_tensors():
    assert set(_FUNCTION_CALLS) == PASSTHROUGH_FUNCTIONS and set(_METHOD_ARGS) == PASSTHROUGH_METHODS
    for fn, call in _FUNCTION_CALLS.items():
        assert _int8_result(call()), fn
    for name, args in _METHOD_ARGS.items():
        assert _int8_result(getattr(Q, name)(*args)), name


@pytest.mark.parametrize("cls", PASSTHROUGH_MODULES, ids=lambda c: c.__name__)
def test_passthrough_modules_run_on_int8_tensors(cls):
    x = Q1 if cls.__name__.endswith("1d") else Q3 if cls.__name__.endswith("3d") else Q
    assert _int8_result(cls(*_MODULES.get(cls, ())).eval()(x))


class _Functional(nn.Module):
    """Every functional construct the pass rewrites: tensor + tensor followed by relu, cat, scalar mul/sub/div."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = F.relu(self.a(x) + self.b(x))
        z = torch.cat([y, (self.a(x) - 0.5) / 2.0], dim=1) * 3
        return self.fc(z.mean((2, 3)))


def _quantize(model, x, **cfg):
    q = TorchStaticQuantizer(**cfg)
    p = q.prepare(model)
    q.calibrate(p, [x])
    return p, q.convert(p)


def test_functional_ops_become_floatfunctional_and_match_float():
    torch.manual_seed(0)
    model, x = _Functional().eval(), torch.rand(8, 1, 6, 6)
    prepared, conv = _quantize(model, x)
    ops = sorted(m.op for m in prepared.modules() if isinstance(m, FunctionalOp))
    assert ops == ["add_relu", "add_scalar", "cat", "mul_scalar", "mul_scalar"]
    assert all(isinstance(m.ff, torch.ao.nn.quantized.QFunctional)
               for m in conv.modules() if isinstance(m, FunctionalOp))
    assert conv._quantzoo_float_layers == {}
    assert (conv(x) - model(x)).abs().max() < 0.1


class _Islands(nn.Module):
    """A GRU and a softmax have no eager int8 kernel: they run in float between stubs, and are listed."""

    def __init__(self):
        super().__init__()
        self.fc1, self.gru, self.fc2 = nn.Linear(4, 8), nn.GRU(8, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        h, _ = self.gru(self.fc1(x))
        return self.fc2(torch.softmax(h, -1)[:, -1])


def test_layers_without_eager_kernels_stay_float_and_are_listed():
    torch.manual_seed(0)
    model, x = _Islands().eval(), torch.randn(4, 5, 4)
    _, conv = _quantize(model, x)
    assert set(conv._quantzoo_float_layers) == {"gru", "softmax"}
    assert "GRU has no int8 module" in conv._quantzoo_float_layers["gru"]
    assert isinstance(conv.module.gru, nn.GRU) and isinstance(conv.module.fc1, torch.ao.nn.quantized.Linear)
    assert torch.isfinite(conv(x)).all() and (conv(x) - model(x)).abs().max() < 0.1
    report = quantzoo.report(conv)  # the report gives the reason under the wrapped name
    assert report.float_layers() == {"module.gru": conv._quantzoo_float_layers["gru"]}


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(20, 8), nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def test_token_ids_are_not_quantized_and_embeddings_get_int8_weights():
    model, ids = _Tokens().eval(), torch.randint(0, 20, (4, 6))
    _, conv = _quantize(model, ids)
    assert isinstance(conv.module.emb, torch.ao.nn.quantized.Embedding)
    assert (conv(ids) - model(ids)).abs().max() < 0.1


class _UserStubs(nn.Module):
    """Already prepared by hand (torchvision's quantizable style): its stubs are used, none are added."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.skip = nn.Conv2d(2, 2, 1), torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        x = self.quant(x)
        return self.dequant(self.skip.add(self.conv(x), x))


def test_models_with_their_own_stubs_and_floatfunctional_run():
    torch.manual_seed(0)
    model, x = _UserStubs().eval(), torch.randn(4, 2, 3, 3)
    _, conv = _quantize(model, x)
    assert sum(isinstance(m, torch.ao.nn.quantized.Quantize) for m in conv.modules()) == 1
    assert (conv(x) - model(x)).abs().max() < 0.1


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        y = self.a(x)
        if y.sum() > -1e9:  # data-dependent branch: torch.fx cannot trace it
            y = y + self.b(y)
        return y


def test_untraceable_model_that_needs_an_edit_is_refused_naming_the_construct_and_the_op():
    with pytest.raises(UnsupportedError) as err:
        _quantize(_DataDependent().eval(), torch.randn(4, 4))
    msg = str(err.value)
    assert "aten::" in msg and "data-dependent control flow" in msg and "test_eager_prepare.py" in msg
    assert "torch-dynamic" in msg and err.value.__cause__ is not None
