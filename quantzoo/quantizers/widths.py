"""The base of QAT methods whose config names its widths ``weight_bits`` and ``activation_bits`` (LSQ, PACT)."""

from __future__ import annotations

from ..quantizer import Capabilities, Quantizer


class WeightActivationQAT(Quantizer):
    """W2..8 with A2..8 or float activations, trained; ``config_for_bits`` fills the two width fields."""

    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 9)), activation_bits=(*range(2, 9), None),
                                needs_training=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits, activation_bits=a_bits)
