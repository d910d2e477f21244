"""Exceptions raised by quantzoo. Every message names the problem and the fix."""

from __future__ import annotations

import difflib


class QuantzooError(Exception):
    """Base class of every error quantzoo raises on purpose (the CLI prints these without a traceback)."""


class UnknownNameError(QuantzooError, KeyError):
    """A quantizer, observer, backend, model or data set name that is not registered."""

    def __init__(self, kind: str, name: str, installed: list[str]):
        self.kind, self.name, self.installed = kind, name, installed
        close = difflib.get_close_matches(str(name).lower(), installed, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        shown = ", ".join(installed) if installed else "(none)"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Installed: {shown}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]

    def with_hint(self, hint: str) -> "UnknownNameError":
        """The same error with a sentence of advice appended."""
        self.args = (f"{self.args[0]}; {hint}",)
        return self


class DuplicateNameError(QuantzooError):
    """Two providers registered the same name for one kind of component."""


class PluginError(QuantzooError):
    """A plugin broke the registry contract (wrong type registered, bad name, ...)."""


class ConfigError(QuantzooError, ValueError):
    """A configuration (spec, method config, suite file) is invalid."""


class UnsupportedError(QuantzooError, ValueError):
    """A method or backend cannot do what was asked (e.g. a bit width it does not support)."""


class NotCalibratedError(QuantzooError, RuntimeError):
    """convert() was called on a PTQ model whose observers never saw data."""


class DataError(QuantzooError, ValueError):
    """Input data is missing, corrupt, empty or non-finite."""


class QuantzooWarning(UserWarning):
    """Something worth knowing that does not stop the work (e.g. convert without training)."""


class NonFiniteOutputError(QuantzooError, RuntimeError):
    """A (quantized) model produced NaN or Inf outputs, or training produced non-finite values."""
