"""NNI's ``config_list``: which modules and which of their tensors ("targets") are quantized, and how.

NNI 3.0 (``nni/compression/base/{config,setting}.py``, ``docs/source/compression/config_list.rst``)::

    [{"op_types": ["Conv2d", "Linear"], "op_names_re": ["features\\..*"], "exclude_op_names": ["fc"],
      "target_names": ["_input_", "weight", "bias", "_output_"],
      "quant_dtype": "int8", "quant_scheme": "affine", "granularity": "default",
      "target_settings": {"_input_": {"quant_dtype": "uint8"}}, "fuse_names": [["conv1", "bn1"]]}]

Module selection (``select_modules_by_config``): ``op_names`` ∪ names that ``re.match`` an ``op_names_re``
pattern (a prefix match, as NNI), intersected with ``op_types`` (class names) when both are given, else
whichever is given; then ``exclude_op_names``, ``exclude_op_names_re``, ``exclude_op_types`` are removed.
``target_names`` defaults to every target of the module type (Linear/Conv: ``_input_``, ``weight``,
``bias``, ``_output_``; activations and pooling: ``_input_``, ``_output_``). A target's setting is NNI's
``ModuleSetting.get``: the registry default (``quant_dtype`` None = int8, ``quant_scheme`` None = symmetric,
``granularity`` default), overwritten by the entry's ``quant_dtype``/``quant_scheme``/``granularity``, then by
``target_settings[target]`` (an explicit None overwrites too). A later entry that selects a module already
configured adds the targets it names that are new and ignores those already set (NNI's
``extend_target_spaces``: "have already configured, the new config will be ignored"), with a warning.
Granularity names (NNI ``register_scalers``): ``out_channel`` / ``in_channel`` for weights (dim 0 / dim 1),
``per_channel`` for ``_input_``/``_output_`` (dim 1).

NNI 2.x (``quant_types``, ``quant_bits``, ``op_types``, ``op_names``, ``exclude``) is translated as NNI 3.0's
own ``trans_legacy_config_list`` does: ``quant_types`` input/weight/output → ``_input_``/``weight``/
``_output_``, each with ``quant_dtype = int{bits}`` (a 2.x ``quant_dtype`` is ignored, as NNI 3.0 does; a
warning says so); an ``exclude: True`` entry adds its ops to every entry's exclusions. Where NNI 3.0 raises
instead (README, Deviations): an entry without ``quant_dtype`` (NNI's schema requires the key) is accepted;
2.x ``quant_scheme`` names (``per_{tensor,channel}_{affine,symmetric}``) become ``quant_scheme`` plus
``out_channel`` granularity on weights; ``quant_start_step`` inside an entry is dropped with a warning (the
QAT argument goes beside ``config_list``); ``op_types: ["default"]``
means Linear/Conv (NNI 3.0 would select nothing, leaving the model float).
"""

from __future__ import annotations

import copy
import re
import warnings

from torch import nn

from quantzoo.errors import ConfigError, QuantzooWarning, UnsupportedError

INPUT, OUTPUT = "_input_", "_output_"
V3_KEYS = {"op_names", "op_names_re", "op_types", "exclude_op_names", "exclude_op_names_re", "exclude_op_types",
           "target_names", "target_settings", "quant_dtype", "quant_scheme", "granularity", "fuse_names"}
V2_KEYS = {"quant_types", "quant_bits", "op_types", "op_names", "op_names_re", "op_partial_names", "exclude",
           "quant_start_step", "quant_scheme", "quant_dtype"}
SETTING_KEYS = {"quant_dtype", "quant_scheme", "granularity"}
GRANULARITIES = ("default", "out_channel", "in_channel", "per_channel")
LAYER_TYPES = ("Linear", "Conv1d", "Conv2d")
#: NNI's QuantizationSetting registry: module types with weight/bias targets and activation-only ones.
ACTIVATION_TYPES = ("ReLU", "ReLU6", "Hardtanh", "MaxPool2d", "MaxPool1d", "Sigmoid", "Tanh", "Identity",
                    "Flatten", "AdaptiveAvgPool2d", "AvgPool2d")
_DTYPE = re.compile(r"^(u?int)(\d+)$")


def is_v2(config_list: list) -> bool:
    """True for the NNI 2.x form (NNI's own test: ``quant_types``/``exclude`` in the entries)."""
    return any(isinstance(e, dict) and ("quant_types" in e or "exclude" in e or "quant_bits" in e)
               for e in config_list)


def _v2_scheme(scheme: str | None) -> dict:
    if scheme is None:
        return {}
    m = re.fullmatch(r"per_(tensor|channel)_(affine|symmetric)", scheme)
    if not m:
        raise ConfigError(f"config_list (2.x): quant_scheme {scheme!r} is not per_tensor_affine, "
                          "per_tensor_symmetric, per_channel_affine or per_channel_symmetric")
    return {"quant_scheme": m.group(2), "granularity": "out_channel" if m.group(1) == "channel" else "default"}


def translate_v2(config_list: list) -> list:
    """The NNI 3.0 form of a 2.x ``config_list`` (see module docstring)."""
    out, ex_types, ex_names, ex_re = [], set(), set(), set()
    for entry in config_list:
        unknown = set(entry) - V2_KEYS
        if unknown:
            raise ConfigError(f"config_list (2.x): unknown key(s) {sorted(unknown)}; allowed: {sorted(V2_KEYS)}")
    for entry in config_list:
        e = copy.deepcopy(entry)
        if "op_partial_names" in e:
            e["op_names_re"] = [f".*{p}.*" for p in e.pop("op_partial_names")]
        if e.pop("exclude", False):
            ex_types.update(e.get("op_types", ()))
            ex_names.update(e.get("op_names", ()))
            ex_re.update(e.get("op_names_re", ()))
            continue
        if e.pop("quant_start_step", None) is not None:  # a quantizer argument in 3.0
            warnings.warn("config_list (2.x): quant_start_step inside an entry is ignored; in NNI 3.0 it is "
                          "QATQuantizer's argument: set quant_start_step beside config_list", QuantzooWarning,
                          stacklevel=5)
        if "quant_types" not in e or "quant_bits" not in e:
            raise ConfigError("config_list (2.x): each entry needs quant_types and quant_bits "
                              "(e.g. {'quant_types': ['weight'], 'quant_bits': 8, 'op_types': ['Conv2d']})")
        types, bits = e.pop("quant_types"), e.pop("quant_bits")
        dtype = e.pop("quant_dtype", "int")
        if dtype not in ("int", "uint", None):
            raise ConfigError(f"config_list (2.x): quant_dtype {dtype!r} must be 'int' or 'uint'")
        if dtype == "uint":
            warnings.warn("config_list (2.x): quant_dtype 'uint' is ignored, as NNI 3.0's translation does "
                          "(int{bits}); write the 3.0 form with quant_dtype 'uint{bits}' for unsigned codes",
                          QuantzooWarning, stacklevel=5)
        shared = _v2_scheme(e.pop("quant_scheme", None))
        names, settings = [], {}
        for t, target in (("input", INPUT), ("weight", "weight"), ("output", OUTPUT)):
            if t in types:
                b = bits if isinstance(bits, int) else bits.get(t)
                if b is None:
                    raise ConfigError(f"config_list (2.x): quant_bits has no entry for {t!r}")
                names.append(target)
                extra = dict(shared)
                if target != "weight":  # NNI 2.x applied per-channel schemes to weights only
                    extra.pop("granularity", None)
                settings[target] = {"quant_dtype": f"int{b}", **extra}
        bad = set(types) - {"input", "weight", "output"}
        if bad:
            raise ConfigError(f"config_list (2.x): quant_types {sorted(bad)} unknown; use input/weight/output")
        if e.get("op_types") == ["default"]:
            e["op_types"] = list(LAYER_TYPES)
        e["target_names"], e["target_settings"] = names, settings
        out.append(e)
    if ex_types or ex_names or ex_re:
        for e in out:
            e["exclude_op_types"] = sorted(ex_types)
            e["exclude_op_names"] = sorted(ex_names)
            e["exclude_op_names_re"] = sorted(ex_re)
    return out


def normalize(config_list: list) -> list:
    """Validate a config_list (3.0 or 2.x) and return its 3.0 form; 2.x gives a one-line warning."""
    if not isinstance(config_list, list) or not all(isinstance(e, dict) for e in config_list):
        raise ConfigError("config_list must be a list of dicts, e.g. [{'op_types': ['Linear'], "
                          "'target_names': ['weight'], 'quant_dtype': 'int8'}]")
    if not config_list:
        raise ConfigError("config_list is empty; it selects nothing to quantize")
    if is_v2(config_list):
        new = translate_v2(config_list)
        warnings.warn(f"NNI 2.x config_list translated to the 3.0 form: {new}", QuantzooWarning, stacklevel=4)
        config_list = new
    for e in config_list:
        unknown = set(e) - V3_KEYS
        if unknown:
            raise ConfigError(f"config_list: unknown key(s) {sorted(unknown)}; allowed: {sorted(V3_KEYS)}")
        if not any(e.get(k) for k in ("op_names", "op_names_re", "op_types")):
            raise ConfigError("config_list: an entry needs op_names, op_names_re or op_types to select modules")
        for k in ("op_names_re", "exclude_op_names_re"):
            for p in e.get(k) or ():
                try:
                    re.compile(p)
                except re.error as err:
                    raise ConfigError(f"config_list: {k} pattern {p!r} is invalid ({err})") from None
        for tn in e.get("target_names") or ():
            if tn not in (INPUT, OUTPUT, "weight", "bias") and not re.fullmatch(r"_(input|output)_0", tn):
                raise ConfigError(f"config_list: target {tn!r} unknown; use _input_, weight, bias, _output_")
        settings = [e] + list((e.get("target_settings") or {}).values())
        for s in settings:
            if "quant_dtype" in s and s["quant_dtype"] is not None:
                parse_dtype(s["quant_dtype"])
            if s.get("quant_scheme") not in (None, "affine", "symmetric"):
                raise ConfigError(f"config_list: quant_scheme {s['quant_scheme']!r}; use 'affine' or 'symmetric'")
            g = s.get("granularity", "default")
            if isinstance(g, (list, tuple)):
                raise ConfigError(f"config_list: granularity {g!r} (NNI block granularity) is not supported; "
                                  f"use one of {', '.join(GRANULARITIES)}")
            if g not in (None, *GRANULARITIES):
                raise ConfigError(f"config_list: granularity {g!r} is unknown; use one of {', '.join(GRANULARITIES)}"
                                  " (out_channel/in_channel: weights, per_channel: inputs/outputs)")
    return config_list


def parse_dtype(dtype: str) -> tuple[bool, int]:
    """``(signed, bits)`` of ``intN``/``uintN``."""
    m = _DTYPE.match(str(dtype))
    if not m or not 2 <= int(m.group(2)) <= 16:
        raise ConfigError(f"config_list: quant_dtype {dtype!r}; use intN or uintN with N in 2..16 (e.g. 'int8')")
    return m.group(1) == "int", int(m.group(2))


def select_modules(model: nn.Module, entry: dict) -> list[str]:
    """Names selected by one config_list entry (NNI's ``select_modules_by_config``), in model order."""
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    selected = set(entry.get("op_names") or ())
    for p in entry.get("op_names_re") or ():
        selected.update(n for n in types if re.match(p, n))
    if entry.get("op_types"):
        by_type = {n for n, t in types.items() if t in entry["op_types"]}
        selected = selected & by_type if (entry.get("op_names") or entry.get("op_names_re")) else by_type
    selected -= set(entry.get("exclude_op_names") or ())
    for p in entry.get("exclude_op_names_re") or ():
        selected = {n for n in selected if not re.match(p, n)}
    selected = {n for n in selected if types.get(n) not in set(entry.get("exclude_op_types") or ())}
    missing = set(entry.get("op_names") or ()) - set(types)
    if missing:
        raise ConfigError(f"config_list: op_names {sorted(missing)} are not modules of the model")
    return [n for n in types if n in selected and n]


def default_targets(type_name: str) -> list[str]:
    if type_name in LAYER_TYPES:
        return [INPUT, "weight", "bias", OUTPUT]
    return [INPUT, OUTPUT]


def entry_targets(entry: dict, type_name: str) -> list[str]:
    """The targets an entry quantizes on a module of ``type_name`` (``_input_0``/``_output_0`` normalised)."""
    targets = entry.get("target_names") or default_targets(type_name)
    return [INPUT if t == "_input_0" else OUTPUT if t == "_output_0" else t for t in targets]


def target_setting(entry: dict, target: str) -> dict:
    """One target's settings as NNI's ``ModuleSetting.get``: the registry default, the entry's shared keys
    over it, ``target_settings[target]`` over those (an explicit None overwrites too); ``quant_dtype`` None is
    int8 (NNI's ``QuantizationTargetSpace``), ``granularity`` None is per tensor."""
    s = {"quant_dtype": None, "quant_scheme": None, "granularity": "default"}
    s.update({k: entry[k] for k in SETTING_KEYS if k in entry})
    s.update({k: v for k, v in ((entry.get("target_settings") or {}).get(target) or {}).items() if k in SETTING_KEYS})
    s["quant_dtype"] = s["quant_dtype"] or "int8"
    s["granularity"] = s["granularity"] or "default"
    return s


def resolve(model: nn.Module, config_list: list) -> dict[str, dict[str, dict]]:
    """``{module: {target: {"quant_dtype", "quant_scheme", "granularity"}}}`` for the whole config_list."""
    modules = dict(model.named_modules())
    plan: dict[str, dict[str, dict]] = {}
    for entry in config_list:
        for name in select_modules(model, entry):
            tname = type(modules[name]).__name__
            if tname not in LAYER_TYPES and tname not in ACTIVATION_TYPES:
                raise UnsupportedError(f"config_list selects {name!r} ({tname}); quantzoo's NNI plugin quantizes "
                                       f"{', '.join(LAYER_TYPES + ACTIVATION_TYPES)}")
            targets = entry_targets(entry, tname)
            if tname not in LAYER_TYPES and set(targets) & {"weight", "bias"}:
                raise UnsupportedError(f"config_list: {name!r} ({tname}) has no weight/bias target")
            settings = plan.setdefault(name, {})
            again = [t for t in targets if t in settings]
            if again:
                warnings.warn(f"config_list: {name}: {', '.join(again)} already configured by an earlier entry; "
                              "the later setting is ignored (as NNI)", QuantzooWarning, stacklevel=4)
            settings.update({t: target_setting(entry, t) for t in targets if t not in settings})
    return plan


def fuse_groups(config_list: list) -> list[tuple[str, ...]]:
    """All ``fuse_names`` tuples of the config_list."""
    return [tuple(g) for e in config_list for g in (e.get("fuse_names") or ())]
