"""GPTQ as a quantzoo method: weight-only, layer by layer, on Linear, Conv1d and Conv2d.

Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", arXiv:2210.17323. The column update is :func:`quantzoo.math.gptq.gptq_quantize`;
this module collects each layer's Hessian ``H = 2XXᵀ/n`` from calibration data (convolutions through
:func:`quantzoo.nn.columns.input_columns`, GPTQ's ``nn.Unfold`` path) and writes the result.

Sequential (``sequential=True``, the official ``opt_sequential``): layers are solved in forward order and each
layer's inputs are recomputed with every earlier layer already quantized, so that later layers compensate
the error of earlier ones. ``sequential=False`` takes all inputs from the float model (OBQ's per-layer
setting for CNNs).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from quantzoo import LayerPlan, LayerPolicyConfig
from quantzoo.math.gptq import accumulate_hessian, gptq_quantize
from quantzoo.nn import to_quant_layer
from quantzoo.nn.capture import capture
from quantzoo.nn.columns import input_columns, weight_matrix
from quantzoo.nn.solved import SolvedWeight
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.solver import WeightOnlySolver, prepare_layers, solver_layers
from quantzoo.spec import QuantSpec


class GPTQConfig(LayerPolicyConfig):
    """The official ``opt.py``/``llama.py`` arguments (defaults as there, except the layer policy)."""

    weight_bits: int = Field(4, ge=2, le=8, description="Weight bits (--wbits).")
    group_size: int | None = Field(None, ge=1, description="Columns of weight.flatten(1) per quantization group "
                                                           "(--groupsize; null = whole row, the official -1).")
    sym: bool = Field(False, description="Symmetric grid (--sym); default asymmetric min-max per row/group.")
    act_order: bool = Field(False, description="Quantize columns by descending Hessian diagonal (--act-order).")
    static_groups: bool = Field(False, description="Group params from the original weights before the loop "
                                                   "(--static-groups); required with act_order and groups.")
    percdamp: float = Field(0.01, ge=0, lt=1, description="Dampening, a fraction of mean(diag H) (--percdamp).")
    block_size: int = Field(128, ge=1, description="Columns per lazy batch update (blocksize).")
    sequential: bool = Field(True, description="Inputs from the model with earlier layers already quantized.")
    #: GPTQ quantizes the Linear layers inside the transformer blocks and keeps embeddings and the head in float.
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"

    @model_validator(mode="after")
    def _groups_in_order(self):
        if self.act_order and self.group_size is not None and not self.static_groups:
            raise ValueError("act_order with group_size forms groups in the permuted order, which a stored weight "
                             "cannot express without a per-column group index: set static_groups: true")
        return self


class GPTQQuantizer(WeightOnlySolver):
    """GPTQ: per-column quantization with inverse-Hessian compensation of the remaining columns."""

    name = "gptq"
    family = "second-order PTQ"
    paper = "Frantar et al. 2023, GPTQ, arXiv:2210.17323"
    description = ("GPTQ weight-only PTQ: columns quantized in order, error compensated through the inverse "
                   "Hessian of ||WX - QX||^2 (Linear, Conv via unfold), act-order and groups.")
    Config = GPTQConfig

    def _spec(self, bits: int) -> QuantSpec:
        sym = self.config.sym
        return QuantSpec(bits=bits, signed=sym, symmetric=sym, granularity="per_channel", axis=0)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        prepare_layers(model, plan, self.name, lambda mod: to_quant_layer(
            mod, weight_quantizer=SolvedWeight(cfg.weight_bits, cfg.group_size)), cfg.group_size)
        return model

    def _solve(self, model: nn.Module, batches: list) -> None:
        cfg = self.config
        names = solver_layers(model)
        inputs = None if cfg.sequential else capture(model, names, batches)
        for name in names:
            layer = model.get_submodule(name)
            x = capture(model, [name], batches)[name] if cfg.sequential else inputs.pop(name)
            H, _ = accumulate_hessian(None, 0, input_columns(layer, x), x.shape[0])
            wq = layer.weight_quantizer
            result = gptq_quantize(weight_matrix(layer), H, self._spec(wq.bits),
                                   block_size=cfg.block_size, percdamp=cfg.percdamp, group_size=wq.group_size,
                                   act_order=cfg.act_order, static_groups=cfg.static_groups)
            wq.set(result.weight.reshape(layer.weight.shape))
            wq.loss = result.loss  # GPTQ's reported error, for inspection
