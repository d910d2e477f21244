"""The quantization math every method calls: one implementation, cited, tested against torch and by hand."""

from .binary import binarize, sign, ste, ternary_codes
from .packing import PACKABLE_BITS, pack_bits, pack_signed, unpack_bits, unpack_signed
from .ste import grad_scale, lsq_fake_quantize, lsq_grad_factor, round_ste
from .uniform import (
    compute_qparams,
    dequantize,
    expand_qparam,
    fake_quantize,
    quantize,
    reduce_min_max,
    round_to_power_of_two,
    uses_fused_kernel,
)

__all__ = [
    "PACKABLE_BITS",
    "binarize",
    "compute_qparams",
    "dequantize",
    "expand_qparam",
    "fake_quantize",
    "grad_scale",
    "lsq_fake_quantize",
    "lsq_grad_factor",
    "pack_bits",
    "pack_signed",
    "quantize",
    "reduce_min_max",
    "round_ste",
    "round_to_power_of_two",
    "sign",
    "ste",
    "ternary_codes",
    "unpack_bits",
    "unpack_signed",
    "uses_fused_kernel",
]
