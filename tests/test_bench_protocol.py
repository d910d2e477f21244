"""The protocol API: run_cell, the verified baseline cache (untrusted files refused), config resolution."""

import json
import pickle

import copy

import pytest
import torch

from quantzoo.bench import BaselineCache, Protocol, bits_config, get_baseline, load_method_config, run_cell
from quantzoo.quantized_weights import ideal_size_bytes
from quantzoo.bench.run import make_cell
from quantzoo.errors import ConfigError, QuantzooWarning, UnknownNameError, UnsupportedError
from quantzoo.quantizers.uniform import UniformQuantizer

FAST = {"epochs": 2, "lr": 3e-3}


@pytest.fixture()
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_run_cell_measures_a_cell(cache):
    proto = Protocol(calibration_samples=128, latency=False)
    m = run_cell("uniform", "mlp", "digits", 8, 8, protocol=proto, cache_dir=cache, baseline=FAST)
    assert m["calibration_samples"] == 128 and m["backend"] == "fakequant"
    assert 0 <= m["accuracy"] <= 100 and m["delta"] == pytest.approx(m["accuracy"] - m["fp_accuracy"])
    # W8A8 per-channel weights on an MLP: (by the core's uniform PTQ) within 2 points of the FP model
    assert abs(m["delta"]) < 2.0
    # ideal storage: 8-bit weights + 32-bit biases/BN params; the FP model is all 32-bit
    assert 3.0 < m["ideal_compression"] < 4.0


def test_baseline_is_trained_once_then_loaded(cache):
    a = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    b = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    assert not a.cached and b.cached and a.key == b.key and a.accuracy == b.accuracy
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    c = get_baseline("mlp", "digits", 1, FAST, cache_dir=cache)  # another seed: another entry
    assert c.key != a.key and not c.cached


def test_corrupt_cache_entry_is_recomputed(cache):
    a = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    pt, _ = BaselineCache(cache).paths(a.key)
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.warns(QuantzooWarning, match="sha256 does not match"):
        again = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    assert not again.cached
    assert get_baseline("mlp", "digits", 0, FAST, cache_dir=cache).cached  # rewritten, verified


class _Boom:
    """Unpickling this would run os.system: the cache must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_in_cache_is_refused_not_executed(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = get_baseline("mlp", "digits", 0, FAST, cache_dir=cache)
    c = BaselineCache(cache)
    pt, meta = c.paths(a.key)
    evil = pickle.dumps({"x": _Boom()})
    pt.write_bytes(evil)
    record = json.loads(meta.read_text())
    from quantzoo.bench.cache import sha256_bytes

    record["sha256"] = sha256_bytes(evil)  # the attacker also fixed the hash: weights_only must still refuse
    meta.write_text(json.dumps(record))
    with pytest.warns(QuantzooWarning, match="weights_only"):
        assert c.load(a.key) is None
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_bits_config_merges_overrides_and_layer_policy():
    proto = Protocol(first_layer="fp", last_layer="int8")
    cfg = bits_config(UniformQuantizer, 4, 4, {"weight": {"granularity": "per_tensor"}}, proto)
    assert cfg.weight.bits == 4 and cfg.weight.granularity == "per_tensor" and cfg.activation.bits == 4
    assert (cfg.first_layer, cfg.last_layer) == ("fp", "int8")
    cfg = bits_config(UniformQuantizer, 4, None, {"last_layer": "same"}, proto)  # explicit override wins
    assert cfg.activation is None and cfg.last_layer == "same"
    with pytest.raises(UnsupportedError):
        bits_config(UniformQuantizer, 1, 1)
    with pytest.raises(ConfigError, match="no_such_field"):
        bits_config(UniformQuantizer, 8, 8, {"no_such_field": 1})


def test_cell_key_depends_on_everything_that_changes_results():
    base = make_cell("uniform", "mlp", "digits", 8, 8, 0, baseline=FAST)
    assert base.key == make_cell("uniform", "mlp", "digits", 8, 8, 0, baseline=FAST).key
    others = [make_cell("uniform", "mlp", "digits", 4, 4, 0, baseline=FAST),
              make_cell("uniform", "mlp", "digits", 8, 8, 1, baseline=FAST),
              make_cell("uniform", "mlp", "digits", 8, 8, 0, {"weight_observer": "minmax",
                                                             "activation_observer": "minmax"}, baseline=FAST),
              make_cell("uniform", "mlp", "digits", 8, 8, 0, protocol={"calibration_samples": 64}, baseline=FAST),
              make_cell("uniform", "mlp", "digits", 8, 8, 0, mode="qat", baseline=FAST)]
    assert len({c.key for c in others} | {base.key}) == 6
    # latency settings do not change accuracy, so they do not change the key
    assert make_cell("uniform", "mlp", "digits", 8, 8, 0, protocol={"latency": False}, baseline=FAST).key == base.key


def test_make_cell_rejects_bad_names_before_work():
    with pytest.raises(UnknownNameError, match="Did you mean: uniform"):
        make_cell("unifrom", "mlp", "digits")
    with pytest.raises(UnsupportedError, match="does not fit"):
        make_cell("uniform", "lenet5", "digits")


@pytest.mark.parametrize("ext,text", [
    (".json", '{"weight_observer": "minmax"}'),
    (".yaml", "weight_observer: minmax\n"),
    (".toml", 'weight_observer = "minmax"\n'),
    (".json", '{"method": "uniform", "version": 1, "config": {"weight_observer": "minmax"}}'),
])
def test_load_method_config_formats(tmp_path, ext, text):
    p = tmp_path / f"cfg{ext}"
    p.write_text(text)
    assert load_method_config(p, "uniform").weight_observer == "minmax"


def test_load_method_config_uses_the_quantizers_own_format_hook(tmp_path):
    class Hooked(UniformQuantizer):
        @classmethod
        def config_from_file(cls, data):  # e.g. a Distiller schedule or an NNI config_list
            return {"weight_observer": data["quantizers"][0]["observer"]}

    p = tmp_path / "sched.yaml"
    p.write_text("quantizers:\n  - observer: minmax\n")
    assert load_method_config(p, Hooked).weight_observer == "minmax"


@pytest.mark.parametrize("ext,text", [(".json", "{bad"), (".yaml", "a: [1, 2"), (".toml", "x = ")])
def test_load_method_config_malformed_file_names_the_file(tmp_path, ext, text):
    p = tmp_path / f"bad{ext}"
    p.write_text(text)
    with pytest.raises(ConfigError, match=str(p.name)):
        load_method_config(p, "uniform")


def test_ideal_size_counts_every_quantized_weight_at_its_width():
    from torch.ao.quantization import quantize_dynamic

    fp = torch.nn.Sequential(torch.nn.Linear(10, 4))  # 40 weights + 4 biases
    assert ideal_size_bytes(fp, fp) == 44 * 4
    baked = copy.deepcopy(fp)
    baked[0].weight_bits = 2
    assert ideal_size_bytes(baked, fp) == 40 * 2 / 8 + 4 * 4
    # torch's int8 Linear keeps its weight outside parameters(): still 8 bits a weight, not 0 or 32
    dyn = quantize_dynamic(fp, {torch.nn.Linear}, dtype=torch.qint8)
    assert ideal_size_bytes(dyn, fp) == 40 * 1 + 4 * 4


def test_lr_grid_gives_every_method_the_same_trials_on_a_holdout(cache):
    proto = Protocol(calibration_samples=64, latency=False, lr_grid=(1e-4, 1e-3),
                     qat={"epochs": 1, "lr": 1e-3, "batch_size": 64, "samples": 256})
    m = run_cell("uniform", "mlp", "digits", 4, 4, mode="qat", protocol=proto, cache_dir=cache, baseline=FAST)
    assert set(m["lr_trials"]) == {"0.0001", "0.001"} and m["qat_lr"] in (1e-4, 1e-3)
    # the chosen rate is the one with the best hold-out accuracy (ties: the smaller rate)
    assert m["lr_trials"][str(m["qat_lr"])] == max(m["lr_trials"].values())


def test_bn_fold_before_is_applied_and_recorded(cache):
    proto = Protocol(calibration_samples=128, latency=False, bn_fold="before")
    m = run_cell("uniform", "cnn", "digits", 8, 8, protocol=proto, cache_dir=cache, baseline=FAST)
    assert m["bn_fold"] == "before"
    assert abs(m["delta"]) < 2.0  # folding is exact in eval mode, 8-bit PTQ of the folded model stays close
