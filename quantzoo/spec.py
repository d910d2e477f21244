"""`QuantSpec`: what a quantized tensor looks like (bits, range, granularity, scale and rounding rules).

One spec describes one tensor role (a weight, an activation). Methods build their configs from specs; the
math in :mod:`quantzoo.math` and the observers in :mod:`quantzoo.observers` read them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Granularity = Literal["per_tensor", "per_channel", "per_group"]


class QuantSpec(BaseModel):
    """A quantization format for one tensor.

    ``dtype="int"`` is uniform affine integer quantization with ``bits`` in 2..16. ``"binary"`` (1 bit,
    sign with sign(0)=+1) and ``"ternary"`` ({-1, 0, +1} times a scale, stored in 2 bits) are the
    low-bit formats of BNN/XNOR-Net and TWN; both are symmetric and signed by definition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bits: int = Field(8, description="Bit width: 2..16 for dtype 'int', 1 for 'binary', 2 for 'ternary'.")
    dtype: Literal["int", "binary", "ternary"] = "int"
    signed: bool = Field(True, description="Signed integer range [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b-1].")
    symmetric: bool = Field(True, description="Zero-point fixed at 0 (symmetric) or computed (asymmetric).")
    narrow: bool = Field(False, description="Drop the most negative code: [-(2^(b-1)-1), 2^(b-1)-1] (signed only).")
    granularity: Granularity = "per_tensor"
    axis: int = Field(0, description="Channel axis for per_channel, grouped axis for per_group.")
    group_size: int | None = Field(None, ge=1, description="Elements per group along `axis` (per_group only).")
    scale_type: Literal["float", "power_of_two"] = "float"
    rounding: Literal["nearest_even", "stochastic"] = "nearest_even"

    @model_validator(mode="before")
    @classmethod
    def _strict_bits(cls, data):
        # "eight", 8.5 and True are not bit widths; pydantic's lax mode would accept some of them.
        if isinstance(data, dict) and "bits" in data:
            b = data["bits"]
            if isinstance(b, bool) or not isinstance(b, int):
                raise ValueError(f"bits must be an integer such as 8, got {b!r}: set bits=<int>")
        return data

    @model_validator(mode="after")
    def _check(self) -> "QuantSpec":
        # Every message names the offending field(s) and the change that makes the spec valid.
        b = self.bits
        if self.dtype == "int":
            if not 2 <= b <= 16:
                fix = "use dtype='binary' for 1 bit" if b == 1 else "choose bits between 2 and 16"
                raise ValueError(f"bits={b} is outside 2..16 for dtype 'int': {fix}")
        elif self.dtype == "binary":
            if b != 1:
                raise ValueError(f"bits={b} with dtype 'binary': set bits=1")
        elif b != 2:
            raise ValueError(f"bits={b} with dtype 'ternary': set bits=2")
        if self.dtype != "int":
            if not self.symmetric or not self.signed:
                raise ValueError(
                    f"dtype '{self.dtype}' is symmetric and signed by definition: set symmetric=True, signed=True"
                )
            if self.granularity == "per_group":
                raise ValueError(
                    f"granularity 'per_group' is not defined for dtype '{self.dtype}': "
                    "use granularity='per_tensor' or 'per_channel'"
                )
            if self.rounding != "nearest_even":
                raise ValueError(
                    f"rounding='{self.rounding}' has no meaning for dtype '{self.dtype}' (sign/threshold, no "
                    "rounding): set rounding='nearest_even'"
                )
        if self.narrow and not self.signed:
            raise ValueError(
                "narrow=True needs signed=True (narrow drops the most negative signed code): "
                "set signed=True or narrow=False"
            )
        if self.granularity == "per_group" and self.group_size is None:
            raise ValueError("granularity 'per_group' needs group_size: set group_size (e.g. group_size=32)")
        if self.granularity != "per_group" and self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size} is only used with granularity='per_group': "
                "remove group_size or set granularity='per_group'"
            )
        return self

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        if self.dtype == "binary":
            return -1
        if self.dtype == "ternary":
            return -1
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        if self.dtype in ("binary", "ternary"):
            return 1
        return 2**self.bits - 1 if not self.signed else 2 ** (self.bits - 1) - 1

    @property
    def levels(self) -> int:
        """Number of distinct representable values."""
        if self.dtype == "binary":
            return 2
        return self.qmax - self.qmin + 1

    def describe(self) -> str:
        """Short human label, e.g. ``int8 sym per_channel(0)``."""
        if self.dtype != "int":
            return self.dtype
        kind = ("int" if self.signed else "uint") + str(self.bits)
        sym = "sym" if self.symmetric else "asym"
        gran = self.granularity
        if gran == "per_channel":
            gran += f"({self.axis})"
        elif gran == "per_group":
            gran += f"({self.axis},{self.group_size})"
        extra = " narrow" if self.narrow else ""
        extra += " pow2" if self.scale_type == "power_of_two" else ""
        extra += " stochastic" if self.rounding == "stochastic" else ""
        return f"{kind} {sym} {gran}{extra}"


def int_spec(bits: int, **kw) -> QuantSpec:
    """Shorthand: ``int_spec(4, granularity="per_channel")``."""
    return QuantSpec(bits=bits, **kw)
