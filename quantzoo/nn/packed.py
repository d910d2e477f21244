"""Low-bit layers and their bit-packed storage (shared by the DoReFa, TWN, BNN and XNOR-Net plugins).

Three pieces:

* **Coded weight quantizers** (:class:`CodedWeightQuantizer`): a weight quantizer that can say which
  unsigned integer codes, scale and offset its output is made of (``w_q = (c − offset)·scale``, see
  :func:`quantzoo.math.dequantize_codes`). Binary weights are 1-bit codes, ternary 2-bit, DoReFa k-bit.
* **Low-bit layers** (:class:`LowBitLinear`, :class:`LowBitConv1d`, :class:`LowBitConv2d`): the core's
  quantized layers plus one extension, an input quantizer with ``scaled_forward(x) -> (x_q, s)`` whose map
  ``s`` multiplies the layer output (XNOR-Net's ``K``, Rastegari et al. 2016 §3.2).
* **Packed layers** (:class:`PackedLayer`): what :func:`pack_model` turns a converted layer into. The
  weight is stored as ``pack_bits`` bytes (1, 2, 4 or 8 bits a weight) plus its scale/offset and
  unpacked on every forward pass: storage, not integer arithmetic. The state dict of a packed model is the
  file format (``torch.save`` of tensors only, loadable with ``weights_only=True``).

:func:`bake_layer` is the convert step of these plugins: it writes ``(c − offset)·scale`` into the weight
and keeps ``weight_scale``/``weight_offset`` buffers, so that packing recovers the codes exactly and the
packed model computes bit-for-bit the same weights as the converted one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..math import PACKABLE_BITS, binarize, dequantize_codes, pack_bits, quantize, ste, unpack_bits
from ..spec import QuantSpec
from .fake_quant import FakeQuant
from .layers import QuantConv1d, QuantConv2d, QuantLayerMixin, QuantLinear
from .swap import compute_layers, replace_layers


@dataclass
class WeightCodes:
    """``w_q = (codes − offset)·scale``: ``codes`` integral floats in ``[0, 2^bits − 1]`` (they may carry a
    straight-through gradient), ``scale``/``offset`` scalars or per-output-channel vectors (axis 0)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        return dequantize_codes(self.codes, self.scale, self.offset, axis=0)


class CodedWeightQuantizer(nn.Module):
    """A weight quantizer whose output is ``WeightCodes.dequantize()``; subclasses implement :meth:`encode`
    and may override :meth:`forward` to route the gradient differently (the value must stay the same)."""

    bits: int = 0

    def encode(self, w: torch.Tensor) -> WeightCodes:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.encode(w).dequantize()


class BinaryWeight(CodedWeightQuantizer):
    """``w_b = α·sign(w)`` (sign(0)=+1) stored as 1-bit codes ``c = (sign(w)+1)/2``, ``scale = 2α``, ``offset = ½``.

    ``scale``: ``"none"`` (α = 1, BNN: Courbariaux/Hubara et al. 2016, arXiv:1602.02830 eq. 1),
    ``"layer"`` (α = E|w| over the tensor, DoReFa eq. 7; Zhou et al. 2016, arXiv:1606.06160) or
    ``"channel"`` (α_o = mean|W_o| per output channel, XNOR-Net's BWN, Rastegari et al. 2016 eq. 6).
    ``clip``: the sign's straight-through gradient is cancelled where ``|w| > clip`` (None: identity).
    ``scale_grad``: α keeps its gradient (XNOR-Net §3.1 differentiates through α); otherwise α is a constant
    and the whole gradient is straight-through (DoReFa eq. 8).
    """

    bits = 1

    def __init__(self, scale: str = "none", clip: float | None = 1.0, scale_grad: bool = False):
        super().__init__()
        if scale not in ("none", "layer", "channel"):
            raise ValueError(f"BinaryWeight scale must be none, layer or channel, not {scale!r}")
        self.scale, self.clip, self.scale_grad = scale, clip, scale_grad

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        w = w if self.scale_grad else w.detach()
        if self.scale == "none":
            return torch.ones((), dtype=w.dtype, device=w.device)
        if self.scale == "layer":
            return w.abs().mean()
        return w.abs().reshape(w.shape[0], -1).mean(dim=1)

    def encode(self, w: torch.Tensor) -> WeightCodes:
        b = binarize(w, self.clip)
        return WeightCodes((b + 1) / 2, 2 * self.alpha(w), torch.tensor(0.5), 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.clip is None and not self.scale_grad:
            return ste(w, self.encode(w.detach()).dequantize())  # eq. 8: ∂c/∂r_i = ∂c/∂r_o
        return self.encode(w).dequantize()

    def extra_repr(self) -> str:
        return f"scale={self.scale}, clip={self.clip}, scale_grad={self.scale_grad}"


class InputBatchNorm(nn.Module):
    """BatchNorm over the channel dimension of a layer's input: dim 1 for convolutions, the last dim for
    Linear (any leading shape). The "BN" that precedes the binary activation in BNN (Alg. 1) and XNOR-Net
    (§3.2, block BN → BinActiv → BinConv → Pool)."""

    def __init__(self, num_features: int, conv: bool):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(num_features) if conv else nn.BatchNorm1d(num_features)

    def forward(self, x):
        if self.conv:
            if x.dim() == 3:  # Conv1d input (N, C, L)
                return self.bn(x.unsqueeze(-1)).squeeze(-1)
            return self.bn(x)
        shape = x.shape
        return self.bn(x.reshape(-1, shape[-1])).reshape(shape)


def input_batchnorm(mod: nn.Module) -> InputBatchNorm:
    """An :class:`InputBatchNorm` sized for the input of ``mod`` (Linear/Conv1d/Conv2d)."""
    if isinstance(mod, nn.Linear):
        return InputBatchNorm(mod.in_features, conv=False)
    return InputBatchNorm(mod.in_channels, conv=True)


class BinaryActivation(nn.Module):
    """``sign(BN(x))`` with the straight-through gradient cancelled where ``|BN(x)| > 1`` (BNN, Hubara et al.
    2016, arXiv:1602.02830 Alg. 1 and eq. 4). ``norm=None`` binarizes ``x`` directly."""

    bits = 1

    def __init__(self, norm: nn.Module | None = None, clip: float | None = 1.0):
        super().__init__()
        self.norm = norm
        self.clip = clip

    def normalized(self, x):
        return self.norm(x) if self.norm is not None else x

    def forward(self, x):
        return binarize(self.normalized(x), self.clip)


# -- low-bit layers -----------------------------------------------------------------------------------------
def run_layer(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Input quantizer → compute → (× output scale map) → output quantizer.

    An input quantizer with ``scaled_forward`` returns ``(x_q, s)`` and the layer output is multiplied by
    ``s`` (broadcast), which is how XNOR-Net's ``sign(I) ⊛ sign(W) ⊙ K·α`` is computed (eq. 11).
    """
    out_scale = None
    iq = layer.input_quantizer
    if iq is not None:
        if hasattr(iq, "scaled_forward"):
            x, out_scale = iq.scaled_forward(x)
        else:
            x = iq(x)
    out = layer._compute(x, weight)
    if out_scale is not None:
        out = out * out_scale
    if layer.output_quantizer is not None:
        out = layer.output_quantizer(out)
    return out


class _LowBitMixin:
    def _quant_forward(self, x):
        return run_layer(self, x, self.quantized_weight())


class LowBitLinear(_LowBitMixin, QuantLinear):
    """:class:`~quantzoo.nn.QuantLinear` whose input quantizer may scale the output (:func:`run_layer`)."""


class LowBitConv1d(_LowBitMixin, QuantConv1d):
    """:class:`~quantzoo.nn.QuantConv1d` whose input quantizer may scale the output (:func:`run_layer`)."""


class LowBitConv2d(_LowBitMixin, QuantConv2d):
    """:class:`~quantzoo.nn.QuantConv2d` whose input quantizer may scale the output (:func:`run_layer`)."""


_LOWBIT = {nn.Linear: LowBitLinear, nn.Conv1d: LowBitConv1d, nn.Conv2d: LowBitConv2d}


def to_lowbit_layer(mod: nn.Module, **quantizers) -> nn.Module:
    """The low-bit twin of a Linear/Conv1d/Conv2d, sharing its parameters."""
    cls = _LOWBIT.get(type(mod))
    if cls is None:
        raise TypeError(f"no low-bit layer for {type(mod).__name__}; supported: Linear, Conv1d, Conv2d")
    return cls.from_float(mod, **quantizers)


def int8_layer(mod: nn.Module) -> nn.Module:
    """The 8-bit first/last layer of the ``"int8"`` layer policy: per-channel symmetric min-max weights and
    an asymmetric 8-bit moving-average input (the uniform baseline's specs), packable at 8 bits."""
    from ..quantizers.uniform import make_observer

    w_spec = QuantSpec(bits=8, symmetric=True, granularity="per_channel", axis=0)
    a_spec = QuantSpec(bits=8, signed=False, symmetric=False)
    return to_lowbit_layer(mod, weight_quantizer=FakeQuant(w_spec, make_observer("minmax", w_spec)),
                           input_quantizer=FakeQuant(a_spec, make_observer("moving_average_minmax", a_spec)))


def quantize_layers(model: nn.Module, make, *, first_layer: str, last_layer: str, method: str) -> list[str]:
    """:func:`~quantzoo.nn.replace_layers` that refuses a model in which no layer gets the method's own
    low-bit quantization (all layers kept FP or 8-bit by the first/last-layer policy): that model would be
    reported under the method's bits while running at other precisions."""
    body: list[str] = []
    n = len(compute_layers(model))

    def make_and_record(name, mod, role):
        if role == "body":
            body.append(name)
        return make(name, mod, role)

    done = replace_layers(model, make_and_record, first_layer=first_layer, last_layer=last_layer)
    if not body:
        raise UnsupportedError(
            f"{method}: no layer left to quantize at the method's bit width: the model has {n} Linear/Conv "
            f"layer(s) and first_layer={first_layer!r}, last_layer={last_layer!r} keep them in full precision "
            "or 8 bits; set first_layer='same' or last_layer='same'")
    return done


def replace_relus(model: nn.Module, make=nn.Identity, upto: str | None = None) -> int:
    """Replace ``nn.ReLU`` modules by ``make()`` (binary nets use sign as their nonlinearity); returns how
    many were replaced. With ``upto`` (a module name) only the ReLUs registered before that module are
    replaced — in the zoo's sequential models those are the ones that feed it; ReLUs after the last binary
    layer feed only full-precision layers and stay. Functional ``F.relu`` calls cannot be seen and stay."""
    names = []
    for n, m in model.named_modules():
        if upto is not None and n == upto:
            break
        if isinstance(m, nn.ReLU) and n:
            names.append(n)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make())
    return len(names)


def prepare_lowbit(model: nn.Module, body_layer, *, first_layer: str, last_layer: str, method: str,
                   replace_relu: bool = False) -> list[str]:
    """The ``_prepare`` of the low-bit plugins (in place): every body layer becomes ``body_layer(name, mod)``
    (the method's low-bit layer), a first/last layer under the ``"int8"`` policy :func:`int8_layer`, one under
    ``"fp"`` stays as it is (:func:`quantize_layers`, which also refuses a model left without a low-bit layer).

    ``replace_relu``: the ReLUs before the last layer with a :class:`BinaryActivation` input become Identity
    (:func:`replace_relus`; binary nets use sign as their nonlinearity, and ReLUs after that layer feed only
    real-valued layers). Returns the names of the replaced layers.
    """
    def make(name, mod, role):
        if role in ("first", "last"):
            return int8_layer(mod)
        return body_layer(name, mod)

    done = quantize_layers(model, make, first_layer=first_layer, last_layer=last_layer, method=method)
    binary_inputs = [n for n in done if isinstance(model.get_submodule(n).input_quantizer, BinaryActivation)]
    if replace_relu and binary_inputs:
        replace_relus(model, upto=binary_inputs[-1])
    return done


# -- convert ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def bake_layer(layer: QuantLayerMixin) -> None:
    """Convert one prepared layer: the weight becomes ``(c − offset)·scale`` exactly, ``weight_bits`` is set
    and ``weight_scale``/``weight_offset`` buffers record the grid for :func:`pack_model`.

    Handles :class:`CodedWeightQuantizer` and 8-bit :class:`~quantzoo.nn.FakeQuant` weight quantizers;
    other quantizers fall back to the core's :meth:`~quantzoo.nn.QuantLayerMixin.bake` (not packable).
    """
    wq = layer.weight_quantizer
    if isinstance(wq, CodedWeightQuantizer):
        codes = wq.encode(layer.weight)
    elif isinstance(wq, FakeQuant):
        wq(layer.weight)  # make sure the observer has seen the current weight
        scale, zp = wq.qparams()
        q = quantize(layer.weight, scale, zp, wq.spec)
        codes = WeightCodes(q.float() - wq.spec.qmin, scale.float(), zp.float() - wq.spec.qmin, wq.spec.bits)
    else:
        layer.bake()
        return
    layer.weight.data = codes.dequantize().detach().clone()
    layer.register_buffer("weight_scale", codes.scale.detach().float().clone().reshape(-1 if codes.scale.numel() > 1 else ()))
    layer.register_buffer("weight_offset", torch.as_tensor(codes.offset, dtype=torch.float32).detach().clone())
    layer.weight_quantizer = None
    layer.weight_bits = codes.bits
    for q in (layer.input_quantizer, layer.output_quantizer):
        if q is not None and hasattr(q, "freeze"):
            q.freeze()


def bake_model(model: nn.Module) -> nn.Module:
    """:func:`bake_layer` on every quantized layer (the ``_convert`` of the low-bit plugins)."""
    for mod in model.modules():
        if isinstance(mod, QuantLayerMixin) and mod.weight_quantizer is not None:
            bake_layer(mod)
    return model


def is_packable(mod: nn.Module) -> bool:
    """True for a converted layer whose weight grid is recorded (see :func:`bake_layer`)."""
    return (isinstance(mod, QuantLayerMixin) and getattr(mod, "weight_bits", None) is not None
            and hasattr(mod, "weight_scale") and hasattr(mod, "weight_offset"))


def storage_bits(bits: int) -> int:
    """The packable width a ``bits``-bit code is stored in (3 → 4, 5..8 → 8)."""
    for b in PACKABLE_BITS:
        if bits <= b:
            return b
    raise UnsupportedError(f"weights of {bits} bits cannot be bit-packed (at most 8); keep them on 'fakequant'")


# -- packed layers ---------------------------------------------------------------------------------------------
class PackedLayer(nn.Module):
    """A Linear/Conv1d/Conv2d whose weight is stored bit-packed (``packed_weight``, uint8) with its
    ``weight_scale``/``weight_offset``.

    It computes in one of two ways. With a :class:`~quantzoo.kernels.BitKernel` in ``kernel`` (set by the
    ``packed`` backend where the weights are binary/ternary and the input quantizer's codes are bits, see
    :func:`quantzoo.kernels.plan_kernel`) it runs on the bit-serial kernels; otherwise, or for a call the
    kernel cannot take (:meth:`~quantzoo.kernels.BitKernel.accepts`: a gradient is needed, not float32 on
    CPU), the float weight is rebuilt from the packed codes and the layer runs as the converted one. ``ran_on``
    records which of the two ran last (the kernel's name or ``"float"``).

    ``weight_bits`` and :meth:`dequantized_weight` (also the read-only ``weight`` property) expose the grid
    to the conformance kit. Input/output quantizers of the source layer are kept and run as there.
    """

    #: The :class:`~quantzoo.kernels.BitKernel` this layer runs on, or None (the float path).
    kernel = None
    #: Why the layer is on the float path (set with ``kernel``).
    kernel_note = "not lowered onto the kernels"
    #: What computed the last forward pass: a kernel name (e.g. ``"xnor-avx2"``) or ``"float"``.
    ran_on = None
    #: A BatchNorm that follows this layer and is computed here (folded into the kernel's epilogue by the
    #: ``packed`` backend; the module itself then passes its input through).
    folded_norm = None

    def __init__(self, kind: str, weight_shape: tuple[int, ...], bits: int, *, bias: bool,
                 stride=1, padding=0, dilation=1, groups=1, input_quantizer=None, output_quantizer=None,
                 per_channel: bool = False):
        super().__init__()
        if kind not in ("linear", "conv1d", "conv2d"):
            raise ValueError(f"PackedLayer kind must be linear, conv1d or conv2d, not {kind!r}")
        self.kind = kind
        self.weight_shape = tuple(weight_shape)
        self.weight_bits = bits
        self.storage_bits = storage_bits(bits)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        numel = 1
        for d in self.weight_shape:
            numel *= d
        self.numel = numel
        n_bytes = (numel * self.storage_bits + 7) // 8
        self.register_buffer("packed_weight", torch.zeros(n_bytes, dtype=torch.uint8))
        n_ch = self.weight_shape[0] if per_channel else None
        self.register_buffer("weight_scale", torch.ones(n_ch) if n_ch else torch.tensor(1.0))
        self.register_buffer("weight_offset", torch.tensor(0.0))
        self.register_buffer("bias", torch.zeros(self.weight_shape[0]) if bias else None)
        self.input_quantizer = input_quantizer
        self.output_quantizer = output_quantizer

    @classmethod
    @torch.no_grad()
    def from_converted(cls, layer: QuantLayerMixin) -> "PackedLayer":
        """Pack a converted layer (see :func:`bake_layer`); the codes are recovered exactly from its weight."""
        if not is_packable(layer):
            raise UnsupportedError(f"{type(layer).__name__} has no recorded weight grid; convert it with a "
                                   "low-bit plugin (bake_layer) before packing")
        kind = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}
        k = next((v for t, v in kind.items() if isinstance(layer, t)), None)
        if k is None:
            raise UnsupportedError(f"cannot pack {type(layer).__name__}")
        if k != "linear" and layer.padding_mode != "zeros":
            raise UnsupportedError(f"packed convolutions support padding_mode='zeros', not {layer.padding_mode!r}")
        conv = {} if k == "linear" else dict(stride=layer.stride, padding=layer.padding,
                                             dilation=layer.dilation, groups=layer.groups)
        scale, offset = layer.weight_scale, layer.weight_offset
        new = cls(k, tuple(layer.weight.shape), layer.weight_bits, bias=layer.bias is not None,
                  input_quantizer=copy.deepcopy(layer.input_quantizer),
                  output_quantizer=copy.deepcopy(layer.output_quantizer),
                  per_channel=scale.numel() > 1, **conv)
        new.weight_scale.copy_(scale)
        new.weight_offset = offset.clone()
        codes = recover_codes(layer.weight, scale, offset, layer.weight_bits)
        new.packed_weight.copy_(pack_bits(codes, new.storage_bits))
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
        return new.train(layer.training)

    @classmethod
    @torch.no_grad()
    def from_codes(cls, kind: str, codes: torch.Tensor, bits: int, scale: torch.Tensor, offset: float, *,
                   bias: torch.Tensor | None = None, input_quantizer=None, output_quantizer=None,
                   **conv) -> "PackedLayer":
        """A packed layer with weight ``(codes − offset)·scale``: ``codes`` integers of the weight's shape,
        ``scale`` a scalar or one value per output channel (``conv``: stride, padding, dilation, groups)."""
        scale = torch.as_tensor(scale, dtype=torch.float32)
        new = cls(kind, tuple(codes.shape), bits, bias=bias is not None, input_quantizer=input_quantizer,
                  output_quantizer=output_quantizer, per_channel=scale.numel() > 1, **conv)
        new.packed_weight.copy_(pack_bits(codes, new.storage_bits))
        new.weight_scale.copy_(scale.reshape(new.weight_scale.shape))
        new.weight_offset = torch.tensor(float(offset))
        if bias is not None:
            new.bias.copy_(bias)
        return new.eval()

    @property
    def packed_weight_bits(self) -> int:
        return self.weight_bits

    def dequantized_weight(self) -> torch.Tensor:
        codes = unpack_bits(self.packed_weight, self.storage_bits, self.numel).reshape(self.weight_shape)
        return dequantize_codes(codes, self.weight_scale, self.weight_offset, axis=0)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def _compute(self, x, w):
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        k = self.kernel
        if k is not None and k.accepts(self, x):
            self.__dict__["ran_on"] = k.name  # plain attributes: no nn.Module bookkeeping on the hot path
            out = k.run(self, x)
            oq = self._modules.get("output_quantizer")
            return oq(out) if oq is not None else out
        self.__dict__["ran_on"] = "float"
        out = run_layer(self, x, self._float_weight())
        bn = self.folded_norm
        if bn is not None:
            out = F.batch_norm(out, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return out

    def _float_weight(self) -> torch.Tensor:
        """:meth:`dequantized_weight`, kept between calls until a buffer it is made of changes."""
        key = tuple((t.data_ptr(), t._version) for t in (self.packed_weight, self.weight_scale, self.weight_offset))
        cached = self.__dict__.get("_float_weight_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.dequantized_weight())
            self.__dict__["_float_weight_cache"] = cached
        return cached[1]

    def use_kernel(self, isa: str | None = None) -> str:
        """Put this layer on the bit-serial kernels where it can run there (``isa``: see
        :func:`quantzoo.kernels.select_isa`); returns the kernel's name or ``"float"`` (``kernel_note`` says why)."""
        from ..kernels import plan_kernel

        plan = plan_kernel(self, isa)
        if isinstance(plan, str):
            self.kernel, self.kernel_note = None, plan
            return "float"
        self.kernel, self.kernel_note = plan, ""
        return plan.name

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight_offset"  # per-channel offsets (asymmetric 8-bit) are vectors
        if key in state_dict and self.weight_offset.shape != state_dict[key].shape:
            self.weight_offset = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"{self.kind}, weight={list(self.weight_shape)}, bits={self.weight_bits} "
                f"(stored in {self.storage_bits}), bias={self.bias is not None}")


def recover_codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """The codes ``c`` with ``w = (c − offset)·scale`` (exact for baked weights; 0-scale channels give the
    code nearest to ``offset``, which dequantizes to 0)."""
    shape = [-1] + [1] * (w.dim() - 1)
    s = scale.reshape(shape) if scale.numel() > 1 else scale
    o = offset.reshape(shape) if offset.numel() > 1 else offset
    safe = torch.where(s == 0, torch.ones_like(s), s)
    c = torch.where(s == 0, torch.floor(o + 0.5).expand_as(w), torch.round(w / safe + o))
    return torch.clamp(c, 0, 2**bits - 1).to(torch.int64)


def pack_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every packable converted layer by a :class:`PackedLayer` (others stay as they are)."""
    model = model if inplace else copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if n and is_packable(m)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedLayer.from_converted(model.get_submodule(name)))
    return model.eval()


def packed_layers(model: nn.Module) -> dict[str, PackedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PackedLayer)}


def save_packed(model: nn.Module, path: str | Path) -> int:
    """Save a packed model's state dict (tensors only); returns the file size in bytes."""
    torch.save(model.state_dict(), path)
    return Path(path).stat().st_size


def load_packed(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_packed` into a packed model of the same architecture
    (``torch.load(weights_only=True)``: the file cannot carry code)."""
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
