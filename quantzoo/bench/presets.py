"""Protocol presets: a named deployment scheme as a protocol plus a config mapping per method that can follow it.

``pow2-per-tensor`` — the scheme of the Xilinx Vitis AI DPU and of TVM's ``power2`` quantization (MQBench's
"Vitis" and "TVM" rows, Li et al., NeurIPS 2021 benchmarks, Table 2), and of the YOLOv3 quantization project
the issue tracker names as its worked example:

* weights and activations are signed, symmetric integers with one scale per tensor, and every scale is a
  power of two, ``S = 2^ceil(log2(max|x| / 127.5))`` at 8 bits (rounded up, so the observed range still fits;
  :func:`quantzoo.math.round_to_power_of_two`), so that rescaling is a bit shift;
* BatchNorm is folded into the preceding convolution before quantization (``bn_fold = "before"``);
* every compute layer, the first and the last included, uses the same width (``first_layer = last_layer =
  "same"``);
* the bias is a 32-bit integer on the accumulator's scale ``S_w·S_x``. ``uniform`` keeps the bias in float32,
  which differs from that grid by at most ``S_w·S_x / 2`` per output (half a unit of the int32 accumulator),
  so these rows measure weight and activation rounding, not bias rounding; a method with a bias quantizer
  would set it here.

Ranges come from the ``minmax`` observers (the largest magnitude seen over the calibration set); Vitis AI's
own calibration searches the fixed-point position that minimises the squared error instead, so this preset is
the plain max-calibrated variant of the scheme.
"""

from __future__ import annotations

from ..quantizer import QuantizerConfig
from ..spec import QuantSpec

POW2_PER_TENSOR = "pow2-per-tensor"

#: What the preset fixes in the protocol (merged into the suite's protocol).
POW2_PROTOCOL = {"bn_fold": "before", "first_layer": "same", "last_layer": "same"}


def pow2_spec(bits: int) -> QuantSpec:
    """Signed symmetric per-tensor integers with a power-of-two scale."""
    return QuantSpec(bits=bits, signed=True, symmetric=True, granularity="per_tensor", scale_type="power_of_two")


def pow2_uniform_config(w_bits: int, a_bits: int) -> dict:
    """The ``uniform`` config overrides of the preset at W``w_bits``A``a_bits`` (for ``run_cell(config=...)``
    or a suite entry's ``config``)."""
    return {"weight": pow2_spec(w_bits).model_dump(), "activation": pow2_spec(a_bits).model_dump(),
            "weight_observer": "minmax", "activation_observer": "minmax",
            "first_layer": POW2_PROTOCOL["first_layer"], "last_layer": POW2_PROTOCOL["last_layer"]}


#: preset name -> (protocol fields, {method: config(w_bits, a_bits)})
PRESETS = {POW2_PER_TENSOR: (POW2_PROTOCOL, {"uniform": pow2_uniform_config})}


def preset_config(preset: str, method: str, w_bits: int, a_bits: int) -> QuantizerConfig:
    """The validated config of ``method`` under ``preset`` (:class:`~quantzoo.errors.UnsupportedError` when the
    method cannot follow it)."""
    from ..api import get_quantizer
    from ..errors import UnsupportedError

    _, methods = PRESETS[preset]
    cls = get_quantizer(method)
    if cls.name not in methods:
        raise UnsupportedError(f"{cls.name} has no mapping for preset {preset!r}; methods that follow it: "
                               f"{', '.join(methods)}")
    base = cls.config_for_bits(w_bits, a_bits).model_dump()
    return cls.make_config({**base, **methods[cls.name](w_bits, a_bits)})
