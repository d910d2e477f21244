"""Distiller's configuration: regex ``overrides`` and the YAML schedule (``quantizers:`` + ``policies:``).

Schedule format (``examples/quantization/**``, ``distiller/config.py``)::

    quantizers:
      q:
        class: PACTQuantizer
        act_clip_init_val: 8.0
        bits_activations: 4
        bits_weights: 4
        overrides:
          conv1: {bits_weights: null, bits_activations: null}
          'fc.*': {bits_weights: 8}
    policies:
      - quantizer: {instance_name: q}
        starting_epoch: 0
        ending_epoch: 200
        frequency: 1

``overrides`` is ordered; each key is a regular expression matched against the whole module name
(Distiller compiles ``(^p1$)|(^p2$)|...``) and the first pattern that matches wins, except that a key equal to
the module name wins over earlier patterns (Distiller looks the name up first). The pre-April-2019
``bits_overrides`` (keys ``acts``/``wts``) was removed by Distiller (commit 5271625, "(BREAKING) #178") and
raises an error here too.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from quantzoo.errors import ConfigError, QuantzooWarning

#: Distiller class name → quantzoo method name.
CLASS_TO_METHOD = {
    "PostTrainLinearQuantizer": "distiller-ptq",
    "QuantAwareTrainRangeLinearQuantizer": "distiller-qat",
    "DorefaQuantizer": "distiller-dorefa",
    "PACTQuantizer": "distiller-pact",
    "WRPNQuantizer": "distiller-wrpn",
}

BITS_OVERRIDES_ERROR = (
    "'bits_overrides' is Distiller's pre-2019 API (keys acts/wts), removed in commit 5271625 '(BREAKING) #178'; "
    "write 'overrides: {<regex>: {bits_activations: N, bits_weights: N}}' instead (null keeps a tensor FP)")


def reject_bits_overrides(data: Any) -> None:
    """Raise :class:`ConfigError` if ``bits_overrides`` appears anywhere in ``data``."""
    if isinstance(data, dict):
        if "bits_overrides" in data:
            raise ConfigError(BITS_OVERRIDES_ERROR)
        for v in data.values():
            reject_bits_overrides(v)
    elif isinstance(data, list):
        for v in data:
            reject_bits_overrides(v)


def check_overrides(overrides: dict, allowed: set[str]) -> dict:
    """Validate an overrides mapping: compilable patterns, known keys, bit widths int or null."""
    if not isinstance(overrides, dict):
        raise ValueError("overrides must be a mapping {regex: {setting: value}}")
    for pattern, settings in overrides.items():
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"overrides: {pattern!r} is not a valid regular expression ({e})") from None
        if not isinstance(settings, dict):
            raise ValueError(f"overrides[{pattern!r}] must be a mapping such as {{bits_weights: 8}}")
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"overrides[{pattern!r}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        for k, v in settings.items():
            if k.startswith("bits_") and v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"overrides[{pattern!r}].{k} must be an integer or null, got {v!r}")
    return overrides


def match_override(name: str, overrides: dict) -> dict | None:
    """The settings for module ``name``: a key equal to the name wins, else the first pattern that matches all of
    ``name`` (Distiller's ``Quantizer.__init__``: ``overrides.get(name)`` before the ``(^p1$)|(^p2$)|...`` regex)."""
    if name in overrides:
        return overrides[name]
    for pattern, settings in overrides.items():
        if re.fullmatch(pattern, name):
            return settings
    return None


def method_for_schedule(data: dict) -> str:
    """The quantzoo method a Distiller schedule's (single) quantizer maps to."""
    reject_bits_overrides(data)
    quantizers = data.get("quantizers") if isinstance(data, dict) else None
    if not isinstance(quantizers, dict) or not quantizers:
        raise ConfigError("Distiller schedule: expected a 'quantizers:' mapping {instance_name: {class: ..., ...}}")
    methods = set()
    for inst, spec in quantizers.items():
        cls_name = (spec or {}).get("class")
        if cls_name not in CLASS_TO_METHOD:
            raise ConfigError(f"Distiller schedule: quantizers.{inst}.class {cls_name!r} is not supported; "
                              f"use one of {', '.join(CLASS_TO_METHOD)}")
        methods.add(CLASS_TO_METHOD[cls_name])
    if len(methods) != 1:
        raise ConfigError(f"Distiller schedule: one quantizer per file, found {sorted(methods)}")
    return methods.pop()


def schedule_kwargs(data: dict, method: str) -> dict:
    """The quantizer's constructor arguments from a schedule, plus ``starting_epoch``/``ending_epoch``/
    ``frequency`` from its policy (QAT methods only; PTQ files have no policies)."""
    found = method_for_schedule(data)
    if found != method:
        raise ConfigError(f"this Distiller schedule configures {found!r}, not {method!r}; "
                          f"run it with --method {found}")
    (inst, spec), = data["quantizers"].items()
    kwargs = {k: v for k, v in spec.items() if k != "class"}
    policies = data.get("policies") or []
    if not isinstance(policies, list):
        raise ConfigError("Distiller schedule: 'policies' must be a list")
    ignored = []
    for pol in policies:
        q = (pol or {}).get("quantizer")
        if isinstance(q, dict) and q.get("instance_name") == inst:
            if method != "distiller-ptq":
                for key in ("starting_epoch", "ending_epoch", "frequency"):
                    if key in pol:
                        kwargs[key] = pol[key]
        else:
            ignored.append(next((k for k in (pol or {}) if k not in ("starting_epoch", "ending_epoch",
                                                                      "frequency", "epochs")), "?"))
    other = [k for k in data if k not in ("quantizers", "policies", "version")]
    if ignored or other:
        warnings.warn(f"Distiller schedule: only the quantizer policy is used; ignored {ignored + other}",
                      QuantzooWarning, stacklevel=3)
    return kwargs
