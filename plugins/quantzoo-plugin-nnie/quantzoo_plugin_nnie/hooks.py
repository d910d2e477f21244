"""nnieqat's workflow (aovoc/nnieqat-pytorch ``nnieqat/quantize.py``) on quantzoo's logarithmic math, for any
device (the original calls ``.cuda()`` and a closed GPU library).

* :func:`register_quantization_hook` adds a forward-pre-hook to every Linear/Conv that backs the float weight up
  in the buffer ``weight_origin`` and replaces ``weight.data`` by its NNIE quantization, and a forward hook to
  every ReLU/ELU/LeakyReLU/PReLU that quantizes the output anchored on a never-decaying running ``max|act|``
  (buffer ``act_max``, raised in training mode only) with a straight-through gradient.
* :func:`unquant_weight` puts the float weights back; the training loop calls it before ``optimizer.step()`` so
  that the gradient computed at the quantized weights updates the float copy (nnieqat's manual STE).
* :func:`merge_freeze_bn` folds BatchNorm into the preceding layer and leaves an identity in its place.

Hooks are small callable objects (not closures) so prepared models deep-copy and pickle.
"""

from __future__ import annotations

import torch
from torch import nn

from quantzoo.math import ste
from quantzoo.math.logarithmic import log_quantize
from quantzoo.nn import fold_batch_norms

WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATION_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.PReLU)


class WeightQuantHook:
    """Forward-pre-hook: ``weight ← NNIE(weight_origin)`` with the float weight kept in ``weight_origin``."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, inputs):
        with torch.no_grad():
            w = module.weight
            if bool(module.weight_is_quantized):
                w.data.copy_(module.weight_origin)  # always quantize the float copy, never a quantized weight
            module.weight_origin.copy_(w.data)
            w.data.copy_(log_quantize(w.data, bits=self.bits))
            module.weight_is_quantized.fill_(True)
        return None


class ActQuantHook:
    """Forward hook: NNIE-quantize the output anchored on the running ``max|act|`` (straight-through gradient)."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, inputs, output):
        if module.training:
            with torch.no_grad():
                module.act_max.copy_(torch.maximum(module.act_max, output.detach().abs().max().float()))
        # Before any training-mode batch there is no anchor yet: use this batch's own max (never float).
        anchor = module.act_max if bool(module.act_max > 0) else output.detach().abs().max()
        return ste(output, log_quantize(output.detach(), anchor, bits=self.bits))


def register_quantization_hook(model: nn.Module, weight_bits: int | None = 8, activation_bits: int | None = 8,
                               weight_types=WEIGHT_TYPES, activation_types=ACTIVATION_TYPES) -> tuple[int, int]:
    """Add the weight and activation hooks (None bits: that role stays float). Returns the hooked counts."""
    n_w = n_a = 0
    for mod in model.modules():
        if weight_bits is not None and isinstance(mod, weight_types):
            mod.register_buffer("weight_origin", mod.weight.detach().clone())
            mod.register_buffer("weight_is_quantized", torch.tensor(False))
            mod._nnie_weight_hook = mod.register_forward_pre_hook(WeightQuantHook(weight_bits))
            mod.nnie_weight_bits = weight_bits
            n_w += 1
        if activation_bits is not None and isinstance(mod, activation_types):
            mod.register_buffer("act_max", torch.zeros(()))
            mod.register_forward_hook(ActQuantHook(activation_bits))
            mod.nnie_activation_bits = activation_bits
            n_a += 1
    return n_w, n_a


@torch.no_grad()
def unquant_weight(module: nn.Module) -> None:
    """Restore the float weight of one hooked module (use with ``model.apply``)."""
    if getattr(module, "weight_is_quantized", None) is not None and bool(module.weight_is_quantized):
        module.weight.data.copy_(module.weight_origin)
        module.weight_is_quantized.fill_(False)


@torch.no_grad()
def quant_dequant_weight(module: nn.Module) -> None:
    """Write the quantized weight permanently and remove the weight hook (for dumping / convert)."""
    hook = getattr(module, "_nnie_weight_hook", None)
    if hook is None:
        return
    unquant_weight(module)
    module.weight.data.copy_(log_quantize(module.weight.data, bits=module.nnie_weight_bits))
    hook.remove()
    del module._nnie_weight_hook
    del module._buffers["weight_origin"], module._buffers["weight_is_quantized"]
    module.weight_bits = module.nnie_weight_bits  # read by quantzoo's conformance kit


def merge_freeze_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv/Linear into it; the BN becomes ``nn.Identity``
    (frozen by construction). The model keeps its train/eval mode."""
    was_training = model.training
    fold_batch_norms(model, inplace=True)
    model.train(was_training)
    return model
