"""Tensor quantizers built from preset settings (Brevitas ``core/quant``, ``core/scaling``, ``core/stats``).

Integer quantization (Brevitas ``core/quant/int_base.py``, ``function/ops.py``)::

    y_int = clamp(round(x/s + z), min_int, max_int),   x̂ = (y_int − z)·s,   z = 0 in every preset here
    s = threshold / int_scale,   int_scale = −min_int (signed) or max_int (unsigned)   (core/scaling/int_scaling.py)

so narrow signed 8-bit weights have ``s = max|W|/127``, signed 8-bit activations ``s = p99.999(|x|)/128`` and
unsigned ones ``s = p99.999/255``. Rounding is ``round`` with a straight-through gradient and the clamp is a
plain clamp, so ``∂x̂/∂s`` is LSQ's gradient without its gradient scale: :func:`quantzoo.math.lsq_fake_quantize`
with ``grad_factor=1``. A power-of-two restriction computes the scale in the log domain,
``s = 2^ceil(log2 threshold − log2 int_scale)`` with a straight-through ``ceil`` (Brevitas' CeilSte).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from quantzoo.errors import ConfigError
from quantzoo.math import binarize, fake_quantize, lsq_fake_quantize, sign, ste, ternary_codes
from quantzoo.spec import QuantSpec

from .inject import Injector, validate_settings
from .qcdq import qcdq
from .quant_tensor import QuantTensor

_EPS = torch.finfo(torch.float32).eps


def abs_percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile of ``|x|`` as Brevitas' ``AbsPercentile``: the ``k``-th smallest ``|x|`` with
    ``k = floor(0.01·q·numel + 0.5)`` (1-based, at least 1)."""
    flat = x.detach().abs().reshape(-1).float()
    k = min(max(int(math.floor(0.01 * q * flat.numel() + 0.5)), 1), flat.numel())
    return flat.kthvalue(k).values


class TensorQuant(nn.Module):
    """Base of the tensor quantizers: ``bits``, ``signed``, the QuantSpec, export and QuantTensor support."""

    def __init__(self, settings: dict):
        super().__init__()
        self.settings = dict(settings)
        self.quant_type = settings.get("quant_type", "int")
        self.bits: int = int(settings.get("bit_width", 8))
        self.signed: bool = bool(settings.get("signed", True))
        self.narrow: bool = bool(settings.get("narrow_range", False))
        self.restrict: str = settings.get("restrict_scaling_type", "fp")
        self.export_mode = False  # set by quantzoo_plugin_brevitas.export while tracing to ONNX

    @property
    def spec(self) -> QuantSpec:
        """The integer format (binary/ternary are exported as the 2-bit narrow grid {-1, 0, 1})."""
        if self.quant_type != "int":
            return QuantSpec(bits=2, signed=True, narrow=True)
        per_channel = bool(self.settings.get("scaling_per_output_channel", False))
        return QuantSpec(bits=self.bits, signed=self.signed, symmetric=True, narrow=self.narrow,
                         granularity="per_channel" if per_channel else "per_tensor", axis=0,
                         scale_type="power_of_two" if self.restrict == "power_of_two" else "float")

    @property
    def int_scale(self) -> float:
        spec = self.spec
        return float(-spec.qmin if self.signed else spec.qmax)

    def _restrict(self, threshold: torch.Tensor) -> torch.Tensor:
        """``threshold / int_scale``, restricted to a power of two where the preset asks."""
        if self.restrict == "power_of_two":
            log_s = torch.log2(threshold.clamp_min(_EPS)) - math.log2(self.int_scale)
            return torch.exp2(ste(log_s, torch.ceil(log_s)))
        return (threshold / self.int_scale).clamp_min(_EPS)

    def qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero-point (the zero-point is 0 in every preset)."""
        raise NotImplementedError

    def quant_tensor(self, x: torch.Tensor) -> QuantTensor:
        """``x`` quantized, as a QuantTensor carrying its scale, zero-point and bit width."""
        value = self(x)
        scale, zp = self.qparams(x)
        return QuantTensor(value, scale.detach(), zp, self.bits, self.signed, self.training)

    def _export(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # The scale was computed before tracing (export.export_mode) so that it is a constant initializer, not
        # a chain of Abs/Div/Clip nodes on buffers.
        frozen = getattr(self, "export_scale", None)
        return qcdq(x, frozen if frozen is not None else scale.detach(), self.spec)

    def extra_repr(self) -> str:
        return f"{self.quant_type}{self.bits} {'signed' if self.signed else 'unsigned'}" + (
            " narrow" if self.narrow else "") + (" pow2" if self.restrict == "power_of_two" else "")


class WeightQuant(TensorQuant):
    """STATS scaling: ``threshold = max|W|`` (per tensor or per output channel), recomputed at every call, with
    the gradient flowing through both the rounding (STE) and the statistic."""

    def threshold(self, w: torch.Tensor) -> torch.Tensor:
        if self.settings.get("scaling_per_output_channel", False):
            return w.abs().reshape(w.shape[0], -1).amax(dim=1)
        return w.abs().max()

    def qparams(self, x=None):
        if x is None:
            raise ValueError("WeightQuant.qparams needs the weight")
        s = self._restrict(self.threshold(x))
        return s, torch.zeros(s.shape, dtype=torch.int32)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self._restrict(self.threshold(w))
        if self.export_mode:
            return self._export(w, s)
        return lsq_fake_quantize(w, s, self.spec, grad_factor=1.0)


class ConstQuant(TensorQuant):
    """CONST scaling for binary and ternary presets (Brevitas ``core/quant/binary.py``, ``ternary.py``).

    Binary: ``x̂ = sign(x)·c`` (sign(0)=+1) with the identity straight-through gradient (``binary_sign_ste``).
    Ternary: ``x̂ = 1_{|x| > t·c}·sign(x)·c`` with the straight-through sign (``ternary_sign_ste``); t = 0.5.
    Integer ``int``/const presets scale a uniform grid by the constant.
    """

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.register_buffer("scale", torch.tensor(float(settings.get("scaling_const", 0.1))))
        self.threshold = float(settings.get("threshold", 0.5))

    def qparams(self, x=None):
        return self.scale, torch.zeros((), dtype=torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_mode:
            return self._export(x, self.scale)
        if self.quant_type == "binary":
            return binarize(x, clip=None) * self.scale
        if self.quant_type == "ternary":
            codes = ternary_codes(x.detach(), self.threshold * self.scale)
            return codes.abs() * ste(x, sign(x.detach())) * self.scale
        return lsq_fake_quantize(x, self.scale, self.spec, grad_factor=1.0)


class ActQuant(TensorQuant):
    """PARAMETER_FROM_STATS scaling (Brevitas ``core/scaling/runtime.py`` ``ParameterFromRuntimeStatsScaling``).

    For the first ``collect_stats_steps`` training steps the scale comes from the batch statistic
    (``p99.999(|x|)`` or ``max|x|``) and a running value is kept (momentum 0.1); at the next step the running
    value becomes the ``nn.Parameter`` ``value`` (the threshold, or its log2 for power-of-two scales), trained
    from then on. In eval mode the running value (or the learned one) is used; ``calibrating=True`` (Brevitas'
    ``calibration_mode``) collects statistics in eval mode and leaves activations unquantized while it does.
    ``scaling_impl_type='stats'`` keeps collecting and never learns.
    """

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.learn = settings.get("scaling_impl_type") == "parameter_from_stats"
        self.stats_op = settings.get("scaling_stats_op", "percentile")
        self.q = float(settings.get("high_percentile_q", 99.999))
        self.collect_steps = int(settings.get("collect_stats_steps", 300))
        self.momentum = settings.get("scaling_stats_momentum", 0.1)
        self.calibrating = False
        self.frozen = False  # set at convert: no more statistics, even in training mode
        self.register_buffer("counter", torch.zeros((), dtype=torch.int64))
        self.register_buffer("running", torch.ones(()))
        self.value = nn.Parameter(torch.ones(()))

    # -- statistics --------------------------------------------------------------------------------------
    def _stat(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats_op == "max":
            return x.detach().abs().max().float()
        return abs_percentile(x, self.q)

    @torch.no_grad()
    def _collect(self, x: torch.Tensor) -> torch.Tensor:
        stat = self._stat(x)
        n = int(self.counter)
        if n == 0:
            self.running.copy_(stat)
        elif self.momentum is None:  # cumulative average (inplace_momentum_update with momentum=None)
            self.running.mul_(n / (n + 1)).add_(stat / (n + 1))
        else:
            self.running.mul_(1 - self.momentum).add_(self.momentum * stat)
        self.counter += 1
        return stat

    @torch.no_grad()
    def finalize(self) -> None:
        """Turn the collected statistic into the learned parameter and stop collecting (end of calibration,
        or the ``collect_stats_steps``-th training step)."""
        if int(self.counter) == 0:
            return
        self.value.copy_(torch.log2(self.running) if self.restrict == "power_of_two" else self.running)
        self.counter.fill_(self.collect_steps + 1)

    def freeze(self) -> "ActQuant":
        """Stop collecting (quantzoo's convert): the current running or learned value is kept."""
        self.calibrating = False
        if self.learn and 0 < int(self.counter) <= self.collect_steps:
            self.finalize()
        self.frozen = True
        return self

    @property
    def learned(self) -> bool:
        return self.learn and int(self.counter) > self.collect_steps

    def _learned_scale(self) -> torch.Tensor:
        if self.restrict == "power_of_two":
            log_s = self.value - math.log2(self.int_scale)
            return torch.exp2(ste(log_s, torch.ceil(log_s)))
        return (self.value.abs() / self.int_scale).clamp_min(_EPS)

    def qparams(self, x=None):
        if self.learned:
            s = self._learned_scale()
        elif int(self.counter) > 0:
            s = self._restrict(self.running)
        elif x is not None:
            s = self._restrict(self._stat(x))
        else:
            raise ValueError("ActQuant has no statistics yet: run data through it first")
        return s, torch.zeros((), dtype=torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            if int(self.counter) < self.collect_steps:
                self._collect(x)
            return x  # Brevitas' calibration_mode disables activation quantization while collecting
        if self.training and not self.frozen and not self.learned:
            if int(self.counter) < self.collect_steps or not self.learn:
                stat = self._collect(x)
                s = self._restrict(stat)
                return self._quant(x, s, learned=False)
            self.finalize()
        if self.learned:
            return self._quant(x, self._learned_scale(), learned=True)
        if int(self.counter) > 0:
            return self._quant(x, self._restrict(self.running), learned=False)
        # Nothing collected yet (eval before any data): quantize with this batch's own statistic rather than
        # run in float.
        return self._quant(x, self._restrict(self._stat(x)), learned=False)

    def _quant(self, x: torch.Tensor, s: torch.Tensor, learned: bool) -> torch.Tensor:
        if self.export_mode:
            return self._export(x, s)
        if learned:
            return lsq_fake_quantize(x, s, self.spec, grad_factor=1.0)
        return fake_quantize(x, s.detach(), torch.zeros((), dtype=torch.int32), self.spec)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", {self.stats_op}, learned={self.learned}"


def build_quant(preset: type[Injector] | None, role: str, overrides: dict | None = None) -> TensorQuant | None:
    """The tensor quantizer module for ``preset`` (a preset class or None) with keyword ``overrides``.

    ``role`` is ``"weight"`` or ``"act"``; it decides which scaling implementations are valid.
    """
    if preset is None:
        if overrides:
            raise ConfigError(f"{role} quantizer is None but settings {sorted(overrides)} were given; "
                              f"pass {role}_quant=<preset> too")
        return None
    if not (isinstance(preset, type) and issubclass(preset, Injector)):
        raise ConfigError(f"{role}_quant must be a preset class such as Int8WeightPerTensorFloat, got {preset!r}")
    settings = validate_settings({**preset.settings, **(overrides or {})}, owner=preset.__name__)
    kind = settings.get("scaling_impl_type", "stats")
    if kind == "const":
        return ConstQuant(settings)
    if role == "weight":
        if kind != "stats":
            raise ConfigError(f"{preset.__name__}: weight quantizers support scaling_impl_type 'stats' or 'const', "
                              f"not {kind!r}")
        return WeightQuant(settings)
    if settings.get("scaling_per_output_channel"):
        raise ConfigError(f"{preset.__name__}: per-channel activation scales are not supported; "
                          "set scaling_per_output_channel=False")
    return ActQuant(settings)
