"""Quant-Noise for product quantization (``quantnoise-ipq``): random blocks of weights are dropped in each
training forward; the converted model is product-quantized (256 centroids over blocks of 8 weights).

Fan, Stock et al. 2021, arXiv:2004.07320 §4.2 (the proxy noise of iPQ: drop the block, rescale the others)
and fairseq's ``modules/quant_noise.py`` (``--quant-noise-pq 0.1``, ``--quant-noise-pq-block-size 8``):

* a block is ``block_size`` consecutive inputs of one row of ``weight.flatten(1)``; each block is dropped
  with probability ``p`` in training (:func:`quantzoo.math.quant_noise.block_mask`), the rest scaled by
  ``1/(1 − p)``, straight-through gradient for every weight (:func:`quantzoo.math.quant_noise.drop_blocks`);
  no noise at evaluation.
* convert: k-means product quantization of every quantized layer (:func:`quantzoo.math.pq.product_quantize`,
  ``pq/utils.py::quantize_model_`` defaults: 256 centroids, block size 8, 15 EM iterations).

Against fairseq: the noised weight is computed from the parameter in every forward pass instead of being
written into ``weight.data`` (fairseq#3783: that hook made dropped weights permanently zero and rescaled the
survivors again at every step; #3195 asked whether the STE is used — here it is, for every weight); the
blocks of a k×k convolution are consecutive elements of ``weight.flatten(1)`` like a Linear's, where
fairseq's noise drops whole k×k kernels and its PQ uses its own conv layout; a layer is quantized in one
pass after training, without iPQ's stage-wise fine-tuning of the centroids (``quantization_utils.Quantizer``).
With ``mode: ptq`` (no training) this is post-hoc PQ of the float model, the paper's baseline.

Storage: the converted layer keeps ``pq_centroids`` and ``pq_assignments`` (one 8-bit index per block);
``weight_bits = 8`` with ``weight_group_size = block_size`` tells the conformance kit that each block is one
256-way code. The true size is ``log2(256)/block_size = 1`` bit per weight plus the codebook, which
``bits_of_config`` reports as W1; the harness's ideal size, which reads ``weight_bits``, overstates it 8x.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer
from quantzoo.math.pq import product_quantize
from quantzoo.math.quant_noise import block_mask, drop_blocks
from quantzoo.nn import QuantLayerMixin, bake_model, to_quant_layer
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.solver import prepare_layers


class BlockDropWeight(nn.Module):
    """iPQ's proxy noise on the weight in training; the identity in evaluation (see the module docstring)."""

    def __init__(self, p: float, block_size: int):
        super().__init__()
        self.p, self.block_size = p, block_size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return w
        w2 = w.flatten(1)
        mask = block_mask(w2.shape[0], w2.shape[1], self.block_size, self.p, device=w.device)
        return drop_blocks(w2, mask, self.p).reshape(w.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


class IPQConfig(LayerPolicyConfig):
    """fairseq's ``--quant-noise-pq`` / ``--quant-noise-pq-block-size`` and ``quantize_model_`` defaults."""

    p: float = Field(0.1, ge=0, lt=1, description="Probability of dropping a block in a training forward.")
    block_size: int = Field(8, ge=1, description="Consecutive inputs per block (and PQ sub-vector).")
    n_centroids: int = Field(256, ge=2, description="Codewords per layer.")
    n_iter: int = Field(15, ge=1, description="k-means EM iterations.")
    seed: int = Field(0, description="Seed of the k-means initialisation.")
    first_layer: LayerPolicy = "same"
    last_layer: LayerPolicy = "same"


class IPQQuantizer(Quantizer):
    """Quant-Noise for iPQ: block dropping in training, product quantization at convert."""

    name = "quantnoise-ipq"
    aliases = ("quant-noise-ipq",)
    family = "quantization noise"
    paper = "Fan, Stock et al. 2021, Training with Quantization Noise, arXiv:2004.07320"
    description = ("Quant-Noise for iPQ: blocks of 8 weights dropped with p = 0.1 in training (STE, parameter "
                   "untouched); converted by k-means PQ with 256 centroids (1 bit/weight + codebook).")
    Config = IPQConfig
    capabilities = Capabilities(ptq=True, qat=True, weight_bits=(1,), activation_bits=(None,))

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):  # log2(256)/8 = 1 bit per weight, float activations
        return cls.Config()

    @classmethod
    def bits_of_config(cls, config):
        return max(1, round(math.log2(config.n_centroids) / config.block_size)), None

    @classmethod
    def conformance_model(cls):
        # rows that are multiples of the block size (8): 8, 16 and 64 inputs
        model = nn.Sequential(nn.Conv1d(1, 8, 8, padding=4), nn.ReLU(), nn.Conv1d(8, 8, 2), nn.ReLU(),
                              nn.Flatten(), nn.Linear(64, 10))
        return model, torch.randn(8, 1, 8)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        prepare_layers(model, plan, self.name, lambda mod: to_quant_layer(
            mod, weight_quantizer=BlockDropWeight(cfg.p, cfg.block_size)), cfg.block_size, group_label="block_size")
        return model

    @torch.no_grad()
    def _convert(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        for mod in model.modules():
            if isinstance(mod, QuantLayerMixin) and isinstance(mod.weight_quantizer, BlockDropWeight):
                pq = product_quantize(mod.weight.flatten(1), cfg.block_size, cfg.n_centroids, cfg.n_iter,
                                      generator=gen)
                mod.weight.data = pq.reconstruct().reshape(mod.weight.shape)
                mod.register_buffer("pq_centroids", pq.centroids)
                mod.register_buffer("pq_assignments", pq.assignments.to(torch.uint8 if cfg.n_centroids <= 256
                                                                        else torch.int32))
                mod.weight_quantizer = None
                mod.weight_bits = 8  # the width of one block's index (see the module docstring)
                mod.weight_group_size = cfg.block_size
        return bake_model(model)
