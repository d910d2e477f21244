"""The paper's DoReFa (this plugin) against micronet's (c31cdd2; fixtures by ``tests/anchors/make_micronet_refs.py``).

The plugin implements Zhou et al. 2016 (arXiv:1606.06160) eq. 5/9/11: ``round((2^k − 1)·r)/(2^k − 1)`` with
tf.round (half to even) of an exact product. micronet computes ``r / fl(1/(2^k − 1))`` and rounds half away from
zero (``sign·floor(|·| + ½)``). These tests assert that the two agree everywhere except within 1e-4 of a rounding
tie of the paper's ``n·r``, by exactly one code there, and that ``w = 0`` (``n·½`` is always a tie) is ``+1/n``
in the paper and ``−1/n`` in micronet.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from quantzoo.math import tanh_unit
from quantzoo_plugin_dorefa import DorefaActivation, DorefaQuantizer, DorefaWeight

torch.set_num_threads(1)
R = torch.load(Path(__file__).parent / "anchors" / "micronet_refs.pt", weights_only=True)


def _value_and_grad(module, x, upstream):
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(upstream)
    return out.detach(), x.grad


def _near_tie(scaled: torch.Tensor) -> torch.Tensor:
    return ((scaled - scaled.floor()) - 0.5).abs() < 1e-4


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weights_differ_only_at_ties(bits):
    n = 2**bits - 1
    ref = R[f"weight_{bits}"]
    out, grad = _value_and_grad(DorefaWeight(bits), R["w"], R["upstream_w"])
    codes, ref_codes = torch.round((out + 1) * n / 2), torch.round((ref["out"] + 1) * n / 2)
    tie = _near_tie(tanh_unit(R["w"]) * n)
    assert torch.equal(codes[~tie], ref_codes[~tie])
    assert (codes[tie] - ref_codes[tie]).abs().max() <= 1
    if bits > 2:  # w = 0: u = ½; micronet's ½/fl(1/n) is just below n/2 → one code lower
        assert float(out.view(-1)[0]) == pytest.approx(1 / n, abs=1e-6)
        assert float(ref["out"].view(-1)[0]) == pytest.approx(-1 / n, abs=1e-6)
    torch.testing.assert_close(grad, ref["grad"], rtol=1e-5, atol=1e-6)  # both straight through tanh and max


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_activations_differ_only_at_ties(bits):
    # micronet pre-scales by 0.1 (the plugin's activation_prescale option reproduces that)
    n = 2**bits - 1
    ref = R[f"activation_{bits}"]
    out, grad = _value_and_grad(DorefaActivation(bits, prescale=0.1), R["x"], R["upstream_x"])
    codes, ref_codes = torch.round(out * n), torch.round(ref["out"] * n)  # (values also differ in the last ulp)
    tie = _near_tie(torch.clamp(R["x"] * 0.1, 0, 1) * n)
    assert torch.equal(codes[~tie], ref_codes[~tie])
    assert (codes[tie] - ref_codes[tie]).abs().max() <= 1
    assert not torch.equal(codes, ref_codes) or bits == 2  # x = 5: 0.1·x = ½, a tie at every odd n
    torch.testing.assert_close(grad, ref["grad"], rtol=1e-5, atol=1e-7)  # 0.1 inside the clamp, 0 outside


def test_layer_placement_and_one_bit():
    # micronet quantizes every Conv/Linear but the first (the last one too); the plugin keeps first and last FP
    # by default (the paper) and reproduces micronet's placement with last_layer="same"
    assert R["prepared_types"] == ["Conv2d", "ReLU", "QuantConv2d", "ReLU", "Flatten", "QuantLinear", "QuantLinear"]
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8, 4), nn.Linear(4, 2))
    p = DorefaQuantizer(weight_bits=4, activation_bits=4, last_layer="same").prepare(model)
    assert [hasattr(m, "weight_quantizer") for m in p] == [t.startswith("Quant") for t in R["prepared_types"]]
    assert R["one_bit_error"] == "AssertionError"  # micronet refuses 1-bit weights; the paper's eq. 7 is here
    assert DorefaQuantizer(weight_bits=1).config.weight_bits == 1
