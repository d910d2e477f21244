"""Leaderboard sections, statistics, ranks and formats, on hand-made rows (numbers worked by hand)."""

import csv
import io
import json

import pytest

from quantzoo.bench.leaderboard import FORMATS, aggregate, build_board, notes, render, section_table, setting_of
from quantzoo.bench.plots import family, make_plots, pareto_front
from quantzoo.bench.stats import Summary, paired_better
from quantzoo.errors import ConfigError

FP = {0: 99.0, 1: 98.0, 2: 97.0}


def _row(method, mode, w, a, seed, acc, *, model="cnn", dataset="digits", status="ok", degenerate=None,
         error=None, paper=None, speed=None, config=None):
    metrics = {"degenerate": degenerate, "threads": 1, "isa": "AVX2"}
    if speed is not None:
        metrics["latency"] = {"64": {"ms": 1.0, "fp_ms": speed, "speedup": speed, "spread": 0.05, "runs": 9,
                                     "noisy": False}}
    return {"cell_key": f"{method}{mode}{w}{a}{seed}{model}", "method": method, "mode": mode, "w_bits": w,
            "a_bits": a, "seed": seed, "model": model, "dataset": dataset, "status": status,
            "accuracy": acc if status == "ok" else None, "fp_accuracy": FP[seed], "backend": "fakequant",
            "size_bytes": 1000.0, "ideal_size_bytes": 250.0, "compression": 1.0, "ideal_compression": 4.0,
            "bn_fold": "method", "first_layer": "int8", "last_layer": "int8", "error": error, "metrics": metrics,
            "paper": paper, "config": config or {}, "config_hash": json.dumps(config or {}), "protocol_json": "{}"}


def _seeds(method, mode, w, a, accs, **kw):
    return [_row(method, mode, w, a, s, acc, **kw) for s, acc in enumerate(accs)]


ROWS = [
    *_seeds("fp32", "fp", None, None, [99.0, 98.0, 97.0]),
    # Δ per seed: a = (-0.5, -0.4, -0.6), b = (-2, -2, -2), c = (-0.6, -0.3, -0.7)
    *_seeds("a", "ptq", 4, 4, [98.5, 97.6, 96.4]),
    *_seeds("b", "qat", 4, 4, [97.0, 96.0, 95.0]),
    *_seeds("c", "ptq", 4, 4, [98.4, 97.7, 96.3]),
    *_seeds("d", "qat", 4, 4, [10.0, 10.0, 10.0], degenerate="every weight of quantized layer '3' is 0"),
    _row("e", "ptq", 4, 4, 0, None, status="unsupported", error="UnsupportedError: no such layer"),
    *_seeds("torch-static", "ptq", 8, 8, [99.0, 98.0, 97.0], speed=2.5),
    *_seeds("twn", "qat", 2, None, [98.0, 97.0, 96.0], paper={"accuracy": 99.35, "source": "TWN"}),
    *_seeds("boom", "qat", 1, 1, [None, None, None], status="failed", error="RuntimeError: x"),
]


def _section(setting, rows=ROWS):
    return next(s for s in build_board(aggregate(rows)) if s.setting == setting)


def test_summary_mean_sd_and_t_interval_by_hand():
    s = Summary.of([98.5, 97.6, 96.4])
    # mean 97.5; sd = sqrt((1.0² + 0.1² + 1.1²)/2) = sqrt(1.11); ci = t(0.975, 2)·sd/√3 = 4.3027·1.0536/1.7321
    assert s.mean == pytest.approx(97.5) and s.sd == pytest.approx(1.11 ** 0.5)
    assert s.ci95 == pytest.approx(4.302653 * 1.11 ** 0.5 / 3 ** 0.5, rel=1e-5)
    assert Summary.of([1.0]).ci95 is None


def test_paired_comparison_uses_the_per_seed_differences():
    a = {("t", 0): -0.5, ("t", 1): -0.4, ("t", 2): -0.6}
    b = {("t", 0): -2.0, ("t", 1): -2.0, ("t", 2): -2.0}
    c = {("t", 0): -0.6, ("t", 1): -0.3, ("t", 2): -0.7}
    # a − b = (1.5, 1.6, 1.4): mean 1.5, ci = 4.3027·0.1/√3 = 0.248 → interval (1.25, 1.75) above 0
    assert paired_better(a, b) is True and paired_better(b, a) is False
    # a − c = (0.1, −0.1, 0.1): mean 0.033, ci 0.287 → within noise either way
    assert paired_better(a, c) is False and paired_better(c, a) is False
    assert paired_better({("t", 0): 1.0}, {("t", 0): 0.0}) is None  # one pair cannot be tested


def test_sections_follow_the_settings_and_rank_only_within():
    assert setting_of(2, None, "qat") == "W2 weight-only (ternary / 2-bit)"
    assert setting_of(1, 1, "qat") == "W1A1 binary" and setting_of(8, None, "ptq") == "W8 weight-only"
    settings = [s.setting for s in build_board(aggregate(ROWS))]
    assert settings == ["FP32", "W8A8", "W4A4", "W2 weight-only (ternary / 2-bit)", "W1A1 binary"]


def test_ranks_share_the_top_within_noise_and_skip_degenerate_and_refused_rows():
    s = _section("W4A4")
    ranks = {r.method: r.rank for r in s.rows}
    # a and c are within noise of each other (rank 1 both); both are significantly better than b: 1 + 2 = 3
    assert ranks == {"a": 1, "c": 1, "b": 3, "d": None, "e": None}
    by = {r.method: r for r in s.rows}
    assert by["d"].not_ranked.startswith("degenerate: every weight")
    assert by["e"].not_ranked == "unsupported on cnn/digits"
    assert by["a"].delta == pytest.approx(-0.5) and s.ranking_targets == ["cnn/digits"]
    assert [r.method for r in s.rows][:3] == ["a", "c", "b"]  # rank, then mean Δ


def test_ranking_targets_are_those_most_rows_cover_and_smoke_targets_do_not_rank():
    rows = [*ROWS, *_seeds("a", "ptq", 4, 4, [90.0, 89.0, 88.0], model="cnn1d", dataset="mnist1d"),
            *_seeds("fp32", "fp", None, None, [91.0, 90.0, 89.0], model="cnn1d", dataset="mnist1d")]
    s = next(s for s in build_board(aggregate(rows)) if s.setting == "W4A4")
    assert s.ranking_targets == ["cnn/digits"]  # only `a` has cnn1d: the shared target ranks
    s = next(s for s in build_board(aggregate(rows), rank_targets={"cnn1d/mnist1d"}) if s.setting == "W4A4")
    ranks = {r.method: r.rank for r in s.rows}
    assert s.ranking_targets == ["cnn1d/mnist1d"] and ranks["a"] == 1 and ranks["b"] is None
    assert {r.method: r.not_ranked for r in s.rows}["b"] == "no result on cnn1d/mnist1d"


def test_table_cells_show_mean_interval_paper_and_failures():
    header, rows = section_table(_section("W4A4"))
    assert header[:3] == ["#", "method", "cnn/digits"]
    by = {r[1]: r for r in rows}
    assert by["a (ptq)"][2] == f"97.50 ±{4.302653 * 1.11 ** 0.5 / 3 ** 0.5:.2f}"
    assert by["e (ptq)"][2] == "n/a (refused)"
    _, rows = section_table(_section("W2 weight-only (ternary / 2-bit)"))
    assert "[paper 99.35]" in rows[0][2]
    _, rows = section_table(_section("W1A1 binary"))
    assert rows[0][2] == "FAILED (3)"
    header, rows = section_table(_section("W8A8"))
    assert rows[0][header.index("speedup")] == "2.50"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(fmt):
    out = render(aggregate(ROWS), fmt)
    assert "c (ptq)" in out or fmt in ("json", "csv")
    if fmt == "json":
        board = json.loads(out)
        w4 = next(s for s in board["sections"] if s["setting"] == "W4A4")
        row = next(r for r in w4["rows"] if r["method"] == "a")
        t = row["targets"]["cnn/digits"]
        assert row["rank"] == 1 and t["seeds"] == [0, 1, 2] and {"accuracy_sd", "accuracy_ci95"} <= set(t)
        assert next(r for r in w4["rows"] if r["method"] == "d")["degenerate"] is True
        assert "rank" in board["rank_rule"]
    if fmt == "csv":
        lines = list(csv.reader(io.StringIO(out)))
        assert lines[0][:3] == ["section", "rank", "method"] and any(r[2] == "c" for r in lines)
    if fmt == "markdown":
        assert "### W4A4" in out and "_ranked on: cnn/digits_" in out


def test_unknown_format():
    with pytest.raises(ConfigError, match="github"):
        render([], "xml")


def test_variant_rows_are_labelled_by_the_config_entries_that_differ():
    common = {"bits_weights": 4, "bits_activations": 4}
    a = _seeds("distiller-pact", "qat", 4, 4, [98.0, 97.0, 96.0], config={**common, "act_clip_init_val": "mse"})
    b = _seeds("distiller-pact", "qat", 4, 4, [97.0, 96.0, 95.0], config={**common, "act_clip_init_val": 8.0})
    labels = sorted(r.label for r in _section("W4A4", a + b).rows)
    assert labels == ["distiller-pact (qat) act_clip_init_val=8.0", "distiller-pact (qat) act_clip_init_val=mse"]
    assert [r.label for r in _section("W4A4", a).rows] == ["distiller-pact (qat)"]


def test_pareto_front_by_hand():
    pts = [(100, 90.0), (50, 80.0), (200, 95.0), (150, 85.0), (50, 70.0), (400, 94.0)]
    # sorted by size: (50,80) best so far; (100,90) better; (150,85) dominated; (200,95) better; (400,94) dominated
    assert pareto_front(pts) == [(50, 80.0), (100, 90.0), (200, 95.0)]


def test_plots_are_small_multiples_by_family(tmp_path):
    assert family("distiller-pact") == "distiller" and family("torchao-pt2e") == "torch"
    assert family("dorefa") == "papers and baseline"
    paths = make_plots(aggregate(ROWS), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["accuracy_vs_bits_cnn_digits.png", "accuracy_vs_size_cnn_digits.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_plots_leave_out_a_kind_of_setting_without_rows(tmp_path):
    import matplotlib.image

    only_wa = [r for r in ROWS if r["a_bits"] is not None or r["mode"] == "fp"]
    with_wo = [*only_wa, *_seeds("g", "ptq", 4, None, [95.0, 94.0, 93.0])]
    widths = []
    for rows in (only_wa, with_wo):
        path = next(p for p in make_plots(aggregate(rows), tmp_path) if p.name.startswith("accuracy_vs_bits"))
        widths.append(matplotlib.image.imread(path).shape[1])
    assert widths[0] < widths[1]  # one column of panels, not an empty weight-only column


def test_a_refusal_repeated_by_the_budget_check_is_noted_once():
    refused = [_row("e", "qat", 4, 4, 0, None, status="unsupported", error="UnsupportedError: no layer"),
               {**_row("e", "qat", 4, 4, 0, None, status="unsupported", error="UnsupportedError: no layer"),
                "cell_key": "twin", "protocol_json": '{"qat": {"epochs": 6}}'}]
    lines = [line for line in notes(aggregate([*ROWS[:3], *refused])) if line.startswith("refused")]
    assert lines == ["refused: e (qat) W4A4 cnn/digits: UnsupportedError: no layer (2 rows)"]


def _twin(main: dict, acc: float) -> dict:
    """A budget-check twin of ``main``: the same cell at twice the QAT epochs."""
    return {**main, "cell_key": main["cell_key"] + "x2", "accuracy": acc, "protocol_json": '{"qat": {"epochs": 6}}',
            "cell_json": json.dumps({"check_of": main["cell_key"]})}


def test_budget_check_pairs_twins_by_seed_and_flags_rows_that_move():
    main = [{**r, "protocol_json": '{"qat": {"epochs": 3}}'} for r in _seeds("b", "qat", 4, 4, [97.0, 96.0, 95.0])]
    # twins: +0.2, +0.4, +0.3 -> mean shift +0.30 (converged); for "s": +1, +1, +1 -> +1.00 (not converged)
    slow = [{**r, "protocol_json": '{"qat": {"epochs": 3}}'} for r in _seeds("s", "qat", 4, 4, [90.0, 90.0, 90.0])]
    rows = [*ROWS[:3], *main, *slow, *(_twin(r, r["accuracy"] + d) for r, d in zip(main, (0.2, 0.4, 0.3))),
            *(_twin(r, 91.0) for r in slow)]
    records = aggregate(rows)
    check = json.loads(render(records, "json"))["budget_check"]
    assert check["max_abs_shift"] == pytest.approx(1.0) and check["converged"] is False and check["goal"] == 0.5
    by = {r["method"]: r for r in check["rows"]}
    assert by["b"]["shift"] == pytest.approx(0.3) and by["b"]["epochs"] == 3 and by["b"]["checked_epochs"] == 6
    assert by["b"]["seeds"] == [0, 1, 2] and by["b"]["variant"] == ""
    section = _section("W4A4", rows)
    labels = [row.label for row in section.rows]
    assert labels.count("b (qat)") == 1 and not any("#" in label for label in labels)  # twins are no rows
    notes = {row.label: section_table(section)[1][i][-1] for i, row in enumerate(section.rows)}
    assert "not converged: +1.00" in notes["s (qat)"] and "not converged" not in notes["b (qat)"]
    assert "### Budget check" in render(records, "github")


def test_a_row_unstable_across_seeds_is_shown_but_not_ranked():
    # Δ per seed: -0.5, -40, -1 -> 95% half-width far above 5 points: it would tie rank 1 by noise alone
    rows = [*ROWS[:3], *_seeds("a", "ptq", 4, 4, [98.5, 58.0, 96.0]), *_seeds("c", "ptq", 4, 4, [98.4, 97.7, 96.3])]
    section = _section("W4A4", rows)
    by = {row.method: row for row in section.rows}
    assert by["a"].rank is None and by["a"].not_ranked.startswith("unstable across seeds")
    assert by["c"].rank == 1


def test_variant_labels_name_nested_config_keys_by_their_path():
    a = _seeds("uniform", "ptq", 3, None, [98.0, 97.0, 96.0], config={"weight": {"bits": 3, "symmetric": True}})
    b = _seeds("uniform", "ptq", 3, None, [97.0, 96.0, 95.0], config={"weight": {"bits": 3, "symmetric": False}})
    labels = sorted(r.label for r in _section("W3 weight-only", a + b).rows)
    assert labels == ["uniform (ptq) weight.symmetric=False", "uniform (ptq) weight.symmetric=True"]


# trends: the pairs' paired differences and verdicts, worked by hand on ROWS (FP 99/98/97 by seed)
def _trends(rows, *specs):
    from quantzoo.bench.trends import Trend

    trends = [Trend.model_validate({"claim": f"t{i}", "bits": ["W4A4"], "targets": ["cnn/digits"], **spec})
              for i, spec in enumerate(specs)]
    return json.loads(render(aggregate(rows), "json", trends=trends))["trends"]


def test_a_trend_compares_adjacent_rows_on_their_paired_differences():
    (res,) = _trends(ROWS, {"order": ["b", "a", "c"]})
    b_a, a_c = res["pairs"]
    # a - b per seed: 1.5, 1.6, 1.4 -> mean 1.5, sd 0.1, half-width t(0.975, 2)·0.1/√3 = 0.2484: ahead
    assert b_a["difference"] == pytest.approx(1.5) and b_a["ci95"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5)
    assert b_a["verdict"] == "ahead" and b_a["seeds"] == [0, 1, 2]
    # c - a: -0.1, +0.1, -0.1 -> mean -0.0333, sd 0.1155, half-width 0.287: behind within noise
    assert a_c["difference"] == pytest.approx(-0.1 / 3) and a_c["verdict"] == "behind within noise"
    assert res["holds"] is True and res["significant"] is False


def test_a_reversed_trend_does_not_hold_and_missing_or_ambiguous_rows_are_named():
    (rev,) = _trends(ROWS, {"order": ["a", "b"]})
    assert rev["pairs"][0]["verdict"] == "behind" and rev["holds"] is False
    u = [*_seeds("u", "ptq", 4, 4, [98.0, 97.0, 96.0], config={"p": 0.0}),
         *_seeds("u", "ptq", 4, 4, [98.5, 97.5, 96.5], config={"p": 0.5})]
    by_p = [{"method": "u", "config": {"p": 0.0}}, {"method": "u", "config": {"p": 0.5}}]
    amb, picked, gone = _trends([*ROWS, *u], {"order": ["a", "u"]}, {"order": by_p},
                                {"order": ["a", "nope"]})
    assert "matches 2 rows" in amb["pairs"][0]["missing"] and amb["holds"] is None
    assert picked["pairs"][0]["difference"] == pytest.approx(0.5) and picked["pairs"][0]["verdict"] == "ahead"
    assert picked["pairs"][0]["lower"] == "u [p=0.0]"
    assert gone["pairs"][0]["missing"] == "no nope row at W4A4 on cnn/digits"
    text = render(aggregate([*ROWS, *u]), "github", trends=[])
    assert "### Trends" not in text


def test_the_trends_table_renders_in_every_format():
    from quantzoo.bench.trends import Trend

    trend = Trend.model_validate({"claim": "b then a", "order": ["b", "a"], "bits": ["W4A4"],
                                  "targets": ["cnn/digits"]})
    for fmt in ("github", "markdown", "html", "latex"):
        text = render(aggregate(ROWS), fmt, trends=[trend])
        assert "Trends" in text and "b then a" in text and "holds" in text and "+1.50 ±0.25" in text


def test_quantize_seconds_are_the_methods_own_cost_averaged_over_seeds():
    rows = _seeds("a", "ptq", 4, 4, [98.5, 97.6, 96.4])
    for r, calib in zip(rows, (2.0, 3.0, 4.0)):
        r["metrics"] = {**r["metrics"], "prepare_s": 0.5, "calib_s": calib, "train_s": 0.0, "convert_s": 0.5,
                        "wall_s": 60.0}  # wall includes evaluation and latency timing: not the method's cost
    section = _section("W4A4", [*ROWS[:3], *rows])
    header, table = section_table(section)
    assert table[0][header.index("quantize s")] == "4.0"  # mean of 3, 4, 5
