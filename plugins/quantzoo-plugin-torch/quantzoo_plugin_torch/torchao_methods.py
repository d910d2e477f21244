"""torchao methods (optional): `torchao-int8-dynamic`, `torchao-int8-weight`, `torchao-pt2e`; backend `torchao-cpu`.

torchao is imported lazily (and quietly, see :func:`._compat.import_torchao`); without it, or without one
of the APIs a method needs, the method stays registered, its description starts with
``[unavailable: reason]`` and ``config_for_bits``/``prepare`` raise :class:`UnsupportedError` with the reason.
"""

from __future__ import annotations

import copy
import warnings
from typing import ClassVar, Literal

import torch
from torch import nn

from quantzoo.backends import Backend
from quantzoo.errors import UnsupportedError
from quantzoo import Capabilities, QuantizerConfig
from quantzoo.spec import QuantSpec

from ._compat import _quiet_loggers, import_torchao, torchao_api
from .base import PluginQuantizer, require_layers


class TorchAOInt8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight torchao's ``quantize_`` replaced by an int8 tensor subclass
    (``Int8Tensor``: int8 ``qdata`` with per-row ``scale``). The class only adds what quantzoo reads:
    ``weight_bits`` and :meth:`dequantized_weight` (the values the kernel multiplies with)."""

    weight_bits: ClassVar[int] = 8

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.dequantize()


def _mark_int8_linears(model: nn.Module) -> int:
    n = 0
    for mod in model.modules():
        if type(mod) is nn.Linear and hasattr(mod.weight, "qdata") and mod.weight.qdata.dtype == torch.int8:
            mod.__class__ = TorchAOInt8Linear
            n += 1
    if n == 0:
        raise UnsupportedError("torchao quantize_ quantized no Linear layer; the model would run in float")
    return n


class TorchAOLinearConfig(QuantizerConfig):
    """``granularity``: weight scales per output row (torchao's default ``PerRow``) or one per tensor."""

    granularity: Literal["per_row", "per_tensor"] = "per_row"


class _TorchAOQuantizeMethod(PluginQuantizer):
    """Shared: ``quantize_(model, config)`` on every ``nn.Linear`` (torchao's default filter)."""

    family = "torchao"
    default_backend = "torchao-cpu"
    Config = TorchAOLinearConfig
    feature: ClassVar[str] = ""

    @classmethod
    def availability(cls):
        return torchao_api(cls.feature)

    @classmethod
    def conformance_model(cls):
        """torchao's ``quantize_`` covers Linear layers only, so the kit gets an MLP."""
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        return model, torch.randn(8, 1, 4, 4)

    def _ao_config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _granularity(self):
        from torchao.quantization import PerRow, PerTensor

        return PerRow() if self.config.granularity == "per_row" else PerTensor()

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        require_layers(model, (nn.Linear,), self.name, "nn.Linear")
        return model.eval()

    def _convert(self, model: nn.Module) -> nn.Module:
        import_torchao()
        from torchao.quantization import quantize_

        with _quiet_loggers("torchao", "torch.utils._pytree"):
            quantize_(model, self._ao_config())
        _mark_int8_linears(model)
        return model


class TorchAOInt8DynamicQuantizer(_TorchAOQuantizeMethod):
    """torchao ``Int8DynamicActivationInt8WeightConfig``: int8 symmetric weights per row; activations
    quantized per token at run time, symmetric (``S = max|x| / 127.5``, Z = 0; torchao's
    ``choose_qparams_affine`` SYMMETRIC), matmul in int32 (``torch._int_mm``/``_int_scaled_matmul``)."""

    name = "torchao-int8-dynamic"
    paper = "torchao quantize_ (Int8DynamicActivationInt8WeightConfig); Jacob et al. 2018, arXiv:1712.05877"
    description = "torchao int8 dynamic-activation / int8-weight Linear (quantize_), CPU int8 matmul."
    capabilities = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), module_types=("Linear",))
    feature = "int8-dynamic"

    def _ao_config(self):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig(granularity=self._granularity())


class TorchAOInt8WeightOnlyQuantizer(_TorchAOQuantizeMethod):
    """torchao ``Int8WeightOnlyConfig``: int8 symmetric weights per row, float activations; the CPU kernel
    (``_weight_int8pack_mm``) multiplies float activations by int8 weights and applies the scale."""

    name = "torchao-int8-weight"
    aliases = ("torchao-int8-weight-only",)
    paper = "torchao quantize_ (Int8WeightOnlyConfig)"
    description = "torchao int8 weight-only Linear (quantize_), float activations."
    capabilities = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(None,), module_types=("Linear",))
    feature = "int8-weight"

    def _ao_config(self):
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig(granularity=self._granularity())


# ---------------------------------------------------------------------------------------------------------
# pt2e
# ---------------------------------------------------------------------------------------------------------
class PT2EConfig(QuantizerConfig):
    """X86InductorQuantizer settings (weights are always int8 per-channel there): ``reduce_range`` gives 7-bit
    activations, for CPUs without VNNI (torchao's advice)."""

    reduce_range: bool = False


class _EvalOnly(nn.Module):
    """An exported graph is captured in eval mode and refuses ``train()``/``eval()`` (torchao raises); a PTQ
    model never trains, so the wrapper records the flag and leaves the graph as it is."""

    def train(self, mode: bool = True):
        self.training = mode
        return self


class PT2EPrepared(_EvalOnly):
    """The float model until the first batch arrives; then ``torch.export`` (batch dimension dynamic) and
    ``prepare_pt2e`` on that graph. Export needs a real input, which ``Quantizer.prepare`` does not get, so
    the first calibration batch serves as the example input."""

    def __init__(self, model: nn.Module, reduce_range: bool):
        super().__init__()
        self.float_model = model
        self.reduce_range = reduce_range
        self.observed: nn.Module | None = None

    def forward(self, x):
        if self.observed is None:
            self.observed = _export_and_prepare(self.float_model, x, self.reduce_range)
            del self.float_model
        return self.observed(x)


def _export_and_prepare(model: nn.Module, x: torch.Tensor, reduce_range: bool) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    model.eval()
    dims = ({0: torch.export.Dim.AUTO},) if x.dim() > 0 else None
    with _quiet_loggers("torchao", "torch.utils._pytree", "torch._export", "torch.export"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            gm = torch.export.export(model, (x,), dynamic_shapes=dims).module()
        except Exception as exc:
            raise UnsupportedError(f"torchao-pt2e: torch.export failed on this model ({type(exc).__name__}: "
                                   f"{exc}); use 'torch-fx' or 'torch-static'") from exc
        cfg = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
        return prepare_pt2e(gm, X86InductorQuantizer().set_global(cfg))


class PT2EWeightView(nn.Module):
    """Read-only view of one int8 weight of a pt2e graph (for :func:`quantzoo.testing.find_quantized_weights`
    and size accounting); holds no tensors itself."""

    weight_bits: ClassVar[int] = 8

    def __init__(self, graph: nn.Module, qweight: str, scale: str, zero_point: str, axis: int):
        super().__init__()
        object.__setattr__(self, "_graph", graph)  # not a submodule: no duplicate state_dict entries
        self.names, self.axis = (qweight, scale, zero_point), axis

    def dequantized_weight(self) -> torch.Tensor:
        q, s, z = (getattr(self._graph, n) for n in self.names)
        shape = [1] * q.dim()
        shape[self.axis] = -1
        return (q.float() - z.reshape(shape).float()) * s.reshape(shape)


class PT2EQuantized(_EvalOnly):
    """A ``convert_pt2e`` graph: quantize/dequantize ops around float conv/linear with int8 weights (the
    reference representation inductor pattern-matches into int8 kernels, see backend ``torchao-cpu``)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph
        self.weights = nn.ModuleList(_weight_views(graph))
        # convert_pt2e bakes activation scales/zero-points into the graph as Python numbers; mirror them in
        # buffers so they live in the state_dict, and write loaded values back into the graph.
        nodes = [n for n in graph.graph.nodes if n.op == "call_function"
                           and str(n.target).split(".")[-2:] in (["quantize_per_tensor", "default"],
                                                                 ["dequantize_per_tensor", "default"])
                           and isinstance(n.args[1], float)]
        self._act_node_names = [n.name for n in nodes]  # names, not Nodes: a deepcopy rebuilds the graph
        self.register_buffer("act_scale", torch.tensor([n.args[1] for n in nodes], dtype=torch.float64))
        self.register_buffer("act_zero_point", torch.tensor([n.args[2] for n in nodes], dtype=torch.int64))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        by_name = {n.name: n for n in self.graph.graph.nodes}
        for name, s, z in zip(self._act_node_names, self.act_scale.tolist(), self.act_zero_point.tolist()):
            node = by_name[name]
            node.args = (node.args[0], s, z, *node.args[3:])
        self.graph.recompile()

    def forward(self, x):
        return self.graph(x)


def _weight_views(graph) -> list[PT2EWeightView]:
    views = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and "dequantize_per_channel" in str(node.target):
            q, s, z, axis = node.args[:4]
            if all(getattr(a, "op", None) == "get_attr" for a in (q, s, z)):
                views.append(PT2EWeightView(graph, q.target, s.target, z.target, int(axis)))
        elif node.op == "call_function" and "dequantize_per_tensor" in str(node.target):
            q = node.args[0]
            if getattr(q, "op", None) == "get_attr" and getattr(graph, q.target).dtype == torch.int8:
                raise UnsupportedError("torchao-pt2e: unexpected per-tensor int8 weight in the graph")
    return views


class TorchAOPT2EQuantizer(PluginQuantizer):
    """torchao pt2e static PTQ: ``torch.export`` → ``prepare_pt2e(X86InductorQuantizer)`` → calibrate →
    ``convert_pt2e``. Activations uint8 affine per tensor (HistogramObserver), weights int8 symmetric per
    channel; ``r = S(q - Z)`` (Jacob et al. 2018 eq. 1). Conv-BN is folded by ``convert_pt2e``."""

    name = "torchao-pt2e"
    family = "torchao"
    aliases = ("pt2e",)
    paper = "torchao pt2e (prepare_pt2e/convert_pt2e, X86InductorQuantizer); Jacob et al. 2018, arXiv:1712.05877"
    description = "torchao pt2e static PTQ with X86InductorQuantizer (torch.export graph, Q/DQ reference model)."
    Config = PT2EConfig
    capabilities = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), needs_calibration=True,
                                module_types=("Linear", "Conv2d"))
    default_backend = "torchao-cpu"

    @classmethod
    def availability(cls):
        return torchao_api("pt2e")

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        import_torchao()
        require_layers(model, (nn.Linear, nn.Conv2d), self.name, "Linear/Conv2d layer")
        return PT2EPrepared(model.eval(), self.config.reduce_range)

    def _convert(self, model: nn.Module) -> nn.Module:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        if model.observed is None:  # base class already checked calibration; this is belt and braces
            raise UnsupportedError("torchao-pt2e: the prepared model never saw a batch")
        with _quiet_loggers("torchao", "torch.utils._pytree"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            graph = convert_pt2e(model.observed)
        _drop_unused_tensors(graph)
        out = PT2EQuantized(graph)
        if not out.weights:
            raise UnsupportedError("torchao-pt2e: convert_pt2e quantized no weight; the model would run in float")
        return out


def _drop_unused_tensors(graph) -> None:
    """convert_pt2e leaves the float weights registered beside the int8 copies the graph reads; drop every
    parameter/buffer no ``get_attr`` node uses, so the state_dict (and the size) is the int8 model's."""
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    names = [n for n, _ in graph.named_parameters()] + [n for n, _ in graph.named_buffers()]
    for name in names:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attr)


TORCHAO_QUANTIZERS = [TorchAOInt8DynamicQuantizer, TorchAOInt8WeightOnlyQuantizer, TorchAOPT2EQuantizer]


class TorchAOCPUBackend(Backend):
    """torchao models on CPU: ``quantize_`` models run as they are (torchao's int8 tensor subclasses
    dispatch to int8 matmul for dynamic activations, ``_weight_int8pack_mm`` for weight-only); pt2e models
    are compiled with inductor (``torch.compile``), which pattern-matches Q/DQ + conv/linear into oneDNN
    int8 kernels. Without compilation a pt2e model is a float Q/DQ reference, so ``lower`` compiles it."""

    name = "torchao-cpu"
    real_integer = True
    description = ("torchao int8 on CPU (quantize_ tensor subclasses; pt2e through torch.compile/inductor "
                   "oneDNN int8). Weight-only int8 stores int8 but computes in float.")

    def is_available(self):
        return torchao_api("quantize_")

    def check_spec(self, weight: QuantSpec | None, activation: QuantSpec | None) -> list[str]:
        problems = []
        if weight is None or weight.dtype != "int" or weight.bits != 8 or not weight.signed:
            problems.append("weights must be int8")
        if activation is not None and (activation.dtype != "int" or activation.bits != 8):
            problems.append("activations float or 8-bit")
        return problems

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        ok, why = self.is_available()
        if not ok:
            raise UnsupportedError(f"{self.name}: {why}")
        if isinstance(model, PT2EQuantized):
            lowered = copy.deepcopy(model)
            lowered.graph = torch.compile(lowered.graph)
            return lowered.eval()
        if not any(isinstance(m, TorchAOInt8Linear) for m in model.modules()):
            raise UnsupportedError(f"{self.name} runs models from torchao-int8-dynamic, torchao-int8-weight or "
                                   "torchao-pt2e; this model has no torchao int8 layer")
        return model.eval()


TORCHAO_BACKENDS = [TorchAOCPUBackend]
