"""Quant-Noise with scalar intN noise (``quantnoise``): in each training forward pass a random fraction ``p`` of
the weights is replaced by its fake-quantized value; the converted model is fully quantized.

Fan, Stock et al. 2021, arXiv:2004.07320 §4 (noise function φ = intN quantization); fairseq's
``modules/quantization/scalar/modules/qlinear.py::IntLinear`` and ``utils.py::quantize_model_``:

* each weight is noised independently (``mask ~ Bernoulli(p)``), ``p`` in training and 1 at evaluation;
* ``W̃ = clamp(W, lo, hi) + [(q(W) − clamp(W))·mask]`` with the bracket a constant (straight-through),
  ``lo = (q_min − z)·s``, ``hi = (q_max − z)·s`` (:func:`quantzoo.math.quant_noise.scalar_noise`);
* ``(s, z)`` from the weights' min-max every ``update_step`` training forwards (fairseq's
  ``quantize_model_scalar`` passes 1000), per tensor and asymmetric (fairseq's ``method="tensor"``,
  ``MinMaxObserver``) or per output channel and symmetric (``"channel"``).

Corrections against fairseq (see the plugin README): no ``.cuda()`` anywhere (fairseq's ``emulate_int``
moves the qparams to CUDA); the noise is formed after the clamp, so ``p = 1`` is exactly ``q(w)``
(fairseq#2968); the observer range is the ``bits``-bit one, not 0..255 (fairseq#3858). fairseq's default
``"histogram"`` observer and its activation quantizer (p = 0: activations quantized only at evaluation) are
not reproduced: activations stay float, the setting of the paper's weight-compression results.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer
from quantzoo.math import compute_qparams, fake_quantize, reduce_min_max
from quantzoo.math.quant_noise import scalar_noise
from quantzoo.nn import bake_model, swap_layers, to_quant_layer
from quantzoo.policy import LayerPolicy
from quantzoo.spec import QuantSpec
from quantzoo.state_dict import AdoptSavedShapes


def scalar_spec(bits: int, method: str) -> QuantSpec:
    if method == "tensor":
        return QuantSpec(bits=bits, signed=False, symmetric=False)
    return QuantSpec(bits=bits, symmetric=True, granularity="per_channel", axis=0)


class ScalarNoiseWeight(AdoptSavedShapes, nn.Module):
    """Weight quantizer with scalar Quant-Noise (see the module docstring)."""

    def __init__(self, bits: int, p: float, update_step: int = 1000, method: str = "tensor"):
        super().__init__()
        self.bits, self.p, self.update_step = bits, p, update_step
        self.spec = scalar_spec(bits, method)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("counter", torch.tensor(0))  # training forwards so far

    @torch.no_grad()
    def _update(self, w: torch.Tensor) -> None:
        scale, zp = compute_qparams(*reduce_min_max(w, self.spec), self.spec)
        self.scale, self.zero_point = scale, zp

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            if int(self.counter) % self.update_step == 0:
                self._update(w)
            self.counter += 1
        elif int(self.counter) == 0:  # evaluated before any training step: the range of the current weights
            self._update(w)
        p = self.p if self.training else 1.0
        s, z = self.scale, self.zero_point
        shape = (-1,) + (1,) * (w.dim() - 1) if s.dim() else ()
        lo = ((self.spec.qmin - z) * s).reshape(shape)
        hi = ((self.spec.qmax - z) * s).reshape(shape)
        q = fake_quantize(w.detach(), s, z, self.spec)
        mask = torch.rand_like(w) < p if p < 1 else torch.ones_like(w, dtype=torch.bool)
        return scalar_noise(w, q, lo, hi, mask)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, p={self.p}, update_step={self.update_step}, {self.spec.describe()}"


class ScalarNoiseConfig(LayerPolicyConfig):
    """fairseq's ``quantize_model_scalar`` settings."""

    weight_bits: int = Field(8, ge=2, le=8, description="Weight bits (fairseq: 8; int4 as the paper's Table 1).")
    p: float = Field(0.5, ge=0, le=1, description="Fraction of weights quantized in each training forward.")
    update_step: int = Field(1000, ge=1, description="Training forwards between two (s, z) updates.")
    method: Literal["tensor", "channel"] = "tensor"
    first_layer: LayerPolicy = "same"
    last_layer: LayerPolicy = "same"


class ScalarNoiseQuantizer(Quantizer):
    """Quant-Noise, scalar: a random fraction p of the weights fake-quantized per training forward."""

    name = "quantnoise"
    aliases = ("quant-noise",)
    family = "quantization noise"
    paper = "Fan, Stock et al. 2021, Training with Quantization Noise, arXiv:2004.07320"
    description = ("Quant-Noise with intN noise: a random fraction p of the weights is fake-quantized in each "
                   "training forward (STE, clamp first); the converted model is fully quantized.")
    Config = ScalarNoiseConfig
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 9)), activation_bits=(None,),
                                needs_training=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        swap_layers(model, plan.method_layers(), lambda name, mod: to_quant_layer(
            mod, weight_quantizer=ScalarNoiseWeight(cfg.weight_bits, cfg.p, cfg.update_step, cfg.method)))
        return model

    def _convert(self, model: nn.Module) -> nn.Module:
        return bake_model(model.eval())  # evaluation mode: p = 1, every weight on the grid
