"""Which layers of a converted model still run in float, and why: ``model._quantzoo_float_layers``
(``{qualified name: reason}``, names as in the user's float model, i.e. without the ``module.`` of the
wrapper the eager methods add) on every model this plugin converts, so that nothing left float is hidden
(quantzoo's quantization report reads it)."""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

#: Float torch.nn layers that hold weights or run attention/recurrence: the ones a report must account for.
LAYER_TYPES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention, nn.Embedding, nn.EmbeddingBag, nn.LayerNorm,
    nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
)
_QUANTIZED_PACKAGES = ("torch.ao.nn.quantized", "torch.ao.nn.quantizable", "torch.ao.nn.intrinsic.quantized")


def is_float_layer(mod: nn.Module) -> bool:
    """A float torch.nn layer of :data:`LAYER_TYPES` (not a torch.ao/torchao quantized one)."""
    if type(mod).__module__.startswith(_QUANTIZED_PACKAGES) or getattr(mod, "packed_weight_bits", None):
        return False
    return isinstance(mod, LAYER_TYPES)


def find_float_layers(model: nn.Module, reason: Callable[[nn.Module], str],
                      known: dict[str, str] | None = None) -> dict[str, str]:
    """``known`` (reasons the method recorded while preparing) plus every other float layer of ``model`` with
    ``reason(module)``; a layer inside one already listed is not listed again."""
    found = dict(known or {})
    for name, mod in model.named_modules():
        if not name or any(name == k or name.startswith(k + ".") for k in found):
            continue
        if is_float_layer(mod):
            found[name] = reason(mod)
    return found


def record_float_layers(body: nn.Module, model: nn.Module, reason: Callable[[nn.Module], str],
                        known: dict[str, str] | None = None) -> nn.Module:
    """Set ``model._quantzoo_float_layers`` to the float layers of ``body`` (the user's model inside
    ``model``, or ``model`` itself; see :func:`find_float_layers`) and return ``model``."""
    set_model_attr(model, "_quantzoo_float_layers", find_float_layers(body, reason, known))
    return model


def set_model_attr(model: nn.Module, name: str, value) -> None:
    """``setattr`` that survives ``copy.deepcopy`` of a ``GraphModule`` too (torch keeps the attributes named
    in ``meta['_user_preserved_attributes']``; any other attribute is dropped by its ``__deepcopy__``)."""
    setattr(model, name, value)
    if isinstance(model, fx.GraphModule):
        model.meta.setdefault("_user_preserved_attributes", {})[name] = value
