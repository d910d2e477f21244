"""DoReFa-Net: k-bit weights, activations and (optionally) gradients, with independent W/A/G widths.

Zhou, Wu, Ni, Zhou, Wen & Zou 2016, "DoReFa-Net", arXiv:1606.06160:

* eq. 5: ``quantize_k(r) = round((2^k − 1)·r) / (2^k − 1)`` for ``r ∈ [0, 1]``, straight-through
  (:func:`quantzoo.math.quantize_unit`).
* eq. 7-8 (1-bit weights): ``r_o = E(|r_i|)·sign(r_i)``, backward ``∂c/∂r_i = ∂c/∂r_o``
  (``BinaryWeight("layer", clip=None)``); E is taken over the whole layer and treated as a constant, as in
  the authors' tensorpack code (``stop_gradient(reduce_mean(abs(x)))``) and Distiller.
* eq. 9 (k-bit weights, k > 1): ``r_o = 2·quantize_k(tanh(r_i) / (2·max|tanh(r_i)|) + ½) − 1``; the
  gradient flows through tanh and max by autograd. Stored as codes ``c = round((2^k−1)·w')`` from
  :func:`quantzoo.math.dorefa_codes` (``"half_even"``: tf.round of the exact product, so ``w = 0`` gives
  ``+1/(2^k−1)``) with ``w_q = (c − (2^k−1)/2)·2/(2^k−1)`` (the same number as eq. 9).
* eq. 11 (activations): ``r_o = quantize_k(r)`` on ``r = clamp(x, 0, 1)``, the bounded activation.
* eq. 12 (gradients, ``gradient_bits``):
  ``f_γ(dr) = 2·max₀(|dr|)·[quantize_k(dr / (2·max₀(|dr|)) + ½ + N(k)) − ½]`` with ``N(k) = σ/(2^k − 1)``,
  ``σ ~ Uniform(−½, ½)`` and ``max₀`` over all axes but the batch axis. Applied to the gradient of each
  quantized layer's output (the backward signal that feeds the next GEMM). The noisy value is clamped to
  [0, 1] before rounding (the paper's quantize_k assumes that range; the noise can step half a level outside).

Placement of the activation quantizer: the paper quantizes the output of a bounded activation ``h`` that
replaces ReLU. Here ``quantize_k(clamp(x, 0, 1))`` runs at the *input* of every quantized layer. On the zoo
models the input of a body layer is ``ReLU(BN(...))`` or its max-pool; since ``clamp(ReLU(x), 0, 1) =
clamp(x, 0, 1)`` and max-pool commutes with the monotone clamp/quantize, this equals replacing ReLU by the
paper's clamp and quantizing, without rewriting the model (functional ReLUs work too).
``activation_prescale`` multiplies x before the clamp: 1.0 is the paper; micronet uses 0.1 (its quirk).

First and last layers are kept in full precision as in the paper's experiments (``first_layer``,
``last_layer``). Distiller quantizes weights and (by replacing nn.ReLU) activations but not gradients;
NNI v2 is weight-only; NNI v3 adds the gradient pre-hook; micronet rejects 1-bit weights, pre-scales
activations by 0.1 and rounds ``r/fl(1/n)`` half away from zero, one code off the paper at ties (w = 0 → −1/n;
tests/test_anchor_micronet.py).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer
from quantzoo.math import dorefa_codes, grad_transform, quantize_unit, tanh_unit
from quantzoo.nn import BinaryWeight, CodedWeightQuantizer, WeightCodes, swap_layers, to_quant_layer
from quantzoo.policy import LayerPolicy


class DorefaWeight(CodedWeightQuantizer):
    """k-bit DoReFa weights (eq. 9) stored as k-bit codes; for k = 1 use ``BinaryWeight("layer", None)``."""

    def __init__(self, bits: int):
        super().__init__()
        if bits < 2:
            raise ValueError("DorefaWeight is the k > 1 case of eq. 9; 1-bit weights are BinaryWeight('layer')")
        self.bits = bits

    def encode(self, w: torch.Tensor) -> WeightCodes:
        n = 2**self.bits - 1
        u = tanh_unit(w)
        codes = dorefa_codes(w, self.bits, "half_even") + n * (u - u.detach())  # = n·quantize_k(u), STE to n·u
        return WeightCodes(codes, torch.tensor(2.0 / n), torch.tensor(n / 2.0), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class DorefaActivation(nn.Module):
    """``quantize_k(clamp(prescale·x, 0, 1))`` (eq. 11); the clamp's gradient is zero outside [0, 1]."""

    def __init__(self, bits: int, prescale: float = 1.0):
        super().__init__()
        self.bits = bits
        self.prescale = prescale

    def forward(self, x):
        if self.prescale != 1.0:
            x = x * self.prescale
        return quantize_unit(torch.clamp(x, 0.0, 1.0), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, prescale={self.prescale}"


def quantize_gradient(g: torch.Tensor, bits: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 12 on a gradient tensor; ``noise`` is σ ~ U(−½, ½) of g's shape (drawn when None)."""
    if g.dim() == 0 or g.numel() == 0:
        return g
    n = 2**bits - 1
    m = g.abs().reshape(g.shape[0], -1).amax(dim=1).reshape([-1] + [1] * (g.dim() - 1))  # max₀ per sample
    m = m.clamp(min=torch.finfo(g.dtype).tiny)
    if noise is None:
        noise = torch.rand_like(g) - 0.5
    unit = g / (2 * m) + 0.5 + noise / n
    return 2 * m * (quantize_unit(torch.clamp(unit, 0.0, 1.0), bits) - 0.5)


class DorefaGradient(nn.Module):
    """Identity forward; the gradient of the layer output is quantized to ``gradient_bits`` (eq. 12)."""

    def __init__(self, bits: int):
        super().__init__()
        self.gradient_bits = bits

    def forward(self, x):
        if not torch.is_grad_enabled() or not x.requires_grad:
            return x
        return grad_transform(x, lambda g: quantize_gradient(g, self.gradient_bits))

    def extra_repr(self) -> str:
        return f"gradient_bits={self.gradient_bits}"


class DorefaConfig(LayerPolicyConfig):
    """DoReFa bit widths W/A/G (independent), activation pre-scale and the first/last-layer policy."""

    weight_bits: int = Field(4, ge=1, le=8, description="weight bits (1: E|w|·sign(w), eq. 7; 2..8: eq. 9)")
    activation_bits: int | None = Field(4, ge=1, le=16, description="activation bits (None: float activations)")
    gradient_bits: int | None = Field(None, ge=1, le=16,
                                      description="gradient bits (None: float gradients, eq. 12 off)")
    activation_prescale: float = Field(1.0, gt=0, description="x·prescale before clamp(·,0,1); micronet: 0.1")
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"


class DorefaQuantizer(Quantizer):
    """DoReFa-Net: tanh-normalized k-bit weights (E|w|·sign for 1 bit), clamp+k-bit activations, k-bit gradients."""

    name = "dorefa"
    family = "low-bit uniform"
    paper = "Zhou et al. 2016, DoReFa-Net, arXiv:1606.06160"
    description = ("k-bit weights via tanh normalisation (1-bit: E|w|·sign), clamp(x,0,1) k-bit activations, "
                   "noisy k-bit gradients.")
    aliases = ("dorefa-net",)
    Config = DorefaConfig
    decomposes_attention = True  # attention projections quantized like every other Linear
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(1, 9)), activation_bits=(*range(1, 17), None),
                                needs_training=True)
    default_backend = "packed"

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits, activation_bits=a_bits)

    def weight_quantizer(self) -> nn.Module:
        if self.config.weight_bits == 1:
            return BinaryWeight("layer", clip=None, scale_grad=False)
        return DorefaWeight(self.config.weight_bits)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def dorefa_layer(name, mod):
            act = DorefaActivation(cfg.activation_bits, cfg.activation_prescale) if cfg.activation_bits else None
            grad = DorefaGradient(cfg.gradient_bits) if cfg.gradient_bits is not None else None
            return to_quant_layer(mod, weight_quantizer=self.weight_quantizer(), input_quantizer=act,
                                  output_quantizer=grad)

        swap_layers(model, plan.method_layers(), dorefa_layer)
        return model
