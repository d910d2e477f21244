"""`FakeQuant`: an observer plus fake-quantization of one tensor role, the building block of prepared models."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, NotCalibratedError
from ..math import fake_quantize, lsq_fake_quantize, lsq_grad_factor
from ..observers import Observer
from ..spec import QuantSpec
from ..state_dict import AdoptSavedShapes


class FakeQuant(AdoptSavedShapes, nn.Module):
    """Observe a tensor and fake-quantize it with the qparams the observer derives.

    Modes: ``observing`` (update statistics) and ``quantizing`` (apply fake quantization). PTQ calibration
    observes without quantizing; QAT does both; a converted model only quantizes, with frozen qparams.
    ``learnable=True`` turns the scale into a parameter initialised from the observer and trained with
    LSQ's gradient (Esser et al. 2020); the zero-point stays fixed unless ``learn_zero_point`` (LSQ+).
    A spec with stochastic rounding rounds stochastically only while training and not frozen; evaluation
    and converted models round to nearest even, so that inference is deterministic.
    """

    def __init__(
        self,
        spec: QuantSpec,
        observer: Observer,
        *,
        observing: bool = True,
        quantizing: bool = True,
        learnable: bool = False,
        learn_zero_point: bool = False,
        per_sample: bool = False,
    ):
        super().__init__()
        if spec.dtype != "int":
            raise ConfigError(
                f"FakeQuant handles dtype 'int', not {spec.dtype!r}: use binarize/ternary_codes in a quantizer "
                "module of its own for binary/ternary tensors"
            )
        self.spec = spec
        # Stochastic rounding is a training device (Gupta et al. 2015); inference rounds to nearest.
        self._eval_spec = spec.model_copy(update={"rounding": "nearest_even"})
        self.observer = observer
        self.observing = observing
        self.quantizing = quantizing
        self.learnable = learnable
        self.learn_zero_point = learn_zero_point
        #: The tensor has a leading batch dimension (an activation): LSQ's gradient scale then counts the
        #: features of one sample, N_F, not N_F·batch (Esser et al. 2020 §2.2: g = 1/sqrt(N_F·Q_P)).
        self.per_sample = per_sample
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("initialized", torch.tensor(False))
        if learnable:
            self.learned_scale = nn.Parameter(torch.tensor(1.0))
            self.learned_zero_point = nn.Parameter(torch.tensor(0.0), requires_grad=learn_zero_point)

    @property
    def bits(self) -> int:
        return self.spec.bits

    def freeze(self) -> "FakeQuant":
        """Stop observing; keep the current qparams (used after calibration and at convert)."""
        self.observing = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and not (self.learnable and bool(self.initialized)):
            self.observer(x)
            self._update_qparams()
        if not self.quantizing:
            return x
        if not bool(self.initialized):
            # Never silently run a quantized path in full precision.
            raise NotCalibratedError(
                f"FakeQuant({self.spec.describe()}) has no qparams: it never observed data (observing is off). "
                "Run calibration batches with observing on, or load a state_dict, before quantizing"
            )
        spec = self.spec if (self.training and self.observing) else self._eval_spec
        if self.learnable:
            zp = self.learned_zero_point if self.learn_zero_point else None
            if zp is None and self.spec.symmetric is False:
                zp = self.zero_point.float()
            scale = self.learned_scale.abs() + torch.finfo(torch.float32).eps
            n = x[0].numel() if (self.per_sample and x.dim() > 1) else x.numel()
            g = lsq_grad_factor(n // max(scale.numel(), 1), self.spec.qmax)
            return lsq_fake_quantize(x, scale, spec, zero_point=zp, grad_factor=g)
        return fake_quantize(x, self.scale, self.zero_point, spec)

    @torch.no_grad()
    def _update_qparams(self) -> None:
        scale, zp = self.observer.calculate_qparams()
        self.scale = scale.to(self.scale.device)
        self.zero_point = zp.to(self.zero_point.device)
        if self.learnable:
            self.learned_scale.data = scale.clone().to(self.learned_scale.device)
            self.learned_zero_point.data = zp.float().clone().to(self.learned_zero_point.device)
        self.initialized.fill_(True)

    @torch.no_grad()
    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and zero-point in use now (the learned ones for a learnable quantizer)."""
        if self.learnable:
            zp = torch.round(self.learned_zero_point).to(torch.int32) if self.learn_zero_point else self.zero_point
            return self.learned_scale.abs() + torch.finfo(torch.float32).eps, zp
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        mode = "+".join(m for m, on in (("observe", self.observing), ("quantize", self.quantizing)) if on) or "off"
        return f"{self.spec.describe()}, {mode}" + (", learnable" if self.learnable else "")
