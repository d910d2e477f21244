"""NNI-style target quantizers (one per module tensor) and the layers that carry them.

qparams (``nni/compression/base/apply_method.py``, ``qat_quantizer.update_scale_zp``), with
``min' = min(min, 0)``, ``max' = max(max, 0)`` and NNI's integer ranges (``intN`` is narrow,
``[−(2^(N−1)−1), 2^(N−1)−1]``; ``uintN`` is ``[0, 2^N−1]``):

* affine: ``s = (max'−min')/(qmax−qmin)``, ``zp = clamp(qmin − round(min'/s))``;
* symmetric: ``s = max(|min'|, |max'|)/((qmax−qmin)/2)``, ``zp = (qmax+qmin+1)//2`` (0 for int8, 128 for
  uint8); both with ``s ≥ eps``;
* ``x̂ = (round(clamp(zp + x/s, qmin, qmax)) − zp)·s`` (NNI's ``ClampRound``), computed in exactly NNI's
  float32 order — ``x/s``, not the core's ``x·(1/s)``, and ``zp`` added before rounding — so that codes equal
  NNI's bit for bit (``tests/anchors``); :func:`nni_clamp_round`. The core's :func:`quantzoo.math.fake_quantize`
  rounds ``x·(1/s)`` and masks the gradient on the rounded code; NNI's ``clamp_round`` passes the gradient
  unchanged and its ``qat_clamp_round`` masks it on the unrounded ``zp + x/s``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import QuantSpec
from quantzoo.errors import ConfigError, NotCalibratedError, UnsupportedError
from quantzoo.math import binarize, compute_qparams, expand_qparam, reduce_min_max, tanh_unit
from quantzoo.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from quantzoo.state_dict import AdoptSavedShapes

from .config_list import parse_dtype

#: NNI granularity name → (which targets may use it, the axis of one qparam per slice).
GRANULARITY_AXES = {"out_channel": ("parameter", 0), "in_channel": ("parameter", 1), "per_channel": ("activation", 1)}


def target_spec(setting: dict, is_param: bool) -> QuantSpec:
    """The core spec of one NNI target setting. Granularity as NNI's ``register_scalers``: ``out_channel`` /
    ``in_channel`` = one qparam per slice along dim 0 / dim 1 of a weight or bias; ``per_channel`` = one per
    slice along dim 1 (the channel after the batch) of an ``_input_``/``_output_``; ``default`` per tensor.
    NNI asserts on the other pairings (``per_channel`` on a weight, ``out_channel`` on an input)."""
    signed, bits = parse_dtype(setting["quant_dtype"])
    symmetric = setting.get("quant_scheme") in (None, "symmetric")
    gran = setting.get("granularity") or "default"
    extra = {}
    if isinstance(gran, (list, tuple)):
        raise UnsupportedError(f"granularity {gran!r} (NNI block granularity) is not supported; use 'default', "
                               "'out_channel', 'in_channel' or 'per_channel'")
    if gran != "default":
        kind, axis = GRANULARITY_AXES[gran]
        if (kind == "parameter") != is_param:
            fix = "out_channel (dim 0) or in_channel (dim 1)" if is_param else "per_channel (dim 1)"
            what = "a weight/bias" if is_param else "an _input_/_output_"
            raise ConfigError(f"granularity {gran!r} does not apply to {what} target (NNI asserts); use {fix}")
        extra = {"granularity": "per_channel", "axis": axis}
    return QuantSpec(bits=bits, signed=signed, narrow=signed, symmetric=symmetric, **extra)


def nni_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """NNI's ``(scale, zero_point)`` (module docstring) from a tracked range; ``zero_point`` is float, as NNI's."""
    if not spec.symmetric or spec.signed:
        # affine, or narrow signed symmetric: s = max|·|/(2^(N−1)−1), zp = 0 = (qmax+qmin+1)//2
        scale, zp = compute_qparams(lo, hi, spec)
        return scale, zp.float()
    # symmetric uint: the width qmax−qmin = 2^N−1 of a signed non-narrow spec, zp at the middle code
    wide = spec.model_copy(update={"signed": True, "narrow": False})
    scale, zp = compute_qparams(lo, hi, wide)
    return scale, torch.full_like(scale, float((spec.qmax + spec.qmin + 1) // 2))


class _ClampRound(torch.autograd.Function):
    """NNI ``ClampRound`` (gradient passed unchanged) and ``QATClampRound`` (gradient zeroed where the
    unrounded ``zp + x/s`` lies outside ``[qmin, qmax]``)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, mask):
        t = zero_point + x / scale
        out = (torch.round(torch.clamp(t, qmin, qmax)) - zero_point) * scale
        ctx.mask = mask
        if mask:
            ctx.save_for_backward((t < qmin) | (t > qmax))
        return out

    @staticmethod
    def backward(ctx, grad):
        if ctx.mask:
            (outside,) = ctx.saved_tensors
            grad = grad.masked_fill(outside, 0.0)
        return grad, None, None, None, None, None


def nni_clamp_round(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec,
                    mask: bool = False) -> torch.Tensor:
    """NNI's fake quantization ``(round(clamp(zp + x/s)) − zp)·s``; ``mask``: QAT's gradient mask."""
    s = expand_qparam(scale.detach(), x, spec)
    z = expand_qparam(zero_point.detach().float(), x, spec)
    return _ClampRound.apply(x, s, z, spec.qmin, spec.qmax, mask)




class TrackedQuant(AdoptSavedShapes, nn.Module):
    """A target whose qparams come from a tracked range: NNI's QAT, PTQ and DoReFa ``_input_`` targets.

    ``tracking``:

    * ``"ema"`` (``QATQuantizer``): in training mode every forward updates ``m ← 0.99·m + 0.01·batch`` (seeded
      by the first batch, weights too) and, once quantizing, recomputes the qparams from it; evaluation
      neither tracks nor updates. Gradient masked on the unrounded code (``qat_clamp_round``).
    * ``"running"`` (``PtqQuantizer``): while ``observing`` (calibration), global min/max, and the target runs
      in float (NNI applies ``bypass`` to every target until calibration ends);
      :meth:`update_qparams` then fixes the qparams. Gradient unchanged (``clamp_round``).
    * ``"batch"`` (``DoReFaQuantizer`` inputs): every forward, training or not, takes the qparams of the
      current batch. Gradient unchanged.

    ``quantizing`` off is NNI's ``bypass`` (the float value).
    """

    def __init__(self, spec: QuantSpec, tracking: str = "ema", decay: float = 0.99):
        super().__init__()
        self.spec, self.tracking, self.decay = spec, tracking, decay
        self.bits = spec.bits
        self.observing = tracking != "running"
        self.quantizing = tracking != "running"
        for name in ("tracked_min", "tracked_max", "scale", "zero_point"):
            self.register_buffer(name, torch.tensor(1.0 if name == "scale" else 0.0))
        self.register_buffer("initialized", torch.tensor(False))  # a range was tracked
        self.register_buffer("has_qparams", torch.tensor(False))

    @torch.no_grad()
    def track(self, x: torch.Tensor) -> None:
        lo, hi = reduce_min_max(x, self.spec)
        if not bool(self.initialized) or self.tracking == "batch":
            self.tracked_min, self.tracked_max = lo, hi
        elif self.tracking == "ema":
            self.tracked_min = self.tracked_min * self.decay + (1 - self.decay) * lo
            self.tracked_max = self.tracked_max * self.decay + (1 - self.decay) * hi
        else:
            self.tracked_min = torch.minimum(self.tracked_min, lo)
            self.tracked_max = torch.maximum(self.tracked_max, hi)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update_qparams(self) -> None:
        if not bool(self.initialized):
            raise NotCalibratedError("NNI quantizer target has no tracked range; calibrate or train first")
        self.scale, self.zero_point = nni_qparams(self.tracked_min, self.tracked_max, self.spec)
        self.has_qparams.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tracking == "running":
            if self.observing:
                self.track(x)
            if not self.quantizing:
                return x
        elif self.tracking == "batch":
            self.track(x)
            self.update_qparams()
        elif self.training and self.observing:
            self.track(x)
            if self.quantizing:
                self.update_qparams()
        if not self.quantizing:
            return x
        if not bool(self.has_qparams):
            # Deviation (README): NNI runs a target that never saw a training batch in float; quantzoo never
            # runs a quantized path in float, so the qparams come from the tracked range, or this batch.
            if not bool(self.initialized):
                self.track(x)
            self.update_qparams()
        return nni_clamp_round(x, self.scale, self.zero_point, self.spec, mask=self.tracking == "ema")


class _LSQClampRound(torch.autograd.Function):
    """NNI 3.0 ``lsq_clamp_round`` / ``lsq_plus_clamp_round``: forward ``(round(clamp(x/s + β)) − β)·s``
    (``β = 0`` for LSQ); backward with NNI's formulas (Esser et al. 2020 eq. 3; Bhalgat et al. 2020 eq. 4-6),
    ``q = x/s``, ``g = 1/sqrt(qmax·numel)``:

    * ``∂/∂x = 1`` where ``qmin ≤ q + β ≤ qmax``, else 0;
    * ``∂/∂s = g·(qmin − β | qmax − β | round(q + β) − q − β)`` below / above / inside the range;
    * ``∂/∂β = −s`` outside the range, 0 inside (no gradient scale).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        ctx.save_for_backward(x, scale, zero_point)
        ctx.qmin, ctx.qmax = qmin, qmax
        if zero_point is None:
            return torch.round(torch.clamp(x / scale, qmin, qmax)) * scale
        return (torch.round(torch.clamp(x / scale + zero_point, qmin, qmax)) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        x, scale, zero_point = ctx.saved_tensors
        qmin, qmax = ctx.qmin, ctx.qmax
        factor = 1.0 / ((qmax * x.numel()) ** 0.5) if (qmax * x.numel()) ** 0.5 != 0 else 1.0
        q = x / scale
        if zero_point is None:
            neg, pos = (q < qmin).float(), (q > qmax).float()
            mid = 1.0 - neg - pos
            g_scale = (neg * qmin + pos * qmax + mid * (-q + torch.round(q))) * grad * factor
            return grad * mid, g_scale.sum().reshape(scale.shape), None, None, None
        neg, pos = ((q + zero_point) < qmin).float(), ((q + zero_point) > qmax).float()
        mid = 1.0 - neg - pos
        g_scale = (neg * (qmin - zero_point) + pos * (qmax - zero_point)
                   + mid * (-q - zero_point + torch.round(q + zero_point))) * grad * factor
        g_zp = (neg * -scale + pos * -scale + mid * 0.0) * grad
        return (grad * mid, g_scale.sum().reshape(scale.shape), g_zp.sum().reshape(zero_point.shape), None,
                None)


class LSQQuant(AdoptSavedShapes, nn.Module):
    """LSQ (Esser et al. 2020, arXiv:1902.08153 eq. 1-3; NNI 3.0 ``LsqQuantizer``): ``x̂ = round(clamp(x/s,
    qmin, qmax))·s`` with the step ``s`` learned (:class:`_LSQClampRound`, NNI's arithmetic and gradients).

    ``init="v3"``: ``s = 0.01`` (NNI 3.0); ``init="v2"``: ``s = 2·mean|x|/sqrt(qmax)`` at the first batch (NNI
    2.x's LSQ initialisation, a labelled option). With ``learn_zero_point`` it is NNI 3.0's ``LsqPlusQuantizer``
    (Bhalgat et al. 2020, arXiv:2004.09576 eq. 4): ``x̂ = (round(clamp(x/s + β, qmin, qmax)) − β)·s`` with
    ``β`` learned, unrounded, initialised as NNI 3.0 to ``(qmax−qmin)/2`` on every target (the middle code
    of a ``uintN`` range; ``qmax`` for ``intN``). ``s`` is used as is, as NNI does (no ``|s|``); only ``s = 0``,
    where NNI divides by zero (NaN), is taken as float32 eps (a deviation, README).
    """

    def __init__(self, spec: QuantSpec, init: str = "v3", learn_zero_point: bool = False):
        super().__init__()
        if spec.granularity != "per_tensor":
            raise UnsupportedError("nni-lsq / nni-lsqplus: only granularity 'default' (one step per tensor) is "
                                   "supported")
        self.spec, self.init, self.learn_zero_point = spec, init, learn_zero_point
        self.bits = spec.bits
        self.scale = nn.Parameter(torch.tensor(0.01))
        self.zero_point = nn.Parameter(torch.tensor((spec.qmax - spec.qmin) / 2), requires_grad=learn_zero_point)
        self.register_buffer("initialized", torch.tensor(init == "v3"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
                self.scale.fill_(float(2 * x.detach().abs().mean() / math.sqrt(self.spec.qmax)))
            self.initialized.fill_(True)
        s = torch.where(self.scale == 0, torch.finfo(torch.float32).eps, self.scale)
        zp = self.zero_point if self.learn_zero_point else None
        return _LSQClampRound.apply(x, s, zp, self.spec.qmin, self.spec.qmax)


def unit_qparams(spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """NNI DoReFa's fixed affine qparams over ``[0, 1]``: ``s = 1/(qmax−qmin)``, ``zp = qmin``."""
    affine = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
    return nni_qparams(torch.tensor(0.0), torch.tensor(1.0), affine)


class DoReFaWeight(nn.Module):
    """NNI ``dorefa_clamp_round_weight`` (Zhou et al. 2016, arXiv:1606.06160 eq. 9): ``w' = tanh(w)/(2·max|tanh
    w|) + 1/2``, quantized with the affine ``[0, 1]`` qparams of the target's range, then ``2·w'_q − 1``.
    With NNI's narrow ``intN`` that is ``2^N−2`` steps (``uintN``: ``2^N−1``)."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
        self.bits = spec.bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale, zp = unit_qparams(self.spec)
        return 2 * nni_clamp_round(tanh_unit(w), scale, zp, self.spec) - 1


class DoReFaOutput(nn.Module):
    """NNI ``dorefa_clamp_round_output`` (DoReFa eq. 11): ``clamp(x, 0, 1)`` then the ``[0, 1]`` affine grid."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
        self.bits = spec.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zp = unit_qparams(self.spec)
        return nni_clamp_round(torch.clamp(x, 0.0, 1.0), scale, zp, self.spec)


class BNNQuant(nn.Module):
    """BNN (Hubara et al. 2016, arXiv:1602.02830 eq. 1 and 4; NNI ``BNNClampRound``): ``sign`` with
    ``sign(0) = +1``; the gradient passes straight through, cancelled where ``|x| > 1`` for outputs only."""

    bits = 1

    def __init__(self, is_output: bool):
        super().__init__()
        self.is_output = is_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binarize(x, clip=1.0 if self.is_output else None)


@torch.no_grad()
def dorefa_gradient(grad: torch.Tensor, bits: int, spec: QuantSpec, noise: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """DoReFa gradient quantization as NNI 3.0's backward pre-hook (Zhou et al. 2016 eq. 12):
    ``g' = 2·m·(Q(g/(2m) + 1/2 + N) − 1/2)`` with ``m = max|g|`` per sample (dim 0),
    ``N ~ U(−½, ½)/(2^b−1)`` per sample (drawn from the global RNG as NNI) and ``Q`` the affine grid over
    ``[−½/(2^b−1), 1 + ½/(2^b−1)]`` with the target's integer range. A sample whose gradient is all zero
    gives 0 (NNI: 0/0 = NaN; a deviation, README)."""
    half = 0.5 / (2**bits - 1)
    affine = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
    scale, zp = nni_qparams(torch.tensor(-half), torch.tensor(1.0 + half), affine)
    dims = list(range(1, grad.dim()))
    m = torch.amax(grad.abs(), dim=dims, keepdim=True)  # NNI's reduction (dims = [] reduces everything)
    if noise is None:
        noise = torch.zeros_like(m).uniform_(-0.5, 0.5) / (2**bits - 1)
    m = torch.where(m == 0, torch.finfo(grad.dtype).tiny, m)
    q = nni_clamp_round(grad / (2 * m) + 0.5 + noise, scale, zp, affine)
    return (q - 0.5) * 2 * m


def dorefa_grad_hook(module: nn.Module, grad_output):
    """``register_full_backward_pre_hook`` callback: quantize the gradient reaching the module's output."""
    spec, bits = module.grad_spec, module.grad_bits
    return tuple(dorefa_gradient(g, bits, spec) if g is not None else None for g in grad_output)


# -------------------------------------------------------------------------------------------------------
# layers
# -------------------------------------------------------------------------------------------------------
class _BiasQuant:
    """quantzoo's quantized layers with NNI's extras: a ``bias_quantizer`` (the ``bias`` target), a BN fused
    by ``fuse_names`` (``fused_bn``, folded on every forward as NNI's ``fuse_modules``), and the measurement
    of PTQ bias correction (while ``bias_error`` is set).

    (No class-level defaults for submodules: a class attribute would shadow the submodule nn.Module stores.)
    """

    def _layer(self, x, w, b):
        raise NotImplementedError  # pragma: no cover

    def _compute(self, x, w):
        return self._layer(x, w, self._qbias())

    def _qbias(self, b=None):
        b = self.bias if b is None else b
        bq = getattr(self, "bias_quantizer", None)
        return bq(b) if (b is not None and bq is not None) else b

    def _float_params(self, x):
        """The weight and bias before their targets: the layer's own, or with a fused BN NNI's fold
        (``fuse_conv_bn`` / ``fuse_linear_bn``): a no-grad float pass on the (quantized) input updates the
        BN's running statistics in training mode, then ``W·γ/sqrt(var+eps)`` and ``(b − mean)·γ/sqrt(var+eps)
        + β`` with the running statistics (batch statistics if the BN tracks none). The fold's bias is
        detached when the layer has no bias of its own (NNI makes it a Parameter with requires_grad False)."""
        w, b = self.weight, self.bias
        bn = getattr(self, "fused_bn", None)
        if bn is None:
            return w, b
        with torch.no_grad():
            y = self._layer(x, w, b)
            if bn.track_running_stats:
                bn(y)
                mean, var = bn.running_mean, bn.running_var
            else:
                rows = y.transpose(0, 1).reshape(y.shape[1], -1) if y.dim() > 2 else y.reshape(-1, y.shape[-1]).T
                mean, var = rows.mean(1), rows.var(1)
        wf, bf = self._fold(w, b, mean, var)
        return wf, (bf if b is not None else bf.detach())

    def _fold(self, w, b, mean, var):
        bn = self.fused_bn
        gamma = bn.weight if bn.affine else torch.ones_like(mean)
        beta = bn.bias if bn.affine else torch.zeros_like(mean)
        b0 = b if b is not None else torch.zeros_like(mean)
        if isinstance(self, nn.Linear):  # NNI's fuse_linear_bn float order
            k = gamma * torch.rsqrt(var + bn.eps)
            return w * k.unsqueeze(-1), (b0 - mean) * k + beta
        rs = torch.rsqrt(var + bn.eps)  # fuse_conv_bn
        return w * (gamma * rs).reshape([-1, 1] + [1] * (w.dim() - 2)), (b0 - mean) * rs * gamma + beta

    def _quant_forward(self, x):
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w, b = self._float_params(x)
        wq = self.weight_quantizer(w) if self.weight_quantizer is not None else w
        out = self._layer(x, wq, self._qbias(b) if b is not None else None)
        out_q = self.output_quantizer(out) if self.output_quantizer is not None else out
        if getattr(self, "bias_error", None) is not None:
            self._record_bias_error(self._layer(x, w, b).detach(), out_q)
        return out_q

    @torch.no_grad()
    def _record_bias_error(self, ref, out_q):
        """NNI ``ModuleWrapper.forward`` with ``is_bias_correction``: the output of the float weight and bias
        (``ref``, on the quantized input, here through a fused activation) minus the quantized output (after
        the output target), summed over every dimension but the last, and the number of elements summed."""
        act = self.output_quantizer
        if act is not None and hasattr(act, "activation"):  # FusedOutput: the activation, not its quantizer
            ref = act.activation(ref)
        elif act is not None and not hasattr(act, "bits"):  # a fused activation without an output target
            ref = act(ref)
        err = (ref - out_q).sum(dim=tuple(range(ref.dim() - 1)))
        total, count = self.bias_error
        self.bias_error = (err if total is None else total + err, count + ref.numel() // ref.shape[-1])

    @torch.no_grad()
    def fold_bn(self) -> None:
        """Make a fused BN permanent (the convert step): NNI's evaluation-mode fold, running statistics."""
        bn = getattr(self, "fused_bn", None)
        if bn is None:
            return
        w, b = self._fold(self.weight, self.bias, bn.running_mean, bn.running_var)
        self.weight.data = w.detach().clone()
        self.bias = nn.Parameter(b.detach().clone())
        self.fused_bn = None

    @torch.no_grad()
    def bake(self) -> None:
        self.fold_bn()
        if self.bias is not None and getattr(self, "bias_quantizer", None) is not None:
            self.bias.data = self.bias_quantizer(self.bias).detach().clone()
            self.bias_quantizer = None
        super().bake()


class NNIQuantLinear(_BiasQuant, QuantLinear):
    def _layer(self, x, w, b):
        return F.linear(x, w, b)


class NNIQuantConv1d(_BiasQuant, QuantConv1d):
    def _layer(self, x, w, b):
        return self._conv_forward(x, w, b)


class NNIQuantConv2d(_BiasQuant, QuantConv2d):
    def _layer(self, x, w, b):
        return self._conv_forward(x, w, b)


NNI_LAYERS = {nn.Linear: NNIQuantLinear, nn.Conv1d: NNIQuantConv1d, nn.Conv2d: NNIQuantConv2d}


def make_layer(mod: nn.Module, weight_q, input_q, output_q, bias_q, fused_bn: nn.Module | None = None
               ) -> nn.Module:
    layer = NNI_LAYERS[type(mod)].from_float(mod, weight_quantizer=weight_q, input_quantizer=input_q,
                                            output_quantizer=output_q)
    layer.bias_quantizer = bias_q
    layer.fused_bn = fused_bn
    return layer


class IOQuantWrapper(nn.Module):
    """An activation/pooling module with NNI ``_input_``/``_output_`` targets."""

    def __init__(self, module: nn.Module, input_quantizer=None, output_quantizer=None):
        super().__init__()
        self.module, self.input_quantizer, self.output_quantizer = module, input_quantizer, output_quantizer

    def forward(self, x):
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        x = self.module(x)
        return self.output_quantizer(x) if self.output_quantizer is not None else x


class FusedOutput(nn.Module):
    """The output target of a fused ``(layer, bn, act)`` group: the activation, then its quantizer."""

    def __init__(self, activation: nn.Module, quantizer: nn.Module):
        super().__init__()
        self.activation, self.quantizer = activation, quantizer
        self.bits = getattr(quantizer, "bits", None)

    def forward(self, x):
        return self.quantizer(self.activation(x))
