"""Float model → Brevitas-style quant model, and the PTQ context managers (Brevitas ``graph/quantize.py``,
``graph/calibrate.py``).

* :func:`preprocess_for_quantize` merges BatchNorm into the preceding Conv/Linear (``merge_bn=True``).
* :func:`quantize_model` swaps layers: every Linear/Conv1d/Conv2d becomes a Brevitas-style layer and every
  ``nn.ReLU`` a :class:`QuantReLU` (unsigned). Brevitas' fx flow gives a compute layer an input quantizer only
  where its input is not already quantized: here a torch.fx trace finds the compute layers fed by a ReLU
  through grid-preserving ops (flatten, max-pool, dropout, views), which take that quantized input as is; a
  layer fed through an average pool (non-negative but off the grid) gets an unsigned input quantizer, any
  other one a signed ``Int8ActPerTensorFloat``. Models that do not trace get a signed input quantizer on
  every compute layer and float ReLUs.
* :func:`calibration_mode` collects activation statistics in eval mode with activation quantization off and
  freezes them into the scale parameters on exit; :func:`bias_correction_mode` adds to each bias the mean
  output error ``E[y_float − y_quant]`` per output channel (Nagel et al. 2019, arXiv:1906.04721 §4.2, the
  empirical variant) over the batches run inside it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import LayerPlan
from quantzoo.nn import fold_batch_norms, set_submodule, swap_layers, trace_modules

from .inject import Injector
from .layers import COMPUTE_LAYERS, QuantReLU, _BrevitasComputeMixin, act_quantizers, quant_layer_from_float
from .quant_tensor import value_of

_GRID_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_NONNEG_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_GRID_FUNCTIONS = {torch.flatten, torch.reshape, F.max_pool1d, F.max_pool2d, F.dropout, F.adaptive_max_pool1d,
                   F.adaptive_max_pool2d, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute}
_NONNEG_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, torch.mean}
_GRID_METHODS = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "squeeze", "unsqueeze"}
_NONNEG_METHODS = {"mean"}
_RANK = {"quantized": 0, "nonneg": 1, "signed": 2}


def preprocess_for_quantize(model: nn.Module, merge_bn: bool = True) -> nn.Module:
    """Merge every foldable BatchNorm into its producer (in place; the model is left in eval mode)."""
    if merge_bn:
        was_training = model.training
        fold_batch_norms(model, inplace=True)
        model.train(was_training)
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
    """Collect activation statistics (eval mode, activation quantization off); freeze them on exit."""
    quants = act_quantizers(model)
    for q in quants:
        q.calibrating = True
    try:
        yield model
    finally:
        for q in quants:
            q.calibrating = False
            q.finalize()


@contextlib.contextmanager
def bias_correction_mode(model: nn.Module):
    """Accumulate ``E[y_float − y_quant]`` per output channel of every quantized compute layer over the
    batches run inside the block, then add it to the biases (creating zero biases where there were none)."""
    layers = [m for m in model.modules() if isinstance(m, _BrevitasComputeMixin) and m.weight_quantizer is not None]
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def hook(mod, inputs, output):
        x = value_of(inputs[0])
        with torch.no_grad():
            ref = mod._compute(x, mod.weight)  # float weight and the float (not input-quantized) input
            err = ref - value_of(output)
            ch = 1 if err.dim() > 2 and not isinstance(mod, nn.Linear) else err.dim() - 1
            dims = [d for d in range(err.dim()) if d != ch]
            n = err.numel() // err.shape[ch]
            total = err.sum(dim=dims)
        sums[id(mod)] = sums.get(id(mod), 0) + total
        counts[id(mod)] = counts.get(id(mod), 0) + n

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m in layers:
                if id(m) not in sums:
                    continue
                corr = sums[id(m)] / counts[id(m)]
                if m.bias is None:
                    m.bias = nn.Parameter(torch.zeros_like(corr))
                m.bias.add_(corr.to(m.bias.dtype))


def run_batches(model: nn.Module, batches) -> int:
    """Run ``batches`` (tensors or (x, y) pairs) through ``model`` without gradients; returns the count."""
    n = 0
    with torch.no_grad():
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x)
            n += 1
    return n
