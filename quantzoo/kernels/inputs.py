"""What a layer's input quantizer makes of its input, in the terms the bit-serial kernels compute with.

An input quantizer that the kernels can run declares it with a method ``kernel_input() -> KernelInput``
(the low-bit plugins' own quantizers do, e.g. XNOR-Net's input and DoReFa's activation). The core's
:class:`~quantzoo.nn.packed.BinaryActivation` and plain 8-bit-or-less :class:`~quantzoo.nn.FakeQuant` are
known here by their exact type; a subclass must declare itself, since it may compute something else.
Anything else keeps its layer on the float path (:func:`kernel_input` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn


@dataclass(frozen=True)
class KernelInput:
    """How an input quantizer encodes ``x`` (``norm``, if any, runs first, in torch):

    * ``"sign"``: ``sign(x)`` with sign(0) = +1 (:func:`quantzoo.math.sign`), one bit plane; the value of a
      zero-padded tap is 0, which a sign bit cannot hold, so the kernel corrects the border exactly.
    * ``"unit"``: DoReFa's ``quantize_k(clamp(prescale·x, 0, 1))`` (Zhou et al. 2016, arXiv:1606.06160
      eq. 11; :func:`quantzoo.math.quantize_unit`): codes ``q = round((2^bits − 1)·clamp(prescale·x, 0, 1))``
      with value ``q/(2^bits − 1)``, ``bits`` planes.
    * ``"affine"``: ``clamp(round(x/scale) + zero_point, qmin, qmax)`` with value ``(q − zero_point)·scale``,
      round half to even with ``1/scale`` in float32 as ``torch.fake_quantize_per_tensor_affine``.

    ``scale_map="xnor"``: the output is multiplied by XNOR-Net's ``K = A ⊛ k``, ``A`` the mean ``|x|`` over
    channels and ``k`` the ``1/(kh·kw)`` box at the layer's own stride, padding and dilation (Rastegari et al.
    2016, arXiv:1603.05279 eq. 11; for Linear layers ``β = mean |x|`` of each input vector).
    """

    kind: Literal["sign", "unit", "affine"]
    bits: int = 1
    prescale: float = 1.0
    scale: float = 1.0
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 1
    scale_map: Literal["xnor"] | None = None
    norm: nn.Module | None = None

    def __post_init__(self):
        if self.kind not in ("sign", "unit", "affine"):
            raise ValueError(f"KernelInput kind must be sign, unit or affine, not {self.kind!r}")
        if self.kind == "sign" and self.bits != 1:
            raise ValueError("sign inputs have one bit")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"kernel inputs have 1..8 bits, not {self.bits}")

    @property
    def value_scale(self) -> float:
        """The real value of one code step (1 for sign inputs)."""
        if self.kind == "unit":
            return 1.0 / (2**self.bits - 1)
        return self.scale if self.kind == "affine" else 1.0


def kernel_input(iq: nn.Module | None) -> KernelInput | str:
    """The :class:`KernelInput` of a layer's input quantizer, or the reason its layer stays on the float path."""
    from ..nn.fake_quant import FakeQuant
    from ..nn.binary import BinaryActivation

    if iq is None:
        return "float input (no input quantizer)"
    declared = getattr(iq, "kernel_input", None)
    if callable(declared):
        return declared()
    if type(iq) is BinaryActivation:
        return KernelInput("sign", norm=iq.norm)
    if type(iq) is FakeQuant:
        spec = iq.spec
        if iq.learnable or iq.observing or not iq.quantizing or not bool(iq.initialized):
            return "input FakeQuant is not frozen (learnable, observing or not quantizing)"
        if spec.granularity != "per_tensor" or iq.scale.numel() != 1 or spec.bits > 8:
            return f"input FakeQuant {spec.describe()} is not per-tensor with at most 8 bits"
        scale, zp = iq.qparams()
        return KernelInput("affine", bits=spec.bits, scale=float(scale), zero_point=int(zp),
                           qmin=spec.qmin, qmax=spec.qmax)
    return f"input quantizer {type(iq).__name__} declares no kernel_input()"
