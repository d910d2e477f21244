"""`QuantTensor`: what a layer with ``return_quant_tensor=True`` emits (Brevitas' ``IntQuantTensor``).

It carries the dequantized ``value`` together with ``scale``, ``zero_point``, ``bit_width`` and ``signed``, so
that the integer codes ``value/scale + zero_point`` can be recovered exactly. Torch functions and tensor
methods applied to it act on ``value`` and return plain tensors (a max-pool or a flatten of a QuantTensor is a
tensor); quantzoo layers accept it as input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantTensor:
    value: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bit_width: int
    signed: bool
    training: bool = False

    def int(self) -> torch.Tensor:
        """The integer codes ``round(value/scale) + zero_point`` (exact for a valid QuantTensor), as int32."""
        s, z = self._broadcast(self.scale), self._broadcast(self.zero_point)
        return (torch.round(self.value.detach() / s) + z).to(torch.int32)

    @property
    def is_valid(self) -> bool:
        """Whether ``value`` lies on the grid ``(q − z)·s`` with ``q`` inside the bit width's range."""
        q = self.int()
        lo = -(2 ** (self.bit_width - 1)) if self.signed else 0
        hi = 2 ** (self.bit_width - 1) - 1 if self.signed else 2**self.bit_width - 1
        if self.bit_width == 1:
            lo, hi = -1, 1
        on_grid = torch.allclose((q.float() - self._broadcast(self.zero_point)) * self._broadcast(self.scale),
                                 self.value.detach(), rtol=1e-5, atol=1e-7)
        return bool(on_grid and q.min() >= lo and q.max() <= hi)

    def _broadcast(self, p: torch.Tensor) -> torch.Tensor:
        p = p.detach()
        if p.dim() == 0 or self.value.dim() < 2:
            return p
        shape = [1] * self.value.dim()
        shape[1 if p.numel() == self.value.shape[1] else 0] = -1
        return p.reshape(shape)

    # Acting like a tensor: everything not defined here is the value's.
    def __getattr__(self, name):
        if name in ("value", "scale", "zero_point", "bit_width", "signed", "training"):
            raise AttributeError(name)
        return getattr(self.value, name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda a: a.value if isinstance(a, QuantTensor) else a  # noqa: E731
        args = tuple(unwrap(a) if not isinstance(a, (list, tuple)) else type(a)(unwrap(b) for b in a) for a in args)
        kwargs = {k: unwrap(v) for k, v in (kwargs or {}).items()}
        return func(*args, **kwargs)

    def __add__(self, other):
        return self.value + (other.value if isinstance(other, QuantTensor) else other)

    __radd__ = __add__

    def __mul__(self, other):
        return self.value * (other.value if isinstance(other, QuantTensor) else other)

    __rmul__ = __mul__


def value_of(x):
    """The plain tensor behind ``x`` (a QuantTensor's value, or ``x`` itself)."""
    return x.value if isinstance(x, QuantTensor) else x
