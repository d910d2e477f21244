"""Leaderboards from the results database: one section per W/A setting, PTQ and QAT side by side, ranked
within the section on the targets its rows share, with means, sds and 95% intervals over seeds.

The ranking rule (:func:`rank_rows`, stated in every rendering's notes): a row's rank is 1 + the number of
rows in its section that are significantly better than it, where "significantly better" means the 95%
interval of the mean paired difference of Δ-vs-FP over (target, seed) pairs lies above zero (seed s of every
method shares the FP checkpoint and the calibration samples). Rows within noise of the best share rank 1.
Degenerate rows (all weights of a quantized layer equal, or an output that ignores the input), rows with a
failed or refused cell, and rows missing a ranking target are shown and not ranked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import ConfigError
from .cell import bits_label
from .configs import flatten
from .measure import NOISY_SPREAD
from .protocol import CONVERGED_SHIFT
from .stats import Summary, paired_better
from .trends import evaluate as evaluate_trends
from .trends import trend_tables

FORMATS = ("github", "markdown", "html", "latex", "csv", "json")
_TABULATE = {"github": "github", "markdown": "pipe", "html": "html", "latex": "latex_booktabs"}
#: A row whose paired Δ-vs-FP interval is wider than this (points, 95% half-width) cannot be told apart from
#: anything: it would share rank 1 by noise alone, so it is shown unranked as unstable across seeds.
UNSTABLE_CI = 5.0
RANK_RULE = ("rank = 1 + the number of rows of the section significantly better than the row (95% interval of "
             "the mean paired Δ difference over (target, seed) pairs above zero); rows within noise of the best "
             f"share rank 1; rows whose Δ interval is wider than ±{UNSTABLE_CI:.0f} points are unstable and not ranked")
TREND_RULE = ("Each pair: the mean over seeds of the paired accuracy difference (better − worse row, same FP "
              "checkpoint and calibration samples per seed) ±95% interval; verdict `ahead` = interval above 0, "
              "`behind` = below 0, else within noise. A trend holds within noise where no pair is `behind`.")


# ---------------------------------------------------------------------------------------------------------
# aggregation: one record per (method, mode, W/A, target, variant), seeds summarised
# ---------------------------------------------------------------------------------------------------------
def _variant_hash(r: dict) -> str:
    return hashlib.sha256(f"{r.get('config_hash')}|{r.get('protocol_json')}".encode()).hexdigest()[:6]


def aggregate(rows: list[dict]) -> list[dict]:
    """One record per (method, mode, W/A, model, data set, variant): seeds summarised, failures counted."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "running":
            continue
        # the variant: the same method and bits under another config or protocol is a separate row
        groups[(r["method"], r["mode"], r["w_bits"], r["a_bits"], r["model"], r["dataset"], _variant_hash(r))].append(r)
    return sorted((_record(key, rs) for key, rs in groups.items()), key=_order)


def _record(key: tuple, rs: list[dict]) -> dict:
    method, mode, w, a, model, dataset, variant = key
    ok = [r for r in rs if r["status"] == "ok"]
    metrics = [r.get("metrics") or {} for r in ok]
    seeds = {r["seed"]: {"accuracy": r["accuracy"], "delta": r["accuracy"] - r["fp_accuracy"]} for r in ok}
    acc = Summary.of([s["accuracy"] for s in seeds.values()]) if seeds else None
    delta = Summary.of([s["delta"] for s in seeds.values()]) if seeds else None
    latency: dict[str, dict] = {}
    for m in metrics:
        for b, lat in (m.get("latency") or {}).items():
            latency.setdefault(str(b), []).append(lat)
    latency = {b: _latency(v) for b, v in latency.items()}
    degenerate = sorted({m["degenerate"] for m in metrics if m.get("degenerate")})
    cell = {r["seed"]: json.loads(r.get("cell_json") or "{}") for r in rs}
    status = "ok" if len(ok) == len(rs) else "failed" if any(r["status"] == "failed" for r in rs) else "unsupported"
    if ok and status != "ok":
        status = "partial"
    return {
        "method": method, "mode": mode, "model": model, "dataset": dataset, "target": f"{model}/{dataset}",
        "w_bits": w, "a_bits": a, "bits": bits_label(w, a, mode), "variant": variant,
        "config": rs[0].get("config") or {}, "status": status, "seeds": sorted(seeds), "per_seed": seeds,
        "accuracy": acc.mean if acc else None, "accuracy_sd": acc.sd if acc else None,
        "accuracy_ci95": acc.ci95 if acc else None,
        "fp_accuracy": statistics.fmean(r["fp_accuracy"] for r in ok) if ok else None,
        "delta": delta.mean if delta else None, "delta_ci95": delta.ci95 if delta else None,
        "backend": ok[0]["backend"] if ok else None,
        "size_bytes": _mean([r.get("size_bytes") for r in ok]),
        "ideal_size_bytes": _mean([r.get("ideal_size_bytes") for r in ok]),
        "compression": _mean([r.get("compression") for r in ok]),
        "ideal_compression": _mean([r.get("ideal_compression") for r in ok]),
        "latency": latency, "degenerate": "; ".join(degenerate) or None,
        "train_s": _mean([m.get("train_s") for m in metrics]), "calib_s": _mean([m.get("calib_s") for m in metrics]),
        "wall_s": _mean([m.get("wall_s") for m in metrics]),
        "quantize_s": _mean([_quantize_s(m) for m in metrics]),
        "threads": metrics[0].get("threads") if metrics else None, "isa": metrics[0].get("isa") if metrics else None,
        "bn_fold": ok[0].get("bn_fold") if ok else None, "first_layer": ok[0].get("first_layer") if ok else None,
        "last_layer": ok[0].get("last_layer") if ok else None,
        "float_layers": metrics[0].get("float_layers") or {} if metrics else {},
        "backend_error": next((m.get("backend_error") for m in metrics if m.get("backend_error")), None),
        "failed": sum(r["status"] == "failed" for r in rs),
        "errors": sorted({r["error"] or "" for r in rs if r["status"] in ("failed", "unsupported")}),
        "paper": next((r["paper"] for r in rs if r.get("paper")), None),
        "scheme": cell[rs[0]["seed"]].get("scheme"),
        "epochs": json.loads(rs[0].get("protocol_json") or "{}").get("qat", {}).get("epochs"),
        "keys": {r["seed"]: r["cell_key"] for r in rs},
        # a budget-check twin: seed -> the key of the cell it re-runs longer (never a leaderboard row)
        "check_of": {s: c["check_of"] for s, c in cell.items() if c.get("check_of")},
    }


def _quantize_s(m: dict) -> float | None:
    """The seconds the method itself took in a cell: prepare, calibrate or train, convert."""
    parts = [m.get(k) for k in ("prepare_s", "calib_s", "train_s", "convert_s")]
    return sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _latency(per_seed: list[dict]) -> dict:
    """Latency over seeds: the median speedup, the widest spread, noisy if any seed's was."""
    speed = statistics.median(lat["speedup"] for lat in per_seed)
    spread = max(lat["spread"] for lat in per_seed)
    return {"speedup": speed, "spread": spread, "noisy": spread > NOISY_SPREAD,
            "ms": statistics.median(lat["ms"] for lat in per_seed),
            "fp_ms": statistics.median(lat["fp_ms"] for lat in per_seed)}


def _order(rec: dict):
    return (rec["mode"] != "fp", rec["method"], -(rec["w_bits"] or 99), -(rec["a_bits"] or 99), rec["mode"],
            rec["model"], rec["dataset"])


# ---------------------------------------------------------------------------------------------------------
# sections and ranks
# ---------------------------------------------------------------------------------------------------------
def setting_of(w_bits: int | None, a_bits: int | None, mode: str) -> str:
    """The section a row belongs to: ``W4A4``, ``W4 weight-only``, ``W2 weight-only (ternary / 2-bit)``,
    ``W1A1 binary``, ``W1 binary weights``, or ``FP32``."""
    if mode == "fp":
        return "FP32"
    if w_bits == 1:
        return "W1A1 binary" if a_bits == 1 else "W1 binary weights" if a_bits is None else f"W1A{a_bits}"
    if a_bits is None:
        return "W2 weight-only (ternary / 2-bit)" if w_bits == 2 else f"W{w_bits} weight-only"
    return f"W{w_bits}A{a_bits}"


_SECTION_ORDER = ["FP32", "W8A8", "W4A8", "W4A4", "W2A2", "W8 weight-only", "W4 weight-only", "W3 weight-only",
                  "W2 weight-only (ternary / 2-bit)", "W1A1 binary", "W1 binary weights"]


@dataclass
class Row:
    """A leaderboard row: one (method, mode, variant) of a section, its records by target and its rank."""

    method: str
    mode: str
    variant: str
    records: dict[str, dict]
    rank: int | None = None
    delta: float | None = None  # mean paired Δ over the ranking targets
    delta_ci95: float | None = None
    not_ranked: str | None = None  # why, where rank is None
    pairs: dict = field(default_factory=dict)  # (target, seed) -> Δ, on the ranking targets
    budget_shift: float | None = None  # the largest mean shift at the budget check's longer budget

    @property
    def label(self) -> str:
        name = self.method if self.mode == "fp" else f"{self.method} ({self.mode})"
        return f"{name} {self.variant}" if self.variant else name


@dataclass
class Section:
    setting: str
    targets: list[str]
    ranking_targets: list[str]
    rows: list[Row]


def build_board(records: list[dict], rank_targets: set[str] | None = None,
                check: dict | None = None) -> list[Section]:
    """Sections in a fixed order; ``rank_targets``: the targets that may rank (None: all); ``check``: the
    records' :func:`budget_check`, where the caller has it already."""
    check = check if check is not None else budget_check(records)
    shifts = {(c["method"], c["mode"], c["bits"], c["target"], c["variant_hash"]): c["shift"] for c in check["rows"]}
    records = [r for r in records if not r["check_of"]]
    by_setting: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_setting[setting_of(rec["w_bits"], rec["a_bits"], rec["mode"])].append(rec)
    sections = []
    for setting in sorted(by_setting, key=lambda s: (_SECTION_ORDER.index(s) if s in _SECTION_ORDER else 99, s)):
        recs = by_setting[setting]
        targets = sorted({r["target"] for r in recs})
        rows: dict[tuple, Row] = {}
        for r in recs:
            k = (r["method"], r["mode"], _variant_of(r, records))
            rows.setdefault(k, Row(k[0], k[1], k[2], {})).records[r["target"]] = r
        for row in rows.values():
            found = [shifts[k] for t, r in row.records.items()
                     if (k := (row.method, row.mode, r["bits"], t, r["variant"])) in shifts]
            row.budget_shift = max(found, key=abs) if found else None
        ranked_targets = rank_rows(list(rows.values()), setting != "FP32", rank_targets)
        sections.append(Section(setting, targets, ranked_targets, sorted(
            rows.values(), key=lambda row: (row.rank is None, row.rank or 0, -(row.delta or -1e9), row.label))))
    return sections


def rank_rows(rows: list[Row], rank: bool, rank_targets: set[str] | None) -> list[str]:
    """Set each row's paired Δ and rank (see the module doc); returns the ranking targets."""
    def usable(row: Row, t: str) -> bool:
        rec = row.records.get(t)
        return rec is not None and rec["status"] == "ok" and not rec["degenerate"]

    candidates = sorted({t for row in rows for t in row.records if rank_targets is None or t in rank_targets})
    coverage = {t: sum(usable(row, t) for row in rows) for t in candidates}
    best = max(coverage.values(), default=0)
    targets = [t for t in candidates if coverage[t] == best and best > 0]
    for row in rows:
        bad = [t for t, rec in row.records.items() if rec["degenerate"] or rec["status"] != "ok"]
        if bad:
            rec = row.records[bad[0]]
            row.not_ranked = f"degenerate: {rec['degenerate']}" if rec["degenerate"] else f"{rec['status']} on {bad[0]}"
        missing = [t for t in targets if t not in row.records]
        if missing and not row.not_ranked:
            row.not_ranked = f"no result on {', '.join(missing)}"
        row.pairs = {(t, s): v["delta"] for t in targets if t in row.records
                     for s, v in row.records[t]["per_seed"].items()}
        if row.pairs:
            summ = Summary.of(list(row.pairs.values()))
            row.delta, row.delta_ci95 = summ.mean, summ.ci95
            if not row.not_ranked and summ.ci95 is not None and summ.ci95 > UNSTABLE_CI:
                row.not_ranked = f"unstable across seeds (Δ ±{summ.ci95:.1f})"
    if not rank:
        return targets
    ranked = [row for row in rows if row.not_ranked is None and row.pairs]
    for row in ranked:
        row.rank = 1 + sum(bool(paired_better(other.pairs, row.pairs)) for other in ranked if other is not row)
    return targets


def _variant_of(rec: dict, records: list[dict]) -> str:
    """The config entries that tell this record apart from its siblings of the same method/bits/target
    (``act_clip_init_val=8.0``), or ``#<hash>`` where only the protocol differs; empty when it has none."""
    same = {r["variant"]: r for r in records if (r["method"], r["mode"], r["w_bits"], r["a_bits"], r["target"]) ==
            (rec["method"], rec["mode"], rec["w_bits"], rec["a_bits"], rec["target"])}
    if len(same) <= 1:
        return ""
    configs = [flatten(r["config"]) for r in same.values()]
    mine = flatten(rec["config"])
    keys = sorted({k for c in configs for k in c if any(c.get(k) != o.get(k) for o in configs)})
    tag = ", ".join(f"{k}={mine[k]}" for k in keys if k in mine)
    return tag or f"#{rec['variant']}"


def budget_check(records: list[dict]) -> dict:
    """Each checked row's mean accuracy at its QAT budget and at the longer one, paired by seed, and the
    largest shift (the goal: at most :data:`~quantzoo.bench.protocol.CONVERGED_SHIFT` points)."""
    mains = [rec for rec in records if not rec["check_of"]]
    by_key = {key: (rec, seed) for rec in mains for seed, key in rec["keys"].items()}
    rows = []
    for twin in records:
        pairs = [(by_key[k][0], s) for s, k in twin["check_of"].items() if k in by_key]
        pairs = [(rec, s) for rec, s in pairs if s in twin["per_seed"] and s in rec["per_seed"]]
        if not pairs:
            continue
        main = pairs[0][0]
        before = [rec["per_seed"][s]["accuracy"] for rec, s in pairs]
        after = [twin["per_seed"][s]["accuracy"] for _, s in pairs]
        rows.append({"method": main["method"], "mode": main["mode"], "bits": main["bits"], "target": main["target"],
                     "variant": _variant_of(main, mains), "variant_hash": main["variant"],
                     "epochs": main["epochs"], "checked_epochs": twin["epochs"],
                     "seeds": sorted(s for _, s in pairs), "accuracy": statistics.fmean(before),
                     "checked_accuracy": statistics.fmean(after),
                     "shift": statistics.fmean(after) - statistics.fmean(before)})
    rows.sort(key=lambda r: -abs(r["shift"]))
    worst = rows[0]["shift"] if rows else None
    return {"goal": CONVERGED_SHIFT, "max_abs_shift": abs(worst) if rows else None,
            "converged": None if not rows else abs(worst) <= CONVERGED_SHIFT, "rows": rows}


def budget_table(check: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", "bits", "target", "epochs", "mean", "epochs ×", "mean ×", "shift", "seeds"]
    return header, [[f"{r['method']} ({r['mode']})" + (f" {r['variant']}" if r["variant"] else ""),
                     r["bits"], r["target"], str(r["epochs"]), f"{r['accuracy']:.2f}", str(r["checked_epochs"]),
                     f"{r['checked_accuracy']:.2f}", f"{r['shift']:+.2f}" + (" !" if abs(r["shift"]) > check["goal"]
                                                                            else ""),
                     str(len(r["seeds"]))] for r in check["rows"]]


# ---------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------
def _fmt_cell(rec: dict | None) -> str:
    if rec is None:
        return ""
    if rec["accuracy"] is None:
        return "n/a (refused)" if rec["status"] == "unsupported" else f"FAILED ({rec['failed']})"
    s = f"{rec['accuracy']:.2f}"
    if rec["accuracy_ci95"] is not None:
        s += f" ±{rec['accuracy_ci95']:.2f}"
    if len(rec["seeds"]) == 1:
        s += " (1 seed)"
    if rec["failed"]:
        s += f" ({rec['failed']} failed)"
    if rec.get("paper") and rec["paper"].get("accuracy") is not None:
        s += f" [paper {rec['paper']['accuracy']:.2f}]"
    return s


def _speed(recs: list[dict]) -> str:
    lats = [lat for r in recs for b, lat in r["latency"].items() if b == max(r["latency"], key=int)]
    if not lats or all(r["mode"] == "fp" for r in recs):
        return ""
    speed = statistics.median(lat["speedup"] for lat in lats)
    return f"{speed:.2f}" + ("~" if any(lat["noisy"] for lat in lats) else "")


def suite_notes(row: Row, cell_notes: dict[str, str] | None) -> list[str]:
    """The suite's notes (``SuiteEntry.note``) on any cell of ``row``; ``cell_notes``: cell key -> note."""
    said = cell_notes or {}
    return sorted({said[k] for rec in row.records.values() for k in rec["keys"].values() if k in said})


def section_table(section: Section, cell_notes: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one section; ``cell_notes``: cell key -> the suite's note on it."""
    fp = section.setting == "FP32"
    header = ["#", "method", *section.targets, "Δ vs FP", "seeds", "backend", "ideal ×", "speedup", "quantize s",
              "first/last", "notes"]
    out = []
    for row in section.rows:
        recs = list(row.records.values())
        first = recs[0]
        rank = "FP" if fp else (str(row.rank) if row.rank is not None else "-")
        delta = "" if fp or row.delta is None else f"{row.delta:+.2f}" + (
            f" ±{row.delta_ci95:.2f}" if row.delta_ci95 is not None else "")
        seeds = sorted({len(r["seeds"]) for r in recs if r["seeds"]})
        ideal = [r["ideal_compression"] for r in recs if r["ideal_compression"]]
        cost = [r["quantize_s"] for r in recs if r.get("quantize_s") is not None]
        backends = sorted({r["backend"] for r in recs if r["backend"]}) or ["-"]
        own = next((r["scheme"] for r in recs if (r.get("scheme") or "").startswith("own")), None)
        budget = (f"not converged: {row.budget_shift:+.2f} at the longer budget"
                  if row.budget_shift is not None and abs(row.budget_shift) > CONVERGED_SHIFT else None)
        notes = "; ".join(n for n in (row.not_ranked, own and "own scheme", budget, *suite_notes(row, cell_notes))
                          if n)
        out.append([rank, row.label, *(_fmt_cell(row.records.get(t)) for t in section.targets), delta,
                    "/".join(map(str, seeds)), ", ".join(backends),
                    f"{statistics.fmean(ideal):.1f}" if ideal else "", _speed(recs),
                    "" if fp or not cost else f"{statistics.fmean(cost):.1f}",
                    f"{first['first_layer'] or '-'}/{first['last_layer'] or '-'}", notes])
    return header, out


def render(records: list[dict], fmt: str = "github", rank_targets: set[str] | None = None,
           cell_notes: dict[str, str] | None = None, trends: list | None = None) -> str:
    """The leaderboard in one of :data:`FORMATS`; ``json`` gives the sections with every statistic.
    ``cell_notes``: cell key -> the suite's note on it (``SuiteEntry.note``), shown in the row's notes;
    ``trends``: the suite's :class:`~quantzoo.bench.trends.Trend` list, checked in a table of their own."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check = budget_check(records)
    sections = build_board(records, rank_targets, check)
    checked = evaluate_trends(trends or [], records)
    if fmt == "json":
        return json.dumps(board_json(sections, check, cell_notes, checked), indent=1, default=str)
    if fmt == "csv":  # long format: one line per (section, row, target)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["section", "rank", "method", "mode", "variant", "target", "accuracy", "sd", "ci95", "seeds",
                    "delta", "status", "degenerate", "backend", "ideal_compression"])
        for s in sections:
            for row in s.rows:
                for t, rec in row.records.items():
                    w.writerow([s.setting, row.rank if row.rank is not None else "", row.method, row.mode,
                                row.variant, t, rec["accuracy"], rec["accuracy_sd"], rec["accuracy_ci95"],
                                len(rec["seeds"]), rec["delta"], rec["status"], rec["degenerate"] or "",
                                rec["backend"], rec["ideal_compression"]])
        return buf.getvalue()
    from tabulate import tabulate

    parts = []
    for s in sections:
        header, rows = section_table(s, cell_notes)
        title = {"html": f"<h3>{s.setting}</h3>", "latex": f"% {s.setting}"}.get(fmt, f"### {s.setting}")
        ranked = f"ranked on: {', '.join(s.ranking_targets) or 'nothing'}" if s.setting != "FP32" else ""
        parts.append("\n".join(x for x in (title, ranked and (f"<p>{ranked}</p>" if fmt == "html" else
                                                              f"% {ranked}" if fmt == "latex" else f"_{ranked}_"))
                               if x) + "\n\n" + tabulate(rows, headers=header, tablefmt=_TABULATE[fmt],
                                                          disable_numparse=True))
    if checked:
        title = {"html": "<h3>Trends</h3>", "latex": "% Trends"}.get(fmt, "### Trends")
        claims = [{"html": f"<p><b>{claim}</b></p>", "latex": f"% {claim}"}.get(fmt, f"**{claim}**") + "\n\n"
                  + tabulate(rows, headers=header, tablefmt=_TABULATE[fmt], disable_numparse=True)
                  for claim, header, rows in trend_tables(checked)]
        parts.append("\n\n".join([f"{title}\n\n{TREND_RULE}", *claims]))
    if check["rows"]:
        header, rows = budget_table(check)
        title = {"html": "<h3>Budget check</h3>", "latex": "% Budget check"}.get(fmt, "### Budget check")
        parts.append(f"{title}\n\nmax |shift| {check['max_abs_shift']:.2f} points (goal: at most "
                     f"{check['goal']:.1f}; `!` marks a row above it)\n\n"
                     + tabulate(rows, headers=header, tablefmt=_TABULATE[fmt], disable_numparse=True))
    return "\n\n".join(parts)


def board_json(sections: list[Section], check: dict, cell_notes: dict[str, str] | None = None,
               trends: list[dict] | None = None) -> dict:
    """The leaderboard as data: sections with, per row, rank, Δ and its interval, and per target mean, sd,
    ci95, seeds, degenerate flag and the variant label."""
    def target_json(rec: dict) -> dict:
        keep = ("accuracy", "accuracy_sd", "accuracy_ci95", "delta", "delta_ci95", "seeds", "per_seed", "status",
                "degenerate", "fp_accuracy", "backend", "ideal_compression", "compression", "latency", "errors",
                "float_layers", "train_s", "calib_s", "quantize_s", "wall_s", "paper", "scheme")
        return {k: rec[k] for k in keep}

    return {
        "rank_rule": RANK_RULE,
        "budget_check": check,
        "trends": trends or [],
        "sections": [{
            "setting": s.setting, "targets": s.targets, "ranking_targets": s.ranking_targets,
            "rows": [{"method": r.method, "mode": r.mode, "variant": r.variant, "rank": r.rank,
                      "delta": r.delta, "delta_ci95": r.delta_ci95, "not_ranked": r.not_ranked,
                      "budget_shift": r.budget_shift,
                      "notes": suite_notes(r, cell_notes),
                      "degenerate": any(rec["degenerate"] for rec in r.records.values()),
                      "targets": {t: target_json(rec) for t, rec in r.records.items()}} for r in s.rows],
        } for s in sections],
    }


def notes(records: list[dict], protocol: dict | None = None) -> list[str]:
    """Footnotes for the markdown leaderboard: what the columns mean, the ranking rule and the protocol."""
    threads = next((r["threads"] for r in records if r.get("threads")), 1)
    isa = next((r["isa"] for r in records if r.get("isa")), "?")
    lines = [
        "Accuracy: top-1 % on the test split, mean ±95% interval half-width over seeds (Student's t); from the "
        "real backend where the method has one (column `backend`), else from the fake-quant model. "
        "`[paper x]` is the published number.",
        f"Ranking: {RANK_RULE}. Only the targets named under each section rank; degenerate, failed or refused "
        "rows and rows missing a ranking target are shown with `-`.",
        "Δ vs FP: mean over the ranking targets and seeds of the paired difference to the same seed's FP "
        "checkpoint, ±95% interval.",
        "ideal ×: FP32 parameter bytes / the bytes with every quantized weight at its bit width. speedup: "
        "BN-folded FP32 latency / real-backend latency at the largest latency batch, median of interleaved "
        f"runs, same process, {threads} thread(s), CPU {isa}; `~` marks a spread wider than ±"
        f"{NOISY_SPREAD:.0%} (noisy).",
        f"quantize s: mean seconds per cell the method itself took (prepare, calibrate or train, convert; not "
        f"the FP baseline, evaluation or latency timing), {threads} torch thread(s) per cell, CPU {isa}; cells "
        "may run side by side (the suite's `jobs`), so read it as the order of magnitude of the method's cost.",
        "first/last: the first/last-layer policy applied to whole layers (weight and input; `method` = the "
        "method's own).",
    ]
    # one line per message: the budget check's longer rerun of a row is refused for the same reason
    seen: dict[str, int] = {}
    for r in records:
        name = f"{r['method']} ({r['mode']}) {r['bits']} {r['target']}"
        if r["status"] in ("failed", "partial"):
            line = f"FAILED {name}: {'; '.join(r['errors'])[:300]}"
        elif r["status"] == "unsupported":
            line = f"refused: {name}: {'; '.join(r['errors'])[:300]}"
        else:
            line = None
        for text in (line, r["degenerate"] and f"degenerate: {name}: {r['degenerate']}"):
            if text:
                seen[text] = seen.get(text, 0) + 1
    lines += [text + (f" ({n} rows)" if n > 1 else "") for text, n in seen.items()]
    return lines
