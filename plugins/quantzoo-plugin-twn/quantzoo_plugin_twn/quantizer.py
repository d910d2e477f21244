"""TWN: ternary weights ``W_t = α·t``, ``t ∈ {−1, 0, +1}``, trained with the straight-through estimator.

Li & Liu 2016, "Ternary Weight Networks", arXiv:1605.04711:

* eq. 3: ``t_i = +1 if W_i > Δ, −1 if W_i < −Δ, else 0`` (:func:`quantzoo.math.ternary_codes`);
* eq. 9: ``Δ* ≈ 0.7·E(|W|) = 0.7/n · Σ|W_i|`` (the paper's approximation for normally/uniformly spread W);
* eq. 10: ``α* = 1/|I_Δ| · Σ_{i∈I_Δ} |W_i|`` with ``I_Δ = {i : |W_i| > Δ}``.

Δ and α are computed from the current weights at every forward pass, per layer (the paper) or per output
channel (``per_channel=True``, as micronet's wbwtab does). The forward pass uses ``α·t``; the backward
pass hands the gradient of the ternary weight straight to the float weight (the paper's §3.2: "ternary-valued
weights are used in the forward and backward, the gradient updates the full-precision weights").

Anchors: micronet computes the same Δ/α per output channel; its ``sign(sign(w+Δ)+sign(w−Δ))`` gives the
same codes as eq. 3 except exactly at ``|w| = Δ``, where it is ``±1`` (eq. 3: 0), and its gradient is
``α·g`` plus the path through α instead of the straight-through ``g`` (tests/test_anchor_micronet.py).
First/last layers: the paper does not say it keeps them full precision; we default to FP (micronet's
convention and the project's policy for low-bit nets) — set ``first_layer``/``last_layer`` to change it.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, QuantSpec, Quantizer
from quantzoo.math import ste, ternary_codes
from quantzoo.nn import CodedWeightQuantizer, FakeQuant, WeightCodes, swap_layers, to_quant_layer
from quantzoo.observers import MovingAverageMinMaxObserver
from quantzoo.policy import LayerPolicy


class TernaryWeight(CodedWeightQuantizer):
    """``α·t`` from eq. 3/9/10, stored as 2-bit codes ``c = t + 1`` with ``scale = α``, ``offset = 1``."""

    bits = 2

    def __init__(self, threshold_factor: float = 0.7, per_channel: bool = False):
        super().__init__()
        self.threshold_factor = threshold_factor
        self.per_channel = per_channel

    def encode(self, w: torch.Tensor) -> WeightCodes:
        a = w.detach().abs()
        if self.per_channel:
            flat = a.reshape(a.shape[0], -1)
            delta = self.threshold_factor * flat.mean(dim=1)                    # eq. 9, per channel
            t = ternary_codes(w.detach(), delta.reshape([-1] + [1] * (w.dim() - 1)))
            mask = t.reshape(a.shape[0], -1) != 0
            alpha = (flat * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)     # eq. 10, per channel
        else:
            delta = self.threshold_factor * a.mean()                            # eq. 9
            t = ternary_codes(w.detach(), delta)
            mask = t != 0
            alpha = (a * mask).sum() / mask.sum().clamp(min=1)                  # eq. 10
        return WeightCodes(t + 1, alpha, torch.tensor(1.0), 2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return ste(w, self.encode(w).dequantize())  # STE: ∂L/∂W = ∂L/∂W_t

    def extra_repr(self) -> str:
        return f"delta={self.threshold_factor}·E|W|, per_channel={self.per_channel}"


class TWNConfig(LayerPolicyConfig):
    """TWN settings: threshold factor of eq. 9, per-layer or per-channel α/Δ, optional 8-bit activations."""

    threshold_factor: float = Field(0.7, gt=0, lt=1, description="Δ = factor·E|W| (paper: 0.7)")
    per_channel: bool = Field(False, description="Δ and α per output channel instead of per layer")
    activation_bits: int | None = Field(None, description="None: float activations (the paper); 8: uint8 fake-quant "
                                                          "inputs")
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"

    @field_validator("activation_bits")
    @classmethod
    def _a_bits(cls, v):
        if v not in (None, 8):
            raise ValueError(f"TWN keeps activations float (None) or 8-bit (8), not {v!r}")
        return v


class TWNQuantizer(Quantizer):
    """Ternary weights (α·{−1,0,+1}) with Δ = 0.7·E|W| and α = mean |W| above Δ; STE training."""

    name = "twn"
    family = "ternary"
    paper = "Li & Liu 2016, Ternary Weight Networks, arXiv:1605.04711"
    description = "Ternary weights α·{-1,0,+1}, Δ=0.7·E|W|, α=mean|W| over |W|>Δ, STE training; 2-bit packed."
    aliases = ("ternary-weight-networks",)
    Config = TWNConfig
    decomposes_attention = True  # attention projections quantized like every other Linear
    capabilities = Capabilities(qat=True, weight_bits=(2,), activation_bits=(8, None), needs_training=True)
    default_backend = "packed"

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(activation_bits=a_bits)

    @classmethod
    def bits_of_config(cls, config):
        return 2, config.activation_bits  # ternary weights are stored in 2 bits

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def ternary_layer(name, mod):
            act = None
            if cfg.activation_bits is not None:
                spec = QuantSpec(bits=cfg.activation_bits, signed=False, symmetric=False)
                act = FakeQuant(spec, MovingAverageMinMaxObserver(spec))
            return to_quant_layer(mod, weight_quantizer=TernaryWeight(cfg.threshold_factor, cfg.per_channel),
                                  input_quantizer=act)

        swap_layers(model, plan.method_layers(), ternary_layer)
        return model
