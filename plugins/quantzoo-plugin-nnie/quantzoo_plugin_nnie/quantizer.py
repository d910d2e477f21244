"""The ``nnie`` quantizer: NNIE logarithmic QAT (8-bit or 16-bit) in nnieqat's manner."""

from __future__ import annotations

from typing import Literal

from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo import Capabilities, LayerPlan, Quantizer, QuantizerConfig

from .hooks import (ACTIVATION_TYPES, freeze_bn, merge_freeze_bn, quant_dequant_weight, register_quantization_hook,
                    unquant_weight)


class NNIEConfig(QuantizerConfig):
    """Bit widths of the NNIE formats (8: 16 steps/octave; 16: 2048 steps/octave) and BN merging."""

    weight_bits: Literal[8, 16] = 8
    activation_bits: Literal[8, 16] | None = 8  # None: quant_activation=False
    merge_bn: bool = True


class NNIEQuantizer(Quantizer):
    """HiSilicon NNIE logarithmic quantization-aware training (nnieqat), on CPU or any torch device.

    Weights and ReLU-family outputs are quantized to ``sign(x)·2^((q+z)/16)`` anchored at ``max|x|``
    (quantzoo.math.logarithmic); the float weights are restored before every optimizer step.
    """

    name = "nnie"
    aliases = ("nnieqat",)
    family = "logarithmic"
    paper = ("HiSilicon NNIE GFPQ format, via nnieqat (aovoc/nnieqat-pytorch, src/fake_quantize.cu); "
             "logarithmic quantization: Miyashita et al. 2016, arXiv:1603.01025")
    description = "NNIE 8/16-bit logarithmic QAT (sign + index, 16 steps per octave, anchored at max|x|)."
    Config = NNIEConfig
    capabilities = Capabilities(ptq=False, qat=True, weight_bits=(8, 16), activation_bits=(8, 16, None),
                                needs_training=True, module_types=("Linear", "Conv1d", "Conv2d", "Conv3d"))

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bits=w_bits, activation_bits=a_bits)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        if cfg.merge_bn:
            merge_freeze_bn(model)
        if cfg.activation_bits is not None and not any(isinstance(m, ACTIVATION_TYPES) for m in model.modules()):
            raise UnsupportedError(
                f"nnie: the model has no {'/'.join(t.__name__ for t in ACTIVATION_TYPES)} module whose output "
                "nnieqat quantizes (functional activations cannot be hooked); set activation_bits=None")
        n_w, _ = register_quantization_hook(model, cfg.weight_bits, cfg.activation_bits)
        if n_w == 0:
            raise UnsupportedError("nnie: the model has no layer with a weight to quantize")
        return model

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """nnieqat's loop freezes the BatchNorms again after every ``model.train()``."""
        if self.config.merge_bn:
            freeze_bn(model)

    def before_optimizer_step(self, model: nn.Module) -> None:
        model.apply(unquant_weight)

    def _convert(self, model: nn.Module) -> nn.Module:
        model.apply(quant_dequant_weight)
        return model
