"""Registry-parametrized conformance: the kit runs over EVERY registered quantizer, so each installed
plugin is exercised without anyone writing a test for it (as timm tests every registered model)."""

from __future__ import annotations

from quantzoo import get_registry
from quantzoo.testing import parametrize_with_checks

_REGISTRY = get_registry()
QUANTIZERS = [_REGISTRY.get("quantizer", name) for name in _REGISTRY.names("quantizer")]


def test_registry_has_quantizers():
    assert "uniform" in _REGISTRY.names("quantizer")


@parametrize_with_checks(QUANTIZERS)
def test_conformance(quantizer, check):
    check(quantizer)


# ---------------------------------------------------------------------------------------------------------
# The kit itself: a correct test double passes, and each defect is caught by the check meant for it.
# ---------------------------------------------------------------------------------------------------------
import pytest  # noqa: E402
import torch  # noqa: E402
from pydantic import ConfigDict  # noqa: E402
from torch import nn  # noqa: E402

from quantzoo import Capabilities, QuantSpec  # noqa: E402
from quantzoo import testing as kit  # noqa: E402
from quantzoo.math import compute_qparams, fake_quantize, reduce_min_max  # noqa: E402
from quantzoo.nn import swap_layers, to_quant_layer  # noqa: E402
from quantzoo.nn.layers import QuantLayerMixin  # noqa: E402
from quantzoo.quantizers import UniformConfig, UniformQuantizer  # noqa: E402


class GoodDouble(UniformQuantizer):
    """An unregistered copy of `uniform`: must pass every check with allow_unregistered."""

    name = "good-double"


@parametrize_with_checks([GoodDouble, GoodDouble(weight=QuantSpec(bits=4, granularity="per_channel"))],
                         allow_unregistered=True)
def test_kit_passes_a_correct_double(quantizer, check):
    check(quantizer)


def test_parametrize_ids_name_method_and_check():
    mark = parametrize_with_checks([GoodDouble], allow_unregistered=True)
    ids = [p.id for p in mark.args[1]]
    assert "good-double-check_weights_on_grid" in ids
    assert "good-double-check_registered" not in ids  # unregistered doubles skip the registry lookup
    twice = [p.id for p in parametrize_with_checks([GoodDouble, GoodDouble(learnable_scale=True)],
                                                   allow_unregistered=True).args[1]]
    assert "good-double[0]-check_name" in twice and "good-double[1]-check_name" in twice
    registered = [p.id for p in parametrize_with_checks([UniformQuantizer]).args[1]]
    assert "uniform-check_registered" in registered and "uniform-check_config_json_roundtrip" in registered


def test_parametrize_rejects_non_quantizers():
    with pytest.raises(TypeError, match="Quantizer classes or instances"):
        parametrize_with_checks([nn.Linear])


class StaysFloat(UniformQuantizer):
    name = "stays-float"

    def _prepare(self, model, plan):
        return model

    def _convert(self, model):
        return model


class OffGrid(UniformQuantizer):
    """Claims 2-bit weights at convert but keeps the float ones."""

    name = "off-grid"

    def _convert(self, model):
        for m in model.modules():
            if isinstance(m, QuantLayerMixin):
                m.weight_quantizer = None
                m.weight_bits = 2
        return model


class SkipsConvs(UniformQuantizer):
    """Claims Conv2d in module_types but quantizes only Linear layers."""

    name = "skips-convs"

    def _prepare(self, model, plan):
        linears = [n for n in plan.method_layers() if isinstance(model.get_submodule(n), nn.Linear)]
        swap_layers(model, linears, lambda n, m: to_quant_layer(m, weight_quantizer=_DetachedWeightQuant()))
        return model


class NoSchema(UniformQuantizer):
    """A config field of a type pydantic cannot describe."""

    name = "no-schema"

    class Config(UniformConfig):
        model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
        module: nn.Module | None = None


class MutableConfig(UniformQuantizer):
    name = "mutable-config"

    class Config(UniformConfig):
        model_config = ConfigDict(frozen=False, extra="forbid")


class ExtraKeys(UniformQuantizer):
    name = "extra-keys"

    class Config(UniformConfig):
        model_config = ConfigDict(frozen=True, extra="allow")


class BadName(UniformQuantizer):
    name = "Bad Name"


class NoCalibrationCheck(UniformQuantizer):
    name = "no-calibration-check"

    def convert(self, model):
        return self._convert(model)


class Noisy(UniformQuantizer):
    """A converted model that adds fresh noise on every call."""

    name = "noisy"

    def _convert(self, model):
        model = super()._convert(model)
        model.register_forward_hook(lambda m, i, out: out + 1e-3 * torch.randn_like(out))
        return model


class _DetachedWeightQuant(nn.Module):
    """Quantizes the weight with no gradient path back to the parameter (a defect)."""

    bits = 4

    def forward(self, w):
        spec = QuantSpec(bits=4)
        lo, hi = reduce_min_max(w.detach(), spec)
        scale, zp = compute_qparams(lo, hi, spec)
        return fake_quantize(w.detach(), scale, zp, spec)


class Detached(UniformQuantizer):
    name = "detached"

    def _prepare(self, model, plan):
        swap_layers(model, plan.method_layers(),
                    lambda n, m: to_quant_layer(m, weight_quantizer=_DetachedWeightQuant()))
        return model


class _AttributeScaleQuant(nn.Module):
    """Keeps its scale in a plain attribute, so state_dict loses it (a defect)."""

    bits = 4

    def __init__(self):
        super().__init__()
        self.scale = None

    def forward(self, x):
        if self.scale is None:
            self.scale = float(x.detach().abs().max()) / 7
        return fake_quantize(x, torch.tensor(self.scale), torch.tensor(0, dtype=torch.int32), QuantSpec(bits=4))


class LosesState(UniformQuantizer):
    name = "loses-state"

    def _prepare(self, model, plan):
        swap_layers(model, plan.method_layers(),
                    lambda n, m: to_quant_layer(m, weight_quantizer=_AttributeScaleQuant()))
        return model


class Untrained(UniformQuantizer):
    """Needs training, but its convert skips the base class's warning."""

    name = "untrained"
    capabilities = Capabilities(qat=True, weight_bits=(8,), activation_bits=(8,), needs_training=True)

    def convert(self, model):
        return self._convert(model)


class NaNs(UniformQuantizer):
    name = "nans"

    def _convert(self, model):
        model = super()._convert(model)
        model.register_forward_hook(lambda m, i, out: out * float("nan"))
        return model


class NoBits(UniformQuantizer):
    name = "no-bits"

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        raise KeyError(w_bits)


class _ReluQuant(nn.Module):
    """4-bit unsigned fake-quantization of a ReLU output, range [0, 4]."""

    bits = 4

    def forward(self, x):
        spec = QuantSpec(bits=4, signed=False, symmetric=False)
        return fake_quantize(torch.relu(x), torch.tensor(4 / 15), torch.tensor(0, dtype=torch.int32), spec)


class WeightOnlyPolicy(UniformQuantizer):
    """Quantizes every ReLU output at 4 bits whatever the plan says: the first/last-layer policy then
    governs weights only, and the last layer's input has 16 levels (the defect the audit found)."""

    name = "weight-only-policy"

    def _prepare(self, model, plan):
        model = super()._prepare(model, plan)
        for name, mod in list(model.named_modules()):
            if isinstance(mod, nn.ReLU):
                from quantzoo.nn import set_submodule

                set_submodule(model, name, _ReluQuant())
        return model


@pytest.mark.parametrize("double, check, message", [
    (StaysFloat, kit.check_weights_on_grid, "no quantized weight"),
    (OffGrid, kit.check_weights_on_grid, "claims 2 bits"),
    (SkipsConvs, kit.check_layers_quantized, r"left 1 quantized weight\(s\) for the 3 layer\(s\) \['0', '3', '7'\]"),
    (MutableConfig, kit.check_config_frozen, "Config is mutable"),
    (NoSchema, kit.check_config_schema, "model_json_schema"),
    (ExtraKeys, kit.check_config_forbids_extra, "accepted an unknown key"),
    (BadName, kit.check_name, "lowercase slug"),
    (GoodDouble, kit.check_registered, "not registered"),
    (NoCalibrationCheck, kit.check_uncalibrated_convert_raises, "NotCalibratedError"),
    (Noisy, kit.check_forward_deterministic, "different outputs"),
    (Detached, kit.check_gradients_flow, "gradient"),
    (LosesState, kit.check_state_dict_roundtrip_prepared, "state_dict"),
    (Untrained, kit.check_convert_warns_untrained, "QuantzooWarning"),
    (NaNs, kit.check_outputs_finite, "NaN/Inf"),
    (NoBits, kit.check_config_for_bits, "raise quantzoo.UnsupportedError"),
    (WeightOnlyPolicy, kit.check_layer_policy, r"last layer's input has \d+ distinct values and receives \d+"),
], ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, str) else "")
def test_kit_catches_defect(double, check, message):
    with pytest.raises(AssertionError, match=message) as info:
        kit._with_fresh_instance(check)(double)
    assert double.__name__ in str(info.value)  # the message names the method


def test_check_quantizer_stops_at_first_failure():
    with pytest.raises(AssertionError, match="no quantized weight"):
        kit.check_quantizer(StaysFloat, allow_unregistered=True)


class _GRUModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.gru(x)[0][:, -1])


class WithOwnModel(UniformQuantizer):
    name = "own-model"

    @classmethod
    def conformance_model(cls):
        return _GRUModel(), torch.randn(2, 5, 4)


def test_conformance_model_override_is_used():
    models = kit._conformance_models(WithOwnModel())
    assert [label for label, _ in models] == ["conformance_model"]
    kit.check_quantizer(WithOwnModel, allow_unregistered=True)  # only the Linear is quantized: still passes


def test_find_quantized_weights_reads_torch_ao_modules():
    from torch.ao.quantization import quantize_dynamic

    torch.manual_seed(0)
    q = quantize_dynamic(_GRUModel(), {nn.Linear, nn.GRU}, dtype=torch.qint8)
    found = {name: bits for name, _, bits, _ in kit.find_quantized_weights(q)}
    assert found["fc"] == 8
    assert any(name.startswith("gru.") for name in found), found


def test_find_quantized_weights_reads_packed_modules():
    class Packed(nn.Module):
        weight_bits = 1

        def dequantized_weight(self):
            return torch.tensor([[0.5, -0.5, 0.5], [1.0, 1.0, -1.0]])

    [(name, w, bits, group)] = list(kit.find_quantized_weights(nn.Sequential(Packed())))
    assert (name, bits, group) == ("0", 1, None)
    assert kit.max_distinct(w, group) == 2
    # per group of 2 input elements: rows [0.5,-0.5], [0.5,1.0]... at most 2 distinct each
    assert kit.max_distinct(torch.tensor([[1.0, 2.0, 3.0, 3.0]]), 2) == 2
