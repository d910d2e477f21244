"""Quantizer.conformance_overrides: the kit checks a class with its defaults plus those overrides only."""

from quantzoo.quantizers import UniformQuantizer
from quantzoo.testing import _fresh


class _Slow(UniformQuantizer):
    name = "slow-double"

    @classmethod
    def conformance_overrides(cls):
        return {"learnable_scale": True}


def test_kit_instances_of_a_class_take_its_overrides_and_instances_keep_their_config():
    assert _fresh(_Slow).config.learnable_scale is True
    assert _fresh(_Slow()).config.learnable_scale is False  # an instance is checked with its own config
    assert _fresh(UniformQuantizer).config == UniformQuantizer.Config()  # default: no overrides
