"""ONNX QCDQ round trip in onnxruntime, the automatic PTQ/QAT flows and the onnxruntime backend."""

import onnx
import pytest
import torch
from torch import nn

from quantzoo import get_backend
from quantzoo.errors import UnsupportedError
from quantzoo_plugin_brevitas import (
    BrevitasPTQ,
    BrevitasQAT,
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    QuantConv2d,
    QuantIdentity,
    QuantLinear,
    OrtModule,
    QuantReLU,
    calibration_mode,
    export_onnx_qcdq,
)

ort = pytest.importorskip("onnxruntime")


def _qmodel():
    torch.manual_seed(0)
    return nn.Sequential(
        QuantIdentity(),
        QuantConv2d(1, 4, 3, padding=1, weight_quant=Int8WeightPerChannelFloat),
        QuantReLU(bit_width=4),
        nn.MaxPool2d(2),
        nn.Flatten(),
        QuantLinear(4 * 4 * 4, 5, weight_bit_width=4, output_quant=Int8ActPerTensorFloat),
    )


def _run_ort(data: bytes, x: torch.Tensor):
    return OrtModule(data)(x)  # the backend's session: the graph run as exported


def test_qcdq_roundtrip_matches_within_one_step(tmp_path):
    model = _qmodel().eval()
    calib = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    with calibration_mode(model), torch.no_grad():
        for x in calib:
            model(x)
    for m in model.modules():
        if hasattr(m, "bake"):
            m.bake()
    x = torch.randn(16, 1, 8, 8)
    ref = model(x).detach()
    path = tmp_path / "model.onnx"
    export_onnx_qcdq(model, x[:1], path)
    graph = onnx.load(str(path))
    ops = [n.op_type for n in graph.graph.node]
    # 4 quantizers (input, conv weight, ReLU 4-bit, linear weight 4-bit, linear output) → Q/DQ pairs, and Clip
    # for the narrow or < 8-bit ones (conv weight narrow int8, ReLU uint4, linear weight int4).
    assert ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 5
    assert ops.count("Clip") == 3
    out = _run_ort(path.read_bytes(), x)
    step = model[5].output_quantizer.qparams()[0].item()
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= step + 1e-6
    assert (out - ref).abs().max().item() < step / 2 or torch.isclose(out, ref, atol=1e-5).float().mean() > 0.99


def test_per_channel_export_needs_opset_13():
    with pytest.raises(UnsupportedError, match="opset_version >= 13"):
        export_onnx_qcdq(_qmodel().eval(), torch.randn(1, 1, 8, 8), opset_version=11)


def _float_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def test_ptq_swaps_layers_merges_bn_and_skips_requantizing_relu_outputs():
    q = BrevitasPTQ()
    prepared = q.prepare(_float_model().eval())
    assert isinstance(prepared[1], nn.Identity)  # BN merged
    assert isinstance(prepared[2], QuantReLU)
    assert prepared[0].input_quantizer is not None and prepared[0].input_quantizer.signed
    assert prepared[5].input_quantizer is None  # fed by QuantReLU through max-pool/flatten: already on grid


def test_calibration_mode_collects_without_quantizing():
    q = BrevitasPTQ(bias_correction=False)
    model = _float_model().eval()
    prepared = q.prepare(model)
    x = torch.randn(8, 1, 8, 8)
    with calibration_mode(prepared), torch.no_grad():
        relu_out = prepared[:3](x)
    # during calibration the ReLU output is the float one: activation and weight quantization are disabled
    assert torch.equal(relu_out, torch.relu(prepared[0]._compute(x, prepared[0].weight)))
    assert prepared[2].act_quant.learned  # frozen into the parameter on exit


def test_bias_correction_removes_mean_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16))
    model[0].weight.data += 0.05  # a weight distribution whose rounding error has a visible mean
    calib = [torch.rand(64, 32) for _ in range(4)]
    errs = {}
    for bc in (False, True):
        q = BrevitasPTQ(weight_bit_width=3, act_quant=None, bias_correction=bc)
        prepared = q.calibrate(q.prepare(model), calib)
        conv = q.convert(prepared)
        x = torch.cat(calib)
        errs[bc] = (model(x) - conv(x)).mean(dim=0).abs().mean().item()
    assert errs[True] < 0.1 * errs[False]


def test_onnxruntime_backend_on_ptq_model():
    q = BrevitasPTQ()
    model = _float_model().eval()
    calib = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    conv = q.convert(q.calibrate(q.prepare(model), calib))
    backend = get_backend("onnxruntime")
    assert backend.real_integer is False
    lowered = backend.lower(conv, calib[0])
    x = torch.randn(200, 1, 8, 8)
    ref = conv(x).detach()
    out = lowered(x)
    # ORT's float conv sums in another order, so a ReLU output lying on a rounding boundary may take the
    # neighbouring code: differences are at most a few codes of the ReLU step times a weight, never more.
    relu_step = conv[2].act_quant.qparams()[0].item()
    w_max = conv[5].weight.abs().max().item()
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 4 * relu_step * w_max
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.98
    assert backend.check_spec(None, None) == []
    assert backend.model_size_bytes(lowered) > 0


def test_qat_learns_activation_scale_after_collect_steps():
    q = BrevitasQAT(collect_stats_steps=1, weight_bit_width=4, act_bit_width=4)
    prepared = q.prepare(_float_model())
    prepared.train()
    x = torch.randn(8, 1, 8, 8)
    for _ in range(3):
        prepared.zero_grad()
        prepared(x).square().mean().backward()
    relu = prepared[2]
    assert relu.act_quant.learned and relu.act_quant.value.grad is not None


def test_config_for_bits():
    assert BrevitasPTQ.config_for_bits(8, 8).weight_bit_width == 8
    assert BrevitasQAT.config_for_bits(1, None).weight_quant == "SignedBinaryWeightPerTensorConst"
    assert BrevitasQAT.config_for_bits(2, 2).weight_quant == "SignedTernaryWeightPerTensorConst"
    with pytest.raises(UnsupportedError):
        BrevitasPTQ.config_for_bits(1, 1)
    with pytest.raises(UnsupportedError):
        BrevitasQAT.config_for_bits(8, 16)


def test_converted_weights_lie_on_the_integer_grid():
    # W4 per-channel narrow: every baked weight is an integer in [-7, 7] times its channel's scale max|W_c|/7;
    # the first/last layers ("int8" policy) use [-127, 127].
    q = BrevitasPTQ(BrevitasPTQ.config_for_bits(4, 8), first_layer="int8", last_layer="same")
    model = _float_model().eval()
    conv = q.convert(q.calibrate(q.prepare(model), [torch.randn(8, 1, 8, 8)]))
    for layer, qmax in ((conv[0], 127), (conv[5], 7)):
        s = layer.weight_scale.reshape(-1, *[1] * (layer.weight.dim() - 1))
        codes = layer.weight.detach() / s
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert codes.round().abs().max() == qmax
        assert layer.weight_bits == (8 if qmax == 127 else 4)
