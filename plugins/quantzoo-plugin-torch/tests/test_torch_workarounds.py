"""Where torch or torchao fail on ordinary models, and what the plugin does about it: each test first shows
the upstream behaviour (so it fails, and the workaround can go, once torch changes), then the plugin's result."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo.models import ResNet8
from quantzoo_plugin_torch import TorchDynamicQuantizer, TorchFXQuantizer, TorchStaticQuantizer
from quantzoo_plugin_torch.transformer_layers import StandardEncoder, StandardEncoderLayer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()))


def _encoder(norm_first: bool = False, norm: bool = False) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16) if norm else None, enable_nested_tensor=False)


def test_dynamic_transformer_encoder_runs_and_equals_torchs_standard_path():
    enc, x = _encoder().eval(), torch.randn(3, 5, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_int8 = tq.quantize_dynamic(copy.deepcopy(enc), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(AttributeError, match="'function' object has no attribute 'device'"), torch.no_grad():
        torch_int8(x)  # upstream: the fused fast path reads linear1.weight, a method of the int8 Linear
    expected = torch_int8.train()(x)  # the standard path (dropout 0) runs the same int8 Linear layers
    q = TorchDynamicQuantizer()
    conv = q.convert(q.prepare(enc))
    with torch.no_grad():  # eval: runs now (attention may take its own fused kernel: float rounding apart)
        assert torch.allclose(conv(x), expected, atol=1e-5)
    assert torch.equal(conv.train()(x), expected)
    assert "layers.0.self_attn" in conv._quantzoo_float_layers  # attention stays float under dynamic


@pytest.mark.parametrize("norm_first,norm", [(False, False), (True, True)])
def test_standard_encoder_equals_torchs_standard_path(norm_first, norm):
    enc, x = _encoder(norm_first, norm), torch.randn(3, 5, 16)
    enc.train()  # training mode: torch takes its standard (unfused) path
    std = StandardEncoder(enc)
    assert all(isinstance(layer, StandardEncoderLayer) for layer in std.layers)
    assert torch.equal(std(x), enc(x))
    assert std.state_dict().keys() == enc.state_dict().keys()
    torch.fx.symbolic_trace(std)  # traceable, unlike nn.TransformerEncoder


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        h = self.embed(x)
        return self.fc(self.mha(h, h, h)[0].mean(1))


def test_quantizable_attention_is_wrong_batch_first_and_the_plugin_runs_it_sequence_first():
    import torch.ao.nn.quantizable as nnqa

    torch.manual_seed(0)
    mha, x = nn.MultiheadAttention(32, 4, batch_first=True).eval(), torch.randn(4, 6, 32)
    mha.qconfig = tq.get_default_qconfig("x86")
    observed = nnqa.MultiheadAttention.from_float(mha)  # still float: only observers added
    assert _sqnr(mha(x, x, x)[0], observed(x, x, x)[0]) < 3  # pytorch/pytorch#67651: heads spliced into tokens
    model, batches = _Attention().eval(), [torch.randn(16, 6, 8) for _ in range(4)]
    q = TorchStaticQuantizer()
    p = q.prepare(model)
    q.calibrate(p, batches)
    conv = q.convert(p)
    assert any(isinstance(m, torch.ao.nn.quantized.MultiheadAttention) for m in conv.modules())
    x = torch.randn(64, 6, 8)
    assert _sqnr(model(x), conv(x)) > 20 and conv._quantzoo_float_layers == {}


def test_pt2e_separates_calls_of_a_shared_module():
    from quantzoo_plugin_torch.torchao_methods import separate_repeated_calls

    model, x = ResNet8((1, 8, 8), 4).eval(), torch.rand(2, 1, 8, 8)
    gm = torch.export.export(model, (x,)).module()
    assert separate_repeated_calls(gm) == 3  # the second call of each block's shared ReLU
    names = [next(reversed(n.meta["nn_module_stack"].values()))[0] for n in gm.graph.nodes if "relu" in n.name]
    assert names == ["relu", "layer1.relu", "layer1.relu@1", "layer2.relu", "layer2.relu@1", "layer3.relu",
                     "layer3.relu@1"]


def test_pt2e_lowering_compiles_with_inductor_freezing_and_no_autograd():
    from quantzoo_plugin_torch.torchao_methods import FrozenInductor

    seen = {}

    def probe(x):
        import torch._inductor.config as cfg

        seen.update(freezing=cfg.freezing, grad=torch.is_grad_enabled())
        return x

    frozen = FrozenInductor(nn.Identity())
    frozen._compiled = probe  # what runs inside the settings; compiling it would take seconds
    frozen(torch.ones(1))
    assert seen == {"freezing": True, "grad": False}


@pytest.mark.slow
def test_pt2e_lowered_model_matches_at_several_batch_sizes():
    """Compiles for real (tens of seconds): batch 16, then 64, then 16 again, each close to the Q/DQ model."""
    import quantzoo

    torch.manual_seed(0)
    conv = quantzoo.quantize(ResNet8((1, 8, 8), 4).eval(), "torchao-pt2e", calibration=[torch.rand(32, 1, 8, 8)])
    lowered = quantzoo.get_backend("torchao-cpu").lower(conv)
    for batch in (16, 64, 16):
        x = torch.rand(batch, 1, 8, 8)
        assert (lowered(x) - conv(x)).abs().max() < 0.05


def _returns_tuple(forward):  # the shape of transformers' @can_return_tuple
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        return forward(self, *args, **kwargs)

    return wrapper


class _Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    @_returns_tuple
    def forward(self, x, attention_mask=None, **kwargs):
        return self.fc(x)


def test_fx_on_a_decorated_forward_names_the_decorator():
    with pytest.raises(ValueError, match="co_varnames is too small"):
        torch.fx.symbolic_trace(_Decorated())  # upstream's message
    with pytest.raises(UnsupportedError, match=r"decorator with a \(\*args, \*\*kwargs\) signature") as err:
        TorchFXQuantizer().prepare(_Decorated())
    assert isinstance(err.value.__cause__, ValueError)
