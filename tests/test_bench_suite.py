"""Suite files: validation before anything runs, built-in suites load, planning follows capabilities."""

import pytest

from quantzoo.bench.suite import builtin_suites, find_suite, load_suite, parse_bits, plan_suite
from quantzoo.errors import ConfigError

from quantzoo.bench.testing import write_suite


def test_parse_bits():
    assert parse_bits("W8A8") == (8, 8)
    assert parse_bits("w2") == (2, None) and parse_bits("W2A32") == (2, None)
    assert parse_bits("default") == (None, None)
    for bad in ("8/8", "W0A8", "W33A8", "eight", "WA"):
        with pytest.raises(ValueError):
            parse_bits(bad)


@pytest.mark.parametrize("name", ["quick", "standard", "paper", "ptq_trend"])
def test_builtin_suites_load_and_plan(name):
    assert name in builtin_suites()
    suite = load_suite(name)
    plan = plan_suite(suite)
    fp = [c for c in plan.cells if c.mode == "fp"]
    assert len(fp) == sum(len(t.seeds or suite.seeds) for t in suite.targets)
    assert plan.cells[: len(fp)] == fp  # FP rows first (they train the baselines)
    assert len({c.key for c in plan.cells}) == len(plan.cells)
    _every_trend_row_is_planned_once(suite, plan)


def _every_trend_row_is_planned_once(suite, plan):
    """Each row a [[trends]] table names is exactly one planned row (method, mode, config, protocol) at each
    of its settings and targets: a typo or an ambiguous reference fails here, not in the rendered table."""
    rows = {(c.method, c.mode, c.bits_label, f"{c.model}/{c.dataset}", repr(c.config), repr(c.protocol)):
            {"method": c.method, "mode": c.mode, "config": c.config}
            for c in plan.cells if c.mode != "fp" and c.check_of is None}
    for trend in suite.trends:
        for bits in trend.bits:
            for target in trend.targets:
                for ref in trend.order:
                    found = [k for k, rec in rows.items() if k[2:4] == (bits, target) and ref.matches(rec)]
                    assert len(found) == 1, (trend.claim, bits, target, ref.name, found)


def test_quick_suite_covers_every_installed_8bit_method_but_the_slow_ones():
    import quantzoo

    plan = plan_suite(load_suite("quick"))
    covered = {c.method for c in plan.cells}
    reg = quantzoo.get_registry()
    eight_bit = {n for n in reg.names("quantizer") if 8 in reg.get("quantizer", n).capabilities.weight_bits}
    # torch.export + compile (torchao-pt2e) and reconstruction (10-60 s per cell) would break its 90 s
    slow = {"torchao-pt2e", "adaround", "brecq", "qdrop"}
    assert eight_bit - slow <= covered and not covered & slow
    assert {"adaround", "brecq", "qdrop"} <= {c.method for c in plan_suite(load_suite("ptq_trend")).cells}


def test_planning_follows_capabilities(tmp_path):
    suite = load_suite(write_suite(tmp_path, bits=("W8A8", "W1A1", "W2A32"), modes=("ptq", "qat")))
    plan = plan_suite(suite)
    labels = {(c.method, c.mode, c.bits_label) for c in plan.cells}
    assert ("uniform", "ptq", "W8A8") in labels and ("uniform", "qat", "W2A32") in labels
    assert not any(c.w_bits == 1 for c in plan.cells)  # uniform has no 1-bit setting
    assert any("W1A1" in what for what, _ in plan.skipped)


BAD = {
    "toml syntax": ("name = \n", "invalid TOML"),
    "unknown key": ('name = "x"\nbogus = 1\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n', "bogus"),
    "no targets": ('name = "x"\n', "targets"),
    "bad bits": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[entries]]\nbits = ["8/8"]\n',
                 "W<n>A<m>"),
    "bad mode": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[entries]]\nmodes = ["fast"]\n',
                 "fast"),
    "unknown model": ('name = "x"\n[[targets]]\nmodel = "resnet50"\ndataset = "digits"\n', "Unknown model"),
    "misfit": ('name = "x"\n[[targets]]\nmodel = "lenet5"\ndataset = "digits"\n', "does not fit"),
    "bad protocol": ('name = "x"\n[protocol]\ncalibration_samples = 0\n[[targets]]\nmodel = "mlp"\n'
                     'dataset = "digits"\n', "calibration_samples"),
    "bad budget": ('name = "x"\n[protocol.qat]\noptimizer = "rmsprop"\n[[targets]]\nmodel = "mlp"\n'
                   'dataset = "digits"\n', "optimizer"),
    "seeds type": ('name = "x"\nseeds = "zero"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n', "seeds"),
    "bad config": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[entries]]\nmethods = ["uniform"]\n'
                   'config = { nope = 1 }\n', "nope"),
    "trend of one row": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[trends]]\nclaim = "c"\n'
                         'order = ["uniform"]\nbits = ["W4A4"]\ntargets = ["mlp/digits"]\n', "order"),
    "trend target": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[trends]]\nclaim = "c"\n'
                     'order = ["uniform", "gptq"]\nbits = ["W4A4"]\ntargets = ["cnn/digits"]\n',
                     "not targets of the suite"),
    "trend bits": ('name = "x"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[trends]]\nclaim = "c"\n'
                   'order = ["uniform", "gptq"]\nbits = ["4/4"]\ntargets = ["mlp/digits"]\n', "W<n>A<m>"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_suite_files_are_rejected_with_the_field(tmp_path, case):
    text, needle = BAD[case]
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        plan_suite(load_suite(p))


def test_unknown_suite_name_lists_the_builtins():
    with pytest.raises(ConfigError, match="quick"):
        find_suite("quik")


def test_entry_config_file_relative_to_the_suite(tmp_path):
    (tmp_path / "u.yaml").write_text("weight_observer: minmax\nweight: {bits: 5}\nactivation: null\n")
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n[[entries]]\nmethods = ["uniform"]\n'
                 'config_file = "u.yaml"\nconfig = { first_layer = "fp" }\n')
    cells = [c for c in plan_suite(load_suite(p)).cells if c.mode != "fp"]
    assert len(cells) == 1
    c = cells[0]
    assert (c.w_bits, c.a_bits) == (5, None) and c.config["weight_observer"] == "minmax"
    assert c.config["first_layer"] == "fp"
    p.write_text(p.read_text() + 'bits = ["W4A4"]\n')
    with pytest.raises(ConfigError, match="config_file"):
        load_suite(p)


def test_suite_row_names_a_missing_target():
    from quantzoo.bench.testing import suite_row

    with pytest.raises(ValueError, match="no target mlp/digits"):
        suite_row("uniform", "mlp", "digits", 8, 8, mode="ptq")


def test_budget_check_adds_longer_twins_of_the_checked_qat_cells_only(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\nseeds = [0, 1]\n[protocol.qat]\nepochs = 3\n'
                 '[[targets]]\nmodel = "cnn"\ndataset = "digits"\n[[targets]]\nmodel = "mlp"\ndataset = "digits"\n'
                 '[[entries]]\nmethods = ["uniform"]\nbits = ["W4A4"]\nmodes = ["ptq", "qat"]\n'
                 '[budget_check]\ntargets = ["cnn"]\nseeds = [1]\n')
    cells = plan_suite(load_suite(p)).cells
    twins = [c for c in cells if c.check_of]
    assert len(twins) == 1
    (twin,) = twins
    main = next(c for c in cells if c.key == twin.check_of)
    assert (main.mode, main.model, main.seed, main.protocol["qat"]["epochs"]) == ("qat", "cnn", 1, 3)
    assert twin.protocol["qat"]["epochs"] == 6 and twin.key != main.key
    assert {k: v for k, v in twin.to_dict().items() if k not in ("protocol", "check_of")} == {
        k: v for k, v in main.to_dict().items() if k not in ("protocol", "check_of")}
