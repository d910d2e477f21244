"""Method configurations for the harness: the config of a W/A setting (``config_for_bits``) plus suite
overrides and the protocol's layer policy, and method configs read from JSON/YAML/TOML files.

Extension point for plugins with their own file formats (Distiller schedule YAML, NNI config_list): a
quantizer class may define ``config_from_file(data) -> QuantizerConfig | dict``; :func:`load_method_config`
hands it the parsed file content and uses what it returns.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from ..config import QuantizerConfig
from ..errors import ConfigError, UnsupportedError
from ..quantizer import Quantizer
from ..schemes import get_scheme
from .protocol import Protocol

LAYER_POLICY_FIELDS = ("first_layer", "last_layer")


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` updated by ``overrides``; nested dicts (e.g. a ``weight`` QuantSpec) merge key by key."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested config keys as dotted paths: ``{"weight": {"bits": 3}}`` → ``{"weight.bits": 3}``."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def bits_config(cls: type[Quantizer], w_bits: int | None, a_bits: int | None, overrides: dict | None = None,
                protocol: Protocol | None = None) -> QuantizerConfig:
    """The validated config of ``cls`` at W``w_bits``/A``a_bits`` (``a_bits`` None: float activations).

    ``w_bits=None`` starts from the method's defaults. The protocol's scheme is applied where the method
    follows it (:func:`scheme_followed`), then suite overrides are merged on top; the protocol's layer policy
    is applied where the config has those fields and the overrides leave them unset. Raises
    :class:`~quantzoo.errors.UnsupportedError` when the method has no such setting.
    """
    overrides = dict(overrides or {})
    base = cls.Config() if w_bits is None else cls.config_for_bits(int(w_bits), a_bits)
    if protocol is not None and protocol.scheme != "method" and w_bits is not None:
        try:
            base = cls.apply_scheme(base, get_scheme(protocol.scheme))
        except UnsupportedError:
            pass  # the method runs its own scheme; scheme_followed() says so in the row
    data = deep_merge(base.model_dump(), overrides)
    if protocol is not None:
        for f in LAYER_POLICY_FIELDS:
            policy = getattr(protocol, f)
            if policy != "method" and f in cls.Config.model_fields and f not in overrides:
                data[f] = policy
        if protocol.scheme != "method" and "int8_scheme" in cls.Config.model_fields:
            data["int8_scheme"] = protocol.scheme  # the policy's 8-bit layers follow the suite's scheme always
    return cls.make_config(data)


def scheme_followed(cls: type[Quantizer], w_bits: int | None, a_bits: int | None, protocol: Protocol) -> str | None:
    """The protocol's scheme name where the method follows it, ``"own: <why>"`` where it cannot, None where the
    protocol leaves each method its own (``scheme = "method"``)."""
    if protocol.scheme == "method":
        return None
    if w_bits is None:
        return "own: the row runs a config file"
    try:
        cls.apply_scheme(cls.config_for_bits(int(w_bits), a_bits), get_scheme(protocol.scheme))
    except UnsupportedError as e:
        return f"own: {e}"
    return protocol.scheme


def read_config_file(path: str | os.PathLike) -> Any:
    """Parse a JSON, YAML or TOML file (by extension); :class:`ConfigError` naming the file on bad syntax."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; give the path of a .json, .yaml/.yml or .toml file")
    ext = p.suffix.lower()
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p}: cannot read it as text ({e}); give a UTF-8 .json, .yaml or .toml "
                          "file") from None
    try:
        if ext == ".json":
            return json.loads(text)
        if ext in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if ext == ".toml":
            return tomllib.loads(text)
    except Exception as e:  # noqa: BLE001 - json/yaml/toml parse errors differ; all mean "fix the file"
        raise ConfigError(f"config file {p}: cannot parse it as {ext[1:].upper()}: {e}") from None
    raise ConfigError(f"config file {p}: unknown extension {ext!r}; use .json, .yaml/.yml or .toml")


def load_method_config(path: str | os.PathLike, method: type[Quantizer] | str) -> QuantizerConfig:
    """A method's config from a file.

    Accepted content: the serialised form ``{"method": ..., "version": ..., "config": {...}}``, a plain dict of
    config fields, or whatever the method's own ``config_from_file(data)`` classmethod understands (the hook for
    Distiller/NNI-style formats).
    """
    cls = _method_class(method)
    data = read_config_file(path)
    hook = getattr(cls, "config_from_file", None)
    if callable(hook):
        out = hook(data)
        return out if isinstance(out, QuantizerConfig) else cls.make_config(out)
    if isinstance(data, dict) and "method" in data and "config" in data:
        from ..api import get_quantizer

        if get_quantizer(data["method"]) is not cls:
            raise ConfigError(f"config file {path} is for method {data['method']!r}, not {cls.name!r}")
        return cls.make_config(data.get("config") or {})
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of {cls.name} config fields, "
                          f"got {type(data).__name__}")
    return cls.make_config(data)


def _method_class(method) -> type[Quantizer]:
    if isinstance(method, str):
        from ..api import get_quantizer

        return get_quantizer(method)
    return method
