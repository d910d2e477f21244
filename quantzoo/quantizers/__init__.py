"""Quantizers shipped with the core (plugins add the rest)."""

from .uniform import UniformConfig, UniformQuantizer

CORE_QUANTIZERS = [UniformQuantizer]

__all__ = ["CORE_QUANTIZERS", "UniformConfig", "UniformQuantizer"]
