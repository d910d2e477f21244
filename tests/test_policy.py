"""The layer policy (quantzoo.policy): one plan of roles per model, applied by the core to whole layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantzoo
from quantzoo import LayerPolicyConfig, PluginError, UnsupportedError
from quantzoo.nn import FakeQuant, QuantLinear, swap_layers, to_quant_layer
from quantzoo.policy import plan_layers
from quantzoo.schemes import get_scheme
from quantzoo.quantizers import UniformQuantizer

TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 2))


@pytest.mark.parametrize(("first", "last", "roles"), [
    ("same", "same", ["method", "method", "method", "method"]),
    ("fp", "fp", ["fp", "method", "method", "fp"]),
    ("int8", "fp", ["int8", "method", "method", "fp"]),
    ("fp", "int8", ["fp", "method", "method", "int8"]),
])
def test_first_last_roles(first, last, roles):
    plan = plan_layers(_mlp(), LayerPolicyConfig(first_layer=first, last_layer=last), TYPES)
    assert plan.layers == ("0", "2", "4", "6")
    assert [plan.role(n) for n in plan.layers] == roles
    assert plan.method_layers() == [n for n, r in zip(plan.layers, roles) if r == "method"]
    for n, r in zip(plan.layers, roles):
        assert (n in plan.describe()) == (r != "method")


def test_include_exclude_patterns_keep_layers_float_with_a_reason():
    plan = plan_layers(_mlp(), LayerPolicyConfig(include=("[0-4]",), exclude=("2",)), TYPES)
    assert plan.method_layers() == ["0", "4"]
    assert "exclude" in plan.reasons["2"] and "include" in plan.reasons["6"]


class _ClassifierFirst(nn.Module):
    """Registers its classifier before the feature layer: forward order must decide first/last."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Linear(4, 8)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_first_and_last_follow_forward_order_not_registration():
    plan = plan_layers(_ClassifierFirst(), LayerPolicyConfig(first_layer="fp", last_layer="int8"), TYPES)
    assert plan.layers == ("body", "head")
    assert plan.role("body") == "fp" and plan.role("head") == "int8"


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu2(x + self.conv(x))  # functional residual add
        return self.fc(torch.flatten(self.pool(x), 1))


def test_activation_role_follows_dataflow_through_adds_and_pools():
    plan = plan_layers(_Residual(), LayerPolicyConfig(last_layer="fp"), TYPES)
    assert plan.reaches["relu"] == {"conv", "fc"}  # through the residual add to the head
    assert plan.activation_role("relu") == "fp"  # feeds a float layer: the widest role wins
    assert plan.reaches["relu2"] == {"fc"} and plan.activation_role("relu2") == "fp"
    assert plan.reaches["stem"] == {"conv", "fc"}  # a path stops at the first layer it meets, not before
    plan = plan_layers(_Residual(), LayerPolicyConfig(), TYPES)
    assert plan.activation_role("relu") == "method"


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.b(self.act(self.a(x)))


def test_untraceable_models_fall_back_to_registration_order():
    plan = plan_layers(_Untraceable(), LayerPolicyConfig(last_layer="int8"), TYPES)
    assert plan.layers == ("a", "b")
    assert plan.reaches["act"] == {"b"} and plan.activation_role("act") == "int8"


def test_the_core_builds_the_int8_layers_for_every_method():
    q = UniformQuantizer(weight={"bits": 4, "granularity": "per_channel"}, activation={"bits": 4, "signed": False,
                         "symmetric": False}, first_layer="int8", last_layer="int8")
    prepared = q.prepare(_mlp())
    for name in ("0", "6"):
        layer = prepared.get_submodule(name)
        assert layer._quantzoo_role == "int8"
        x86 = get_scheme("x86")
        assert layer.weight_quantizer.spec == x86.weight_spec(8)
        assert layer.input_quantizer.spec == x86.activation_spec(8)
    assert prepared[2].weight_quantizer.bits == 4 and prepared[2].input_quantizer.bits == 4
    q.calibrate(prepared, [torch.randn(16, 4)])
    converted = q.convert(prepared)
    assert converted[0].weight_bits == 8 and converted[2].weight_bits == 4 and converted[6].weight_bits == 8


def test_weight_only_methods_keep_the_int8_layers_input_float():
    q = UniformQuantizer(activation=None, first_layer="int8", last_layer="same")
    prepared = q.prepare(_mlp())
    assert prepared[0]._quantzoo_role == "int8" and prepared[0].input_quantizer is None


class _TouchesPolicyLayers(UniformQuantizer):
    """Quantizes every layer itself, ignoring the plan (a plugin bug the core must catch)."""

    name = "touches-policy-layers"

    def _prepare(self, model, plan):
        swap_layers(model, plan.layers, lambda n, m: to_quant_layer(m))
        return model


def test_a_method_that_replaces_a_policy_layer_is_a_plugin_error():
    with pytest.raises(PluginError, match="replaced layer '0'.*first layer"):
        _TouchesPolicyLayers(first_layer="fp").prepare(_mlp())


def test_a_model_left_without_method_layers_is_refused():
    with pytest.raises(UnsupportedError, match="no layer left to quantize the method's way"):
        UniformQuantizer(first_layer="int8", last_layer="fp").prepare(nn.Sequential(nn.Linear(4, 2)))


def test_quantize_api_runs_the_policy_end_to_end():
    torch.manual_seed(0)
    model = _mlp().eval()
    x = torch.randn(32, 4)
    q = quantzoo.quantize(model, "uniform", {"first_layer": "fp", "last_layer": "int8"}, calibration=[x])
    assert type(q[0]) is nn.Linear and isinstance(q[6], QuantLinear)
    assert isinstance(q[6].input_quantizer, FakeQuant) and q[6].weight_bits == 8
    assert torch.allclose(q(x), model(x), atol=0.2)
    assert F.mse_loss(q(x), model(x)) < 1e-3
