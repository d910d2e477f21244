"""Leaderboard tables from the results database: rows are method × W/A, columns the model/data-set
accuracies (mean ± sd over seeds), Δ vs FP, compression, real-backend speedup and a rank; the FP row first."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections import defaultdict

from ..errors import ConfigError

FORMATS = ("github", "markdown", "html", "latex", "csv", "json")
_TABULATE = {"github": "github", "markdown": "pipe", "html": "html", "latex": "latex_booktabs"}


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _bits(w: int, a: int, mode: str) -> str:
    if mode == "fp":
        return "FP32"
    return f"W{w}A{a}"


def aggregate(rows: list[dict]) -> list[dict]:
    """One record per (method, mode, W/A, model, data set): seeds averaged, failures counted, not hidden."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "running":
            continue
        # the variant: the same method and bits under another config or protocol (e.g. rows of two suites in
        # one database) is a separate row, never averaged in
        variant = hashlib.sha256(f"{r.get('config_hash')}|{r.get('protocol_json')}".encode()).hexdigest()[:6]
        groups[(r["method"], r["mode"], r["w_bits"], r["a_bits"], r["model"], r["dataset"], variant)].append(r)
    out = []
    for (method, mode, w, a, model, dataset, variant), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        failed = [r for r in rs if r["status"] == "failed"]
        acc, sd = _mean_sd([r["accuracy"] for r in ok])
        fq, _ = _mean_sd([r["fakequant_accuracy"] for r in ok])
        real, _ = _mean_sd([r["real_accuracy"] for r in ok])
        fp, _ = _mean_sd([r["fp_accuracy"] for r in ok])
        m0 = ok[0]["metrics"] if ok else {}
        rec = {
            "method": method, "mode": mode, "model": model, "dataset": dataset, "w_bits": w, "a_bits": a,
            "variant": variant, "config": rs[0].get("config") or {},
            "bits": _bits(w, a, mode), "accuracy": acc, "accuracy_sd": sd, "seeds": len(ok),
            "fp_accuracy": fp, "delta": (acc - fp) if acc is not None and fp is not None else None,
            "fakequant_accuracy": fq, "real_accuracy": real,
            "backend": ok[0]["backend"] if ok else (rs[0]["backend"] or None),
            "size_bytes": _mean_sd([r["size_bytes"] for r in ok])[0],
            "ideal_size_bytes": _mean_sd([r["ideal_size_bytes"] for r in ok])[0],
            "compression": _mean_sd([r["compression"] for r in ok])[0],
            "ideal_compression": _mean_sd([r["ideal_compression"] for r in ok])[0],
            "speedup_b1": _mean_sd([r["speedup_b1"] for r in ok])[0],
            "speedup_b64": _mean_sd([r["speedup_b64"] for r in ok])[0],
            "latency_b1_ms": _mean_sd([r["latency_b1_ms"] for r in ok])[0],
            "latency_b64_ms": _mean_sd([r["latency_b64_ms"] for r in ok])[0],
            "fp_latency_b64_ms": _mean_sd([r["fp_latency_b64_ms"] for r in ok])[0],
            "train_s": _mean_sd([r["train_s"] for r in ok])[0], "calib_s": _mean_sd([r["calib_s"] for r in ok])[0],
            "threads": ok[0]["threads"] if ok else None,
            "bn_fold": ok[0]["bn_fold"] if ok else None, "first_layer": ok[0]["first_layer"] if ok else None,
            "last_layer": ok[0]["last_layer"] if ok else None,
            "backend_error": m0.get("backend_error"),
            "failed": len(failed), "errors": sorted({r["error"] or "" for r in failed}),
            "status": "ok" if not failed else ("failed" if not ok else "partial"),
            "paper": next((r["paper"] for r in rs if r["paper"]), None),
        }
        out.append(rec)
    return sorted(out, key=_order)


def _order(rec: dict):
    fp = rec["mode"] == "fp"
    return (not fp, rec["method"], -rec["w_bits"], -rec["a_bits"], rec["mode"], rec["model"], rec["dataset"])


def _fmt_acc(rec: dict | None) -> str:
    if rec is None:
        return ""
    if rec["accuracy"] is None:
        return f"FAILED ({rec['failed']})"
    s = f"{rec['accuracy']:.2f}" + (f" ± {rec['accuracy_sd']:.2f}" if rec["seeds"] > 1 else "")
    if rec["failed"]:
        s += f" ({rec['failed']} failed)"
    if rec.get("paper") and rec["paper"].get("accuracy") is not None:
        s += f" [paper {rec['paper']['accuracy']:.2f}]"
    return s


def table(records: list[dict]) -> tuple[list[str], list[list]]:
    """The pivot: header and rows (method × mode × W/A) with one accuracy column per model/data set."""
    targets = sorted({(r["model"], r["dataset"]) for r in records})
    rowkeys: list[tuple] = []
    cells: dict[tuple, dict] = {}
    for r in records:
        k = (r["method"], r["mode"], r["w_bits"], r["a_bits"], _variant_of(r, records))
        if k not in cells:
            rowkeys.append(k)
            cells[k] = {}
        cells[k][(r["model"], r["dataset"])] = r
    # rank: mean over targets of the row's accuracy rank among rows that have that target (1 = best)
    ranks: dict[tuple, list[int]] = defaultdict(list)
    for t in targets:
        scored = sorted((k for k in rowkeys if k[1] != "fp" and t in cells[k] and cells[k][t]["accuracy"] is not None),
                        key=lambda k: -cells[k][t]["accuracy"])
        for i, k in enumerate(scored):
            ranks[k].append(i + 1)
    header = ["#", "method", "W/A", "backend", *(f"{m}/{d}" for m, d in targets), "Δ vs FP", "size ×",
              "ideal ×", "speedup b64", "first/last", "BN fold"]
    order = sorted(rowkeys, key=lambda k: (k[1] != "fp", statistics.fmean(ranks[k]) if ranks[k] else 1e9))
    out = []
    for k in order:
        recs = cells[k]
        first = next(iter(recs.values()))
        deltas = [r["delta"] for r in recs.values() if r["delta"] is not None]
        comp = [r["compression"] for r in recs.values() if r["compression"]]
        ideal = [r["ideal_compression"] for r in recs.values() if r["ideal_compression"]]
        speed = [r["speedup_b64"] for r in recs.values() if r["speedup_b64"]]
        # a target whose cells all failed has no backend: it says FAILED in its own column
        backends = sorted({r["backend"] for r in recs.values() if r["backend"]}) or ["-"]
        rank = f"{statistics.fmean(ranks[k]):.1f}" if ranks[k] and k[1] != "fp" else ("FP" if k[1] == "fp" else "-")
        label = k[0] if k[1] == "fp" else f"{k[0]} ({k[1]})"
        if k[4]:
            label += f" {k[4]}"
        policy = f"{first['first_layer'] or '-'}/{first['last_layer'] or '-'}"
        out.append([rank, label, first["bits"], ", ".join(backends), *(_fmt_acc(recs.get(t)) for t in targets),
                    f"{statistics.fmean(deltas):+.2f}" if deltas and k[1] != "fp" else "",
                    f"{statistics.fmean(comp):.1f}" if comp else "", f"{statistics.fmean(ideal):.1f}" if ideal else "",
                    f"{statistics.fmean(speed):.2f}" if speed else "", policy, first["bn_fold"] or ""])
    return header, out


def _variant_of(rec: dict, records: list[dict]) -> str:
    """The variant tag shown in the table, only where one method/bits/model has several variants: the config
    entries that tell them apart (``act_clip_init_val=8.0``), or ``#<hash>`` where only the protocol differs."""
    same = {r.get("variant"): r for r in records if (r["method"], r["mode"], r["w_bits"], r["a_bits"], r["model"],
                                                     r["dataset"]) == (rec["method"], rec["mode"], rec["w_bits"],
                                                                       rec["a_bits"], rec["model"], rec["dataset"])}
    if len(same) <= 1:
        return ""
    configs = [r.get("config") or {} for r in same.values()]
    mine = rec.get("config") or {}
    keys = sorted({k for c in configs for k in c if any(c.get(k) != o.get(k) for o in configs)})
    tag = ", ".join(f"{k}={mine[k]}" for k in keys if k in mine)
    return tag or f"#{rec.get('variant', '')}"


def render(records: list[dict], fmt: str = "github") -> str:
    """The leaderboard in one of :data:`FORMATS` (``json``: the aggregated records)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(records, indent=1, default=str)
    header, rows = table(records)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue()
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt=_TABULATE[fmt], disable_numparse=True)


def notes(records: list[dict], protocol: dict | None = None) -> list[str]:
    """Footnotes for the markdown leaderboard: what the columns mean and the protocol used."""
    lines = [
        "Accuracy: top-1 % on the test split, mean ± sd over seeds; from the real backend where the method has "
        "one (column `backend`), else from the fake-quant model. `[paper x]` is the published number.",
        "size ×: FP32 state_dict bytes / the method's stored bytes on its backend (fakequant stores floats, so "
        "≈1); ideal ×: the same with every quantized weight counted at its bit width.",
        "speedup b64: BN-folded FP32 latency / real-backend latency at batch 64, same process, "
        f"{next((r['threads'] for r in records if r.get('threads')), 1)} thread(s).",
        "first/last: the first/last-layer policy applied (`method` = the method's own); BN fold: `method` = the "
        "method sees BN layers (it may fold them), `before` = folded before quantization.",
    ]
    fails = [r for r in records if r["failed"]]
    for r in fails:
        lines.append(f"FAILED {r['method']} ({r['mode']}) {r['bits']} {r['model']}/{r['dataset']}: "
                     f"{'; '.join(r['errors'])[:300]}")
    return lines
