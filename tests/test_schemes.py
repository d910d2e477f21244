"""Hardware schemes over every installed quantizer: ``apply_scheme`` either returns a valid config of the method's
own class, or refuses with UnsupportedError (and the row says "own: <why>"); never another exception
(docs/benchmark-protocol.md, "Hardware schemes")."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from quantzoo import get_registry
from quantzoo.bench.configs import bits_config, scheme_followed
from quantzoo.bench.protocol import Protocol
from quantzoo.errors import UnsupportedError
from quantzoo.schemes import SCHEMES, get_scheme

METHODS = get_registry().names("quantizer")


def _setting(cls) -> tuple[int, int | None]:
    """W4A4 where the method has it, else its narrowest supported setting (binary, ternary, 8-bit formats)."""
    caps = cls.capabilities
    if caps.supports(4, 4):
        return 4, 4
    acts = caps.activation_bits or (None,)
    a = min((b for b in acts if b is not None), default=None)
    return min(caps.weight_bits), a


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("method", METHODS)
def test_apply_scheme_returns_a_valid_config_or_refuses(method, scheme):
    cls = get_registry().get("quantizer", method)
    w, a = _setting(cls)
    base = cls.config_for_bits(w, a)
    try:
        out = cls.apply_scheme(base, get_scheme(scheme))
    except UnsupportedError as e:
        assert str(e).strip() and "\n" not in str(e), f"{method}: refusal needs a one-line reason, got {e!r}"
        followed = scheme_followed(cls, w, a, Protocol(scheme=scheme))
        assert followed == f"own: {e}"
        # the harness then runs the method's own config (plus the protocol fields)
        assert bits_config(cls, w, a, protocol=Protocol(scheme=scheme)).model_dump(
            exclude={"first_layer", "last_layer", "int8_scheme"}) == base.model_dump(
            exclude={"first_layer", "last_layer", "int8_scheme"})
        return
    assert type(out) is cls.Config, f"{method}: apply_scheme returned {type(out).__name__}, not {cls.Config.__name__}"
    assert cls.Config.model_validate(out.model_dump()) == out  # it round-trips: a valid config
    assert cls.bits_of_config(out) == cls.bits_of_config(base), f"{method}: the scheme changed the bit widths"
    assert scheme_followed(cls, w, a, Protocol(scheme=scheme)) == scheme
    assert bits_config(cls, w, a, protocol=Protocol(scheme=scheme)).model_dump(
        exclude={"first_layer", "last_layer", "int8_scheme"}) == out.model_dump(
        exclude={"first_layer", "last_layer", "int8_scheme"})
    cls(out, registry=get_registry())  # it builds (names resolved, no late validation errors)


def test_method_scheme_leaves_every_method_its_own():
    for method in METHODS:
        cls = get_registry().get("quantizer", method)
        assert scheme_followed(cls, *_setting(cls), Protocol()) is None


# -- a followed scheme is what the quantizers compute ------------------------------------------------------
# A tiny model whose layer 4 is a method layer (the protocol keeps the first and last layers int8) with a
# signed input (layer 3 feeds it without a ReLU), so an asymmetric activation range has a non-zero zero point.
def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 6), nn.Linear(6, 5), nn.ReLU(),
                         nn.Linear(5, 3))


def _qparams_distiller_nni(prepared, converted):
    layer = prepared[4]  # the weight quantizer's qparams are those of its last forward (the eval batch)
    wq, aq = layer.weight_quantizer, layer.input_quantizer
    return wq.scale, wq.zero_point, bool((aq.zero_point == 0).all())


def _qparams_brevitas(prepared, converted):
    layer = prepared[4]
    scale, zp = layer.weight_quantizer.qparams(layer.weight)
    a_scale, a_zp = layer.input_quantizer.qparams()
    return scale, zp, bool(layer.input_quantizer.signed and (a_zp == 0).all())


def _qparams_torch(prepared, converted):
    w = converted.module[4].weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale, zp = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    else:
        scale, zp = torch.tensor(w.q_scale()), torch.tensor(w.q_zero_point())
    # layer 4's input is layer 3's quint8 output; the x86 engine keeps 7 bits (codes 0..127), whose symmetric
    # zero point is the middle code (0 + 127) // 2 = 63 (torch's per_tensor_symmetric rule)
    return scale, zp, converted.module[3].zero_point == 63


def _qparams_torch_qat(prepared, converted):
    scale, zp = prepared.module[4].weight_fake_quant.calculate_qparams()
    _, a_zp = prepared.module[3].activation_post_process.calculate_qparams()
    return scale, zp, bool((a_zp == 63).all())  # 7-bit quint8 on x86, as _qparams_torch


FOLLOWED = [
    ("distiller-ptq", ("x86", "academic", "tensorrt"), _qparams_distiller_nni),
    ("nni-ptq", ("x86", "academic", "tensorrt"), _qparams_distiller_nni),
    ("brevitas-ptq", ("academic", "tensorrt", "pow2"), _qparams_brevitas),
    ("torch-static", ("x86", "academic", "tensorrt"), _qparams_torch),
    ("torch-qat", ("x86", "academic", "tensorrt"), _qparams_torch_qat),
]


@pytest.mark.parametrize(("method", "scheme", "read"),
                         [pytest.param(m, s, r, id=f"{m}-{s}") for m, ss, r in FOLLOWED for s in ss])
def test_a_followed_scheme_is_what_the_quantizers_compute(method, scheme, read):
    torch.set_num_threads(1)
    if method not in METHODS:
        pytest.skip(f"{method} is not installed")
    cls = get_registry().get("quantizer", method)
    w, a = (8, 8) if cls.capabilities.weight_bits == (8,) else (4, 4)
    protocol = Protocol(scheme=scheme)
    assert scheme_followed(cls, w, a, protocol) == scheme
    quantizer = cls(bits_config(cls, w, a, protocol=protocol), registry=get_registry())
    torch.manual_seed(1)
    x = torch.randn(16, 2, 8)
    prepared = quantizer.prepare(_tiny())
    if cls.capabilities.needs_training:
        prepared.train()
        prepared(x)  # one training forward: the fake quantizers observe
    quantizer.calibrate(prepared, [x[:8], x[8:]])
    prepared.eval()
    with torch.no_grad():
        prepared(x)
    converted = quantizer.convert(copy.deepcopy(prepared)) if method == "torch-static" else None
    scale, zp, act_symmetric = read(prepared, converted)
    s = get_scheme(scheme)
    scale = torch.as_tensor(scale).flatten()
    if s.weight_granularity == "per_channel":
        assert scale.numel() == 5 and len(set(scale.tolist())) > 1, f"{method}: weight scales {scale}"
    else:
        assert scale.numel() == 1, f"{method}: {scale.numel()} weight scales, the scheme is per tensor"
    assert (torch.as_tensor(zp) == 0).all(), f"{method}: weight zero points {zp}, the scheme's weights are symmetric"
    assert act_symmetric == s.activation_symmetric, f"{method}: layer 4's input symmetric={act_symmetric}"
    if s.scale_type == "power_of_two":
        assert torch.equal(torch.log2(scale), torch.log2(scale).round()), f"{method}: scales {scale} not 2^k"
