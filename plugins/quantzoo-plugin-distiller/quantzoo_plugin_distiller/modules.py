"""Tensor quantizers of the Distiller plugin (each an ``nn.Module`` with an integer ``bits``).

Every one computes in Distiller's arithmetic (:mod:`.linear`: multiply by the scale ``s``, subtract the zero
point, round half to even, divide back), so that its codes are Distiller's to the bit; DoReFa weights come from
:func:`quantzoo.math.dorefa_weight`. Distiller's QAT STE (``LinearQuantizeSTE``) has an identity gradient and
never clamps the integer code.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import QuantSpec, QuantzooWarning
from quantzoo.errors import DataError, NotCalibratedError
from quantzoo.math import dorefa_weight
from quantzoo.observers import MSEObserver
from quantzoo.state_dict import AdoptSavedShapes

from .linear import asymmetric_params, fake_quantize, mode_params, quantized_range, symmetric_params
from .ranges import clip_stats, saturation_from_stats, tensor_stats
from .stats import new_record, update_first_pass, update_second_pass


class _QParamBuffers(AdoptSavedShapes, nn.Module):
    """Scale/zero-point buffers (Distiller's ``s``, ``zp``) whose saved shapes (per-channel) are adopted on load."""

    def _init_qparams(self) -> None:
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))


# -------------------------------------------------------------------------------------------------------
# post-training (range_linear.py: RangeLinearQuantParamLayerWrapper)
# -------------------------------------------------------------------------------------------------------
class RangeLinearWeight(_QParamBuffers):
    """PTQ weights: the range of the weight itself (clip NONE), per tensor or per output channel (dim 0),
    clamped to the mode's integer range (``linear_quantize_clamp``)."""

    def __init__(self, bits: int, mode: str, per_channel: bool = False):
        super().__init__()
        self.bits, self.mode, self.per_channel = bits, mode, per_channel
        self.qrange = quantized_range(bits, mode)
        self.passthrough = False  # True while activation statistics are collected on the float model
        self._init_qparams()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.passthrough:
            return w
        wd = w.detach()
        if self.per_channel and wd.dim() > 1:
            flat = wd.reshape(wd.shape[0], -1)
            shape = [-1] + [1] * (wd.dim() - 1)
            scale, zp = mode_params(self.bits, flat.min(dim=1).values, flat.max(dim=1).values, self.mode)
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        else:
            scale, zp = mode_params(self.bits, wd.min(), wd.max(), self.mode)
        self.scale, self.zero_point = scale, zp
        return fake_quantize(w, scale, zp, self.qrange)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, per_channel={self.per_channel}"


#: Distiller's ``_apply_activation_stats_fusions``: the range kept when a layer feeds this activation.
SUCCESSOR_CLIP = {"relu": (0.0, None), "relu6": (0.0, 6.0), "tanh": (-4.0, 4.0), "sigmoid": (-6.0, 6.0)}


class RangeLinearAct(_QParamBuffers):
    """PTQ activations (a layer's input or output), static from statistics or dynamic per batch.

    Phases: ``collect1``/``collect2`` (the two passes of the stats collector; the tensor passes unchanged),
    ``static`` (qparams from the stats record, see :meth:`set_stats`) and ``dynamic`` (qparams from each
    batch, Distiller's mode without ``model_activation_stats``). With ``half_range`` (the layer feeds a
    ReLU, Distiller's ``clip_half_range``) the tensor goes through ReLU before it is quantized, as
    Distiller applies ``relu`` to the accumulator before re-quantization.
    """

    def __init__(self, bits: int, mode: str, clip: str = "NONE", n_stds: float | None = None,
                 half_range: bool = False, successor: str | None = None, dynamic: bool = False):
        super().__init__()
        self.bits, self.mode, self.clip, self.n_stds = bits, mode, clip, n_stds
        self.half_range, self.successor = half_range, successor
        self.qrange = quantized_range(bits, mode)
        self.phase = "dynamic" if dynamic else "uncalibrated"
        self.record: dict = new_record()
        self.second_record: dict = {}
        self._init_qparams()
        self.register_buffer("calibrated", torch.tensor(bool(dynamic)))

    def start_pass(self, n: int) -> None:
        self.phase = f"collect{n}"
        if n == 1:
            self.record = new_record()
        else:
            self.record["total_numel"] = 0

    def set_stats(self, record: dict) -> None:
        """Static qparams from a stats record (after the successor clip of Distiller's stats fusion)."""
        rec = dict(record)
        if self.successor in SUCCESSOR_CLIP:
            lo, hi = SUCCESSOR_CLIP[self.successor]
            rec = clip_stats(rec, lo, rec["max"] if hi is None else min(rec["max"], hi))
        sat_min, sat_max = saturation_from_stats(rec, self.bits, self.mode, self.clip, self.n_stds,
                                                 self.half_range)
        self.scale, self.zero_point = mode_params(self.bits, sat_min, sat_max, self.mode)
        self.calibrated.fill_(True)
        self.phase = "static"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phase == "collect1":
            update_first_pass(self.record, x)
            return x
        if self.phase == "collect2":
            update_second_pass(self.record, x)
            return x
        if self.half_range:
            x = F.relu(x)
        if self.phase == "dynamic":
            st = tensor_stats(x)
            if self.clip in ("GAUSS", "LAPLACE"):
                st["avg_min"] = st["min"]  # the tensor ACIQ clipper takes the global minimum
            sat_min, sat_max = saturation_from_stats(st, self.bits, self.mode, self.clip, self.n_stds,
                                                     self.half_range)
            scale, zp = mode_params(self.bits, sat_min, sat_max, self.mode)
            return fake_quantize(x, scale, zp, self.qrange)
        if not bool(self.calibrated):
            raise NotCalibratedError("distiller-ptq: activation quantizer has no statistics; run calibrate() "
                                     "or give model_activation_stats (or set dynamic: true)")
        return fake_quantize(x, self.scale, self.zero_point, self.qrange)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, mode={self.mode}, clip={self.clip}, half_range={self.half_range}, "
                f"phase={self.phase}")


# -------------------------------------------------------------------------------------------------------
# quantization-aware training (clipped_linear.py; range_linear.py: QuantAwareTrainRangeLinearQuantizer)
# -------------------------------------------------------------------------------------------------------
class ScheduledWeight(nn.Module):
    """A QAT weight quantizer under the schedule's policy (Distiller ``train_with_fp_copy``).

    Distiller quantizes the weights when the policy is created and again after every optimizer step of the
    policy's epochs (``QuantizationPolicy.on_minibatch_end``); every forward pass uses the last quantized weights.
    While those equal the quantization of the current float weight (``synced``), this module recomputes them in
    the forward pass (the same values, and the gradient Distiller's autograd graph gives). After an optimizer step
    outside the policy's epochs (``active`` False) they no longer do: the forward pass then returns the weights
    cached by :meth:`refresh`, until the first step of a policy epoch re-quantizes them — also the first minibatch
    of that epoch still sees the old ones, as in Distiller.

    Deviation: Distiller back-propagates through the autograd graph built when it cached those weights; only
    range-linear QAT (whose STE saves no tensors) survives a second backward through it, DoReFa, PACT and WRPN
    raise "Trying to backward through the graph a second time" (``tests/anchors``, schedule
    ``dorefa_every_other_epoch``). Here the cached weights get a straight-through gradient.
    """

    def __init__(self):
        super().__init__()
        self.active, self.synced = True, True
        self._stale: torch.Tensor | None = None

    def quantize(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def refresh(self, w: torch.Tensor) -> None:
        """Cache ``quantize(w)`` (Distiller's ``quantize_params``)."""
        self._stale = self.quantize(w.detach()).detach().clone()
        self.synced = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.synced or self._stale is None:
            return self.quantize(w)
        return self._stale + (w - w.detach())


class RangeLinearQATWeight(ScheduledWeight):
    """Range-linear QAT weights (``QuantAwareTrainRangeLinearQuantizer.linear_quantize_param``): ``(s, zp)`` from
    the float weight's range (per output channel with ``per_channel``), Distiller's unclamped identity STE.

    Reproduced: Distiller converts ``mode`` into a ``ModuleQuantMode`` namedtuple and hands that tuple to code that
    compares it with ``LinearQuantMode`` members, so every mode runs as ASYMMETRIC_UNSIGNED (``mode`` is kept
    for display only).
    """

    def __init__(self, bits: int, mode: str, per_channel: bool = False):
        super().__init__()
        self.bits, self.mode, self.per_channel = bits, mode, per_channel
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        wd = w.detach()
        if self.per_channel and wd.dim() in (2, 4):
            flat = wd.reshape(wd.shape[0], -1)
            shape = [-1] + [1] * (wd.dim() - 1)
            scale, zp = asymmetric_params(self.bits, flat.min(dim=1).values, flat.max(dim=1).values)
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        else:
            scale, zp = asymmetric_params(self.bits, wd.min(), wd.max())
        self.scale, self.zero_point = scale, zp
        return fake_quantize(w, scale, zp)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode} (runs ASYMMETRIC_UNSIGNED), per_channel={self.per_channel}"


class EMAActivation(nn.Module):
    """Range-linear QAT activations (``FakeLinearQuantization``): in training mode an EMA of the batch min/max with
    decay ``ema_decay`` and bias correction ``m/(1 − decay^t)`` (Jacob et al. 2018, arXiv:1712.05877 §3.1), all in
    float32 as Distiller's buffers; the tensor is clamped to the tracked range and quantized with the unclamped
    identity STE, asymmetric unsigned whatever ``mode`` (see :class:`RangeLinearQATWeight`).

    Reproduced: evaluation never updates the EMA, so before any training batch the tracked range is [0, 0] and
    the output is all zeros (a :class:`~quantzoo.QuantzooWarning` says so).
    """

    def __init__(self, bits: int, mode: str, ema_decay: float = 0.999):
        super().__init__()
        self.bits, self.mode = bits, mode
        self.register_buffer("ema_decay", torch.tensor(ema_decay))  # float32, as Distiller's buffer
        for name in ("tracked_min_biased", "tracked_min", "tracked_max_biased", "tracked_max", "iter_count",
                     "zero_point"):
            self.register_buffer(name, torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        self.iter_count += 1
        d, t = self.ema_decay, self.iter_count
        self.tracked_min_biased = self.tracked_min_biased * d + (1 - d) * x.min()
        self.tracked_min = self.tracked_min_biased / (1 - d**t)
        self.tracked_max_biased = self.tracked_max_biased * d + (1 - d) * x.max()
        self.tracked_max = self.tracked_max_biased / (1 - d**t)
        self.scale, self.zero_point = asymmetric_params(self.bits, self.tracked_min, self.tracked_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(x.detach().float())
        elif int(self.iter_count) == 0:
            warnings.warn("distiller-qat: an activation range was never observed in training mode; as in Distiller "
                          "the tracked range is [0, 0] and this output is all zeros (train before evaluating)",
                          QuantzooWarning, stacklevel=2)
        x = torch.clamp(x, self.tracked_min.item(), self.tracked_max.item())
        return fake_quantize(x, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode} (runs ASYMMETRIC_UNSIGNED), ema_decay={float(self.ema_decay):.4f}"


class FakeQuantizationWrapper(nn.Module):
    """A ReLU followed by its EMA activation quantizer (Distiller's wrapper of the same name)."""

    def __init__(self, wrapped_module: nn.Module, fake_q: EMAActivation):
        super().__init__()
        self.wrapped_module, self.fake_q = wrapped_module, fake_q

    @property
    def bits(self) -> int:
        return self.fake_q.bits

    def forward(self, x):
        return self.fake_q(self.wrapped_module(x))


class DorefaWeight(ScheduledWeight):
    """DoReFa weights (Zhou et al. 2016, arXiv:1606.06160 eq. 7-9; Distiller ``dorefa_quantize_param``) through
    :func:`quantzoo.math.dorefa_weight` with Distiller's rounding (``"half_even"``: ``round(n·u)/n`` with
    ``s = n``, so ``w = 0`` gives ``+1/n``). 1 bit: ``E|w|·sign(w)``, ``sign(0) = +1``, identity gradient."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return dorefa_weight(w, self.bits, "half_even")


class ClippedActivation(nn.Module):
    """DoReFa/WRPN activations (``ClippedLinearQuantization`` with clip 1, replacing each ReLU):
    ``clamp(x, 0, c)`` then ``round(s·x)/s`` with ``s = (2^b − 1)/c`` (DoReFa eq. 11)."""

    def __init__(self, bits: int, clip_val: float = 1.0):
        super().__init__()
        self.bits, self.clip_val = bits, clip_val
        self.scale, self.zero_point = asymmetric_params(bits, 0.0, clip_val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(torch.clamp(x, 0.0, self.clip_val), self.scale, self.zero_point)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip_val={self.clip_val}"


class PACTActivation(nn.Module):
    """PACT (Choi et al. 2018, arXiv:1805.06085 eq. 1-2; Distiller ``LearnedClippedLinearQuantization``):
    ``y = min(relu(x), α)`` through ``torch.where`` so that ``∂y/∂α = 1_{x≥α}``, then ``round(s·y)/s`` with
    ``s = (2^b − 1)/max(α, 0)`` computed without gradient (a scale of 1 where ``α ≤ 0``) and an identity STE.

    ``init_act_clip_val="mse"`` (a quantzoo option, not in Distiller): α starts, at the first forward pass, at the
    clip that minimises the ``b``-bit quantization MSE of that batch's ``relu(x)`` (one batch of
    :class:`quantzoo.observers.MSEObserver`, 100 candidates), then is learned as above.
    """

    def __init__(self, bits: int, init_act_clip_val: float | str = 8.0):
        super().__init__()
        self.bits = bits
        self.init_mode = "mse" if init_act_clip_val == "mse" else "value"
        start = 8.0 if self.init_mode == "mse" else float(init_act_clip_val)  # replaced at the first batch
        self.clip_val = nn.Parameter(torch.tensor([start]))
        self.register_buffer("initialized", torch.tensor(self.init_mode == "value"))

    @torch.no_grad()
    def _init_from(self, y: torch.Tensor) -> None:
        spec = QuantSpec(bits=self.bits, signed=False, symmetric=False)
        _, hi = MSEObserver(spec).batch_range(y.detach().float())
        if not torch.isfinite(hi).all() or float(hi) <= 0:
            raise DataError(f"PACT α initialisation: the first batch after ReLU is all zero or not finite "
                            f"(max {float(y.max())}); initialise from real data or set act_clip_init_val")
        self.clip_val.fill_(float(hi))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if not bool(self.initialized):
            self._init_from(x)
        x = torch.where(x < self.clip_val, x, self.clip_val)
        scale, zp = asymmetric_params(self.bits, 0.0, self.clip_val.detach())
        return fake_quantize(x, scale, zp)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, init={self.init_mode}"


class WRPNWeight(ScheduledWeight):
    """WRPN weights (Mishra et al. 2017, arXiv:1709.01134 §3; Distiller ``wrpn_quantize_param``):
    ``round(n·clamp(w, −1, 1))/n``, no clamp of the code, identity STE inside the clamp.

    ``levels="distiller"`` reproduces Distiller's ``n = (2^b − 1)/2``: ``round(±n) = ±2^(b−1)``, so a "b-bit"
    weight takes ``2^b + 1`` values (2 bits: ``{0, ±1, ±2}/1.5``) and ``bits`` reports ``b + 1``.
    ``levels="paper"`` is the corrected variant with one sign bit and ``n = 2^(b−1) − 1`` (``2^b − 1`` levels).
    """

    def __init__(self, bits: int, levels: str = "distiller"):
        super().__init__()
        self.levels, self.nominal_bits = levels, bits
        self.bits = bits + 1 if levels == "distiller" else bits
        self.scale, self.zero_point = symmetric_params(bits, 1.0, restrict=levels == "paper")

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(torch.clamp(w, -1.0, 1.0), self.scale, self.zero_point)
