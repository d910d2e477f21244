"""NNI-style target quantizers (one per module tensor) and the layers that carry them.

qparams (``nni/compression/base/apply_method.py``, ``qat_quantizer.update_scale_zp``), with
``min' = min(min, 0)``, ``max' = max(max, 0)`` and NNI's integer ranges (``intN`` is narrow,
``[−(2^(N−1)−1), 2^(N−1)−1]``; ``uintN`` is ``[0, 2^N−1]``):

* affine: ``s = (max'−min')/(qmax−qmin)``, ``zp = clamp(qmin − round(min'/s))``;
* symmetric: ``s = max(|min'|, |max'|)/((qmax−qmin)/2)``, ``zp = (qmax+qmin+1)//2`` (0 for int8, 128 for
  uint8); both with ``s ≥ eps``;
* ``x̂ = (round(clamp(x/s + zp, qmin, qmax)) − zp)·s`` — the same as the core's
  ``(clamp(round(x/s) + zp) − zp)·s`` because ``zp`` and the bounds are integers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import QuantSpec
from quantzoo.errors import NotCalibratedError
from quantzoo.math import (binarize, compute_qparams, dorefa_weight, fake_quantize, grad_scale, lsq_fake_quantize,
                           lsq_grad_factor, reduce_min_max, ste)
from quantzoo.nn.layers import QuantConv1d, QuantConv2d, QuantLinear

from .config_list import parse_dtype


def target_spec(setting: dict, is_param: bool) -> QuantSpec:
    """The core spec of one NNI target setting (per_channel only for weight/bias, along dim 0)."""
    signed, bits = parse_dtype(setting["quant_dtype"])
    symmetric = setting.get("quant_scheme") in (None, "symmetric")
    gran = {}
    if setting.get("granularity") == "per_channel":
        if not is_param:
            from quantzoo.errors import UnsupportedError
            raise UnsupportedError("granularity per_channel is supported for weight/bias targets only")
        gran = {"granularity": "per_channel", "axis": 0}
    return QuantSpec(bits=bits, signed=signed, narrow=signed, symmetric=symmetric, **gran)


def nni_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """NNI's ``(scale, zero_point)`` (module docstring) from a tracked range."""
    if not spec.symmetric:
        return compute_qparams(lo, hi, spec)
    if spec.signed:
        return compute_qparams(lo, hi, spec)  # narrow: s = max|·|/(2^(N−1)−1), zp = 0 = (qmax+qmin+1)//2
    # symmetric uint: same width (qmax−qmin = 2^N−1) as a signed non-narrow spec, zp at the middle code
    wide = spec.model_copy(update={"signed": True, "narrow": False})
    scale, zp = compute_qparams(lo, hi, wide)
    return scale, torch.full_like(zp, (spec.qmax + spec.qmin + 1) // 2)


class _Buffers(nn.Module):
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for store in (self._buffers, self._parameters):
            for name, buf in list(store.items()):
                key = prefix + name
                if key in state_dict and buf is not None and buf.shape != state_dict[key].shape:
                    if store is self._parameters:
                        buf.data = torch.empty_like(state_dict[key])
                    else:
                        store[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TrackedQuant(_Buffers):
    """QAT / PTQ target: tracked range → NNI qparams → clipped-STE fake quantization (``qat_clamp_round``).

    ``tracking``: ``"ema"`` (QAT: ``m ← 0.99·m + 0.01·batch``, seeded with the first batch, in training
    mode — and, unlike NNI, also once in eval when nothing was tracked yet), ``"running"`` (PTQ: global min/max
    during calibration) or ``"batch"`` (DoReFa inputs: the current batch).
    """

    def __init__(self, spec: QuantSpec, tracking: str = "ema", decay: float = 0.99):
        super().__init__()
        self.spec, self.tracking, self.decay = spec, tracking, decay
        self.bits = spec.bits
        self.observing = tracking != "running"
        self.quantizing = tracking != "running"
        for name in ("tracked_min", "tracked_max", "scale"):
            self.register_buffer(name, torch.tensor(0.0 if name != "scale" else 1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("initialized", torch.tensor(False))

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
        self.scale, self.zero_point = nni_qparams(self.tracked_min, self.tracked_max, self.spec)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and (self.training or self.tracking == "running" or not bool(self.initialized)):
            self.track(x)
        if not self.quantizing:
            return x
        if not bool(self.initialized):
            raise NotCalibratedError("NNI quantizer target has no tracked range; calibrate or train first")
        return fake_quantize(x, self.scale, self.zero_point, self.spec)


class LSQQuant(_Buffers):
    """LSQ (Esser et al. 2020, arXiv:1902.08153 eq. 1-3; NNI ``lsq_clamp_round``): ``x̂ = round(clamp(x/s,
    qmin, qmax))·s`` with the step ``s`` learned, its gradient scaled by ``1/sqrt(qmax·numel)``.

    ``init="v3"``: ``s = 0.01`` (NNI 3.0); ``init="v2"``: ``s = 2·mean|x|/sqrt(qmax)`` at the first batch (NNI
    2.x and the paper). With ``learn_zero_point`` it is LSQ+ (Bhalgat et al. 2020, arXiv:2004.09576 eq. 4):
    ``x̂ = (round(clamp(x/s + β, qmin, qmax)) − β)·s`` with ``β`` learned, initialised (NNI 3.0) to
    ``(qmax−qmin)/2`` and kept unrounded as in NNI; β's gradient is NNI's (``−s`` outside the range, 0 inside).
    """

    def __init__(self, spec: QuantSpec, init: str = "v3", learn_zero_point: bool = False):
        super().__init__()
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
        g = lsq_grad_factor(x.numel(), self.spec.qmax)  # NNI: 1/sqrt(qmax·numel) over the whole tensor
        s = self.scale.abs() + torch.finfo(torch.float32).eps
        if not self.learn_zero_point:
            return lsq_fake_quantize(x, s, self.spec.model_copy(update={"granularity": "per_tensor"}),
                                     grad_factor=g)
        # NNI's LSQ+ keeps β unrounded: x̂ = (round(clamp(x/s + β)) − β)·s. With x' = x + β·s this is
        # lsq(x', s) − β·s; the step gets the gradient scale g on every path (grad_scale once, lsq with 1),
        # β gets NNI's unscaled gradient (0 inside the range, −s outside).
        s_g = grad_scale(s, g)
        spec = self.spec.model_copy(update={"granularity": "per_tensor"})
        shifted = x + self.zero_point * s_g
        return lsq_fake_quantize(shifted, s_g, spec, grad_factor=1.0) - self.zero_point * s_g


def unit_qparams(spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """NNI DoReFa's fixed affine qparams over ``[0, 1]``: ``s = 1/(qmax−qmin)``, ``zp = qmin``."""
    affine = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
    return compute_qparams(torch.tensor(0.0), torch.tensor(1.0), affine)


class DoReFaWeight(nn.Module):
    """NNI ``dorefa_clamp_round_weight`` (Zhou et al. 2016, arXiv:1606.06160 eq. 9): ``w' = tanh(w)/(2·max|tanh
    w|) + 1/2``, quantized with the affine ``[0, 1]`` qparams of the target's range, then ``2·w'_q − 1``.
    With NNI's narrow ``intN`` that is ``2^N−2`` steps (``uintN``: ``2^N−1``)."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
        self.bits = spec.bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # the affine [0, 1] grid with a float32 step (quantzoo.math.dorefa_weight's "step_fp32")
        return dorefa_weight(w, self.bits, "step_fp32", levels=self.spec.qmax - self.spec.qmin)


class DoReFaOutput(nn.Module):
    """NNI ``dorefa_clamp_round_output`` (DoReFa eq. 11): ``clamp(x, 0, 1)`` then the ``[0, 1]`` affine grid."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
        self.bits = spec.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zp = unit_qparams(self.spec)
        return fake_quantize(torch.clamp(x, 0.0, 1.0), scale, zp, self.spec)


class BNNQuant(nn.Module):
    """BNN (Hubara et al. 2016, arXiv:1602.02830 eq. 1 and 4; NNI ``BNNClampRound``): ``sign`` with
    ``sign(0) = +1``; the gradient passes straight through, cancelled where ``|x| > 1`` for outputs only."""

    bits = 1

    def __init__(self, is_output: bool):
        super().__init__()
        self.is_output = is_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binarize(x, clip=1.0 if self.is_output else None)


def dorefa_gradient(grad: torch.Tensor, bits: int, spec: QuantSpec, noise: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """DoReFa gradient quantization as NNI 3.0's backward pre-hook (Zhou et al. 2016 eq. 12):
    ``g' = 2·m·(Q(g/(2m) + 1/2 + N) − 1/2)`` with ``m = max|g|`` per sample (dim 0),
    ``N ~ U(−½, ½)/(2^b−1)`` per sample and ``Q`` the affine grid over ``[−½/(2^b−1), 1 + ½/(2^b−1)]``
    with the target's integer range."""
    half = 0.5 / (2**bits - 1)
    affine = spec.model_copy(update={"symmetric": False, "granularity": "per_tensor"})
    scale, zp = compute_qparams(torch.tensor(-half), torch.tensor(1.0 + half), affine)
    dims = list(range(1, grad.dim()))
    m = grad.detach().abs().amax(dim=dims, keepdim=True) if dims else grad.detach().abs()
    if noise is None:
        noise = torch.zeros_like(m).uniform_(-0.5, 0.5) / (2**bits - 1)
    m = m.clamp_min(torch.finfo(grad.dtype).tiny)
    q = fake_quantize(grad / (2 * m) + 0.5 + noise, scale, zp, affine)
    return (q - 0.5) * 2 * m


def dorefa_grad_hook(module: nn.Module, grad_output):
    """``register_full_backward_pre_hook`` callback: quantize the gradient reaching the module's output."""
    spec, bits = module.grad_spec, module.grad_bits
    return tuple(dorefa_gradient(g, bits, spec) if g is not None else None for g in grad_output)


# -------------------------------------------------------------------------------------------------------
# layers
# -------------------------------------------------------------------------------------------------------
class _BiasQuant:
    """Adds an optional ``bias_quantizer`` (NNI's ``bias`` target) to quantzoo's quantized layers.

    (No class-level default: a class attribute would shadow the submodule that nn.Module stores.)
    """

    def _qbias(self):
        b, bq = self.bias, getattr(self, "bias_quantizer", None)
        return bq(b) if (b is not None and bq is not None) else b

    @torch.no_grad()
    def bake(self) -> None:
        if self.bias is not None and getattr(self, "bias_quantizer", None) is not None:
            self.bias.data = self.bias_quantizer(self.bias).detach().clone()
            self.bias_quantizer = None
        super().bake()


class NNIQuantLinear(_BiasQuant, QuantLinear):
    def _compute(self, x, w):
        return F.linear(x, w, self._qbias())


class NNIQuantConv1d(_BiasQuant, QuantConv1d):
    def _compute(self, x, w):
        return self._conv_forward(x, w, self._qbias())


class NNIQuantConv2d(_BiasQuant, QuantConv2d):
    def _compute(self, x, w):
        return self._conv_forward(x, w, self._qbias())


NNI_LAYERS = {nn.Linear: NNIQuantLinear, nn.Conv1d: NNIQuantConv1d, nn.Conv2d: NNIQuantConv2d}


def make_layer(mod: nn.Module, weight_q, input_q, output_q, bias_q) -> nn.Module:
    layer = NNI_LAYERS[type(mod)].from_float(mod, weight_quantizer=weight_q, input_quantizer=input_q,
                                            output_quantizer=output_q)
    layer.bias_quantizer = bias_q
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
