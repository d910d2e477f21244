"""Tensor quantizers of the Distiller plugin (each an ``nn.Module`` with an integer ``bits``).

All rounding, STEs and integer clamping come from :mod:`quantzoo.math`. Distiller's QAT STE
(``LinearQuantizeSTE``) rounds with an identity gradient and never clamps the integer code; quantzoo
reproduces that with :func:`quantzoo.math.round_ste` (see :func:`unclamped_fake_quantize`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import QuantSpec
from quantzoo.errors import DataError, NotCalibratedError
from quantzoo.math import (compute_qparams, expand_qparam, fake_quantize, reduce_min_max, round_ste, sign,
                           ste, tanh_unit)
from quantzoo.observers import MSEObserver

from .ranges import (clip_stats, distiller_qparams, is_symmetric, mode_spec, saturation_from_stats,
                     tensor_stats)
from .stats import new_record, update_first_pass, update_second_pass


def unclamped_fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                            spec: QuantSpec) -> torch.Tensor:
    """Distiller's ``LinearQuantizeSTE``: ``x̂ = (round(x/S + Z) − Z)·S`` with an identity gradient and **no
    clamp** of the code (``q_utils.linear_quantize`` then ``linear_dequantize``)."""
    s = expand_qparam(scale.detach(), x, spec)
    z = expand_qparam(zero_point.detach().float(), x, spec)
    return (round_ste(x * (1.0 / s) + z) - z) * s


class _QParamBuffers(nn.Module):
    """Scale/zero-point buffers whose saved shapes (per-channel vectors) are adopted on load."""

    def _init_qparams(self) -> None:
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and buf.shape != state_dict[key].shape:
                self._buffers[name] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# -------------------------------------------------------------------------------------------------------
# post-training (range_linear.py: RangeLinearQuantParamLayerWrapper)
# -------------------------------------------------------------------------------------------------------
class RangeLinearWeight(_QParamBuffers):
    """PTQ weights: the range of the weight itself (clip NONE), per tensor or per output channel (dim 0),
    clamped to the mode's integer range (``linear_quantize_clamp``)."""

    def __init__(self, bits: int, mode: str, per_channel: bool = False):
        super().__init__()
        self.bits, self.mode, self.per_channel = bits, mode, per_channel
        self.spec = mode_spec(bits, mode, per_channel)
        self.passthrough = False  # True while activation statistics are collected on the float model
        self._init_qparams()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.passthrough:
            return w
        lo, hi = reduce_min_max(w, self.spec)
        scale, zp = distiller_qparams(lo, hi, self.spec)
        self.scale, self.zero_point = scale, zp
        return fake_quantize(w, scale, zp, self.spec)

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
        self.spec = mode_spec(bits, mode)
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
        self.scale, self.zero_point = distiller_qparams(sat_min, sat_max, self.spec)
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
            scale, zp = distiller_qparams(sat_min, sat_max, self.spec)
            return fake_quantize(x, scale, zp, self.spec)
        if not bool(self.calibrated):
            raise NotCalibratedError("distiller-ptq: activation quantizer has no statistics; run calibrate() "
                                     "or give model_activation_stats (or set dynamic: true)")
        return fake_quantize(x, self.scale, self.zero_point, self.spec)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, mode={self.mode}, clip={self.clip}, half_range={self.half_range}, "
                f"phase={self.phase}")


# -------------------------------------------------------------------------------------------------------
# quantization-aware training
# -------------------------------------------------------------------------------------------------------
class _Switchable(nn.Module):
    """``active`` False makes a QAT quantizer pass its tensor through (outside the policy's epochs)."""

    active: bool = True


class RangeLinearQATWeight(_Switchable, _QParamBuffers):
    """Range-linear QAT weights (``QuantAwareTrainRangeLinearQuantizer.linear_quantize_param``): qparams from
    the current float weight every step, Distiller's unclamped STE.

    Quirk reproduced: in SYMMETRIC mode the largest positive weight maps to ``(2^b−1)/2`` codes, which
    rounds (half to even) to ``2^(b−1)``, one past the signed range; nothing clamps it, so the weight can
    take ``2^b+1`` values and ``bits`` reports ``b+1`` (SYMMETRIC_RESTRICTED and the asymmetric modes fit
    in ``b`` bits).
    """

    def __init__(self, bits: int, mode: str, per_channel: bool = False):
        super().__init__()
        self.mode, self.per_channel = mode, per_channel
        self.spec = mode_spec(bits, mode, per_channel)
        self.bits = bits + 1 if mode == "SYMMETRIC" else bits
        self.nominal_bits = bits
        self._init_qparams()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return w
        lo, hi = reduce_min_max(w, self.spec)
        scale, zp = distiller_qparams(lo, hi, self.spec)
        self.scale, self.zero_point = scale, zp
        return unclamped_fake_quantize(w, scale, zp, self.spec)


class EMAActivation(_Switchable, _QParamBuffers):
    """Range-linear QAT activations (``FakeLinearQuantization``): EMA of the batch min/max with decay
    ``ema_decay`` and bias correction ``m/(1−decay^t)`` (Jacob et al. 2018 §3.1 with Adam-style
    correction); the tensor is clamped to the tracked range (zero gradient outside) and then quantized with
    the unclamped identity STE.

    Difference from Distiller: an EMA that has seen no batch is seeded by the first batch even in eval mode
    (Distiller would quantize with the empty range [0, 0] and output zeros).
    """

    def __init__(self, bits: int, mode: str, ema_decay: float = 0.999):
        super().__init__()
        self.bits, self.mode, self.ema_decay = bits, mode, ema_decay
        self.spec = mode_spec(bits, mode)
        for name in ("tracked_min_biased", "tracked_min", "tracked_max_biased", "tracked_max", "iter_count"):
            self.register_buffer(name, torch.zeros(()))
        self._init_qparams()

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        self.iter_count += 1
        d = self.ema_decay
        correction = 1 - d ** self.iter_count
        self.tracked_min_biased = self.tracked_min_biased * d + (1 - d) * x.min()
        self.tracked_max_biased = self.tracked_max_biased * d + (1 - d) * x.max()
        self.tracked_min = self.tracked_min_biased / correction
        self.tracked_max = self.tracked_max_biased / correction
        if is_symmetric(self.mode):
            m = torch.maximum(self.tracked_min.abs(), self.tracked_max.abs())
            self.scale, self.zero_point = distiller_qparams(-m, m, self.spec)
        else:
            self.scale, self.zero_point = distiller_qparams(self.tracked_min, self.tracked_max, self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.training or int(self.iter_count) == 0:
            self._update(x.detach().float())
        if is_symmetric(self.mode):
            m = torch.maximum(self.tracked_min.abs(), self.tracked_max.abs())
            lo, hi = -m, m
        else:
            lo, hi = self.tracked_min, self.tracked_max
        x = torch.clamp(x, lo.item(), hi.item())  # Distiller clamps to the tracked float range, then rounds
        return unclamped_fake_quantize(x, self.scale, self.zero_point, self.spec)


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


def unit_spec(bits: int) -> QuantSpec:
    """Unsigned ``b``-bit codes over ``[0, 1]``: Distiller's ``asymmetric_linear_quantization_params(b, 0, 1)``
    is ``s = 2^b−1``, ``zp = 0``, i.e. ``S = 1/(2^b−1)``, ``Z = 0``."""
    return QuantSpec(bits=bits, signed=False, symmetric=False)


class DorefaWeight(_Switchable):
    """DoReFa weights (Zhou et al. 2016, arXiv:1606.06160 eq. 9; Distiller ``dorefa_quantize_param``).

    ``b > 1``: ``w' = tanh(w)/(2·max|tanh w|) + 1/2`` (:func:`quantzoo.math.tanh_unit`; the gradient flows
    through tanh and max, as Distiller's autograd graph does), ``w_q = 2·round((2^b−1)·w')/(2^b−1) − 1``.
    ``b = 1``: ``w_q = E|w|·sign(w)`` with ``sign(0) = +1`` and an identity gradient (E has none).
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return w
        if self.bits == 1:
            return ste(w, sign(w) * w.detach().abs().mean())
        spec = unit_spec(self.bits)
        scale, zp = compute_qparams(torch.tensor(0.0), torch.tensor(1.0), spec)
        return 2 * fake_quantize(tanh_unit(w), scale, zp, spec) - 1


class ClippedActivation(_Switchable):
    """DoReFa/WRPN activations (Distiller ``ClippedLinearQuantization`` with clip 1, replacing each ReLU):
    ``clamp(x, 0, 1)`` then ``round((2^b−1)·x)/(2^b−1)`` (DoReFa eq. 11)."""

    def __init__(self, bits: int, clip_val: float = 1.0):
        super().__init__()
        self.bits, self.clip_val = bits, clip_val
        self.spec = unit_spec(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return F.relu(x)
        x = torch.clamp(x, 0.0, self.clip_val)
        scale, zp = compute_qparams(torch.tensor(0.0), torch.tensor(self.clip_val), self.spec)
        return fake_quantize(x, scale, zp, self.spec)


class PACTActivation(_Switchable):
    """PACT (Choi et al. 2018, arXiv:1805.06085 eq. 1-2; Distiller ``LearnedClippedLinearQuantization``):
    ``y = min(relu(x), α)`` through ``torch.where`` so that ``∂y/∂α = 1_{x≥α}``, then
    ``y_q = round(y·(2^b−1)/α)·α/(2^b−1)`` with the scale computed without gradient and an identity STE.

    ``init_act_clip_val="mse"`` (a quantzoo option, not in Distiller): α starts, at the first forward pass
    while quantization is active, at the clip that minimises the ``b``-bit quantization MSE of that batch's
    ``relu(x)`` (one batch of :class:`quantzoo.observers.MSEObserver`, 100 candidates), then is learned as above.
    """

    def __init__(self, bits: int, init_act_clip_val: float | str = 8.0):
        super().__init__()
        self.bits = bits
        self.spec = unit_spec(bits)
        self.init_mode = "mse" if init_act_clip_val == "mse" else "value"
        start = 8.0 if self.init_mode == "mse" else float(init_act_clip_val)  # replaced at the first batch
        self.clip_val = nn.Parameter(torch.tensor([start]))
        self.register_buffer("initialized", torch.tensor(self.init_mode == "value"))

    @torch.no_grad()
    def _init_from(self, y: torch.Tensor) -> None:
        _, hi = MSEObserver(self.spec).batch_range(y.detach().float())
        if not torch.isfinite(hi).all() or float(hi) <= 0:
            raise DataError(f"PACT α initialisation: the first batch after ReLU is all zero or not finite "
                            f"(max {float(y.max())}); initialise from real data or set act_clip_init_val")
        self.clip_val.fill_(float(hi))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.active and not bool(self.initialized):
            self._init_from(x)
        x = torch.where(x < self.clip_val, x, self.clip_val)
        if not self.active:
            return x
        with torch.no_grad():
            alpha = self.clip_val.detach().abs().reshape(())
            scale, zp = compute_qparams(torch.tensor(0.0), alpha, self.spec)
        return fake_quantize(x, scale, zp, self.spec)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, init={self.init_mode}"


class WRPNWeight(_Switchable):
    """WRPN weights (Mishra et al. 2017, arXiv:1709.01134 §3; Distiller ``wrpn_quantize_param``).

    ``levels="distiller"`` reproduces Distiller: ``w_q = round(n·clamp(w, −1, 1))/n`` with
    ``n = (2^b−1)/2`` and no clamp of the code, so ``round(±n) = ±2^(b−1)`` and a "b-bit" weight takes
    ``2^b+1`` values (2 bits: ``{0, ±1, ±2}/1.5``, five levels); ``bits`` therefore reports ``b+1``.
    ``levels="paper"`` is the corrected variant with one sign bit and ``n = 2^(b−1)−1`` (``2^b−1`` levels).
    """

    def __init__(self, bits: int, levels: str = "distiller"):
        super().__init__()
        self.levels, self.nominal_bits = levels, bits
        self.bits = bits + 1 if levels == "distiller" else bits
        n = (2**bits - 1) / 2 if levels == "distiller" else 2 ** (bits - 1) - 1
        self.register_buffer("scale", torch.tensor(1.0 / n))
        self.spec = QuantSpec(bits=max(bits, 2), signed=True, symmetric=True)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return w
        w = torch.clamp(w, -1.0, 1.0)
        return unclamped_fake_quantize(w, self.scale, torch.zeros((), dtype=torch.int32), self.spec)
