"""Headless (Agg) matplotlib plots a person can read: small multiples of accuracy vs bits (one panel per
method family, at most 8 series each, FP line, 95% error bars, a legend per panel) and accuracy vs size
with the Pareto front."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

MAX_SERIES = 8
_BITS = (1, 2, 3, 4, 8)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (smaller or equal size and higher or equal accuracy), by size."""
    front = []
    best = float("-inf")
    for size, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((size, acc))
            best = acc
    return front


def family(method: str) -> str:
    """The panel a method is drawn in: its plugin's prefix (``distiller``, ``nni``, ``brevitas``, ``torch``),
    else ``papers and baseline`` for the one-word paper methods and ``uniform``."""
    head = method.split("-")[0]
    if head.startswith("torch"):
        return "torch"
    return head if "-" in method else "papers and baseline"


def _panels(series: dict[str, list]) -> list[tuple[str, list[str]]]:
    """``(title, series names)`` panels: one per family, split so that none holds more than MAX_SERIES."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for name in sorted(series):
        by_family[family(name.split(" ")[0])].append(name)
    out = []
    for fam, names in sorted(by_family.items()):
        chunks = [names[i:i + MAX_SERIES] for i in range(0, len(names), MAX_SERIES)]
        out += [(fam if len(chunks) == 1 else f"{fam} ({i + 1}/{len(chunks)})", c) for i, c in enumerate(chunks)]
    return out


def make_plots(records: list[dict], out_dir) -> list[Path]:
    """Write ``accuracy_vs_bits_<model>_<dataset>.png`` and ``accuracy_vs_size_<model>_<dataset>.png``."""
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_target: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["accuracy"] is not None and not r.get("check_of"):  # budget-check twins are not results
            by_target[(r["model"], r["dataset"])].append(r)
    written = []
    for (model, dataset), recs in sorted(by_target.items()):
        fp = next((r for r in recs if r["mode"] == "fp"), None)
        written.append(_bits_plot(out, model, dataset, recs, fp))
        written.append(_size_plot(out, model, dataset, recs))
    return written


def _bits_plot(out: Path, model: str, dataset: str, recs: list[dict], fp: dict | None) -> Path:
    import matplotlib.pyplot as plt

    from .leaderboard import _variant_of

    rows = {"activations quantized (WnAn)": lambda r: r["a_bits"] == r["w_bits"],
            "weights only (float activations)": lambda r: r["a_bits"] is None}
    data: dict[str, dict[str, list]] = {row: defaultdict(list) for row in rows}
    for r in recs:
        if r["mode"] == "fp" or r["w_bits"] not in _BITS or r["degenerate"]:
            continue
        for row, keep in rows.items():
            if keep(r):
                variant = _variant_of(r, recs)
                name = f"{r['method']} ({r['mode']})" + (f" {variant}" if variant else "")
                data[row][name].append((r["w_bits"], r["accuracy"], r["accuracy_ci95"] or 0.0))
    data = {row: series for row, series in data.items() if series}  # no empty column (e.g. no weight-only rows)
    panels = sorted({p for row in data.values() for p in (t for t, _ in _panels(row))})
    nrows, ncols = max(len(panels), 1), max(len(data), 1)  # a row per method family, the kinds side by side
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6 * ncols, 9), 2.9 * nrows + 0.6), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10").colors
    for i, (row, series) in enumerate(data.items()):
        by_title = dict(_panels(series))
        for j, title in enumerate(panels):
            ax = axes[j][i]
            for k, name in enumerate(by_title.get(title, [])):
                pts = sorted(series[name])
                xs, ys, es = zip(*pts)
                # a legend, not labels at the line ends: variants at one setting would print over each other
                ax.errorbar(xs, ys, yerr=es, color=colors[k % 10], marker="o", ms=3, capsize=2, lw=1.2,
                            label=textwrap.fill(name, 60, subsequent_indent="  "))
            if title not in by_title:
                ax.text(0.5, 0.5, "no rows at these settings", transform=ax.transAxes, ha="center",
                        va="center", fontsize=7, color="0.5")
            else:
                ax.legend(fontsize=5.5, loc="best", framealpha=0.8)
            if fp:
                ax.axhline(fp["accuracy"], color="k", ls="--", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(_BITS)
            ax.set_xticklabels([str(b) for b in _BITS])
            ax.set_xlim(0.7, 10)
            ax.grid(alpha=0.3)
            ax.set_title(f"{title}: {row}", fontsize=8)
            if i == 0:
                ax.set_ylabel("top-1 accuracy (%)")
            if j == nrows - 1:
                ax.set_xlabel("weight bits")
    fp_text = f" {fp['accuracy']:.2f}" if fp else ""
    fig.suptitle(f"Accuracy vs bits: {model} on {dataset} (dashed: FP32{fp_text}; bars: 95% interval over seeds; "
                 "degenerate rows left out)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # room for the title
    p = out / f"accuracy_vs_bits_{model}_{dataset}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _size_plot(out: Path, model: str, dataset: str, recs: list[dict]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.get_cmap("tab10").colors
    fams = sorted({family(r["method"]) for r in recs if r["mode"] != "fp"})
    pts = []
    for r in recs:
        size = r.get("ideal_size_bytes") or r.get("size_bytes")
        if not size:
            continue
        fam = "FP32" if r["mode"] == "fp" else family(r["method"])
        pts.append((size, r["accuracy"], f"{r['method']} {r['bits']}", fam))
    for fam in ["FP32", *fams]:
        mine = [p for p in pts if p[3] == fam]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=16, label=fam,
                       color="k" if fam == "FP32" else colors[fams.index(fam) % 10])
    front = pareto_front([(s, a) for s, a, _, _ in pts])
    if front:
        ax.plot([f[0] for f in front], [f[1] for f in front], "r-", lw=1.2, label="Pareto front")
        on_front = set(front)
        for size, acc, label, _ in pts:
            if (size, acc) in on_front:  # label only the front: the rest is readable by colour
                ax.annotate(label, (size, acc), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("model bytes with every quantized weight at its bit width")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs size: {model} on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    p = out / f"accuracy_vs_size_{model}_{dataset}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
