"""Bit packing: store 1-, 2-, 4- (and 8-) bit integer codes densely in bytes.

Codes are unsigned, ``0 <= c < 2**bits``; signed values are packed as ``q - qmin`` by the caller (see
:func:`pack_signed`). Within a byte the first element sits in the lowest bits (little-endian order,
as numpy's ``packbits(bitorder="little")``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

PACKABLE_BITS = (1, 2, 4, 8)


def _check_bits(bits: int) -> int:
    if bits not in PACKABLE_BITS:
        raise ConfigError(f"bits={bits} cannot be packed: use one of {PACKABLE_BITS}")
    return 8 // bits


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes (any integer dtype, any shape) into a flat uint8 tensor of ``ceil(n*bits/8)`` bytes."""
    per_byte = _check_bits(bits)
    flat = codes.detach().reshape(-1).to(torch.int64)
    if flat.numel() and (flat.min() < 0 or flat.max() >= 2**bits):
        raise DataError(
            f"pack_bits: codes must lie in [0, {2**bits - 1}] for {bits} bits, got [{int(flat.min())}, "
            f"{int(flat.max())}]: offset signed codes with pack_signed"
        )
    pad = (-flat.numel()) % per_byte
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(per_byte, dtype=torch.int64, device=flat.device) * bits
    packed = (flat.reshape(-1, per_byte) << shifts).sum(dim=1)
    return packed.to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a flat uint8 tensor."""
    per_byte = _check_bits(bits)
    if packed.numel() * per_byte < numel:
        raise DataError(f"unpack_bits: {packed.numel()} bytes hold fewer than {numel} codes of {bits} bits: "
                        "pass the numel that was packed")
    shifts = torch.arange(per_byte, dtype=torch.int64, device=packed.device) * bits
    mask = (1 << bits) - 1
    codes = (packed.to(torch.int64).reshape(-1, 1) >> shifts) & mask
    return codes.reshape(-1)[:numel].to(torch.uint8)


def pack_signed(q: torch.Tensor, bits: int, qmin: int) -> torch.Tensor:
    """Pack signed integer codes ``q >= qmin`` by offsetting them to ``q - qmin``."""
    return pack_bits(q.to(torch.int64) - qmin, bits)


def unpack_signed(packed: torch.Tensor, bits: int, qmin: int, shape: torch.Size | tuple) -> torch.Tensor:
    """Inverse of :func:`pack_signed`, reshaped to ``shape`` (int32)."""
    n = 1
    for d in shape:
        n *= d
    return (unpack_bits(packed, bits, n).to(torch.int32) + qmin).reshape(shape)
