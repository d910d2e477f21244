"""Quantization schemes: the hardware settings a benchmark asks every method to follow (MQBench's backends).

A scheme fixes what a deployment target can execute, independently of the method: weight granularity,
symmetric or asymmetric ranges, and power-of-two scales (Li et al. 2021, MQBench, NeurIPS Datasets and
Benchmarks, Table 2; docs/benchmark-protocol.md). A method that has the knobs follows a scheme in its
:meth:`~quantzoo.Quantizer.apply_scheme`; one that cannot raises :class:`~quantzoo.errors.UnsupportedError`
and runs its own scheme, which its leaderboard row says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .spec import QuantSpec


class Scheme(BaseModel):
    """Weight granularity and the symmetry and scale type of weights and activations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    weight_granularity: Literal["per_tensor", "per_channel"]
    #: activations: asymmetric (a zero point, unsigned codes) or symmetric (zero point 0, signed codes)
    activation_symmetric: bool
    scale_type: Literal["float", "power_of_two"] = "float"

    def weight_spec(self, bits: int) -> QuantSpec:
        """Symmetric weights at ``bits`` (every scheme here has symmetric weights)."""
        return QuantSpec(bits=bits, symmetric=True, granularity=self.weight_granularity, axis=0,
                         scale_type=self.scale_type)

    def activation_spec(self, bits: int) -> QuantSpec:
        if self.activation_symmetric:
            return QuantSpec(bits=bits, signed=True, symmetric=True, scale_type=self.scale_type)
        return QuantSpec(bits=bits, signed=False, symmetric=False, scale_type=self.scale_type)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme(name="x86", description="torch.ao x86/fbgemm: per-channel symmetric weights, asymmetric per-tensor "
                                   "activations", weight_granularity="per_channel", activation_symmetric=False),
    Scheme(name="academic", description="MQBench academic: per-tensor symmetric weights and activations",
           weight_granularity="per_tensor", activation_symmetric=True),
    Scheme(name="tensorrt", description="TensorRT-like: per-channel symmetric weights, symmetric per-tensor "
                                        "activations", weight_granularity="per_channel", activation_symmetric=True),
    Scheme(name="pow2", description="Vitis AI / TVM power2: per-tensor symmetric power-of-two scales",
           weight_granularity="per_tensor", activation_symmetric=True, scale_type="power_of_two"),
)}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ConfigError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)} (or 'method' for each "
                          "method's own)") from None
