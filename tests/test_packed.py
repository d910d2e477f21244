"""Bit-packed storage of converted low-bit models (quantzoo.nn.packed, the ``packed`` backend) and the
low-bit math primitives (quantzoo.math.lowbit)."""

import warnings

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.errors import UnsupportedError
from quantzoo.math import dequantize_codes, grad_transform, quantize_unit, tanh_unit
from quantzoo.nn.packed import PackedLayer, load_packed, pack_model, packed_layers, save_packed, storage_bits
from quantzoo.testing import find_quantized_weights


# -- math ------------------------------------------------------------------------------------------------------
def test_quantize_unit_by_hand():
    # k = 3, n = 7: 7·(0, .1, .5, 1) = (0, .7, 3.5, 7) → round half even (0, 1, 4, 7) → /7
    x = torch.tensor([0.0, 0.1, 0.5, 1.0], requires_grad=True)
    out = quantize_unit(x, 3)
    assert torch.allclose(out, torch.tensor([0.0, 1 / 7, 4 / 7, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))  # straight-through


def test_tanh_unit_values_and_gradient_through_max():
    # DoReFa eq. 9: u = tanh(w)/(2 m) + 1/2 with m = max|tanh w| = tanh(2) = 0.96403 (w = 2 is the largest)
    w = torch.tensor([0.5, -1.0, 0.25, 2.0], requires_grad=True)
    u = tanh_unit(w)
    m = torch.tanh(torch.tensor(2.0))
    assert u.tolist() == pytest.approx([0.73968, 0.10500, 0.62703, 1.0], abs=1e-5)
    u[0].backward()
    # du0/dw0 = (1 − tanh²0.5)/(2m); du0/dw3 = −tanh(0.5)·(1 − tanh²2)/(2m²) (through the max); others 0
    t0 = torch.tanh(torch.tensor(0.5))
    expected = [float((1 - t0**2) / (2 * m)), 0.0, 0.0, float(-t0 * (1 - m**2) / (2 * m**2))]
    assert w.grad.tolist() == pytest.approx(expected, abs=1e-6)
    assert tanh_unit(torch.zeros(3)).tolist() == [0.5, 0.5, 0.5]  # no 0/0


def test_grad_transform():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = grad_transform(x, lambda g: 3 * g)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([3.0, 3.0]))


def test_dequantize_codes_by_hand():
    # binary: c ∈ {0,1}, offset ½, scale 2α per row: α = (1, 0.5) → ((0−½)·2, (1−½)·2; (0−½)·1, (1−½)·1)
    c = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert torch.equal(dequantize_codes(c, torch.tensor([2.0, 1.0]), 0.5), torch.tensor([[-1.0, 1.0], [-0.5, 0.5]]))
    # ternary: c = t + 1, offset 1, scale α = 0.25
    assert torch.equal(dequantize_codes(torch.tensor([0.0, 1.0, 2.0]), 0.25, 1.0), torch.tensor([-0.25, 0.0, 0.25]))


def test_storage_bits():
    assert [storage_bits(b) for b in (1, 2, 3, 4, 5, 8)] == [1, 2, 4, 4, 8, 8]
    with pytest.raises(UnsupportedError):
        storage_bits(9)


# -- packing whole models --------------------------------------------------------------------------------------
def lenet5():
    """The TWN paper's LeNet-5 (32-C5, MP2, 64-C5, MP2, 512 FC) as in the zoo, with BN."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 10))


def _converted(method, model, **cfg):
    q = quantzoo.get_quantizer(method)(cfg)
    prepared = q.prepare(model)
    prepared.train()
    prepared(torch.randn(16, *_shape(model)))  # BN statistics and 8-bit observers see data
    prepared._quantzoo_trained = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return q.convert(prepared)


def _shape(model):
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    return (first.in_features,) if isinstance(first, nn.Linear) else (1, 28, 28)


CASES = [("twn", {}), ("twn", {"per_channel": True, "activation_bits": 8}), ("bnn", {}), ("xnor", {}),
         ("xnor", {"binary_activations": False}),
         ("dorefa", {"weight_bits": 3, "activation_bits": 4, "first_layer": "int8"}),
         ("dorefa", {"weight_bits": 1, "activation_bits": 2})]


@pytest.mark.parametrize("method,cfg", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_packed_model_equals_converted_and_survives_a_file(method, cfg, tmp_path):
    pytest.importorskip(f"quantzoo_plugin_{method}")
    torch.manual_seed(0)
    converted = _converted(method, lenet5(), **cfg)
    backend = quantzoo.get_backend("packed")
    packed = backend.lower(converted)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref, out = converted(x), packed(x)
    assert torch.equal(ref, out)  # the same weights bit for bit
    layers = packed_layers(packed)
    assert layers and all(isinstance(m, PackedLayer) for m in layers.values())
    # the conformance kit sees the packed weights and their bit width
    for _name, w, bits, _ in find_quantized_weights(packed):
        assert torch.unique(w.reshape(w.shape[0], -1)[0]).numel() <= 2**bits
    size = save_packed(packed, tmp_path / "m.pt")
    assert size == pytest.approx(backend.model_size_bytes(packed), rel=0.05)  # zip names differ
    torch.manual_seed(1)
    other = backend.lower(_converted(method, lenet5(), **cfg))  # different weights, same architecture
    load_packed(other, tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(other(x), ref)


def _file_bytes(tensors: dict, path) -> int:
    torch.save(tensors, path)
    return path.stat().st_size


@pytest.mark.parametrize("method,cfg,ideal", [("xnor", {"binary_activations": False}, 32), ("bnn", {}, 32),
                                              ("twn", {}, 16)])
def test_lenet5_compression_of_quantized_layers(method, cfg, ideal, tmp_path):
    """Packed files of the quantized layers reach ≥ 0.85 of the ideal 32× (binary) / 16× (ternary)."""
    pytest.importorskip(f"quantzoo_plugin_{method}")
    torch.manual_seed(0)
    fp = lenet5()
    packed = pack_model(_converted(method, fp, **cfg))
    layers = packed_layers(packed)
    assert layers
    fp_state = {f"{n}.{k}": v for n in layers for k, v in fp.get_submodule(n).state_dict().items()}
    packed_state = {f"{n}.{k}": v for n, m in layers.items() for k, v in m.state_dict().items()}
    ratio = _file_bytes(fp_state, tmp_path / "fp.pt") / _file_bytes(packed_state, tmp_path / "packed.pt")
    assert ratio >= 0.85 * ideal, f"{method}: {ratio:.1f}x < 0.85·{ideal}x"
    packed_bytes = quantzoo.get_backend("packed").model_size_bytes(packed)
    whole = quantzoo.get_backend("fakequant").model_size_bytes(fp) / packed_bytes
    assert whole > 1.0


def test_packed_backend_refuses_a_model_without_low_bit_layers():
    with pytest.raises(UnsupportedError, match="packed"):
        quantzoo.get_backend("packed").lower(nn.Sequential(nn.Linear(2, 2)))


def test_a_model_left_without_low_bit_layers_is_refused():
    """One Linear kept at 8 bits by the int8 policy would be reported under the method's bits: refused."""
    pytest.importorskip("quantzoo_plugin_twn")
    q = quantzoo.get_quantizer("twn")(first_layer="int8", last_layer="int8")
    with pytest.raises(UnsupportedError, match="1 compute layer"):
        q.prepare(nn.Sequential(nn.Linear(4, 2)))
