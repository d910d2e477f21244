"""PACT exactly as Choi et al. 2018 define it ("PACT: Parameterized Clipping Activation for Quantized Neural
Networks", arXiv:1805.06085).

* eq. 1: every ReLU becomes ``y = PACT(x) = 0.5(|x| − |x − α| + α) = clip(x, 0, α)`` with one learned ``α``
  per activation layer;
* eq. 2: ``y_q = round(y·(2^k − 1)/α)·α/(2^k − 1)``;
* eq. 3: ``∂y_q/∂α = ∂y_q/∂y · ∂y/∂α = 1`` where ``x ≥ α``, else 0 (the straight-through estimator makes
  ``∂y_q/∂y = 1``; α receives no gradient through the rounding); ``∂y_q/∂x = 1`` for ``0 < x < α``;
* §2.2: ``α`` is trained with an L2 regulariser ``λ_α·α²/2`` added to the loss (its gradient ``λ_α·α``,
  the weight-decay form) and starts large, at 10, so that training first sees ReLU and shrinks α;
* weights quantized as DoReFa-Net (Zhou et al. 2016, eq. 9), the scheme the paper pairs PACT with.

Recalled from the paper, not re-read here: α₀ = 10 and λ_α tied to the weights' decay; 2e-4 is the weight
decay of the CIFAR-10 ResNet recipes the paper follows (tensorpack) and the default of ``alpha_decay``.
The paper keeps the first and last layers in full precision as DoReFa-Net (``first_layer``/``last_layer``);
the harness's protocol sets them to 8 bits for every method.

Against ``distiller-pact``: Distiller starts α at 8.0, leaves λ_α to the optimizer's weight decay of the run
(``act_clip_decay``, default the run's own), and its harness rows start α at the MSE-optimal clip of the first
batch; the rounding and the gradient of α are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from quantzoo import LayerPlan, LayerPolicyConfig, UnsupportedError
from quantzoo.math import dorefa_weight
from quantzoo.nn import set_submodule, swap_layers, to_quant_layer
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.widths import WeightActivationQAT


class PACTClip(nn.Module):
    """``clip(x, 0, α)`` then ``k``-bit rounding over ``[0, α]`` (eq. 1-3), replacing a ReLU."""

    def __init__(self, bits: int, alpha: float = 10.0):
        super().__init__()
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x)
        y = torch.where(y >= self.alpha, self.alpha, y)  # ∂y/∂α = 1[x ≥ α], ∂y/∂x = 1[0 < x < α]
        n = 2**self.bits - 1
        with torch.no_grad():
            q = torch.round(y * n / self.alpha) * self.alpha / n
        return y + (q - y).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={float(self.alpha):.4g}"


class DorefaWeight(nn.Module):
    """DoReFa-Net's k-bit weights (eq. 9): ``2·quantize_k(tanh(w)/(2·max|tanh w|) + ½) − 1``, the paper's
    rounding (:func:`quantzoo.math.dorefa_weight`, ties to even)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return dorefa_weight(w, self.bits, "half_even")

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class PACTConfig(LayerPolicyConfig):
    """Widths, α's start and its L2 coefficient, as the paper."""

    weight_bits: int = Field(4, ge=2, le=8, description="DoReFa weight bits of the body layers.")
    activation_bits: int | None = Field(4, ge=2, le=8, description="PACT activation bits; null: ReLU stays.")
    alpha_init: float = Field(10.0, gt=0, description="Initial clipping level α.")
    alpha_decay: float = Field(2e-4, ge=0, description="λ_α of the L2 regulariser λ_α·α²/2 (gradient λ_α·α).")
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"


class PACTQuantizer(WeightActivationQAT):
    """PACT: learned clipping level α per activation (init 10, L2 λ_α), DoReFa weights."""

    name = "pact"
    family = "learned clipping"
    paper = "Choi et al. 2018, PACT, arXiv:1805.06085"
    description = ("PACT as the paper: ReLU -> clip(x, 0, alpha) with k-bit rounding, alpha learned per layer "
                   "(init 10, L2 regulariser), d y_q/d alpha = 1[x >= alpha]; DoReFa weights.")
    Config = PACTConfig

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        if cfg.activation_bits is not None:
            relus = [n for n, m in model.named_modules() if type(m) is nn.ReLU and n]
            if not relus:
                raise UnsupportedError("pact replaces nn.ReLU modules by its clipped activation and the model has "
                                       "none (GELU, functional relu?); use activation_bits: null or another method")
            for name in relus:
                if plan.activation_role(name) == "method":  # a ReLU feeding a policy layer stays a ReLU
                    set_submodule(model, name, PACTClip(cfg.activation_bits, cfg.alpha_init))
        swap_layers(model, plan.method_layers(),
                    lambda name, mod: to_quant_layer(mod, weight_quantizer=DorefaWeight(cfg.weight_bits)))
        return model

    def _alphas(self, model: nn.Module) -> list[nn.Parameter]:
        return [m.alpha for m in model.modules() if isinstance(m, PACTClip)]

    def param_groups(self, model, lr, weight_decay):
        # α's L2 term is λ_α (added in before_optimizer_step), not the run's weight decay
        ids = {id(a) for a in self._alphas(model)}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if ids:
            groups.append({"params": self._alphas(model), "lr": lr, "weight_decay": 0.0})
        return groups

    @torch.no_grad()
    def before_optimizer_step(self, model):
        for a in self._alphas(model):
            if a.grad is not None:
                a.grad.add_(a, alpha=self.config.alpha_decay)  # ∂(λ_α·α²/2)/∂α = λ_α·α
