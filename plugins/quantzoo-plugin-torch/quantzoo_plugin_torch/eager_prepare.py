"""Automatic model preparation for torch.ao eager mode: what torch's eager-mode tutorial asks users to do by
hand, done by an FX pass so that users' models run unedited.

Eager ``prepare``/``convert`` swap *modules*; a functional op in ``forward`` (``x + y``, ``torch.cat``,
``x * 0.5``) is invisible to them and, after ``convert``, receives int8 tensors it has no kernel for. The
tutorial's fix is to edit the model: each such op through a ``FloatFunctional`` (``QFunctional`` after
convert), ``QuantStub``/``DeQuantStub`` where tensors enter and leave the int8 region, one module per call
so that Conv-BN-ReLU chains fuse. :func:`prepare_eager_model` traces ``forward`` with ``torch.fx`` and makes
exactly those edits on the graph:

* tensor-tensor ``add``/``mul``/``cat``/``matmul`` and tensor-scalar ``add``/``mul`` (``-``/``/`` by a
  constant as ``add_scalar``/``mul_scalar``) become :class:`FunctionalOp` modules holding a
  ``FloatFunctional``; an add whose only consumer is a ReLU becomes ``add_relu`` (torch's fused kernel, as
  torchvision's quantizable ResNet writes it);
* functional ``relu``/``relu6`` become ``nn.ReLU``/``nn.ReLU6`` modules, and a parameterless module called
  more than once (torchvision's shared ``self.relu``) gets one copy per call, so that fusion finds them;
* ``nn.TransformerEncoder``/``nn.TransformerEncoderLayer`` run their standard path as traceable modules
  (:mod:`.transformer_layers`), so attention, Linear and LayerNorm inside them are quantized too, and a
  batch-first ``MultiheadAttention`` runs sequence-first (torch.ao's quantizable one is wrong batch-first);
* every value is tracked as float, int8 or neither (shapes, token ids): a ``QuantStub`` goes on each edge
  where a float tensor meets an int8 consumer and a ``DeQuantStub`` where an int8 tensor meets a float one
  (a layer or op with no eager int8 kernel, or the output). Such float layers run in float and are listed
  in ``float_layers`` (``{name: reason}``), never hidden. The user's own stubs and ``FloatFunctional`` calls
  are kept as they are, so torchvision's quantizable models run unchanged.

A model that needs none of this stays the user's module inside ``QuantWrapper`` (exactly torch's tutorial
flow). A model that torch.fx cannot trace falls back to that too; if it then needs an edit, the first int8
forward fails and :func:`quantzoo_plugin_torch.errors.explain_int8_failure` names the layer and the trace
problem.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .fusion import find_fusion_groups
from .transformer_layers import use_sequence_first_attention, use_standard_encoders

FLOAT, INT8, OTHER = "float", "int8", "other"  # what a graph value is: float tensor, quantized tensor, neither

# -- functional ops that become FloatFunctional calls ------------------------------------------------------
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__", "__radd__"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_MATMUL = {operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"}
_SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
_DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_RELU = {F.relu, torch.relu, "relu", "relu_"}
_RELU6 = {F.relu6}

# -- ops and leaf modules that run on quantized tensors as they are (tests/test_eager_prepare.py runs each
# on a quint8 tensor, so the list cannot claim what torch does not do) --------------------------------------
PASSTHROUGH_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
    torch.unsqueeze, torch.chunk, torch.split, torch.mean, torch.clamp, torch.sigmoid, torch.tanh,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.max_pool1d, F.max_pool2d,
    F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.dropout, F.interpolate, F.pad, F.hardtanh,
    F.gelu, F.leaky_relu, F.hardsigmoid, torch.nn.functional.relu6,
}
PASSTHROUGH_METHODS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
    "expand", "chunk", "split", "mean", "clamp", "sigmoid", "tanh", "__getitem__",
}
PASSTHROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Identity, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.GELU,
    nn.Hardsigmoid, nn.Upsample,
)
_NOT_A_TENSOR_METHODS = {"size", "dim", "numel", "__len__"}


class FunctionalOp(nn.Module):
    """One functional op of ``forward`` as a module: ``FloatFunctional`` until ``convert``, which swaps it for
    ``QFunctional`` (int8 kernel, output scale from the observer). ``op`` is a ``FloatFunctional`` method
    name: add, add_relu, mul, cat, matmul, add_scalar, mul_scalar."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.ff = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, *args, **kwargs):
        return getattr(self.ff, self.op)(*args, **kwargs)

    def extra_repr(self) -> str:
        return self.op


@dataclass
class EagerPlan:
    """What :func:`prepare_eager_model` did: the model to hand to ``prepare``/``prepare_qat``, the layers and
    ops that run in float (``{name: reason}``), the rewrites, the fused module groups, and the trace failure
    when the graph pass was skipped."""

    model: nn.Module
    float_layers: dict[str, str] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    trace_error: BaseException | None = None


class _Tracer(fx.Tracer):
    """torch.fx's default leaves (torch.nn / torch.ao modules); ``FloatFunctional`` methods are traced
    through, which shows their op followed by a call of their ``activation_post_process``."""


def kernel_modules(qat: bool) -> tuple[type, ...]:
    """Leaf module types torch.ao's eager flow swaps for an int8 module (static or QAT mapping, plus the
    custom modules of its default config: LSTM; MultiheadAttention for static only, because prepare_qat fails
    on its ``out_proj`` ("qat.Linear.from_float only works for Linear"))."""
    import torch.ao.quantization as tq

    types = set(tq.get_default_static_quant_module_mappings())
    if qat:
        types |= set(tq.get_default_qat_module_mappings())
    types |= {nn.LSTM} if qat else {nn.LSTM, nn.MultiheadAttention}
    types -= {tq.QuantStub, tq.DeQuantStub, nn.Embedding, nn.EmbeddingBag}
    return tuple(types)


def island_reason(mod: nn.Module, qat: bool) -> str:
    """Why eager mode leaves ``mod`` in float."""
    if qat and type(mod) is nn.MultiheadAttention:
        return ("torch.ao's QAT flow cannot prepare MultiheadAttention (prepare_qat fails on its out_proj); "
                "torch-static quantizes it after training")
    return f"{type(mod).__name__} has no int8 module in torch.ao's eager flow"


def prepare_eager_model(model: nn.Module, qconfig, qat: bool, fuse: bool = True) -> EagerPlan:
    """The model with the edits eager mode needs (see the module docstring), Conv-BN(-ReLU) chains fused and
    ``qconfig`` set on its root; ``model`` itself is modified (pass a copy)."""
    import torch.ao.quantization as tq

    model.qconfig = qconfig  # before QuantWrapper, which hands it to its QuantStub
    use_standard_encoders(model)  # traceable, and its attention, Linear and LayerNorm layers quantizable
    use_sequence_first_attention(model)  # torch.ao's quantizable attention is wrong batch-first (#67651)
    has_stubs = any(isinstance(m, tq.QuantStub) for m in model.modules())
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types, all mean untraceable:
        # torch's plain eager flow; a failure is explained at convert
        groups = _fuse(model, qat) if fuse else []
        return EagerPlan(model if has_stubs else tq.QuantWrapper(model), groups=groups, trace_error=exc)
    gm = fx.GraphModule(model, graph, model.__class__.__name__).train(model.training)
    rewriter = _Rewriter(gm, qat)
    rewriter.rewrite()
    gm.recompile()
    if not rewriter.rewritten and not rewriter.uniquified:  # maybe nothing to edit: keep the user's module
        groups = _fuse(model, qat) if fuse else []
        gm = fx.GraphModule(model, _Tracer().trace(model), model.__class__.__name__)
        rewriter = _Rewriter(gm, qat)
        rewriter.place_stubs()
        if not rewriter.needs_graph():
            return EagerPlan(model if has_stubs else tq.QuantWrapper(model), groups=groups)
    else:
        groups = _fuse(gm, qat) if fuse else []
        rewriter.place_stubs()
    gm.graph.lint()
    gm.recompile()
    for name in rewriter.dropped_modules:  # the user's FloatFunctionals whose calls became FunctionalOps
        if name in dict(gm.named_modules()):
            _delete_submodule(gm, name)
    gm.qconfig = qconfig
    return EagerPlan(GraphWrapper(gm), rewriter.float_layers, rewriter.rewritten, groups)


def _fuse(model: nn.Module, qat: bool) -> list[list[str]]:
    """Fuse the Conv-BN(-ReLU)/Linear(-ReLU) chains of ``model`` in place; the module-name groups fused."""
    from torch.ao.quantization import fuse_modules, fuse_modules_qat

    groups = find_fusion_groups(model)
    if groups:
        (fuse_modules_qat if qat else fuse_modules)(model, groups, inplace=True)
    return groups


class GraphWrapper(nn.Module):
    """The rewritten ``GraphModule`` as ``.module`` (the name ``QuantWrapper`` uses too, so layer names are
    ``module.<the user's name>`` either way). A plain module outside it keeps the plugin's attributes and
    hooks across ``copy.deepcopy``, which rebuilds a GraphModule and drops both."""

    def __init__(self, module: fx.GraphModule):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _delete_submodule(root: nn.Module, name: str) -> None:
    parent, _, attr = name.rpartition(".")
    delattr(root.get_submodule(parent) if parent else root, attr)


def _scope(node: fx.Node) -> str:
    """The qualified name of the module whose ``forward`` made ``node`` (``""`` for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


class _Rewriter:
    """Two passes over the graph in topological order: :meth:`rewrite` (functional ops → modules, one module
    per call), then, after fusion, :meth:`place_stubs` (value domains, stubs, float layers)."""

    def __init__(self, gm: fx.GraphModule, qat: bool):
        self.gm, self.graph, self.qat, self.kernels = gm, gm.graph, qat, set(kernel_modules(qat))
        self.placing = False
        self.modules = dict(gm.named_modules())
        self.domain: dict[fx.Node, str] = {}
        self.float_layers: dict[str, str] = {}
        self.rewritten: list[str] = []
        self.dropped_modules: list[str] = []
        self.stubs: dict[tuple[fx.Node, str], fx.Node] = {}
        self.user_stubs = False
        self.placeholders_float = 0
        self.placeholders_other = 0
        self.uniquified = False
        self.erased: set[fx.Node] = set()

    def needs_graph(self) -> bool:
        """False when the user's module (in QuantWrapper unless it has its own stubs) is already what eager
        mode needs: nothing rewritten or left float, one float input, one tensor output."""
        if self.rewritten or self.float_layers or self.uniquified:
            return True
        if self.placeholders_float != 1 or self.placeholders_other:
            return True
        if self.user_stubs:
            return bool(self.stubs)
        output = next(n for n in self.graph.nodes if n.op == "output")
        return not (isinstance(output.args[0], fx.Node) and len(self.stubs) == 2)

    # -- helpers ---------------------------------------------------------------------------------------
    def _add_module(self, base: str, module: nn.Module) -> str:
        name, i = base, 0
        while name in self.modules or hasattr(self.gm, name):
            i += 1
            name = f"{base}_{i}"
        self.gm.add_module(name, module.train(self.gm.training))  # fusion wants one mode in a chain
        self.modules[name] = module
        return name

    def _call_module(self, node: fx.Node, base: str, module: nn.Module, args, kwargs=None) -> fx.Node:
        target = self._add_module(base, module)
        with self.graph.inserting_before(node):
            new = self.graph.call_module(target, tuple(args), kwargs or {})
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)
        return new

    def _tensor(self, a) -> bool:
        return isinstance(a, fx.Node) and self.domain.get(a) in (FLOAT, INT8)

    def _stub(self, node: fx.Node, arg: fx.Node, want: str) -> fx.Node:
        """``arg`` converted to ``want`` for ``node``: a QuantStub/DeQuantStub shared by all its consumers."""
        import torch.ao.quantization as tq

        key = (arg, want)
        if key not in self.stubs:
            base = ("quant_" if want == INT8 else "dequant_") + arg.name
            target = self._add_module(base, tq.QuantStub() if want == INT8 else tq.DeQuantStub())
            with self.graph.inserting_after(arg):
                stub = self.graph.call_module(target, (arg,))
            self.domain[stub] = want
            self.stubs[key] = stub
        return self.stubs[key]

    def _convert_args(self, node: fx.Node, want: str) -> None:
        """Give every tensor argument of ``node`` the domain ``want`` (stubs where it differs)."""
        if not self.placing:
            return

        def fix(a):
            if isinstance(a, fx.Node) and self._tensor(a) and self.domain[a] != want:
                return self._stub(node, a, want)
            return a

        node.args = fx.node.map_arg(node.args, fix)
        node.kwargs = fx.node.map_arg(node.kwargs, fix)

    def _first_domain(self, node: fx.Node) -> str:
        found = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(self.domain.get(a, OTHER)))
        tensors = [d for d in found if d in (FLOAT, INT8)]
        return tensors[0] if tensors else OTHER

    def _float_op(self, node: fx.Node, what: str, reason: str) -> None:
        if not self.placing:
            return
        scope = _scope(node)
        name = f"{scope}.{node.name}" if scope else node.name
        self.float_layers[name] = f"{what}: {reason}; runs in float between DeQuantStub and QuantStub"

    # -- the pass --------------------------------------------------------------------------------------
    def rewrite(self) -> None:
        self._drop_floatfunctional_observers()
        self._walk()

    def place_stubs(self) -> None:
        """Second pass, on the fused graph: every call's inputs get the domain it needs."""
        self.modules = dict(self.gm.named_modules())
        self.domain.clear()
        self.placing = True
        self._walk()

    def _walk(self) -> None:
        for node in list(self.graph.nodes):
            if node not in self.erased:  # a ReLU merged into add_relu by an earlier rewrite is gone
                self._visit(node)

    def _drop_floatfunctional_observers(self) -> None:
        """A traced ``FloatFunctional.add`` is ``torch.add`` then its ``activation_post_process`` (an Identity
        in float); drop the latter: the op is rewritten into a FunctionalOp like any functional add."""
        ff_type = torch.ao.nn.quantized.FloatFunctional
        for node in list(self.graph.nodes):
            if node.op == "call_module" and node.target.endswith("activation_post_process"):
                owner = node.target.rpartition(".")[0]
                if isinstance(self.modules.get(owner), ff_type):
                    node.replace_all_uses_with(node.args[0])
                    self.graph.erase_node(node)
                    if owner not in self.dropped_modules:
                        self.dropped_modules.append(owner)

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            embedding_only = node.users and all(
                u.op == "call_module" and isinstance(self.modules.get(u.target), (nn.Embedding, nn.EmbeddingBag))
                for u in node.users)
            self.domain[node] = OTHER if embedding_only else FLOAT
            if self.placing and embedding_only:
                self.placeholders_other += 1
            elif self.placing and node.users:
                self.placeholders_float += 1
        elif node.op == "get_attr":
            self.domain[node] = FLOAT if isinstance(getattr_path(self.gm, node.target), torch.Tensor) else OTHER
        elif node.op == "output":
            self._convert_args(node, FLOAT)
        elif node.op == "call_module":
            self._visit_module(node)
        else:
            self._visit_function(node)

    def _visit_module(self, node: fx.Node) -> None:
        import torch.ao.quantization as tq

        mod = self.modules[node.target]
        if _stateless(mod) and self._called_before(node):  # one observer / fusion per call site
            node.target = self._add_module(node.target.replace(".", "_"), copy.deepcopy(mod))
            mod = self.modules[node.target]
            self.uniquified = True
        if isinstance(mod, tq.QuantStub):
            self.user_stubs = True
            self._convert_args(node, FLOAT)
            self.domain[node] = INT8
        elif isinstance(mod, tq.DeQuantStub):
            self.user_stubs = True
            self._convert_args(node, INT8)
            self.domain[node] = FLOAT
        elif type(mod) in self.kernels or isinstance(mod, FunctionalOp):  # exact types: torch swaps by type
            self._convert_args(node, INT8)
            self.domain[node] = INT8
        elif isinstance(mod, PASSTHROUGH_MODULES):
            self.domain[node] = self._first_domain(node)
        elif type(mod) in (nn.Embedding, nn.EmbeddingBag):  # int8 weights (weight-only), float output
            if self.placing:
                mod.qconfig = tq.float_qparams_weight_only_qconfig  # torch's eager recipe for embeddings
            self._convert_args(node, FLOAT)
            self.domain[node] = FLOAT
        else:
            self._convert_args(node, FLOAT)
            self.domain[node] = FLOAT
            if self.placing:
                mod.qconfig = None  # not observed, not swapped: its weights stay float
                self.float_layers[node.target] = f"{island_reason(mod, self.qat)}; runs in float between " \
                                                 "DeQuantStub and QuantStub"

    def _called_before(self, node: fx.Node) -> bool:
        for other in self.graph.nodes:
            if other is node:
                return False
            if other.op == "call_module" and other.target == node.target:
                return True
        return False

    def _visit_function(self, node: fx.Node) -> None:
        target = node.target
        tensors = [a for a in (*node.args, *node.kwargs.values()) if self._tensor(a)]
        if node.op == "call_method" and target in _NOT_A_TENSOR_METHODS:
            self.domain[node] = OTHER
            return
        if node.op == "call_function" and target is getattr:
            self.domain[node] = OTHER  # x.shape, x.dtype, ...
            return
        if not tensors and not (target in _CAT and self._cat_inputs(node)):
            self.domain[node] = OTHER  # arithmetic on sizes and constants
            return
        if self._rewrite_functional(node):
            return
        if target in _RELU or target in _RELU6:
            module = nn.ReLU() if target in _RELU else nn.ReLU6()
            new = self._call_module(node, f"{node.name}", module, node.args[:1])
            self.rewritten.append(f"{node.name}: {target if isinstance(target, str) else target.__name__} -> "
                                  f"nn.{type(module).__name__}")
            self._visit_module(new)
            return
        passthrough = (node.op == "call_function" and target in PASSTHROUGH_FUNCTIONS) or (
            node.op == "call_method" and target in PASSTHROUGH_METHODS)
        if passthrough:
            self.domain[node] = self._first_domain(node)
            return
        what = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        self._convert_args(node, FLOAT)
        self.domain[node] = FLOAT
        self._float_op(node, f"{what!r}", "no int8 kernel in eager mode")

    def _cat_inputs(self, node: fx.Node) -> bool:
        seq = node.args[0] if node.args else node.kwargs.get("tensors", ())
        return isinstance(seq, (list, tuple)) and any(self._tensor(a) for a in seq)

    def _rewrite_functional(self, node: fx.Node) -> bool:
        """add/mul/cat/matmul (and scalar forms) → FunctionalOp; returns whether it rewrote ``node``."""
        target, args, kwargs = node.target, list(node.args), dict(node.kwargs)
        if kwargs.get("alpha", 1) != 1 or kwargs.get("out") is not None:
            return False
        kwargs.pop("alpha", None)
        if target in _CAT:
            dim = kwargs.pop("dim", args[1] if len(args) > 1 else 0)
            seq = list(args[0]) if args else list(kwargs.pop("tensors"))
            if kwargs or not all(self._tensor(a) for a in seq):
                return False
            return self._functional(node, "cat", [seq], {"dim": dim})
        if len(args) != 2 or kwargs:
            return False
        a, b = args
        if target in _ADD or target in _MUL:
            op = "add" if target in _ADD else "mul"
            if self._tensor(a) and self._tensor(b):
                if op == "add" and self._only_user_is_relu(node):
                    return self._functional(node, "add_relu", [a, b], {}, merge_relu=True)
                return self._functional(node, op, [a, b], {})
            tensor, scalar = (a, b) if self._tensor(a) else (b, a)
            if isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
                return self._functional(node, f"{op}_scalar", [tensor, float(scalar)], {})
            return False
        if target in _MATMUL and self._tensor(a) and self._tensor(b):
            return self._functional(node, "matmul", [a, b], {})
        if (target in _SUB or target in _DIV) and self._tensor(a) and isinstance(b, (int, float)) \
                and not isinstance(b, bool) and (target in _SUB or b != 0):
            if target in _SUB:
                return self._functional(node, "add_scalar", [a, -float(b)], {})
            return self._functional(node, "mul_scalar", [a, 1.0 / float(b)], {})
        return False

    def _only_user_is_relu(self, node: fx.Node) -> bool:
        if len(node.users) != 1:
            return False
        user = next(iter(node.users))
        if user.args[:1] != (node,):
            return False
        if user.op == "call_module":  # a shared nn.ReLU too: it is stateless, merging drops just this call
            return type(self.modules.get(user.target)) is nn.ReLU
        return user.op in ("call_function", "call_method") and user.target in _RELU

    def _functional(self, node: fx.Node, op: str, args: list, kwargs: dict, merge_relu: bool = False) -> bool:
        relu = next(iter(node.users)) if merge_relu else None
        scope = _scope(node)
        new = self._call_module(node, f"{scope.replace('.', '_')}_{op}" if scope else op, FunctionalOp(op),
                                args, kwargs)
        if relu is not None:
            relu.replace_all_uses_with(new)
            self.graph.erase_node(relu)
            self.erased.add(relu)
        self.rewritten.append(f"{new.target}: {op}")
        self._convert_args(new, INT8)
        self.domain[new] = INT8
        return True


def _stateless(mod: nn.Module) -> bool:
    return next(mod.parameters(), None) is None and next(mod.buffers(), None) is None


def getattr_path(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
