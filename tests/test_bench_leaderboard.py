"""Leaderboard aggregation, formats and plots, on hand-made rows (numbers checked by hand)."""

import csv
import io
import json

import pytest

from quantzoo.bench.leaderboard import FORMATS, aggregate, render, table
from quantzoo.bench.plots import make_plots, pareto_front
from quantzoo.errors import ConfigError


def _row(method, mode, w, a, seed, acc, *, model="cnn", dataset="digits", status="ok", fp=99.0, backend="fakequant",
         error=None, paper=None, comp=1.0, ideal=4.0, speed=None):
    return {"cell_key": f"{method}{mode}{w}{a}{seed}{model}", "method": method, "mode": mode, "w_bits": w,
            "a_bits": a, "seed": seed, "model": model, "dataset": dataset, "status": status,
            "accuracy": acc if status == "ok" else None, "fakequant_accuracy": acc, "real_accuracy": None,
            "fp_accuracy": fp, "backend": backend, "size_bytes": 1000 / comp, "ideal_size_bytes": 1000 / ideal,
            "compression": comp, "ideal_compression": ideal, "speedup_b1": None, "speedup_b64": speed,
            "latency_b1_ms": None, "latency_b64_ms": None, "fp_latency_b64_ms": None, "train_s": 0.0,
            "calib_s": 0.1, "threads": 1, "bn_fold": "method", "first_layer": "int8", "last_layer": "int8",
            "error": error, "metrics": {}, "paper": paper}


ROWS = [
    _row("fp32", "fp", 32, 32, 0, 99.0, ideal=1.0), _row("fp32", "fp", 32, 32, 1, 98.0, ideal=1.0),
    _row("uniform", "ptq", 8, 8, 0, 98.0), _row("uniform", "ptq", 8, 8, 1, 96.0),
    _row("torch-static", "ptq", 8, 8, 0, 97.0, backend="torch-x86", comp=3.5, speed=2.5),
    _row("torch-static", "ptq", 8, 8, 1, 97.0, backend="torch-x86", comp=3.5, speed=2.7),
    _row("boom", "qat", 4, 4, 0, None, status="failed", error="RuntimeError: x"),
    _row("twn", "qat", 2, 32, 0, 95.0, paper={"accuracy": 99.35, "source": "TWN"}),
]


def test_aggregate_mean_sd_delta_and_failures():
    recs = {(r["method"], r["bits"]): r for r in aggregate(ROWS)}
    u = recs[("uniform", "W8A8")]
    # mean(98, 96) = 97, sample sd = sqrt((1^2 + 1^2) / 1) = 1.414; Δ against the rows' own FP (99.0) = -2.0
    assert u["accuracy"] == 97.0 and u["accuracy_sd"] == pytest.approx(2 ** 0.5) and u["delta"] == -2.0
    assert recs[("boom", "W4A4")]["status"] == "failed" and recs[("boom", "W4A4")]["accuracy"] is None
    assert recs[("twn", "W2A32")]["paper"]["accuracy"] == 99.35


def test_table_fp_first_rank_and_marks():
    header, rows = table(aggregate(ROWS))
    assert header[:4] == ["#", "method", "W/A", "backend"] and "cnn/digits" in header
    assert rows[0][1] == "fp32" and rows[0][0] == "FP"
    by = {r[1]: r for r in rows}
    # ranks among quantized rows on the one target: torch-static 97.0 (1), uniform 97.0 (2 by stable order)...
    assert by["torch-static (ptq)"][0] in ("1.0", "2.0") and by["twn (qat)"][0] == "3.0"
    assert by["torch-static (ptq)"][3] == "torch-x86" and by["torch-static (ptq)"][header.index("speedup b64")] == "2.60"
    assert by["boom (qat)"][header.index("cnn/digits")].startswith("FAILED")
    assert "[paper 99.35]" in by["twn (qat)"][header.index("cnn/digits")]
    assert by["uniform (ptq)"][header.index("cnn/digits")] == "97.00 ± 1.41"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(fmt):
    out = render(aggregate(ROWS), fmt)
    assert "uniform" in out
    if fmt == "json":
        recs = json.loads(out)
        assert {"method", "model", "dataset", "w_bits", "a_bits", "accuracy", "fp_accuracy", "backend"} <= set(recs[0])
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0][1] == "method" and rows[1][1] == "fp32"
    if fmt == "html":
        assert "<table>" in out
    if fmt == "latex":
        assert "\\toprule" in out


def test_unknown_format():
    with pytest.raises(ConfigError, match="github"):
        render([], "xml")


def test_pareto_front_by_hand():
    pts = [(100, 90.0), (50, 80.0), (200, 95.0), (150, 85.0), (50, 70.0), (400, 94.0)]
    # sorted by size: (50,80) best so far; (100,90) better; (150,85) dominated; (200,95) better; (400,94) dominated
    assert pareto_front(pts) == [(50, 80.0), (100, 90.0), (200, 95.0)]


def test_plots_are_written(tmp_path):
    paths = make_plots(aggregate(ROWS), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["accuracy_vs_bits_cnn_digits.png", "accuracy_vs_size_cnn_digits.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_rows_of_different_configs_are_not_averaged_together():
    a = dict(_row("uniform", "ptq", 8, 8, 0, 90.0), config_hash="aaa", protocol_json="p")
    b = dict(_row("uniform", "ptq", 8, 8, 0, 50.0), config_hash="bbb", protocol_json="p", cell_key="other")
    recs = aggregate([a, b])
    assert sorted(r["accuracy"] for r in recs) == [50.0, 90.0]
    _, rows = table(recs)
    assert len({r[1] for r in rows}) == 2 and all("#" in r[1] for r in rows)


def test_variant_rows_are_labelled_by_the_config_entries_that_differ():
    common = {"bits_weights": 4, "bits_activations": 4}
    a = dict(_row("distiller-pact", "qat", 4, 4, 0, 94.0), config_hash="aaa", protocol_json="p",
             config={**common, "act_clip_init_val": "mse"})
    b = dict(_row("distiller-pact", "qat", 4, 4, 0, 93.0), config_hash="bbb", protocol_json="p", cell_key="other",
             config={**common, "act_clip_init_val": 8.0})
    labels = sorted(r[1] for r in table(aggregate([a, b]))[1])
    assert labels == ["distiller-pact (qat) act_clip_init_val=8.0", "distiller-pact (qat) act_clip_init_val=mse"]
    # one variant alone keeps the plain name
    assert [r[1] for r in table(aggregate([a]))[1]] == ["distiller-pact (qat)"]
