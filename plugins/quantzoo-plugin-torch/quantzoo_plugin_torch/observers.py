"""Observers for torch.ao qconfigs: torch's own by name, or any quantzoo observer wrapped as a torch observer.

Config strings: ``"histogram"``, ``"minmax"``, ``"moving_average_minmax"`` are torch.ao's observers;
``"quantzoo:<name>"`` is the observer registered as ``<name>`` in quantzoo (the core's or a plugin's),
adapted by :class:`CoreObserver` so torch's ``convert`` reads its scale and zero-point.
"""

from __future__ import annotations

import torch
from torch.ao.quantization import QConfig
from torch.ao.quantization import observer as tob

from quantzoo.errors import ConfigError
from quantzoo.spec import QuantSpec

TORCH_ACTIVATION_OBSERVERS = ("histogram", "minmax", "moving_average_minmax")
TORCH_WEIGHT_OBSERVERS = ("minmax", "moving_average_minmax", "histogram")
CORE_PREFIX = "quantzoo:"

#: Engines whose default qconfig uses 7-bit activations (fbgemm's int16 accumulation of u8*s8 pairs in
#: VPMADDUBSW can saturate with full 8-bit ranges on pre-VNNI CPUs; torch's default sets reduce_range=True).
REDUCE_RANGE_ENGINES = ("x86", "fbgemm")


def check_observer_name(value: str, role: str) -> str:
    """Validate a config observer string (raises ``ValueError`` for pydantic, which names the field)."""
    if value.startswith(CORE_PREFIX):
        name = value[len(CORE_PREFIX):]
        from quantzoo.registry import get_registry

        names = get_registry().names("observer")
        if name not in names:
            raise ValueError(f"no quantzoo observer {name!r}; registered: {', '.join(names)}")
        return value
    allowed = TORCH_ACTIVATION_OBSERVERS if role == "activation" else TORCH_WEIGHT_OBSERVERS
    if value not in allowed:
        raise ValueError(f"unknown torch {role} observer {value!r}; choose one of {', '.join(allowed)} "
                         f"or '{CORE_PREFIX}<registered observer>'")
    return value


def activation_spec(reduce_range: bool) -> QuantSpec:
    """quint8 per-tensor affine: codes 0..255, or 0..127 with ``reduce_range`` (torch's rule)."""
    return QuantSpec(bits=7 if reduce_range else 8, signed=False, symmetric=False)


def weight_spec(per_channel: bool) -> QuantSpec:
    """qint8 symmetric, -128..127 (torch's default weight format), per output channel (axis 0) or per tensor."""
    return QuantSpec(bits=8, signed=True, symmetric=True,
                     granularity="per_channel" if per_channel else "per_tensor", axis=0)


class CoreObserver(tob.ObserverBase):
    """A quantzoo :class:`~quantzoo.observers.Observer` seen by torch.ao as one of its own observers.

    ``dtype``/``qscheme``/``ch_axis``/``quant_min``/``quant_max`` are what torch's ``convert`` reads; the
    statistics and ``calculate_qparams`` are the wrapped observer's (its spec mirrors the torch format, so
    e.g. ``minmax`` gives exactly torch's ``MinMaxObserver`` qparams: both implement
    ``S=(max'-min')/(qmax-qmin)``, ``Z=qmin-round(min'/S)``, Jacob et al. 2018 eq. 1).
    """

    def __init__(self, observer: str, dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                 reduce_range: bool = False, ch_axis: int = 0, **_ignored):
        super().__init__(dtype=dtype)
        from quantzoo.registry import get_registry

        self.qscheme = qscheme
        self.ch_axis = ch_axis
        self.reduce_range = reduce_range
        if dtype == torch.quint8:
            spec = activation_spec(reduce_range)
        elif dtype == torch.qint8:
            spec = weight_spec(qscheme in (torch.per_channel_symmetric, torch.per_channel_affine))
        else:
            raise ConfigError(f"quantzoo observers are adapted for quint8 activations and qint8 weights, not {dtype}")
        self.quant_min, self.quant_max = spec.qmin, spec.qmax
        self.observer = get_registry().get("observer", observer)(spec)

    def forward(self, x):
        return self.observer(x)

    @torch.jit.export
    def calculate_qparams(self):
        scale, zp = self.observer.calculate_qparams()
        return scale.float(), zp.to(torch.int64)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, qscheme={self.qscheme}"


def symmetric_activation_args(reduce_range: bool) -> dict:
    """quint8 ``per_tensor_symmetric`` activations (zero point at the middle code). torch refuses
    ``reduce_range`` with a symmetric quint8 qscheme, so the 7-bit range it stands for is given as
    ``quant_min``/``quant_max`` instead (the engine's saturation limit is kept)."""
    return {"qscheme": torch.per_tensor_symmetric, "reduce_range": False, "quant_min": 0,
            "quant_max": 127 if reduce_range else 255}


def _torch_activation(name: str, reduce_range: bool, symmetric: bool = False):
    cls = {
        "histogram": tob.HistogramObserver,
        "minmax": tob.MinMaxObserver,
        "moving_average_minmax": tob.MovingAverageMinMaxObserver,
    }[name]
    return cls.with_args(**symmetric_activation_args(reduce_range)) if symmetric else cls.with_args(
        reduce_range=reduce_range)


def _torch_weight(name: str, per_channel: bool):
    if per_channel:
        cls = {"minmax": tob.PerChannelMinMaxObserver,
               "moving_average_minmax": tob.MovingAveragePerChannelMinMaxObserver}.get(name)
        if cls is None:
            raise ConfigError(f"weight_observer={name!r} has no per-channel form in torch.ao; use 'minmax' or "
                              "'moving_average_minmax', or weight_granularity='per_tensor'")
        return cls.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    cls = {"minmax": tob.MinMaxObserver, "moving_average_minmax": tob.MovingAverageMinMaxObserver,
           "histogram": tob.HistogramObserver}[name]
    return cls.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)


def build_qconfig(engine: str, per_channel: bool, activation_observer: str, weight_observer: str,
                  reduce_range: bool | None, symmetric_activations: bool = False) -> QConfig:
    """The static-PTQ QConfig. With the defaults (histogram / minmax, per-channel, affine activations) it
    builds the same observers as ``torch.ao.quantization.get_default_qconfig(engine)`` for x86, fbgemm and
    onednn; ``symmetric_activations``: quint8 ``per_tensor_symmetric`` (:func:`symmetric_activation_args`)."""
    rr = engine in REDUCE_RANGE_ENGINES if reduce_range is None else reduce_range
    if symmetric_activations:
        if activation_observer.startswith(CORE_PREFIX):
            raise ConfigError(f"activation_qscheme 'symmetric' needs a torch activation observer "
                              f"({', '.join(TORCH_ACTIVATION_OBSERVERS)}), not {activation_observer!r}")
        act = _torch_activation(activation_observer, rr, symmetric=True)
    elif activation_observer.startswith(CORE_PREFIX):
        act = CoreObserver.with_args(observer=activation_observer[len(CORE_PREFIX):], dtype=torch.quint8,
                                     qscheme=torch.per_tensor_affine, reduce_range=rr)
    else:
        act = _torch_activation(activation_observer, rr)
    if weight_observer.startswith(CORE_PREFIX):
        qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
        wt = CoreObserver.with_args(observer=weight_observer[len(CORE_PREFIX):], dtype=torch.qint8,
                                    qscheme=qscheme, ch_axis=0)
    else:
        wt = _torch_weight(weight_observer, per_channel)
    return QConfig(activation=act, weight=wt)
