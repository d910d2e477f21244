"""AWQ as a quantzoo method: weight-only, per-layer activation-aware scale search and clip search.

Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
arXiv:2306.00978; the search itself is :mod:`quantzoo.math.awq`. Steps per layer, as the official
``pre_quant.py::run_awq`` (all inputs from the float model, the next block's input being the float output):

1. ``s_X`` = mean ``|x|`` per input channel over the calibration tokens (for a convolution: over samples and
   positions); ``s*`` from the grid search of eq. 4-5 on this layer's output;
2. ``W ← W·diag(s*)``, inputs ``x·diag(s*)⁻¹`` (:class:`~quantzoo.nn.solved.ScaledInput`, AWQ's
   ``ScaledActivation`` form; the official code folds ``1/s`` into a preceding LayerNorm or Linear where it can,
   which computes the same function);
3. the clip search on the scaled weights and inputs, skipping the layers matched by ``clip_skip`` (the
   official code skips q/k projections, whose outputs go through ``QKᵀ``);
4. min-max round-to-nearest of the clipped, scaled weights.

Differences from the official code: the objective of step 1 is each layer's own output (eq. 4), where the
official code inspects a whole sub-module for layers that share an input (q/k/v: the attention output) and
gives them one shared scale; and the range of every row/group includes 0 (see :mod:`quantzoo.math.awq`).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from quantzoo import LayerPlan, LayerPolicyConfig
from quantzoo.math.awq import apply_clip, pseudo_quantize, search_clip, search_scale, weight_spec
from quantzoo.nn import to_quant_layer
from quantzoo.policy import LayerPolicy, matches
from quantzoo.nn.capture import capture
from quantzoo.nn.columns import channel_shape, channel_values, input_columns, kernel_size, weight_matrix
from quantzoo.nn.solved import ScaledInput, SolvedWeight
from quantzoo.quantizers.solver import WeightOnlySolver, prepare_layers, solver_layers


def input_channels(mod: nn.Module) -> int:
    return mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels


class AWQConfig(LayerPolicyConfig):
    """The official ``entry.py`` / ``auto_scale.py`` / ``auto_clip.py`` settings."""

    weight_bits: int = Field(4, ge=2, le=8, description="Weight bits (--w_bit).")
    group_size: int | None = Field(None, ge=1, description="Columns of weight.flatten(1) per group "
                                                           "(--q_group_size; null = whole row, the official -1).")
    zero_point: bool = Field(True, description="Asymmetric grid with an integer zero-point (official default).")
    auto_scale: bool = Field(True, description="Search the activation-aware scale (step 1-2).")
    n_grid: int = Field(20, ge=1, description="Grid of the scale search (α = i/n_grid) and of the clip search.")
    mse_range: bool = Field(True, description="Search the clipping range (step 3).")
    max_shrink: float = Field(0.5, ge=0, lt=1, description="Clip candidates down to (1 - max_shrink)·max|w|.")
    n_clip_tokens: int = Field(512, ge=1, description="Tokens sub-sampled for the clip search.")
    clip_skip: tuple[str, ...] = Field(("*.q", "*.k", "*q_proj", "*k_proj"),
                                       description="fnmatch patterns of layers without clip search.")
    #: AWQ quantizes the Linear layers of the transformer blocks; embeddings and the head stay float.
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"


class AWQQuantizer(WeightOnlySolver):
    """AWQ: per-input-channel scales ``s_X^α`` searched on the layer output, clip search, RTN."""

    name = "awq"
    family = "activation-aware PTQ"
    paper = "Lin et al. 2024, AWQ, arXiv:2306.00978"
    description = ("AWQ weight-only PTQ: per-input-channel scale s_X^alpha searched on the layer output "
                   "(20-point grid), clip-range search, min-max rounding (Linear, Conv).")
    Config = AWQConfig

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def layer(mod):
            return to_quant_layer(mod, weight_quantizer=SolvedWeight(cfg.weight_bits, cfg.group_size),
                                  input_quantizer=ScaledInput(input_channels(mod), channel_shape(mod)))

        prepare_layers(model, plan, self.name, layer, cfg.group_size)
        return model

    def _solve(self, model: nn.Module, batches: list) -> None:
        cfg = self.config
        names = solver_layers(model)
        inputs = capture(model, names, batches)  # all from the float model (nothing solved yet)
        for name in names:
            layer, x = model.get_submodule(name), inputs.pop(name)
            wq = layer.weight_quantizer
            spec = weight_spec(wq.bits, wq.group_size, cfg.zero_point)
            W, X, k = weight_matrix(layer).clone(), input_columns(layer, x), kernel_size(layer)
            alpha, s = 0.0, None
            if cfg.auto_scale:
                act_mean = channel_values(layer, x).abs().mean(dim=1)
                alpha, s = search_scale(W, X, act_mean, spec, k, cfg.n_grid)
                cols = s.repeat_interleave(k)
                W, X = W * cols, X / cols.unsqueeze(1)
            if cfg.mse_range and not matches(name, cfg.clip_skip):
                W = apply_clip(W, search_clip(W, X, spec, cfg.n_grid, cfg.max_shrink, cfg.n_clip_tokens),
                               wq.group_size)
            layer.weight.data = W.reshape(layer.weight.shape).to(layer.weight.dtype)
            if s is not None:
                layer.input_quantizer.set_scale(s)
            else:
                layer.input_quantizer.solved.fill_(True)  # identity scale
            wq.set(pseudo_quantize(W, spec).reshape(layer.weight.shape))
            wq.alpha = alpha  # the chosen migration exponent, for inspection
