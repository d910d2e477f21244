"""Distiller schedule YAML (quantizers + policies, regex overrides) selects exactly the layers it should."""

import pytest
import torch
import yaml
from torch import nn

from quantzoo import ConfigError, QuantzooWarning
from quantzoo_plugin_distiller import DistillerPACT, DistillerPTQ, method_for_schedule
from quantzoo_plugin_distiller.modules import PACTActivation

SCHEDULE = """
quantizers:
  pact_quantizer:
    class: PACTQuantizer
    act_clip_init_val: 8.0
    bits_activations: 4
    bits_weights: 3
    overrides:
      conv1:
        bits_weights: null
        bits_activations: null
      relu1:
        bits_weights: null
        bits_activations: null
      'layer.*\\.conv.*':
        bits_weights: 5
      fc:
        bits_weights: null
        bits_activations: null
policies:
  - quantizer:
      instance_name: pact_quantizer
    starting_epoch: 0
    ending_epoch: 200
    frequency: 1
  - lr_scheduler:
      instance_name: training_lr
    starting_epoch: 0
"""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.layer1.conv_a = self.layer1[0]  # same module under a name the regex matches
        self.relu2 = nn.ReLU()
        self.conv_b = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.layer1(x)
        x = self.relu2(self.conv_b(x))
        return self.fc(x.flatten(1))


def test_pact_schedule_overrides_select_layers():
    data = yaml.safe_load(SCHEDULE)
    assert method_for_schedule(data) == "distiller-pact"
    with pytest.warns(QuantzooWarning, match="lr_scheduler"):
        cfg = DistillerPACT.config_from_file(data)
    assert (cfg.bits_weights, cfg.bits_activations, cfg.ending_epoch) == (3, 4, 200)
    prepared = DistillerPACT(cfg).prepare(Net())
    # conv1 and fc: FP (bits null); layer1.0 (also reachable as layer1.conv_a) -> first match in order is
    # 'layer.*\.conv.*'? No: named_modules() yields 'layer1.0' (dedup keeps the first name), which matches
    # no pattern -> global 3 bits. conv_b matches nothing -> 3 bits.
    assert type(prepared.conv1) is nn.Conv2d and type(prepared.fc) is nn.Linear
    assert prepared.layer1[0].weight_quantizer.bits == 3
    assert prepared.conv_b.weight_quantizer.bits == 3
    # relu1 kept FP by override; layer1.1 and relu2 get PACT with 4 bits
    assert type(prepared.relu1) is nn.ReLU
    assert isinstance(prepared.layer1[1], PACTActivation) and prepared.layer1[1].bits == 4
    assert isinstance(prepared.relu2, PACTActivation)


def test_first_match_wins_and_fullmatch():
    over = {"conv.*": {"bits_weights": 5}, "conv_b": {"bits_weights": 8}, "fc": {"bits_weights": 6}}
    prepared = DistillerPACT(bits_weights=3, bits_activations=None, overrides=over).prepare(Net())
    # a key equal to the module name wins over the earlier 'conv.*' (Distiller looks the name up first;
    # tests/anchors schedule "dorefa_first_match" is the real Distiller on the same rule)
    assert prepared.conv_b.weight_quantizer.bits == 8
    assert prepared.conv1.weight_quantizer.bits == 5  # 'conv.*' is the first pattern matching 'conv1'
    assert prepared.fc.weight_quantizer.bits == 6
    # '^pattern$': 'layer1' does not match 'layer1.0'
    prepared = DistillerPACT(bits_weights=3, bits_activations=None,
                             overrides={"layer1": {"bits_weights": None}}).prepare(Net())
    assert prepared.layer1[0].weight_quantizer.bits == 3


def test_ptq_yaml_overrides_keep_layer_fp():
    data = yaml.safe_load("""
quantizers:
  post_train_quantizer:
    class: PostTrainLinearQuantizer
    bits_activations: 8
    bits_parameters: 8
    mode: {activations: ASYMMETRIC_UNSIGNED, weights: SYMMETRIC}
    clip_acts: AVG
    per_channel_wts: true
    overrides:
      fc: {clip_acts: NONE}
      conv1: {bits_weights: null, bits_activations: null}
""")
    cfg = DistillerPTQ.config_from_file(data)
    prepared = DistillerPTQ(cfg).prepare(Net())
    assert type(prepared.conv1) is nn.Conv2d
    assert prepared.fc.output_quantizer.clip == "NONE" and prepared.conv_b.output_quantizer.clip == "AVG"
    assert prepared.conv_b.output_quantizer.half_range  # conv_b feeds relu2
    assert prepared.conv_b.weight_quantizer.per_channel


def test_bits_overrides_and_wrong_class_errors():
    legacy = {"quantizers": {"q": {"class": "PACTQuantizer", "bits_overrides": {"conv1": {"acts": 8, "wts": 8}}}}}
    with pytest.raises(ConfigError, match="overrides"):
        DistillerPACT.config_from_file(legacy)
    with pytest.raises(ConfigError, match="overrides"):
        DistillerPTQ(bits_overrides={})
    with pytest.raises(ConfigError, match="distiller-pact"):
        DistillerPTQ.config_from_file(yaml.safe_load(SCHEDULE))


def test_bench_load_method_config(tmp_path):
    from quantzoo.bench import load_method_config

    p = tmp_path / "sched.yaml"
    p.write_text(SCHEDULE)
    with pytest.warns(QuantzooWarning):
        cfg = load_method_config(p, "distiller-pact")
    assert cfg.bits_weights == 3 and "conv1" in cfg.overrides
    # the row's W/A label: the schedule's top-level widths, not its per-layer overrides
    assert DistillerPACT.bits_of_config(cfg) == (3, 4)
    assert DistillerPTQ.bits_of_config(DistillerPTQ.Config(bits_parameters=6, bits_activations=None)) == (6, None)


def test_layer_policy_first_last():
    prepared = DistillerPACT(bits_weights=3, bits_activations=4, first_layer="int8", last_layer="fp").prepare(Net())
    assert prepared.conv1.weight_quantizer.bits == 8 and type(prepared.fc) is nn.Linear
    assert prepared.conv_b.weight_quantizer.bits == 3
    p = DistillerPTQ(bits_parameters=4, bits_activations=4, first_layer="int8", last_layer="int8").prepare(Net())
    assert p.conv1.weight_quantizer.bits == 8 and p.conv1.input_quantizer.bits == 8 and p.fc.weight_quantizer.bits == 8
    assert p.conv_b.weight_quantizer.bits == 4


def test_example_files_on_zoo_cnn():
    from pathlib import Path

    from quantzoo.bench import load_method_config
    from quantzoo.models.cnn import SmallCNN

    ex = Path(__file__).parents[1] / "examples"
    p = DistillerPTQ(load_method_config(ex / "cnn_digits_ptq.yaml", "distiller-ptq")).prepare(SmallCNN((1, 8, 8), 10))
    assert type(p.features[0]) is nn.Conv2d  # overridden to FP
    assert p.classifier[1].output_quantizer.clip == "NONE" and p.features[3].output_quantizer.clip == "AVG"
    assert p.features[3].weight_quantizer.per_channel and p.features[3].output_quantizer.half_range
    cfg = load_method_config(ex / "cnn_digits_pact.yaml", "distiller-pact")
    p = DistillerPACT(cfg).prepare(SmallCNN((1, 8, 8), 10))
    assert p.features[0].weight_quantizer.bits == 8 and p.features[3].weight_quantizer.bits == 4
    assert p.classifier[1].weight_quantizer.bits == 8
    assert sum(isinstance(m, PACTActivation) for m in p.modules()) == 3


def test_schedule_as_suite_entry(tmp_path):
    from pathlib import Path

    from quantzoo.bench.suite import load_suite, plan_suite

    src = Path(__file__).parents[1] / "examples" / "cnn_digits_ptq.yaml"
    (tmp_path / "ptq.yaml").write_text(src.read_text())
    (tmp_path / "s.toml").write_text('name = "t"\nseeds = [0]\n[[targets]]\nmodel = "cnn"\ndataset = "digits"\n'
                                     '[[entries]]\nmethods = ["distiller-ptq"]\nconfig_file = "ptq.yaml"\n')
    cells = [c for c in plan_suite(load_suite(tmp_path / "s.toml")).cells if c.method == "distiller-ptq"]
    assert len(cells) == 1 and cells[0].config["overrides"]["features\\.0"]["bits_weights"] is None
    assert cells[0].config["clip_acts"] == "AVG" and cells[0].config["per_channel_wts"] is True


def test_config_errors_name_the_field():
    from quantzoo import UnsupportedError

    with pytest.raises(ConfigError, match="N_STD"):
        DistillerPTQ(per_channel_wts=True, clip_acts="N_STD", clip_n_stds=2)
    with pytest.raises(ConfigError, match="clip_n_stds"):
        DistillerPTQ(clip_acts="N_STD")
    with pytest.raises(ConfigError, match="bits_parameters"):
        DistillerPTQ(bits_parameters=1)
    with pytest.raises(ConfigError, match="unknown key"):
        DistillerPTQ(overrides={"fc": {"bits_wts": 4}})
    with pytest.raises(ConfigError, match="regular expression"):
        DistillerPTQ(overrides={"fc[": {"bits_weights": 4}})
    with pytest.raises(UnsupportedError, match="ACIQ"):
        q = DistillerPTQ(bits_activations=12, clip_acts="LAPLACE")
        q.calibrate(q.prepare(Net()), [torch.randn(2, 1, 8, 8)])
    with pytest.raises(UnsupportedError):
        DistillerPACT.config_for_bits(4, 1)
