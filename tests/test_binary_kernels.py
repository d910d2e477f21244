"""The bit-serial kernels behind the ``packed`` backend (quantzoo.kernels).

What is checked:

* the integer sums ``d`` the kernels compute are exact: equal (``torch.equal``) to a float64 convolution of the
  integer codes the fake-quant quantizers produce (±1 signs, DoReFa unit codes, 8-bit affine codes) with the
  integer weights (±1, −1/0/+1), at every stride/padding/dilation and on both sides of the border;
* every ISA variant this CPU runs (``avx512``, ``avx2``, ``portable``) gives bit-identical dots and outputs;
* outputs equal the fake-quant model's, layer by layer and for whole zoo models (cnn, mlp, lenet5) under
  xnor W1A1, bnn W1A1, dorefa W1A1 and twn W2A8 (twn W2A32 has float inputs: it stays on the float path).

Tolerance of the float epilogue: the kernel forms ``y = d·(α·s) + b`` (× K, then the folded BN) from the exact
``d`` with one rounding per step, where the fake-quant model's float32 convolution sums the ±α terms one by
one. Measured on the 12 zoo cases below: at most 1.1e-6·max|y| per layer (0 for BNN's ±1 sums, which are exact
in float32 too); the tests allow ``EPILOGUE_RTOL = 1e-5`` of the layer's largest output. Whole models gave
identical logits on the digits test set in all 12 cases (the 8-bit last layer re-quantizes its input); since
a difference of 1e-6 could flip the sign of a value that close to 0 at the next binary layer, the test asks
for logits within that tolerance on ≥ 99% of the images and the same prediction on ≥ 99.5%.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantzoo
from quantzoo import kernels
from quantzoo.backends.packed import FoldedBatchNorm2d, PackedBackend, kernel_report
from quantzoo.errors import ConfigError
from quantzoo.nn import BinaryActivation, FakeQuant
from quantzoo.nn.layers import run_layer
from quantzoo.nn.packed import PackedLayer, load_packed, packed_layers, save_packed
from quantzoo.quantizers.uniform import observer_class
from quantzoo.spec import QuantSpec

EPILOGUE_RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def built():
    """The kernel library (built once per machine into the user cache). No compiler: skip, saying so; a
    compiler whose build fails: the test fails (a broken build must not pass as skipped)."""
    if kernels.library() is None:
        why = kernels.unavailable_reason()
        if "compiler" in why or "ninja" in why or "=none" in why:
            pytest.skip(f"bit-serial kernels unavailable: {why}")
        pytest.fail(f"bit-serial kernels did not build: {why}")


def isas():
    return kernels.cpu_isas()


# -- single layers -----------------------------------------------------------------------------------------------
def packed(kind, shape, weights, iq, *, bias=True, seed=0, **conv):
    """A PackedLayer with random binary (codes {0,1}, offset ½) or ternary (codes {0,1,2}, offset 1) weights
    and per-channel scales."""
    g = torch.Generator().manual_seed(seed)
    binary = weights == "binary"
    codes = torch.randint(0, 2 if binary else 3, shape, generator=g)
    return PackedLayer.from_codes(kind, codes, 1 if binary else 2, torch.rand(shape[0], generator=g) + 0.25,
                                  0.5 if binary else 1.0, input_quantizer=iq,
                                  bias=torch.randn(shape[0], generator=g) if bias else None, **conv)


def frozen_fakequant(x):
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    fq = FakeQuant(spec, observer_class("minmax")(spec))
    fq(x)
    return fq.freeze()


def input_codes(iq, x):
    """The integer value u of each input as the fake-quant quantizer computes it (sign ±1, unit q, affine q − Z)."""
    enc = kernels.kernel_input(iq)
    if enc.kind == "sign":
        return iq.scaled_forward(x)[0] if hasattr(iq, "scaled_forward") else iq(x)
    return torch.round(iq(x) / enc.value_scale)


def integer_weight(layer):
    w = layer.dequantized_weight()
    alpha = layer.weight_scale.reshape(-1, *[1] * (w.dim() - 1)) / (2 if layer.weight_bits == 1 else 1)
    return torch.round(w / alpha)


def reference_dots(layer, x):
    u, v = input_codes(layer.input_quantizer, x).double(), integer_weight(layer).double()
    if layer.kind == "linear":
        return u @ v.t()
    conv = F.conv1d if layer.kind == "conv1d" else F.conv2d
    return conv(u, v, None, layer.stride, layer.padding, layer.dilation)


def xnor_input(mod):
    pytest.importorskip("quantzoo_plugin_xnor")
    from quantzoo_plugin_xnor.quantizer import XnorInput

    return XnorInput(mod)


def dorefa_input(bits):
    pytest.importorskip("quantzoo_plugin_dorefa")
    from quantzoo_plugin_dorefa.quantizer import DorefaActivation

    return DorefaActivation(bits, prescale=1.0)


# (kind, weight shape, conv geometry, input shape): C not a multiple of 8 or 64, O not a multiple of 8,
# stride, dilation (one segment per tap), padding wider than the kernel's reach, Conv1d and Linear.
GEOMETRIES = [
    ("conv2d", (64, 32, 3, 3), dict(padding=1), (3, 32, 8, 8)),
    ("conv2d", (13, 20, 5, 5), dict(padding=2, stride=2), (2, 20, 11, 9)),
    ("conv2d", (8, 70, 3, 3), dict(padding=3, dilation=2), (2, 70, 7, 6)),
    ("conv2d", (9, 3, 1, 1), dict(), (2, 3, 5, 5)),
    ("conv1d", (24, 16, 5), dict(padding=2, stride=2), (3, 16, 40)),
    ("linear", (40, 300), dict(), (5, 300)),
]
INPUTS = ["sign", "xnor", "unit1", "unit2", "unit3", "affine8"]


def make_input_quantizer(name, kind, wshape, conv, x):
    if name == "sign":
        return BinaryActivation()
    if name == "xnor":
        mod = nn.Linear(wshape[1], wshape[0]) if kind == "linear" else (
            nn.Conv1d if kind == "conv1d" else nn.Conv2d)(wshape[1], wshape[0], wshape[2:], **conv)
        return xnor_input(mod)
    if name.startswith("unit"):
        return dorefa_input(int(name[4:]))
    return frozen_fakequant(x)


@pytest.mark.parametrize("weights", ["binary", "ternary"])
@pytest.mark.parametrize("inp", INPUTS)
@pytest.mark.parametrize("geom", range(len(GEOMETRIES)), ids=[f"{g[0]}{g[1]}" for g in GEOMETRIES])
def test_dots_exact_outputs_match_and_isas_identical(geom, inp, weights):
    kind, wshape, conv, xshape = GEOMETRIES[geom]
    if inp == "xnor" and kind == "conv1d":
        pytest.skip("the kernels compute the XNOR K map of 2-D convolutions only (Conv1d stays float)")
    x = torch.randn(*xshape, generator=torch.Generator().manual_seed(geom)) * 0.7 + 0.2
    x.view(-1)[::17] = 0.0  # sign(0) = +1 and clamp/round edge values
    layer = packed(kind, wshape, weights, make_input_quantizer(inp, kind, wshape, conv, x), **conv)
    ref_dots = reference_dots(layer, x)
    ref_out = run_layer(layer, x, layer.dequantized_weight())  # what the converted fake-quant layer computes
    results = {}
    for isa in isas():
        name = layer.use_kernel(isa)
        assert name.endswith(isa), layer.kernel_note
        dots = layer.kernel.run(layer, x, dots=True)
        assert dots.dtype == torch.int32
        assert torch.equal(dots.double(), ref_dots), f"{isa}: integer dot products differ"
        out = layer(x)
        assert layer.ran_on == name
        assert (out - ref_out).abs().max() <= EPILOGUE_RTOL * ref_out.abs().max()
        results[isa] = (dots, out)
    first_dots, first_out = next(iter(results.values()))
    for isa, (dots, out) in results.items():
        assert torch.equal(dots, first_dots) and torch.equal(out, first_out), f"{isa} differs from {isas()[0]}"


def test_kernel_names_bit_serial_and_byte_inputs():
    x = torch.rand(2, 16, 6, 6)
    names = {}
    for inp in ("sign", "unit1", "unit2", "unit3", "affine8"):
        for weights in ("binary", "ternary"):
            layer = packed("conv2d", (8, 16, 3, 3), weights, make_input_quantizer(inp, "conv2d", None, {}, x))
            names[inp, weights] = layer.use_kernel("portable")
    assert names == {("sign", "binary"): "xnor-portable", ("sign", "ternary"): "ternary-portable",
                     ("unit1", "binary"): "and-portable", ("unit1", "ternary"): "ternary-portable",
                     ("unit2", "binary"): "and-a2-portable", ("unit2", "ternary"): "ternary-i2-portable",
                     ("unit3", "binary"): "binary-i3-portable", ("unit3", "ternary"): "ternary-i3-portable",
                     ("affine8", "binary"): "binary-i8-portable", ("affine8", "ternary"): "ternary-i8-portable"}


def test_input_batchnorm_runs_before_the_kernel():
    from quantzoo.nn import InputBatchNorm

    norm = InputBatchNorm(16, conv=True)
    norm.bn.running_mean.uniform_(-1, 1)
    norm.bn.running_var.uniform_(0.5, 2)
    layer = packed("conv2d", (8, 16, 3, 3), "binary", BinaryActivation(norm.eval()), padding=1)
    assert layer.use_kernel().startswith("xnor")
    x = torch.randn(2, 16, 6, 6)
    ref = run_layer(layer, x, layer.dequantized_weight())
    assert torch.equal(layer.kernel.run(layer, x, dots=True).double(), reference_dots(layer, x))
    assert (layer(x) - ref).abs().max() <= EPILOGUE_RTOL * ref.abs().max()


def test_layers_that_stay_float_say_why():
    float_input = packed("conv2d", (8, 16, 3, 3), "binary", None)
    assert float_input.use_kernel() == "float" and "float input" in float_input.kernel_note
    four_bit = PackedLayer("linear", (4, 8), 4, bias=False, input_quantizer=BinaryActivation())
    assert four_bit.use_kernel() == "float" and "neither binary nor ternary" in four_bit.kernel_note
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(float_input(x), run_layer(float_input, x, float_input.dequantized_weight()))
    assert float_input.ran_on == "float"


def test_gradient_calls_take_the_float_path():
    layer = packed("linear", (6, 20), "binary", BinaryActivation())
    layer.use_kernel()
    x = torch.randn(3, 20, requires_grad=True)
    out = layer(x)
    assert layer.ran_on == "float" and out.requires_grad
    with torch.no_grad():
        assert torch.allclose(layer(x), out, rtol=EPILOGUE_RTOL, atol=1e-5) and layer.ran_on != "float"


def test_kernel_follows_new_weights():
    layer = packed("conv2d", (8, 16, 3, 3), "binary", BinaryActivation(), padding=1)
    layer.use_kernel()
    x = torch.randn(2, 16, 6, 6)
    before = layer(x)
    other = packed("conv2d", (8, 16, 3, 3), "binary", BinaryActivation(), padding=1, seed=1)
    layer.load_state_dict(other.state_dict())
    after = layer(x)
    assert not torch.allclose(before, after)
    assert (after - other(x)).abs().max() <= EPILOGUE_RTOL * after.abs().max()


def test_isa_selection(monkeypatch):
    assert kernels.select_isa() == isas()[0]
    monkeypatch.setenv(kernels.ISA_ENV, "portable")
    assert kernels.select_isa() == "portable"
    assert packed("linear", (4, 16), "binary", BinaryActivation()).use_kernel() == "xnor-portable"
    monkeypatch.setenv(kernels.ISA_ENV, "sse9")
    with pytest.raises(ConfigError, match="unknown"):
        kernels.select_isa()
    missing = [i for i in kernels.ISAS if i not in isas()]
    if missing:
        with pytest.raises(ConfigError, match="cannot run on this CPU"):
            kernels.select_isa(missing[0])


def test_no_compiler_warns_once_and_falls_back(monkeypatch):
    from quantzoo.kernels import build

    saved = dict(build._state)
    build._state.clear()
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer = packed("linear", (4, 16), "binary", BinaryActivation())
            assert layer.use_kernel() == "float"
            assert layer.use_kernel() == "float"
        msgs = [str(w.message) for w in caught if issubclass(w.category, quantzoo.QuantzooWarning)]
        assert len(msgs) == 1 and "no C++ compiler" in msgs[0] and "install" in msgs[0]
        assert "\n" not in msgs[0]
        assert "no C++ compiler" in layer.kernel_note
    finally:
        build._state.clear()
        build._state.update(saved)


# -- whole zoo models ----------------------------------------------------------------------------------------------
def digits(shape):
    from quantzoo.bench.data import load_dataset

    splits = load_dataset("digits")
    resize = (lambda t: F.interpolate(t, size=shape[1:], mode="bilinear", align_corners=False)) \
        if tuple(splits.train_x.shape[1:]) != shape else (lambda t: t)
    return resize(splits.train_x[:256]), splits.train_y[:256], resize(splits.test_x)


def zoo_model(name):
    from quantzoo.bench.data import build_model
    from quantzoo.models import LeNet5

    if name == "lenet5":  # LeNet-5 needs 28×28: the digits, resized
        return LeNet5((1, 28, 28), 10), (1, 28, 28)
    return build_model(name, "digits"), (1, 8, 8)


def converted(method, w_bits, a_bits, model_name):
    """The method's converted fake-quant model after a short QAT run (4 steps of 64 digits), first/last layers
    8-bit as in the harness protocol."""
    from quantzoo.training import TrainConfig, fit

    torch.manual_seed(0)
    model, shape = zoo_model(model_name)
    xtr, ytr, xte = digits(shape)
    cls = quantzoo.get_quantizer(method)
    cfg = cls.config_for_bits(w_bits, a_bits).model_copy(update=dict(first_layer="int8", last_layer="int8"))
    q = cls(cfg)
    prepared = q.prepare(model)
    fit(q, prepared, [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)], TrainConfig(epochs=1, lr=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return q.convert(prepared).eval(), xte


ON_KERNELS = [("xnor", 1, 1), ("bnn", 1, 1), ("dorefa", 1, 1), ("twn", 2, 8)]
MODELS = ["cnn", "mlp", "lenet5"]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method,w_bits,a_bits", ON_KERNELS, ids=[f"{m}-W{w}A{a}" for m, w, a in ON_KERNELS])
def test_zoo_model_equals_fake_quant(method, w_bits, a_bits, model_name):
    conv, x = converted(method, w_bits, a_bits, model_name)
    backend = PackedBackend()
    # layer by layer (BN not folded): each kernel layer gets the fake-quant layer's own input
    low = backend.lower(conv, fold_bn=False)
    report = low.kernel_report()
    on_kernels = [n for n, k in report.items() if k != "float"]
    assert on_kernels, f"no layer of {model_name} ran on the kernels: {low.kernel_report(why=True)}"
    expected = {"xnor": "xnor-", "bnn": "xnor-", "dorefa": "and-", "twn": "ternary-i8-"}[method]
    assert all(report[n].startswith(expected) for n in on_kernels), report
    seen = {}
    hooks = [conv.get_submodule(n).register_forward_hook(
        lambda mod, inp, out, n=n: seen.__setitem__(n, (inp[0], out))) for n in on_kernels]
    with torch.no_grad():
        ref = conv(x)
    for h in hooks:
        h.remove()
    for n in on_kernels:
        layer, (inp, out) = low.get_submodule(n), seen[n]
        with torch.no_grad():
            assert torch.equal(layer.kernel.run(layer, inp, dots=True).double(), reference_dots(layer, inp)), n
            got = layer(inp)
        assert (got - out).abs().max() <= EPILOGUE_RTOL * out.abs().max(), n
    # the whole model as the backend lowers it (BN after kernel layers folded into their epilogue)
    low = backend.lower(conv, x[:1])
    assert any(isinstance(m, FoldedBatchNorm2d) for m in low.modules()) or model_name == "mlp"
    with torch.no_grad():
        got = low(x)
    close = ((got - ref).abs() <= EPILOGUE_RTOL * ref.abs().max()).all(dim=1).float().mean()
    agree = (got.argmax(1) == ref.argmax(1)).float().mean()
    assert close >= 0.99 and agree >= 0.995, f"logits close on {close:.3%}, predictions agree on {agree:.3%}"


def test_twn_with_float_inputs_stays_float_and_exact():
    conv, x = converted("twn", 2, None, "cnn")
    low = PackedBackend().lower(conv, x[:1])
    assert set(low.kernel_report().values()) == {"float"}
    assert "float input" in low.kernel_report(why=True)["features.3"]
    assert not PackedBackend().measures_latency(low)
    with torch.no_grad():
        assert torch.equal(low(x), conv(x))


def test_lowered_model_saves_loads_and_copies(tmp_path):
    conv, x = converted("xnor", 1, 1, "cnn")
    backend = PackedBackend()
    low = backend.lower(conv, x[:1])
    assert backend.measures_latency(low)
    with torch.no_grad():
        out = low(x)
    assert set(low.state_dict()) == set(backend.lower(conv, kernels=False).state_dict())  # folding keeps the keys
    path = tmp_path / "xnor.pt"
    save_packed(low, path)
    fresh = backend.lower(conv)
    for layer in packed_layers(fresh).values():  # scramble, then load: the kernels must follow the file
        layer.weight_scale.mul_(3.0)
    load_packed(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(x), out)
        assert torch.equal(copy.deepcopy(low)(x), out)
    assert kernel_report(low) == low.kernel_report()


def test_harness_times_packed_rows_on_kernels(tmp_path_factory):
    from quantzoo.bench import run_cell

    cache = tmp_path_factory.mktemp("baselines")
    proto = dict(qat=dict(epochs=1, lr=1e-3, batch_size=64, samples=128), latency_batches=(1, 8))
    m = run_cell("xnor", "cnn", "digits", 1, 1, protocol=proto, mode="qat", cache_dir=cache,
                 baseline={"epochs": 1, "lr": 3e-3})
    assert m["backend"] == "packed" and m["backend_error"] is None
    assert m["kernels"]["features.3"].startswith("xnor-") and m["kernels"]["features.0"] == "float"
    assert m["latency"]["1"]["speedup"] > 0 and m["latency"]["8"]["speedup"] > 0 and m["latency"]["8"]["ms"] > 0
    m = run_cell("twn", "cnn", "digits", 2, None, protocol=proto, mode="qat", cache_dir=cache,
                 baseline={"epochs": 1, "lr": 3e-3})
    assert set(m["kernels"].values()) == {"float"} and m["latency"] == {}  # float inputs: nothing timed


@pytest.mark.slow
def test_avx512_variant_logic_emulated(tmp_path):
    """The AVX-512 source on stand-in intrinsics equals the portable and AVX2 variants (for CPUs without it)."""
    import shutil
    import subprocess
    from pathlib import Path

    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = Path(__file__).with_name("binary_kernels_emulated_avx512.cpp")
    exe = tmp_path / "emulated"
    if "avx2" not in isas():
        pytest.skip("the emulated AVX-512 variant runs the AVX2 byte tile: needs an AVX2 CPU")
    subprocess.run([cxx, "-O1", "-std=c++17", "-ffp-contract=off", "-mavx2", "-mpopcnt",
                    f"-I{Path(kernels.__file__).parent / 'csrc'}", str(src), "-o", str(exe)],
                   check=True, capture_output=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert ", 0 failures" in res.stdout
