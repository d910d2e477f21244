"""Property-based tests (hypothesis) over specs and configs (issue 8).

The validity rules are written out here a second time, independently of :mod:`quantzoo.spec`, from the
QuantSpec docstring: ``int`` has 2..16 bits; ``binary`` 1 bit and ``ternary`` 2 bits, both signed, symmetric,
not per_group and nearest rounding; narrow needs signed; per_group needs a group_size and only per_group may
have one. Every spec hypothesis draws is judged by that oracle: a valid one constructs, survives a JSON round
trip unchanged and has a sane integer grid; an invalid one raises ``ValidationError`` whose message names a
field the oracle blamed. Method configs: whatever ``config_for_bits`` returns round-trips through
``to_json``/``load_config``, and a bit width in a ``weight`` override is accepted exactly when it is legal.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import quantzoo
from quantzoo import QuantSpec
from quantzoo.bench.suite import parse_bits
from quantzoo.errors import ConfigError, UnsupportedError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

spec_fields = st.fixed_dictionaries(
    {},
    optional={
        "bits": st.one_of(st.integers(-4, 40), st.sampled_from(["eight", 8.5, True, None])),
        "dtype": st.sampled_from(["int", "binary", "ternary", "fp8"]),
        "signed": st.booleans(),
        "symmetric": st.booleans(),
        "narrow": st.booleans(),
        "granularity": st.sampled_from(["per_tensor", "per_channel", "per_group", "per_row"]),
        "axis": st.integers(-3, 3),
        "group_size": st.one_of(st.none(), st.integers(-2, 128)),
        "scale_type": st.sampled_from(["float", "power_of_two", "log"]),
        "rounding": st.sampled_from(["nearest_even", "stochastic", "up"]),
    },
)


def violations(d: dict) -> set[str]:
    """The fields the oracle blames for an invalid spec (empty: the spec is valid)."""
    v = {**{"bits": 8, "dtype": "int", "signed": True, "symmetric": True, "narrow": False,
            "granularity": "per_tensor", "group_size": None, "scale_type": "float", "rounding": "nearest_even"},
         **d}
    bad = set()
    enums = {"dtype": ("int", "binary", "ternary"), "granularity": ("per_tensor", "per_channel", "per_group"),
             "scale_type": ("float", "power_of_two"), "rounding": ("nearest_even", "stochastic")}
    for k, allowed in enums.items():
        if v[k] not in allowed:
            bad.add(k)
    b = v["bits"]
    if isinstance(b, bool) or not isinstance(b, int):
        return bad | {"bits"}  # checked first: nothing else is judged
    if v["group_size"] is not None and v["group_size"] < 1:
        bad.add("group_size")
    if bad:
        return bad
    if v["dtype"] == "int" and not 2 <= b <= 16 or v["dtype"] == "binary" and b != 1 or \
            v["dtype"] == "ternary" and b != 2:
        return {"bits"}
    if v["dtype"] != "int":
        if not v["symmetric"] or not v["signed"]:
            return {"symmetric", "signed"}
        if v["granularity"] == "per_group":
            return {"granularity"}
        if v["rounding"] != "nearest_even":
            return {"rounding"}
    if v["narrow"] and not v["signed"]:
        return {"narrow", "signed"}
    if v["granularity"] == "per_group" and v["group_size"] is None:
        return {"group_size"}
    if v["granularity"] != "per_group" and v["group_size"] is not None:
        return {"group_size"}
    return set()


@SETTINGS
@given(spec_fields)
def test_specs_are_valid_exactly_when_the_rules_say_and_errors_name_the_field(d):
    blamed = violations(d)
    if not blamed:
        spec = QuantSpec(**d)
        again = QuantSpec.model_validate_json(spec.model_dump_json())
        assert again == spec and json.loads(spec.model_dump_json()) == spec.model_dump(mode="json")
        assert spec.qmin < spec.qmax and spec.levels >= 2
        if spec.dtype == "int":
            assert spec.levels == 2 ** spec.bits - (1 if spec.narrow else 0)
        return
    with pytest.raises(ValidationError) as info:
        QuantSpec(**d)
    text = str(info.value)
    assert any(f in text for f in blamed), (blamed, text)


@SETTINGS
@given(st.integers(-8, 64), st.integers(-8, 64))
def test_bit_settings_parse_exactly(w, a):
    text = f"W{w}A{a}"
    if 1 <= w <= 16 and (1 <= a <= 16 or a == 32):
        assert parse_bits(text) == (w, None if a == 32 else a)  # A32: float activations, one encoding: None
    else:
        with pytest.raises(ValueError, match="W<n>A<m>|1..16"):
            parse_bits(text)


@SETTINGS
@given(st.text(max_size=12))
def test_arbitrary_bit_strings_parse_or_raise_a_value_error(text):
    try:
        w, a = parse_bits(text)
    except ValueError as e:
        assert repr(text) in str(e) or text.lower() in str(e)
        return
    assert (w, a) == (None, None) or (1 <= w <= 32 and 1 <= a <= 32)


def _setting_configs():
    """Every (method, W, A) that ``config_for_bits`` accepts among the harness settings."""
    out = []
    for name in quantzoo.list_quantizers():
        cls = quantzoo.get_quantizer(name)
        for w, a in [(8, 8), (4, 4), (2, 2), (1, 1), (2, None), (1, None), (8, None)]:
            try:
                cls.config_for_bits(w, a)
            except UnsupportedError:
                continue
            out.append((name, w, a))
    return out


SETTING_CONFIGS = _setting_configs()


@pytest.mark.parametrize("name,w,a", SETTING_CONFIGS, ids=[f"{n}-W{w}A{a}" for n, w, a in SETTING_CONFIGS])
def test_every_method_setting_round_trips_through_json(name, w, a):
    cls = quantzoo.get_quantizer(name)
    q = cls(cls.config_for_bits(w, a))
    blob = json.dumps(q.to_json())  # what a results row or a --config file holds
    assert quantzoo.load_config(json.loads(blob)) == q.config


@SETTINGS
@given(st.one_of(st.integers(-40, 40), st.sampled_from(["eight", "8", 8.0, 8.5, None, [8]])),
       st.sampled_from(["weight", "activation"]))
def test_uniform_accepts_a_bit_width_exactly_when_it_is_legal(bits, role):
    ok = isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= 16
    cls = quantzoo.get_quantizer("uniform")
    if ok:
        cfg = cls.make_config({role: {"bits": bits}})
        assert getattr(cfg, role).bits == bits
        assert cls.make_config(json.loads(cfg.model_dump_json())) == cfg
    else:
        with pytest.raises(ConfigError) as info:
            cls.make_config({role: {"bits": bits}})
        assert f"{role}" in str(info.value) and "bits" in str(info.value)


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.integers(), min_size=1, max_size=3))
def test_unknown_config_keys_are_named(extra):
    cls = quantzoo.get_quantizer("uniform")
    assume(not set(extra) & set(cls.Config.model_fields))
    with pytest.raises(ConfigError) as info:
        cls.make_config(extra)
    assert all(k in str(info.value) for k in extra)


@SETTINGS
@given(st.integers(-5, 5000))
def test_protocol_calibration_samples(n):
    from quantzoo.bench.protocol import Protocol

    if n >= 1:
        p = Protocol(calibration_samples=n)
        assert Protocol.model_validate_json(p.model_dump_json()) == p
    else:
        with pytest.raises(ValidationError, match="calibration_samples"):
            Protocol(calibration_samples=n)
