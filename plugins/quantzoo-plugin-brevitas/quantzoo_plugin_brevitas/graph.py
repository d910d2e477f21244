"""Float model → Brevitas-style quant model, and the PTQ context managers (Brevitas ``graph/quantize.py``,
``graph/calibrate.py``).

* :func:`preprocess_for_quantize` merges BatchNorm into the preceding Conv/Linear (``merge_bn=True``) with
  Brevitas' ``merge_bn`` formula.
* :func:`quantize_model` swaps layers: every Linear/Conv1d/Conv2d becomes a Brevitas-style layer and every
  ``nn.ReLU`` a :class:`QuantReLU` (unsigned). Brevitas' fx flow gives a compute layer an input quantizer only
  where its input is not already quantized: here a torch.fx trace finds the compute layers fed by a ReLU
  through grid-preserving ops (flatten, max-pool, dropout, views), which take that quantized input as is; a
  layer fed through an average pool (non-negative but off the grid) gets an unsigned input quantizer, any
  other one a signed ``Int8ActPerTensorFloat``. Models that do not trace get a signed input quantizer on
  every compute layer and float ReLUs.
* :func:`calibration_mode` collects activation statistics (a true average, no step limit) with activation and
  weight quantization off and initialises the scale parameters on exit; :func:`bias_correction_mode` adds to
  each bias the mean output error ``E[y_float − y_quant]`` per output channel (Nagel et al. 2019,
  arXiv:1906.04721 §4.2, the empirical variant), passing the float outputs on while it collects.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import LayerPlan
from quantzoo.nn import find_bn_pairs, set_submodule, swap_layers, trace_modules

from .inject import Injector
from .layers import COMPUTE_LAYERS, QuantReLU, _BrevitasComputeMixin, act_quantizers, quant_layer_from_float
from .quant_tensor import value_of
from .tensor_quant import ConstQuant, WeightQuant

_GRID_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_NONNEG_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_GRID_FUNCTIONS = {torch.flatten, torch.reshape, F.max_pool1d, F.max_pool2d, F.dropout, F.adaptive_max_pool1d,
                   F.adaptive_max_pool2d, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute}
_NONNEG_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, torch.mean}
_GRID_METHODS = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "squeeze", "unsqueeze"}
_NONNEG_METHODS = {"mean"}
_RANK = {"quantized": 0, "nonneg": 1, "signed": 2}


def merge_batch_norm(layer: nn.Module, bn: nn.Module) -> None:
    """Brevitas ``merge_bn`` (in place): ``m = γ / sqrt(var + eps)``, ``W ← W·m``, ``b ← b·m + (β − μ·m)``
    (``b ← β − μ·m`` without a bias), in Brevitas' order of float operations."""
    with torch.no_grad():
        mul = bn.weight.detach().clone() / torch.sqrt(bn.running_var + bn.eps)
        add = -bn.running_mean * mul + bn.bias.detach().clone()
        layer.weight.data.mul_(mul.view(-1, *[1] * (layer.weight.dim() - 1)))
        if layer.bias is not None:
            layer.bias.data.mul_(mul)
            layer.bias.data.add_(add)
        else:
            layer.bias = nn.Parameter(add)


def preprocess_for_quantize(model: nn.Module, merge_bn: bool = True) -> nn.Module:
    """Merge every BatchNorm that only consumes a Conv/Linear output into it (in place, Brevitas' formula;
    the BN becomes ``nn.Identity``)."""
    if merge_bn:
        for layer_name, bn_name in find_bn_pairs(model):
            layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
            if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
                continue
            merge_batch_norm(layer, bn)
            set_submodule(model, bn_name, nn.Identity())
    return model


def _classify(node, mods, float_relus: frozenset[str]) -> str:
    """How the tensor at ``node`` reaches a consumer: 'quantized' (a QuantReLU output through grid-preserving
    ops), 'nonneg' (a ReLU output through averaging, or a ReLU left float) or 'signed' (anything else)."""
    on_grid = True
    while isinstance(node, torch.fx.Node):
        nxt = node.args[0] if node.args else None
        if node.op == "call_module":
            m = mods[node.target]
            if type(m) is nn.ReLU:
                return "quantized" if on_grid and node.target not in float_relus else "nonneg"
            if isinstance(m, _NONNEG_MODULES):
                on_grid = False
            elif not isinstance(m, _GRID_MODULES):
                return "signed"
        elif node.op == "call_function":
            if node.target in _NONNEG_FUNCTIONS:
                on_grid = False
            elif node.target not in _GRID_FUNCTIONS:
                return "signed"
        elif node.op == "call_method":
            if node.target in _NONNEG_METHODS:
                on_grid = False
            elif node.target not in _GRID_METHODS:
                return "signed"
        else:
            return "signed"
        node = nxt
    return "signed"


def input_kinds(model: nn.Module, float_relus: frozenset[str] = frozenset()) -> dict[str, str] | None:
    """``{compute layer name: 'quantized'|'nonneg'|'signed'}`` from a torch.fx trace, or None if it fails.
    ``float_relus``: ReLUs that stay float (they feed a layer the layer policy keeps from the method)."""
    graph = trace_modules(model)
    if graph is None:
        return None
    kinds: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and type(graph.modules.get(node.target)) in COMPUTE_LAYERS:
            kind = _classify(node.args[0] if node.args else None, graph.modules, float_relus)
            prev = kinds.get(node.target, "quantized")
            kinds[node.target] = max(prev, kind, key=_RANK.__getitem__)
    return kinds


def input_quant_for(kind: str, act_quant: type[Injector], unsigned_act_quant: type[Injector]) -> type[Injector] | None:
    """The input quantizer a compute layer gets: none where its input is already quantized."""
    return None if kind == "quantized" else unsigned_act_quant if kind == "nonneg" else act_quant


def quantize_model(
    model: nn.Module,
    plan: LayerPlan,
    weight_quant: type[Injector],
    act_quant: type[Injector] | None,
    unsigned_act_quant: type[Injector] | None,
) -> dict[str, str] | None:
    """Swap the plan's method layers and the ReLUs that feed them for Brevitas-style ones (in place; see
    the module doc); ``act_quant=None`` quantizes weights only. Returns the input kinds of every compute
    layer (None when the model does not trace), which the policy's 8-bit layers use for their inputs."""
    relus = [n for n, m in model.named_modules() if type(m) is nn.ReLU and n]
    float_relus = frozenset(n for n in relus if plan.activation_role(n) != "method")
    kinds = input_kinds(model, float_relus) if act_quant is not None else None
    traced = kinds is not None

    def make(name: str, mod: nn.Module) -> nn.Module:
        inp = None
        if act_quant is not None:
            inp = input_quant_for(kinds.get(name, "signed") if traced else "signed", act_quant, unsigned_act_quant)
        return quant_layer_from_float(mod, weight_quant=weight_quant, input_quant=inp)

    swap_layers(model, plan.method_layers(), make)
    if traced and unsigned_act_quant is not None:
        for name in relus:
            if name not in float_relus:
                new = QuantReLU(act_quant=unsigned_act_quant)
                new.train(model.get_submodule(name).training)
                set_submodule(model, name, new)
    return kinds


@contextlib.contextmanager
def calibration_mode(model: nn.Module):
    """Brevitas ``calibration_mode``: activation quantizers collect training-mode statistics with a true average
    and no step limit (for good, as Brevitas sets them) and pass their input on unquantized; weight quantizers
    are disabled (float weights); on exit every activation scale is initialised from its statistics."""
    acts = act_quantizers(model)
    weights = [m for m in model.modules() if isinstance(m, (WeightQuant, ConstQuant))]
    was_disabled = {id(w): w.disabled for w in weights}
    for q in acts:
        q.start_calibration()
    for w in weights:
        w.disabled = True
    try:
        yield model
    finally:
        for w in weights:
            w.disabled = was_disabled[id(w)]
        for q in acts:
            q.calibrating = False
            q.finalize()


def _output_quantizer(mod: nn.Module):
    return getattr(mod, "output_quantizer", None) or getattr(mod, "output_quant", None)


def _channel_mean(t: torch.Tensor, mod: nn.Module) -> torch.Tensor:
    """Brevitas ``_BiasCorrection.compute_mean``: the mean over every dimension but the channel one (2 for a
    3-d Linear output, else 1)."""
    ch = 2 if t.dim() == 3 and isinstance(mod, nn.Linear) else 1
    t = t.transpose(0, ch)
    return t.reshape(t.shape[0], -1).mean(dim=1).detach()


@contextlib.contextmanager
def bias_correction_mode(model: nn.Module):
    """Brevitas ``bias_correction_mode``: output quantizers of layers are disabled; for every Brevitas-style
    compute layer each call adds ``mean_c(y_float) − mean_c(y_quant)`` per output channel (``y_float`` with
    float input and weight, ``y_quant`` the layer's own output) and passes ``y_float`` on to the next layer;
    on exit each bias grows by the mean of those per-batch errors (a bias is created where there was none)."""
    layers = [m for m in model.modules() if isinstance(m, _BrevitasComputeMixin)]
    outputs = [q for m in model.modules() if (q := _output_quantizer(m)) is not None and not q.disabled]
    errors: dict[int, torch.Tensor] = {}
    calls: dict[int, int] = {}

    def hook(mod, inputs, output):
        with torch.no_grad():
            y_float = mod._compute(value_of(inputs[0]), mod.weight)
            err = _channel_mean(y_float, mod) - _channel_mean(value_of(output), mod)
        errors[id(mod)] = err if id(mod) not in errors else errors[id(mod)] + err
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        return y_float

    for q in outputs:
        q.disabled = True
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for q in outputs:
            q.disabled = False
        with torch.no_grad():
            for m in layers:
                if id(m) not in errors:
                    continue
                corr = errors[id(m)] / calls[id(m)]
                if m.bias is None:
                    m.bias = nn.Parameter(corr)
                else:
                    m.bias.data += corr


def run_batches(model: nn.Module, batches) -> int:
    """Run ``batches`` (tensors or (x, y) pairs) through ``model`` without gradients; returns the count."""
    n = 0
    with torch.no_grad():
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
            n += 1
    return n
