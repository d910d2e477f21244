"""`torch-qat`: eager-mode quantization-aware training (``prepare_qat``), then ``convert`` to int8."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from quantzoo.quantizer import Capabilities

from ._compat import engine_scope, torch_ao_api, torch_ao_calls
from .base import EngineConfig, PluginQuantizer, count_quantized, require_layers
from .fusion import check_eager_static, find_fusion_groups


class TorchQATConfig(EngineConfig):
    """``fused_fake_quant``: torch's version-1 QAT qconfig (``FusedMovingAvgObsFakeQuantize``, one kernel
    for observe + fake-quantize) or version 0 (``FakeQuantize`` modules). ``freeze_observers_after`` /
    ``freeze_bn_after``: after that many completed epochs the activation/weight ranges stop updating and
    BatchNorm uses its running statistics (the schedule of torch's QAT tutorial: BN after 2, observers after
    3 epochs); None never freezes."""

    weight_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    fused_fake_quant: bool = True
    freeze_observers_after: int | None = Field(3, ge=0)
    freeze_bn_after: int | None = Field(2, ge=0)


class TorchQATQuantizer(PluginQuantizer):
    """QAT with fake quantization ``x̂ = (clamp(round(x/S)+Z, qmin, qmax) - Z)·S`` and the straight-through
    estimator (Jacob et al. 2018, arXiv:1712.05877 §3 and eq. 1; Krishnamoorthi 2018 §3.2), with Conv-BN
    folded during training as in Jacob et al. §3.2 (torch's ``ConvBn*`` QAT modules). Ranges are moving
    averages of min/max (averaging constant 0.01); ``convert`` yields the real int8 model."""

    name = "torch-qat"
    aliases = ("torch-qat-eager",)
    paper = "Jacob et al. 2018, arXiv:1712.05877; Krishnamoorthi 2018, arXiv:1806.08342; torch.ao prepare_qat"
    description = ("PyTorch eager QAT (fused fake-quant, observer/BN freezing schedule), converted to real "
                   "int8 kernels; torch>=2.4,<2.14.")
    Config = TorchQATConfig
    capabilities = Capabilities(qat=True, weight_bits=(8,), activation_bits=(8,), needs_training=True,
                                module_types=("Linear", "Conv1d", "Conv2d", "Conv3d"))

    @classmethod
    def availability(cls):
        return torch_ao_api("qat")

    def _qconfig(self):
        import torch.ao.quantization as tq

        cfg = self.config
        version = 1 if cfg.fused_fake_quant else 0
        act = tq.get_default_qat_qconfig(cfg.engine, version=version).activation
        if cfg.weight_granularity == "per_channel":
            wt = tq.default_fused_per_channel_wt_fake_quant if version else tq.default_per_channel_weight_fake_quant
        else:
            wt = tq.default_fused_wt_fake_quant if version else tq.default_weight_fake_quant
        return tq.QConfig(activation=act, weight=wt)

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        from torch.ao.quantization import QuantWrapper, fuse_modules_qat, prepare_qat

        require_layers(model, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d), self.name, "Linear/Conv layer")
        check_eager_static(model, self.name)
        model.train()  # QAT fusion keeps BN as a trainable part of ConvBn modules (needs train mode)
        groups = find_fusion_groups(model)
        with engine_scope(self.config.engine), torch_ao_calls():
            if groups:
                model = fuse_modules_qat(model, groups, inplace=True)
            model.qconfig = self._qconfig()
            wrapped = QuantWrapper(model)
            prepare_qat(wrapped, inplace=True)
        wrapped._quantzoo_fused = groups
        return wrapped

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Freeze observers / BN statistics once ``epoch`` epochs are complete (torch's QAT tutorial)."""
        import torch.ao.nn.intrinsic.qat as nniqat
        from torch.ao.quantization import disable_observer

        cfg = self.config
        if cfg.freeze_observers_after is not None and epoch >= cfg.freeze_observers_after:
            model.apply(disable_observer)
        if cfg.freeze_bn_after is not None and epoch >= cfg.freeze_bn_after:
            model.apply(nniqat.freeze_bn_stats)

    def _convert(self, model: nn.Module) -> nn.Module:
        from torch.ao.quantization import convert

        model.eval()
        with engine_scope(self.config.engine), torch_ao_calls():
            convert(model, inplace=True)
        if count_quantized(model) == 0:
            from quantzoo.errors import UnsupportedError

            raise UnsupportedError(f"{self.name}: convert produced no int8 layer")
        model._quantzoo_engine = self.config.engine
        return model
