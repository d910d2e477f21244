"""HQQ as a quantzoo method: weight-only, no calibration data, per group of consecutive inputs.

Badri & Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models" (Mobius Labs blog); the
solver is :func:`quantzoo.math.hqq.hqq_quantize`. Defaults of the official ``hqq_base_quant_config``:
4 bits, groups of 64, ``axis=1``, zero-point optimised (``optimize=True``), ``round_zero`` only at 4 bits.

Grouping: ``axis=1`` in the official code cuts the flattened weight into consecutive groups of
``group_size``; here groups are consecutive inputs within one row of ``weight.flatten(1)``, which is the same
whenever ``group_size`` divides the row (every Linear of the models HQQ targets) and keeps every row on whole
groups otherwise (a ``ConfigError`` names the layer). ``axis=0`` (strided groups across output channels) is
not offered. The official wrapper skips the ``lm_head``; the default ``last_layer: fp`` does the same.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer
from quantzoo.math.hqq import hqq_quantize
from quantzoo.nn import to_quant_layer
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.solver import bake_layers, prepare_layers


class HQQWeight(nn.Module):
    """A weight quantizer: the HQQ de-quantized weight ``(W_q − z)·s`` of each row or group."""

    def __init__(self, bits: int, group_size: int | None, **solver):
        super().__init__()
        self.bits = bits
        self.group_size = group_size
        self.solver = solver

    @torch.no_grad()
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w2 = w.detach().flatten(1)
        rows = w2 if self.group_size is None else w2.reshape(-1, self.group_size)
        result = hqq_quantize(rows, self.bits, **self.solver)
        return result.dequantize().reshape(w.shape).to(w.dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}"


class HQQConfig(LayerPolicyConfig):
    """``hqq_base_quant_config`` and the proximal solver's ``opt_params``."""

    weight_bits: int = Field(4, ge=2, le=8, description="Weight bits (nbits).")
    group_size: int | None = Field(64, ge=1, description="Consecutive inputs of a row per group (null: whole row).")
    optimize: bool = Field(True, description="Run the half-quadratic zero-point solver (else plain min-max).")
    lp_norm: float = Field(0.7, gt=0, le=1, description="p of the ℓ_p error.")
    beta: float = Field(10.0, gt=0, description="Initial β of the quadratic penalty.")
    kappa: float = Field(1.01, gt=1, description="β ← κβ after each iteration.")
    iters: int = Field(20, ge=1, description="Iterations (early stop as the official solver).")
    round_zero: bool | None = Field(None, description="Round the initial zero-point; null: only at 4 bits "
                                                      "(hqq_base_quant_config).")
    early_stop: str = Field("legacy", pattern="^(legacy|best)$",
                            description="legacy: keep the last update (official default solver); best: the "
                                        "zero-point of the lowest error (the v2 solver).")
    first_layer: LayerPolicy = "same"
    last_layer: LayerPolicy = "fp"


class HQQQuantizer(Quantizer):
    """HQQ: min-max grid whose zero-point is optimised for an ℓ_p (p = 0.7) error, calibration-free."""

    name = "hqq"
    family = "calibration-free PTQ"
    paper = "Badri & Shaji 2023, Half-Quadratic Quantization (Mobius Labs blog)"
    description = ("HQQ weight-only PTQ without data: per-group min-max grid, zero-point by half-quadratic "
                   "optimisation of an l_0.7 error (shrinkage + closed-form mean), 20 iterations.")
    Config = HQQConfig
    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 9)), activation_bits=(None,))

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits, group_size=None)  # per row, the granularity of the harness's rows

    @classmethod
    def conformance_model(cls):
        # every quantized layer has 64 inputs per row (the default group size) once the head stays float
        model = nn.Sequential(nn.Conv1d(16, 16, 4, padding=2), nn.ReLU(), nn.Conv1d(16, 8, 4, padding=1),
                              nn.ReLU(), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        return model, torch.randn(8, 16, 8)

    def _weight(self, bits: int, group_size: int | None) -> HQQWeight:
        cfg = self.config
        round_zero = (bits == 4) if cfg.round_zero is None else cfg.round_zero
        return HQQWeight(bits, group_size, optimize=cfg.optimize, lp_norm=cfg.lp_norm, beta=cfg.beta,
                         kappa=cfg.kappa, iters=cfg.iters, round_zero=round_zero, early_stop=cfg.early_stop)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        prepare_layers(model, plan, self.name, lambda mod: to_quant_layer(
            mod, weight_quantizer=self._weight(cfg.weight_bits, cfg.group_size)), cfg.group_size)
        return model

    def _convert(self, model: nn.Module) -> nn.Module:
        return bake_layers(model)
