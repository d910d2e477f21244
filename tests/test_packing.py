"""Bit packing: layouts worked by hand (first element in the lowest bits), numpy agreement, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantzoo.errors import ConfigError, DataError
from quantzoo.math import pack_bits, pack_signed, unpack_bits, unpack_signed

torch.set_num_threads(1)


def test_two_bit_layout_by_hand():
    # [1, 2, 3, 0 | 2]: byte 0 = 1 + 2·4 + 3·16 + 0·64 = 57; byte 1 = 2 (padded with zeros).
    packed = pack_bits(torch.tensor([1, 2, 3, 0, 2]), 2)
    assert packed.dtype == torch.uint8 and packed.tolist() == [57, 2]
    assert unpack_bits(packed, 2, 5).tolist() == [1, 2, 3, 0, 2]


def test_four_bit_layout_by_hand():
    # [0xA, 0x5 | 0xF]: byte 0 = 0xA + 0x5·16 = 0x5A = 90; byte 1 = 0x0F = 15.
    assert pack_bits(torch.tensor([10, 5, 15]), 4).tolist() == [90, 15]


def test_one_bit_matches_numpy_little_endian_packbits():
    bits = torch.tensor([1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0])
    # byte 0 = 1 + 4 + 8 + 128 = 141; byte 1 = 1 + 2 = 3
    assert pack_bits(bits, 1).tolist() == [141, 3]
    assert pack_bits(bits, 1).numpy().tolist() == np.packbits(bits.numpy().astype(np.uint8),
                                                              bitorder="little").tolist()


def test_eight_bit_is_the_identity_layout():
    codes = torch.tensor([0, 255, 17, 128])
    assert pack_bits(codes, 8).tolist() == [0, 255, 17, 128]


def test_signed_round_trip_with_shape():
    # int4 codes [-8, 7] are stored as q - qmin = q + 8 in [0, 15].
    q = torch.tensor([[-8, 7, 0], [3, -1, -5]])
    packed = pack_signed(q, 4, -8)
    assert packed.numel() == 3  # 6 codes · 4 bits = 3 bytes
    assert packed.tolist()[0] == (0) + (15 << 4)  # -8 -> 0, 7 -> 15
    out = unpack_signed(packed, 4, -8, q.shape)
    assert out.dtype == torch.int32 and torch.equal(out, q.to(torch.int32))


def test_errors_name_the_fix():
    with pytest.raises(ConfigError, match="use one of"):
        pack_bits(torch.tensor([1]), 3)
    with pytest.raises(DataError, match=r"\[0, 3\]"):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(DataError, match="pack_signed"):
        pack_bits(torch.tensor([-1]), 4)
    with pytest.raises(DataError, match="fewer than"):
        unpack_bits(torch.tensor([1], dtype=torch.uint8), 4, 3)
