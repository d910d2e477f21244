"""The harness-setting guard of ``config_for_bits``, derived from a method's capabilities (one rule for all),
and the base of the QAT methods with weight and activation widths."""

from __future__ import annotations

from ..errors import UnsupportedError
from ..quantizer import Capabilities, Quantizer


def _span(widths) -> str:
    widths = sorted(widths)
    if widths and widths == list(range(widths[0], widths[-1] + 1)) and len(widths) > 2:
        return f"{widths[0]}..{widths[-1]}"
    return "/".join(map(str, widths))


def check_bits_setting(cls, w_bits: int, a_bits: int | None) -> None:
    """Raise :class:`UnsupportedError` unless ``w_bits`` is in ``cls.capabilities.weight_bits`` and ``a_bits``
    in its ``activation_bits`` (``None``, float activations, needs 32 there or an empty tuple)."""
    caps = cls.capabilities
    acts = [b for b in caps.activation_bits if b != 32]
    float_ok = not caps.activation_bits or 32 in caps.activation_bits
    ok_a = float_ok if a_bits is None else a_bits in acts
    if w_bits not in caps.weight_bits or not ok_a:
        a_text = (f"A{_span(acts)}" if acts else "") + (" or float activations" if float_ok and acts else
                                                         "float activations" if float_ok else "")
        raise UnsupportedError(f"{cls.name} supports W{_span(caps.weight_bits)} with {a_text.strip()}, "
                               f"not W{w_bits}A{a_bits}")


class WeightActivationQAT(Quantizer):
    """Base of the QAT methods whose config has ``weight_bits`` and ``activation_bits`` fields (LSQ, PACT):
    W2..8 with A2..8 or float activations, trained."""

    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 9)), activation_bits=(*range(2, 9), 32),
                                needs_training=True)

    @classmethod
    def config_for_bits(cls, w_bits, a_bits):
        check_bits_setting(cls, w_bits, a_bits)
        return cls.Config(weight_bits=w_bits, activation_bits=a_bits)
