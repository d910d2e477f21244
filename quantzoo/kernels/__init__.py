"""Bit-serial CPU kernels for binary and ternary layers: what the ``packed`` backend runs them on.

A layer with binary (±α) or ternary (α·{−1, 0, +1}) weights whose input quantizer yields sign bits, {0, 1}
or k-bit unsigned codes computes, per output position p and channel o, the exact integer

    d[p, o] = Σ_{real taps, channels} u(x)·v(w)

(u = ±1 for sign inputs, ``q − z`` for codes q with zero code z; v = ±1 or −1/0/+1) as AND-popcounts over bit
planes — bit b of every input code is one plane, the weight is one row of bits per sign:

* binary weights, ``v = 1 − 2·neg``: ``Σ x_b·v = popcount(x_b ∧ 1) − 2·popcount(x_b ∧ neg_o)`` (the all-ones
  row is shared by every channel);
* ternary weights (TWN on two bit planes), ``v = pos − neg``: ``Σ x_b·v = popcount(x_b ∧ pos_o) −
  popcount(x_b ∧ neg_o)``;
* k-bit inputs are bit-serial: ``Σ q·v = Σ_b 2^b·Σ x_b·v`` — while planes × weight rows ≤ 2 (DoReFa
  W1A2); beyond, the codes are kept as bytes and multiplied by the int8 weight values (−1/0/+1) with
  VPMADDUBSW (``"ternary-i8"`` for TWN W2A8), 32 multiply-accumulates per instruction instead of 16
  popcounts per 64.

For sign inputs (bit 1 = −1) ``Σ u·v = Σ v − 2·Σ x_b·v``: with binary weights this is XNOR-Net's
``n − 2·popcount(x ⊕ w)`` (Rastegari et al. 2016, arXiv:1603.05279 §3.2; ``popcount(x ⊕ w) = popcount(x) +
popcount(w) − 2·popcount(x ∧ w)``), so one AND-popcount GEMM serves XNOR-Net and BNN (sign × sign), DoReFa
W1A1 ({0, 1} × sign) and TWN (ternary × codes). A zero-padded tap holds the value 0: the padding pixels
carry the code z (so they add nothing), and for sign inputs, which have no zero, the epilogue subtracts the
weights of the padded taps — the result is exact at the border too.

The convolution is direct: each input image is packed once into bit planes ``[P][H+2p][W+2p][C/8]`` (fused
with the sign/threshold/affine code and, for XNOR-Net, the mean |x| of the K map; no float im2col), and
the window of an output position is read in place, one contiguous run of bytes per kernel row. Linear layers
are the 1×1 case (the byte kernel reads a byte image ``[H+2p][W+2p][C]`` the same way). The float epilogue
then gives ``y = (d·α_o·s + b_o)·K_p`` (α the weight scale — XNOR-Net's per-filter α, BNN's 1, DoReFa's E|w|,
TWN's α —, s the input code step, b the bias, K XNOR-Net's scaling map).

Exactness: ``d`` is exact (integer arithmetic); the epilogue rounds once per product where the fake-quant
model sums ±α terms in float32, so outputs agree to float32 rounding, not bit for bit (tests/
test_binary_kernels.py states and checks the tolerance). The three ISA variants give identical outputs.

:func:`library` builds and loads the C++ code (:mod:`quantzoo.kernels.build`), :func:`plan_kernel` decides
per layer (:mod:`quantzoo.kernels.layer`), :class:`KernelInput` is how input quantizers declare their codes.
"""

from .build import ISA_ENV, ISAS, cache_dir, cpu_isas, library, select_isa, unavailable_reason
from .inputs import KernelInput, kernel_input
from .layer import BitKernel, plan_kernel, weight_kind

__all__ = [
    "ISAS",
    "ISA_ENV",
    "BitKernel",
    "KernelInput",
    "cache_dir",
    "cpu_isas",
    "kernel_input",
    "library",
    "plan_kernel",
    "select_isa",
    "unavailable_reason",
    "weight_kind",
]
