"""QuantSpec: integer ranges worked by hand, and impossible combinations rejected with field + fix."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from quantzoo.spec import QuantSpec, int_spec

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("kwargs", "qmin", "qmax", "levels"),
    [
        # signed b bits: [-2^(b-1), 2^(b-1)-1]
        ({"bits": 8}, -128, 127, 256),
        ({"bits": 4}, -8, 7, 16),
        ({"bits": 2}, -2, 1, 4),
        ({"bits": 16}, -32768, 32767, 65536),
        # narrow drops the most negative code: [-(2^(b-1)-1), 2^(b-1)-1]
        ({"bits": 8, "narrow": True}, -127, 127, 255),
        ({"bits": 4, "narrow": True}, -7, 7, 15),
        # unsigned: [0, 2^b-1]
        ({"bits": 8, "signed": False}, 0, 255, 256),
        ({"bits": 3, "signed": False, "symmetric": False}, 0, 7, 8),
        ({"bits": 16, "signed": False}, 0, 65535, 65536),
        # binary {-1, +1}: 2 values; ternary {-1, 0, +1}
        ({"bits": 1, "dtype": "binary"}, -1, 1, 2),
        ({"bits": 2, "dtype": "ternary"}, -1, 1, 3),
    ],
)
def test_integer_ranges(kwargs, qmin, qmax, levels):
    spec = QuantSpec(**kwargs)
    assert (spec.qmin, spec.qmax, spec.levels) == (qmin, qmax, levels)


@pytest.mark.parametrize(
    ("kwargs", "field", "fix"),
    [
        ({"bits": 1}, "bits=1", "dtype='binary'"),
        ({"bits": 17}, "bits=17", "between 2 and 16"),
        ({"bits": 0}, "bits=0", "between 2 and 16"),
        ({"bits": "8"}, "bits", "set bits=<int>"),
        ({"bits": 8.5}, "bits", "set bits=<int>"),
        ({"bits": True}, "bits", "set bits=<int>"),
        ({"bits": 2, "dtype": "binary"}, "dtype 'binary'", "set bits=1"),
        ({"bits": 3, "dtype": "ternary"}, "dtype 'ternary'", "set bits=2"),
        ({"bits": 1, "dtype": "binary", "signed": False}, "signed", "signed=True"),
        ({"bits": 2, "dtype": "ternary", "symmetric": False}, "symmetric", "symmetric=True"),
        ({"bits": 2, "dtype": "ternary", "granularity": "per_group", "group_size": 4}, "per_group",
         "granularity='per_tensor'"),
        ({"bits": 1, "dtype": "binary", "rounding": "stochastic"}, "rounding='stochastic'",
         "rounding='nearest_even'"),
        ({"bits": 8, "signed": False, "narrow": True}, "narrow=True", "set signed=True or narrow=False"),
        ({"bits": 4, "granularity": "per_group"}, "group_size", "set group_size"),
        ({"bits": 4, "group_size": 32}, "group_size=32", "granularity='per_group'"),
        ({"bits": 4, "granularity": "per_group", "group_size": 0}, "group_size", "greater than or equal to 1"),
        ({"bits": 8, "granularity": "per_row"}, "granularity", "per_tensor"),
        ({"bits": 8, "scale_type": "log"}, "scale_type", "power_of_two"),
        ({"bits": 8, "rounding": "floor"}, "rounding", "stochastic"),
        ({"bits": 8, "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_impossible_combinations_name_field_and_fix(kwargs, field, fix):
    with pytest.raises(ValidationError) as info:
        QuantSpec(**kwargs)
    msg = str(info.value)
    assert field in msg and fix in msg, msg
    assert isinstance(info.value, ValueError)  # pydantic's ValidationError is a ValueError


def test_spec_is_frozen_and_hashable():
    spec = QuantSpec(bits=4)
    with pytest.raises(ValidationError):
        spec.bits = 3
    assert hash(spec) == hash(QuantSpec(bits=4))


def test_json_round_trip_and_copy_revalidation():
    spec = QuantSpec(bits=4, signed=False, symmetric=False, granularity="per_group", axis=1, group_size=16,
                     scale_type="power_of_two", rounding="stochastic")
    assert QuantSpec.model_validate_json(spec.model_dump_json()) == spec
    assert int_spec(4, granularity="per_channel") == QuantSpec(bits=4, granularity="per_channel")


def test_describe_labels():
    assert QuantSpec(bits=8).describe() == "int8 sym per_tensor"
    assert QuantSpec(bits=4, signed=False, symmetric=False, granularity="per_channel", axis=1).describe() == (
        "uint4 asym per_channel(1)")
    assert QuantSpec(bits=4, granularity="per_group", group_size=32, narrow=True, scale_type="power_of_two",
                     rounding="stochastic").describe() == "int4 sym per_group(0,32) narrow pow2 stochastic"
    assert QuantSpec(bits=2, dtype="ternary").describe() == "ternary"
