"""nnieqat's workflow (aovoc/nnieqat-pytorch ``nnieqat/quantize.py``) on quantzoo's logarithmic math, for any
device (the original calls ``.cuda()`` and a closed GPU library). Checked against nnieqat's own functions in
``tests/test_anchor_nnieqat.py``.

* :func:`register_quantization_hook` adds a forward-pre-hook to every leaf module with a weight except BatchNorm
  that copies the current ``weight`` into the buffer ``weight_origin`` and replaces ``weight.data`` by its NNIE
  quantization, and a forward hook to every ReLU/ELU/LeakyReLU/PReLU that quantizes the output anchored on a
  never-decaying running ``max|act|`` (buffer ``act_max``, raised by every forward pass, evaluation included).
* :func:`unquant_weight` copies ``weight_origin`` back; the training loop calls it before ``optimizer.step()`` so
  that the gradient computed at the quantized weights updates the float copy (nnieqat's manual STE). As in
  nnieqat, a second forward pass before that copies the *quantized* weight into ``weight_origin``: the float
  weights are then gone (two evaluation batches in a row do it).
* :func:`merge_freeze_bn` folds each BatchNorm into a Conv2d/Conv3d that precedes it among its siblings and
  leaves an identity in its place; every other BatchNorm is frozen (evaluation mode, affine parameters without
  gradient).

Hooks are small callable objects (not closures) so prepared models deep-copy and pickle.
"""

from __future__ import annotations

import torch
from torch import nn

from quantzoo.math import ste
from quantzoo.math.logarithmic import log_quantize

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ACTIVATION_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.PReLU)


class WeightQuantHook:
    """Forward-pre-hook: ``weight_origin ← weight``, ``weight ← NNIE(weight)`` (nnieqat ``_quantizing_weight``)."""

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, inputs):
        with torch.no_grad():
            module.weight_origin.copy_(module.weight.data)
            module.weight.data.copy_(log_quantize(module.weight.data, bits=self.bits))
        return None


class ActQuantHook:
    """Forward hook (nnieqat ``_quantizing_activation``): ``act_max ← max(act_max, max|out|)`` in every mode, then
    the NNIE quantization of the output anchored on ``act_max``, with a straight-through gradient (nnieqat writes
    the values into ``output.data``; autograd still differentiates the float output, also ReLU's, whose saved
    result is not that tensor's data — checked against nnieqat's gradients in ``tests/test_anchor_nnieqat.py``).
    """

    def __init__(self, bits: int):
        self.bits = bits

    def __call__(self, module: nn.Module, inputs, output):
        with torch.no_grad():
            module.act_max.copy_(torch.maximum(module.act_max, output.detach().abs().max().float()))
        return ste(output, log_quantize(output.detach(), module.act_max, bits=self.bits))


def _is_weight_leaf(mod: nn.Module) -> bool:
    return (not any(True for _ in mod.children()) and isinstance(getattr(mod, "weight", None), torch.Tensor)
            and not isinstance(mod, BATCH_NORMS))


def register_quantization_hook(model: nn.Module, weight_bits: int | None = 8, activation_bits: int | None = 8
                               ) -> tuple[int, int]:
    """Add the weight and activation hooks (None bits: that role stays float). Returns the hooked counts."""
    n_w = n_a = 0
    for mod in model.modules():
        if mod is model:
            continue
        if weight_bits is not None and _is_weight_leaf(mod):
            mod.register_buffer("weight_origin", mod.weight.detach().clone())
            mod._nnie_weight_hook = mod.register_forward_pre_hook(WeightQuantHook(weight_bits))
            mod.nnie_weight_bits = weight_bits
            n_w += 1
        if activation_bits is not None and isinstance(mod, ACTIVATION_TYPES):
            mod.register_buffer("act_max", torch.zeros(()))
            mod.register_forward_hook(ActQuantHook(activation_bits))
            mod.nnie_activation_bits = activation_bits
            n_a += 1
    return n_w, n_a


@torch.no_grad()
def unquant_weight(module: nn.Module) -> None:
    """Copy the backup into the weight of one hooked module (use with ``model.apply``)."""
    origin = getattr(module, "weight_origin", None)
    if origin is not None:
        module.weight.data.copy_(origin)


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
    del module._buffers["weight_origin"]
    module.weight_bits = module.nnie_weight_bits  # read by quantzoo's conformance kit


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.Module) -> None:
    """nnieqat's ``_fuse_conv_bn_weights`` (its operation order): ``w·(γ·rsqrt(var+ε))``,
    ``(b − μ)·rsqrt(var+ε)·γ + β``."""
    bias = conv.bias if conv.bias is not None else bn.running_mean.new_zeros(bn.running_mean.shape)
    rsqrt = torch.rsqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * (bn.weight * rsqrt).reshape([-1] + [1] * (conv.weight.dim() - 1)))
    conv.bias = nn.Parameter((bias - bn.running_mean) * rsqrt * bn.weight + bn.bias)


def _merge(container: nn.Module) -> None:
    conv = None
    for name, child in list(container.named_children()):
        if isinstance(child, BATCH_NORMS):
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)):
                _fold(conv, child)
                setattr(container, name, nn.Identity())
            conv = None
        elif isinstance(child, (nn.Conv2d, nn.Conv3d)):
            conv = child
        else:  # (nnieqat does not reset ``conv`` here: Conv → ReLU → BN folds too)
            _merge(child)


def merge_freeze_bn(model: nn.Module) -> nn.Module:
    """nnieqat's ``merge_freeze_bn``: fold each BatchNorm whose preceding sibling module is a Conv2d/Conv3d into
    it (an identity takes its place), then :func:`freeze_bn` the others (the quantizer repeats that at every
    epoch, after the training loop's ``model.train()``)."""
    _merge(model)
    freeze_bn(model)
    return model


def freeze_bn(model: nn.Module) -> None:
    """nnieqat's ``freeze_bn`` on every BatchNorm: evaluation mode, affine parameters without gradient."""
    for m in model.modules():
        if isinstance(m, BATCH_NORMS):
            m.eval()
            if m.affine:
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
