"""The pow2-per-tensor preset (Vitis AI / TVM power2 scheme): every scale a power of two, one per tensor,
signed symmetric grids, BN folded before quantization, every layer at the same width."""

import pytest
import torch

from quantzoo import get_quantizer
from quantzoo.bench.presets import POW2_PER_TENSOR, POW2_PROTOCOL, preset_config
from quantzoo.errors import UnsupportedError
from quantzoo.models import build_model
from quantzoo.nn import FakeQuant, fold_batch_norms
from quantzoo.nn.layers import QuantLayerMixin


def test_pow2_preset_puts_every_tensor_on_a_power_of_two_grid():
    torch.manual_seed(0)
    cfg = preset_config(POW2_PER_TENSOR, "uniform", 8, 8)
    assert cfg.weight.scale_type == cfg.activation.scale_type == "power_of_two"
    assert cfg.weight.granularity == cfg.activation.granularity == "per_tensor"
    assert cfg.first_layer == cfg.last_layer == "same" and POW2_PROTOCOL["bn_fold"] == "before"
    net = fold_batch_norms(build_model("yolo-tiny", "shapes"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    q = get_quantizer("uniform")(cfg)
    prepared = q.prepare(net)
    # calibration data: scales come from the largest |x| seen, then are rounded up to 2^k
    x = torch.rand(8, 1, 48, 48)
    q.calibrate(prepared, [(x, None)])
    converted = q.convert(prepared)
    layers = [m for m in converted.modules() if isinstance(m, QuantLayerMixin)]
    assert len(layers) == 11 and all(m.weight_bits == 8 for m in layers)  # all 11 convs, stem and head included
    for m in layers:
        s = m.input_quantizer.scale
        assert s.numel() == 1 and torch.equal(torch.exp2(torch.log2(s).round()), s)
        assert int(m.input_quantizer.zero_point) == 0
    # weights lie on one signed 8-bit grid per tensor whose step is a power of two: w = k * 2^e, |k| <= 128
    for m in layers:
        w = m.weight.detach()
        step = torch.exp2(torch.ceil(torch.log2(w.abs().max() / 127.5)))
        k = w / step
        assert torch.equal(k, k.round()) and k.abs().max() <= 128
    assert isinstance(layers[0].input_quantizer, FakeQuant)


def test_preset_refuses_methods_without_a_mapping():
    with pytest.raises(UnsupportedError, match="no mapping for preset"):
        preset_config(POW2_PER_TENSOR, "dorefa", 8, 8)
