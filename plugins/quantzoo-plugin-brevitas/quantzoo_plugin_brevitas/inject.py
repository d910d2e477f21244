"""A small dict-based injector: quantizer presets as classes of settings, overridden in the Brevitas manner.

Brevitas (Xilinx/brevitas ``src/brevitas/inject``, ``quant/base.py``, ``quant/scaled_int.py``) composes each
quantizer from mixins resolved by a dependency-injection engine. quantzoo keeps only what that engine is used
for in practice: a preset is a class whose ``settings`` dict holds the knobs, ``Preset.let(bit_width=4)`` makes a
new preset with some knobs changed, and layers accept prefixed keywords (``weight_bit_width=4``) that are applied
the same way. Unknown knobs raise :class:`~quantzoo.errors.ConfigError` naming the knob and the valid ones (the
opacity of where ``bit_width`` is resolved is a known Brevitas pain point, #226/#247/#424).
"""

from __future__ import annotations

from typing import Any, ClassVar

from quantzoo.errors import ConfigError

#: Every knob a preset may set, with what it means (the names are Brevitas').
KNOBS: dict[str, str] = {
    "quant_type": "'int' or 'binary' (Brevitas QuantType; the ternary preset is a 2-bit narrow int)",
    "bit_width": "bits of the integer code (1 for binary)",
    "signed": "signed range [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b-1]",
    "narrow_range": "drop the most negative code: ±(2^(b-1)-1)",
    "scaling_impl_type": "weights: 'stats' (recomputed each call) or 'const'; activations: "
                         "'parameter_from_stats' (statistics, then a learned parameter)",
    "scaling_stats_op": "'max' (max|x|) or 'percentile' (high percentile of |x|)",
    "high_percentile_q": "percentile in (0, 100] for scaling_stats_op='percentile'",
    "collect_stats_steps": "training steps of statistics before the scale becomes a learned parameter",
    "scaling_stats_momentum": "momentum of the running statistic (None: cumulative average)",
    "scaling_per_output_channel": "one scale per output channel (dim 0) instead of one per tensor",
    "restrict_scaling_type": "'fp' (any float scale) or 'power_of_two' (2^int(log2 s))",
    "restrict_value_float_to_int_impl": "how a power-of-two scale's log2 becomes an integer: 'round' "
                                        "(Brevitas' default) or 'ceil' (the fixed-point presets)",
    "scaling_const": "the scale of 'const' scaling (binary/ternary presets)",
}

_CHOICES = {
    "quant_type": ("int", "binary"),
    "scaling_impl_type": ("stats", "parameter_from_stats", "const"),
    "scaling_stats_op": ("max", "percentile"),
    "restrict_scaling_type": ("fp", "power_of_two"),
    "restrict_value_float_to_int_impl": ("round", "ceil"),
}


class Injector:
    """Base of every preset: ``settings`` (a dict of knobs) and :meth:`let` for overrides."""

    settings: ClassVar[dict[str, Any]] = {}

    @classmethod
    def let(cls, **overrides: Any) -> type["Injector"]:
        """A new preset with ``overrides`` applied (``Int8WeightPerTensorFloat.let(bit_width=4)``)."""
        merged = validate_settings({**cls.settings, **overrides}, owner=cls.__name__)
        return type(cls.__name__, (cls,), {"settings": merged, "__doc__": cls.__doc__})

    @classmethod
    def resolved(cls) -> dict[str, Any]:
        """The validated settings."""
        return validate_settings(dict(cls.settings), owner=cls.__name__)


def validate_settings(settings: dict[str, Any], owner: str) -> dict[str, Any]:
    """Check knob names, choices and ranges; raise ConfigError naming the knob and the fix."""
    for key, value in settings.items():
        if key not in KNOBS:
            raise ConfigError(f"{owner}: unknown quantizer setting {key!r}; valid settings: {', '.join(KNOBS)}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{owner}: {key}={value!r} is not one of {_CHOICES[key]}")
    qt, bits = settings.get("quant_type", "int"), settings.get("bit_width", 8)
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(f"{owner}: bit_width must be an integer such as 8, got {bits!r}")
    if qt == "int" and not 2 <= bits <= 16:
        raise ConfigError(f"{owner}: bit_width={bits} is outside 2..16 for integer quantization "
                          "(use SignedBinaryWeightPerTensorConst for 1 bit)")
    if qt == "binary" and bits != 1:
        raise ConfigError(f"{owner}: binary quantization has bit_width=1, got {bits}")
    if qt != "int" and settings.get("scaling_impl_type", "const") != "const":
        raise ConfigError(f"{owner}: {qt} presets use scaling_impl_type='const'")
    q = settings.get("high_percentile_q", 99.999)
    if not 0 < float(q) <= 100:
        raise ConfigError(f"{owner}: high_percentile_q={q} must lie in (0, 100]")
    steps = settings.get("collect_stats_steps", 300)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{owner}: collect_stats_steps={steps!r} must be an integer >= 1")
    if settings.get("narrow_range") and not settings.get("signed", True):
        raise ConfigError(f"{owner}: narrow_range=True needs signed=True")
    return settings


def split_prefixed(kwargs: dict[str, Any], prefixes: tuple[str, ...]) -> tuple[dict[str, dict], dict[str, Any]]:
    """Split ``{"weight_bit_width": 4, "stride": 2}`` into ``({"weight": {"bit_width": 4}}, {"stride": 2})``.

    A key ``<prefix>_quant`` is the quantizer itself and is not split.
    """
    injected: dict[str, dict] = {p: {} for p in prefixes}
    rest = {}
    for key, value in kwargs.items():
        for p in prefixes:
            if key.startswith(p + "_") and key != p + "_quant":
                injected[p][key[len(p) + 1:]] = value
                break
        else:
            rest[key] = value
    return injected, rest


# ---------------------------------------------------------------------------------------------------------
# presets (quant/scaled_int.py, quant/binary.py, quant/ternary.py)
# ---------------------------------------------------------------------------------------------------------
class Int8WeightPerTensorFloat(Injector):
    """Narrow signed 8-bit weights, ``s = max|W| / 127`` recomputed from the weight at every call."""

    settings = {"quant_type": "int", "bit_width": 8, "signed": True, "narrow_range": True,
                "scaling_impl_type": "stats", "scaling_stats_op": "max", "scaling_per_output_channel": False,
                "restrict_scaling_type": "fp"}


class Int8WeightPerChannelFloat(Int8WeightPerTensorFloat):
    """As :class:`Int8WeightPerTensorFloat` with one scale per output channel."""

    settings = {**Int8WeightPerTensorFloat.settings, "scaling_per_output_channel": True}


class Int8WeightPerTensorFixedPoint(Int8WeightPerTensorFloat):
    """Power-of-two scale ``2^ceil(log2 max|W|) / 2^(b-1)`` (Brevitas' fixed-point presets: ``CeilSte`` and
    ``PowerOfTwoIntScaling``, whose integer threshold is ``2^(b-1)`` even for a narrow range)."""

    settings = {**Int8WeightPerTensorFloat.settings, "restrict_scaling_type": "power_of_two",
                "restrict_value_float_to_int_impl": "ceil"}


class Int8ActPerTensorFloat(Injector):
    """Signed 8-bit activations, ``s = p99.999(|x|) / 128`` over the first 300 training steps, then learned."""

    settings = {"quant_type": "int", "bit_width": 8, "signed": True, "narrow_range": False,
                "scaling_impl_type": "parameter_from_stats", "scaling_stats_op": "percentile",
                "high_percentile_q": 99.999, "collect_stats_steps": 300, "scaling_stats_momentum": 0.1,
                "scaling_per_output_channel": False, "restrict_scaling_type": "fp"}


class Uint8ActPerTensorFloat(Int8ActPerTensorFloat):
    """Unsigned 8-bit activations (ReLU outputs), ``s = p99.999 / 255``, then learned."""

    settings = {**Int8ActPerTensorFloat.settings, "signed": False}


class Int8ActPerTensorFixedPoint(Int8ActPerTensorFloat):
    """Signed 8-bit activations, ``s = p99.999/128`` while collecting statistics (not yet a power of two), then
    the learned ``2^ceil(log2 threshold) / 128``."""

    settings = {**Int8ActPerTensorFloat.settings, "restrict_scaling_type": "power_of_two",
                "restrict_value_float_to_int_impl": "ceil"}


class Uint8ActPerTensorFixedPoint(Uint8ActPerTensorFloat):
    """Unsigned 8-bit activations, ``s = p99.999/256`` while collecting statistics, then the learned
    ``2^ceil(log2 threshold) / 256`` (``PowerOfTwoIntScaling``: ``2^b`` for unsigned)."""

    settings = {**Uint8ActPerTensorFloat.settings, "restrict_scaling_type": "power_of_two",
                "restrict_value_float_to_int_impl": "ceil"}


class SignedBinaryWeightPerTensorConst(Injector):
    """Binary weights ``±0.1``: the weight is first clipped in place to ``[-0.1, 0.1]`` (Brevitas'
    ``ClampedBinaryQuant`` with ``InplaceTensorClampSte``), then ``sign(w)·0.1`` (sign(0)=+1), identity STE."""

    settings = {"quant_type": "binary", "bit_width": 1, "signed": True, "narrow_range": False,
                "scaling_impl_type": "const", "scaling_const": 0.1, "scaling_per_output_channel": False,
                "restrict_scaling_type": "fp"}


class SignedTernaryWeightPerTensorConst(Injector):
    """Ternary weights ``{-1, 0, 1}·0.1``: a 2-bit narrow integer quantizer with the constant scale 0.1
    (Brevitas ``NarrowIntQuant`` + ``PerTensorConstScaling2bit``), ``clamp(round(w/0.1), -1, 1)·0.1``,
    identity STE through round and clamp."""

    settings = {"quant_type": "int", "bit_width": 2, "signed": True, "narrow_range": True,
                "scaling_impl_type": "const", "scaling_const": 0.1,
                "scaling_per_output_channel": False, "restrict_scaling_type": "fp"}


PRESETS: dict[str, type[Injector]] = {cls.__name__: cls for cls in (
    Int8WeightPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFixedPoint,
    Int8ActPerTensorFloat, Uint8ActPerTensorFloat, Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint,
    SignedBinaryWeightPerTensorConst, SignedTernaryWeightPerTensorConst,
)}


def get_preset(name: str) -> type[Injector]:
    """A preset by class name (ConfigError listing the presets otherwise)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown Brevitas quantizer preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
