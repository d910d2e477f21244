"""Tensor quantizers built from preset settings, computing what Brevitas 0.13 computes (``core/quant``,
``core/scaling``, ``core/stats``, ``core/restrict_val``; checked against the real library by
``tests/anchors``).

Integer quantization (Brevitas ``IntQuant``): round first, then clamp, with a true division::

    y_int = clamp(round(x / s), min_int, max_int),   x̂ = y_int · s         (zero-point 0 in every preset)

(:func:`quantzoo.math.round_clamp_fake_quantize`), the STE through ``round``; weights also pass the gradient
through the clamp (``TensorClampSte``), activations do not. The scale is ``s = threshold / int_threshold``:

* ``int_threshold`` is ``IntScaling`` for float scales (``−min_int`` signed: 127 narrow, 128 full; ``max_int``
  unsigned: 255) and ``PowerOfTwoIntScaling`` for power-of-two scales (``2^(b-1)`` signed, ``2^b`` unsigned);
* a power-of-two ``threshold`` is ``2^f(log2 t)`` with ``f`` = round (Brevitas' default) or ceil (the
  fixed-point presets), straight-through, and ``2.0 ** ·`` as Brevitas writes it;
* thresholds are clamped to at least ``scaling_min_val = 1e-10`` with a straight-through gradient.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from quantzoo.errors import ConfigError
from quantzoo.math import binarize, round_clamp_fake_quantize, round_ste, ste
from quantzoo.spec import QuantSpec

from .inject import Injector, validate_settings
from .qcdq import qcdq
from .quant_tensor import QuantTensor

#: Brevitas' ``scaling_min_val`` of every stats-based preset.
SCALING_MIN_VAL = 1e-10


def clamp_min_ste(x: torch.Tensor, min_val: float = SCALING_MIN_VAL) -> torch.Tensor:
    """``max(x, min_val)`` with the identity gradient (Brevitas ``ScalarSignedClampMinSte`` on ``x ≥ 0``)."""
    return ste(x, x.clamp_min(min_val))


def abs_percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile of ``|x|`` as Brevitas' ``AbsPercentile``: the ``k``-th smallest ``|x|`` with
    ``k = floor(0.01·q·numel + 0.5)`` (1-based), differentiable (the gradient reaches the selected element).

    Brevitas raises where ``k = 0`` (fewer than ``50/q`` elements, e.g. q = 1 on 49 values); here ``k`` is at
    least 1 (README, Deviations)."""
    flat = x.abs().reshape(-1)
    k = min(max(int(math.floor(0.01 * q * flat.numel() + 0.5)), 1), flat.numel())
    return torch.kthvalue(flat, k)[0]


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
        self.to_int: str = settings.get("restrict_value_float_to_int_impl", "round")
        #: Brevitas' ``disable_quant``: the input passes through unquantized (``calibration_mode`` does it to
        #: weights, ``bias_correction_mode`` to layer outputs).
        self.disabled = False
        self.export_mode = False  # set by quantzoo_plugin_brevitas.export while tracing to ONNX
        self._spec = self._make_spec()

    @property
    def spec(self) -> QuantSpec:
        """The integer format (binary weights are exported on the 2-bit narrow grid {-1, 0, 1})."""
        return self._spec

    def _make_spec(self) -> QuantSpec:
        if self.quant_type == "binary":
            return QuantSpec(bits=2, signed=True, narrow=True)
        per_channel = bool(self.settings.get("scaling_per_output_channel", False))
        return QuantSpec(bits=self.bits, signed=self.signed, symmetric=True, narrow=self.narrow,
                         granularity="per_channel" if per_channel else "per_tensor", axis=0,
                         scale_type="power_of_two" if self.restrict == "power_of_two" else "float")

    @property
    def po2(self) -> bool:
        return self.restrict == "power_of_two"

    @property
    def int_threshold(self) -> float:
        """Brevitas' ``int_scaling_impl``: ``PowerOfTwoIntScaling`` (``max_int(signed, narrow=False) + 1``) for
        power-of-two scales, else ``IntScaling`` (``−min_int`` signed, ``max_int`` unsigned)."""
        if self.po2:
            return float(2 ** (self.bits - 1) if self.signed else 2**self.bits)
        spec = self.spec
        return float(-spec.qmin if self.signed else spec.qmax)

    def _float_to_int(self, x: torch.Tensor) -> torch.Tensor:
        return ste(x, torch.ceil(x)) if self.to_int == "ceil" else round_ste(x)

    def _restrict_pre(self, t: torch.Tensor) -> torch.Tensor:
        """``restrict_init_module``: ``log2`` for power-of-two scales, ``abs`` for float ones."""
        return torch.log2(t) if self.po2 else torch.abs(t)

    def _restrict(self, t: torch.Tensor) -> torch.Tensor:
        """``restrict_value_impl``: ``2 ** f(t)`` (power of two) or ``abs`` (float)."""
        return 2.0 ** self._float_to_int(t) if self.po2 else torch.abs(t)

    def _restricted_threshold(self) -> float:
        """The integer threshold after ``restrict(restrict_pre(·))``: unchanged (it is a power of two for
        power-of-two scales)."""
        return self.int_threshold

    def qparams(self, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero-point as the quantizer uses them in eval mode (the zero-point is 0 in every preset)."""
        raise NotImplementedError

    def _export(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # The scale was computed before tracing (export.export_mode) so that it is a constant initializer, not
        # a chain of Abs/Div/Clip nodes on buffers.
        frozen = getattr(self, "export_scale", None)
        return qcdq(x, frozen if frozen is not None else scale.detach(), self.spec)

    def extra_repr(self) -> str:
        return f"{self.quant_type}{self.bits} {'signed' if self.signed else 'unsigned'}" + (
            " narrow" if self.narrow else "") + (f" pow2({self.to_int})" if self.po2 else "")


class WeightQuant(TensorQuant):
    """STATS scaling (``StatsFromParameterScaling``): ``threshold = max|W|`` (per tensor, or per output channel
    with ``torch.max(·, dim=1)``), recomputed at every call, the gradient flowing through both the rounding and
    the statistic; the clamp is straight-through."""

    def threshold(self, w: torch.Tensor) -> torch.Tensor:
        if self.settings.get("scaling_per_output_channel", False):
            return torch.max(torch.abs(w.reshape(w.shape[0], -1)), dim=1)[0]
        return torch.max(torch.abs(w))

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """``_StatsScaling``: clamp, ``restrict_pre``, restrict, clamp, divide by the integer threshold."""
        t = self._restrict_pre(clamp_min_ste(self.threshold(w)))
        return clamp_min_ste(self._restrict(t)) / self._restricted_threshold()

    def qparams(self, x=None):
        if x is None:
            raise ValueError("WeightQuant.qparams needs the weight")
        s = self.scale(x)
        return s, torch.zeros(s.shape, dtype=torch.int32)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            return w
        s = self.scale(w)
        if self.export_mode:
            return self._export(w, s)
        return round_clamp_fake_quantize(w, s, self.spec, clamp_ste=True)


class ConstQuant(TensorQuant):
    """CONST scaling for the binary and ternary weight presets (Brevitas ``ConstScaling``).

    Binary (``ClampedBinaryQuant`` + ``InplaceTensorClampSte``): the weight is clipped **in place** to
    ``[-c, c]`` at every call, then ``x̂ = sign(x)·c`` (sign(0)=+1) with the identity gradient.
    Integer (the ternary preset, 2-bit narrow): ``clamp(round(x/s))·s`` with ``s = c / int_threshold``
    (``c/1``), straight-through through round and clamp.
    """

    def __init__(self, settings: dict):
        super().__init__(settings)
        c = torch.tensor(float(settings.get("scaling_const", 0.1)))
        self.register_buffer("scale", c if self.quant_type == "binary" else c / self.int_threshold)

    def qparams(self, x=None):
        return self.scale, torch.zeros((), dtype=torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            return x
        if self.quant_type == "binary":
            with torch.no_grad():
                x.clamp_(-self.scale, self.scale)  # Brevitas clips the latent weight itself
        if self.export_mode:
            return self._export(x, self.scale)
        if self.quant_type == "binary":
            return binarize(x, clip=None) * self.scale
        return round_clamp_fake_quantize(x, self.scale, self.spec, clamp_ste=True)


class ActQuant(TensorQuant):
    """PARAMETER_FROM_STATS scaling (Brevitas ``ParameterFromRuntimeStatsScaling``).

    * Training, the first ``collect_stats_steps`` calls: ``s = max(stat, 1e-10) / int_threshold`` from this
      batch's statistic (``p_q(|x|)`` or ``max|x|``) with its gradient, **not** restricted to a power of two;
      the running value (``buffer``, momentum 0.1 or a cumulative average) is updated, and the parameter
      ``value`` receives a zero gradient (``stat + 0·value``).
    * The next training call: ``value ← value · restrict_pre(buffer)`` (``log2`` for power-of-two scales), and
      from then on ``s = max(restrict(value), 1e-10) / int_threshold``, trained by backprop.
    * Eval: ``restrict(restrict_pre(buffer)) / int_threshold`` while statistics are being collected (the
      initial ``buffer = 1`` before any), ``restrict(value) / int_threshold`` once learned.
    * ``calibrating`` (``calibration_mode``, :meth:`start_calibration`): training-mode statistics with a true
      average and no step limit, the input passed through unquantized; :meth:`finalize` then initialises
      ``value``.
    """

    def __init__(self, settings: dict):
        super().__init__(settings)
        self.stats_op = settings.get("scaling_stats_op", "percentile")
        self.q = float(settings.get("high_percentile_q", 99.999))
        self.collect_steps = int(settings.get("collect_stats_steps", 300))
        self.momentum = settings.get("scaling_stats_momentum", 0.1)
        self.calibrating = False
        self.frozen = False  # set at convert: training-mode calls then behave as eval-mode ones
        self.register_buffer("counter", torch.zeros((), dtype=torch.int64))
        self.register_buffer("running", torch.ones(()))  # Brevitas' ``buffer``
        self.value = nn.Parameter(torch.ones(()))

    # -- statistics --------------------------------------------------------------------------------------
    def _stat(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats_op == "max":
            return torch.max(torch.abs(x))
        return abs_percentile(x, self.q)

    def _collect(self, x: torch.Tensor) -> torch.Tensor:
        """This batch's clamped statistic (with its gradient); updates the running value."""
        stat = clamp_min_ste(self._stat(x) + 0.0 * self.value)
        n = int(self.counter)
        with torch.no_grad():
            if n == 0:
                self.running.mul_(stat.detach())
            elif self.momentum is None:  # cumulative average (Brevitas inplace_momentum_update, momentum=None)
                self.running.mul_(n / (n + 1))
                self.running.add_(stat.detach() / (n + 1))
            else:
                self.running.mul_(1 - self.momentum)
                self.running.add_(self.momentum * stat.detach())
            self.counter += 1
        return stat

    @torch.no_grad()
    def finalize(self) -> None:
        """Brevitas ``init_scale``: ``value ← value · restrict_pre(buffer)`` and stop collecting (end of
        calibration, or the training call after ``collect_stats_steps``); a no-op once learned."""
        if int(self.counter) > self.collect_steps:
            return
        self.running.copy_(self._restrict_pre(self.running))
        self.value.mul_(self.running)
        self.counter.fill_(self.collect_steps + 1)

    def freeze(self) -> "ActQuant":
        """Stop collecting (quantzoo's convert): training-mode calls use the eval-mode scale from now on."""
        self.calibrating = False
        self.frozen = True
        return self

    @property
    def learned(self) -> bool:
        return int(self.counter) > self.collect_steps

    def _learned_scale(self) -> torch.Tensor:
        return clamp_min_ste(self._restrict(self.value)) / self._restricted_threshold()

    def _eval_scale(self) -> torch.Tensor:
        if self.learned:
            s = self._restrict(self.value)
        else:
            s = self._restrict(self._restrict_pre(self.running))
        return clamp_min_ste(s / self._restricted_threshold())

    def qparams(self, x=None):
        return self._eval_scale(), torch.zeros((), dtype=torch.int32)

    def start_calibration(self) -> None:
        """What Brevitas' ``calibration_mode`` does to the scaling module, for good: no step limit
        (``collect_stats_steps = sys.maxsize - 1``) and a true average (``momentum = None``)."""
        self.calibrating = True
        self.collect_steps = sys.maxsize - 1
        self.momentum = None

    def scale_for(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """The scale this call uses (advancing the statistics in training mode)."""
        if training:
            if int(self.counter) < self.collect_steps:
                return self._collect(x) / self.int_threshold
            self.finalize()
            return self._learned_scale()
        return self._eval_scale()

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x̂, scale)``; ``(x, None)`` while disabled or calibrating (the statistics are still collected)."""
        if self.disabled:
            return x, None
        if self.calibrating:  # calibration_mode: training-mode statistics, the float input passed on
            self.scale_for(x, training=True)
            return x, None
        s = self.scale_for(x, training=self.training and not self.frozen)
        if self.export_mode:
            return self._export(x, s), s
        return round_clamp_fake_quantize(x, s, self.spec), s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)[0]

    def quant_tensor(self, x: torch.Tensor) -> QuantTensor | torch.Tensor:
        """``x`` quantized as a QuantTensor carrying the scale this call used (a plain tensor while disabled or
        calibrating, as Brevitas disables ``return_quant_tensor`` then)."""
        value, s = self.quantize(x)
        if s is None:
            return value
        return QuantTensor(value, s, torch.zeros((), dtype=torch.int32), self.bits, self.signed, self.training)

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
    if role == "weight":
        if kind == "const":
            return ConstQuant(settings)
        if kind != "stats":
            raise ConfigError(f"{preset.__name__}: weight quantizers support scaling_impl_type 'stats' or 'const', "
                              f"not {kind!r}")
        return WeightQuant(settings)
    if kind != "parameter_from_stats" or settings.get("quant_type", "int") != "int":
        raise ConfigError(f"{preset.__name__}: activation quantizers support integer quantization with "
                          f"scaling_impl_type 'parameter_from_stats', not {settings.get('quant_type')}/{kind!r}")
    if settings.get("scaling_per_output_channel"):
        raise ConfigError(f"{preset.__name__}: per-channel activation scales are not supported; "
                          "set scaling_per_output_channel=False")
    return ActQuant(settings)
