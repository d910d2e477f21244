"""`QuantizerConfig`: the base of every method's configuration, and the one formatter of its errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class QuantizerConfig(BaseModel):
    """Base of every method's config: frozen, unknown keys rejected, versioned.

    Subclasses add their fields with defaults, so ``Config()`` is always valid. Serialised through the
    registry name: ``{"method": "dorefa", "version": 1, "config": {...}}`` (see :meth:`Quantizer.to_json`).
    Validating a config never loads plugins: names of registered components (observers, ...) are checked
    against the registry when a quantizer is built from the config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int = 1


def format_validation_error(owner: str, err: ValidationError) -> str:
    """One line per problem: ``owner: field.path: message (got value)``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{loc}: {msg}{got}")
    return f"{owner}: invalid config: " + "; ".join(parts)
