"""The quantization math every method calls: one implementation, cited, tested against torch and by hand."""

from .adaround import (
    adaround_fake_quantize,
    beta_schedule,
    init_rounding,
    inverse_rectified_sigmoid,
    rectified_sigmoid,
    rounding_regularizer,
)
from .packing import PACKABLE_BITS, pack_bits, pack_signed, unpack_bits, unpack_signed
from .binary import binarize, sign, ternary_codes
from .logarithmic import log_dequantize, log_quantize, log_quantize_codes
from .lowbit import dequantize_codes, dorefa_codes, dorefa_weight, grad_transform, quantize_unit, tanh_unit
from .straight_through import (
    grad_scale,
    lsq_fake_quantize,
    lsq_grad_factor,
    round_clamp_fake_quantize,
    round_ste,
    ste,
    stochastic_round_ste,
)
from .uniform import (
    compute_qparams,
    dequantize,
    expand_qparam,
    fake_quantize,
    quantize,
    reduce_min_max,
    reduction_rows,
    round_to_power_of_two,
    uses_fused_kernel,
)

__all__ = [
    "PACKABLE_BITS",
    "adaround_fake_quantize",
    "beta_schedule",
    "binarize",
    "compute_qparams",
    "dequantize",
    "dorefa_codes",
    "dorefa_weight",
    "dequantize_codes",
    "expand_qparam",
    "fake_quantize",
    "grad_scale",
    "log_dequantize",
    "log_quantize",
    "log_quantize_codes",
    "grad_transform",
    "init_rounding",
    "inverse_rectified_sigmoid",
    "lsq_fake_quantize",
    "lsq_grad_factor",
    "pack_bits",
    "pack_signed",
    "quantize",
    "quantize_unit",
    "rectified_sigmoid",
    "rounding_regularizer",
    "tanh_unit",
    "reduce_min_max",
    "reduction_rows",
    "round_clamp_fake_quantize",
    "round_ste",
    "round_to_power_of_two",
    "sign",
    "stochastic_round_ste",
    "ste",
    "ternary_codes",
    "unpack_bits",
    "unpack_signed",
    "uses_fused_kernel",
]
