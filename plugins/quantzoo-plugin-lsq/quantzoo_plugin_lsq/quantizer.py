"""LSQ exactly as Esser et al. 2020 define it ("Learned Step Size Quantization", ICLR 2020, arXiv:1902.08153).

* §2, eq. 1-2: ``v̄ = ⌊clip(v/s, −Q_N, Q_P)⌉``, ``v̂ = v̄·s``; weights signed (``Q_N = 2^(b−1)``,
  ``Q_P = 2^(b−1) − 1``), activations unsigned (``Q_N = 0``, ``Q_P = 2^b − 1``). One step size per layer for
  the weights and one for the layer's input (:func:`quantzoo.math.lsq_fake_quantize`).
* eq. 3: ``∂v̂/∂s = −v/s + ⌊v/s⌉`` inside the range, ``−Q_N`` / ``Q_P`` at the clips (the straight-through
  estimator through the rounding); ``∂v̂/∂v`` = 1 inside, 0 outside.
* §2.2: the step's gradient is scaled by ``g = 1/√(N·Q_P)`` with ``N = N_W``, the weights of the layer, or
  ``N = N_F``, the features of the layer's input for one sample (``grad_scale=False`` switches it off, the
  paper's ablation).
* §2.1: ``s`` starts at ``2⟨|v|⟩/√Q_P`` — the mean absolute value of the initial weights, or of the first
  batch of activations the quantizer sees.
* §3: first and last layers at 8 bits (weights and their inputs).

Where the paper is silent: the input of a layer that is not preceded by a ReLU (the network input, a
transformer's LayerNorm output) can be negative; the paper's unsigned activation range would clip it to zero.
Each activation quantizer therefore chooses at its first batch: unsigned if that batch has no negative value,
signed otherwise (LSQ+ addresses the same case with a learned offset).

Against the other LSQ rows: ``nni-lsq`` starts every step at 0.01 (NNI 3.0 comments the paper's formula out)
and scales the gradient with the whole tensor's element count (batch included); the core ``uniform`` method
with ``learnable_scale`` starts from the observer's min-max range.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from quantzoo import LayerPlan, LayerPolicyConfig
from quantzoo.math import lsq_fake_quantize, lsq_grad_factor
from quantzoo.nn import swap_layers, to_quant_layer
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.widths import WeightActivationQAT
from quantzoo.spec import QuantSpec


class LSQStep(nn.Module):
    """One learned step size ``s`` for a weight or a layer input (see the module docstring)."""

    def __init__(self, bits: int, *, signed: bool | None, per_sample: bool, grad_scale: bool = True):
        super().__init__()
        self.bits = bits
        self.per_sample = per_sample   # an activation: N_F counts one sample's features
        self.grad_scale = grad_scale
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        # None: decided by the first batch (activations); weights are signed
        self.register_buffer("signed", torch.tensor(bool(signed)))
        self._decide_sign = signed is None

    def spec(self) -> QuantSpec:
        return QuantSpec(bits=self.bits, signed=bool(self.signed), symmetric=True)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        if self._decide_sign:
            self.signed.fill_(bool(x.min() < 0))
        q_p = self.spec().qmax
        self.step.fill_(max(2 * float(x.abs().mean()) / math.sqrt(q_p), torch.finfo(torch.float32).tiny))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._initialize(x.detach())
        spec = self.spec()
        n = x[0].numel() if (self.per_sample and x.dim() > 1) else x.numel()
        g = lsq_grad_factor(n, spec.qmax) if self.grad_scale else 1.0
        return lsq_fake_quantize(x, self.step, spec, grad_factor=g)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={bool(self.signed)}, step={float(self.step):.4g}"


class LSQConfig(LayerPolicyConfig):
    """Bit widths, the gradient-scale switch and the paper's 8-bit first and last layers."""

    weight_bits: int = Field(4, ge=2, le=8, description="Weight bits of the body layers.")
    activation_bits: int | None = Field(4, ge=2, le=8, description="Bits of every layer input; null: float.")
    grad_scale: bool = Field(True, description="Scale the step gradient by 1/sqrt(N·Q_P) (§2.2).")
    first_layer: LayerPolicy = "int8"
    last_layer: LayerPolicy = "int8"


class LSQQuantizer(WeightActivationQAT):
    """LSQ: learned per-layer step sizes, paper initialisation and gradient scale, 8-bit first/last layers."""

    name = "lsq"
    family = "learned step size"
    paper = "Esser et al. 2020, Learned Step Size Quantization, arXiv:1902.08153"
    description = ("LSQ as the paper: step init 2<|v|>/sqrt(Q_P), step gradient scaled by 1/sqrt(N·Q_P) "
                   "(N = weights / per-sample features), 8-bit first and last layers.")
    Config = LSQConfig

    def _lsq_layer(self, mod: nn.Module, weight_bits: int, activation_bits: int | None) -> nn.Module:
        cfg = self.config
        act = None if activation_bits is None else LSQStep(activation_bits, signed=None, per_sample=True,
                                                           grad_scale=cfg.grad_scale)
        return to_quant_layer(mod, weight_quantizer=LSQStep(weight_bits, signed=True, per_sample=False,
                                                            grad_scale=cfg.grad_scale), input_quantizer=act)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        swap_layers(model, plan.method_layers(),
                    lambda name, mod: self._lsq_layer(mod, cfg.weight_bits, cfg.activation_bits))
        return model

    def policy_layer(self, name: str, module: nn.Module) -> nn.Module:
        """The paper's 8-bit first and last layers are LSQ layers too (§3: "all layers 8 bit ... with LSQ")."""
        return self._lsq_layer(module, 8, 8 if self.config.activation_bits is not None else None)
