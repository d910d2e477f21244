"""Headless (Agg) matplotlib plots: accuracy vs bits per model, accuracy vs model size with the Pareto front."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (smaller or equal size and higher or equal accuracy), by size."""
    front = []
    best = float("-inf")
    for size, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((size, acc))
            best = acc
    return front


def _size(rec: dict) -> float | None:
    return rec.get("ideal_size_bytes") or rec.get("size_bytes")


def make_plots(records: list[dict], out_dir) -> list[Path]:
    """Write ``accuracy_vs_bits_<model>_<dataset>.png`` and ``accuracy_vs_size_<model>_<dataset>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_target: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["accuracy"] is not None:
            by_target[(r["model"], r["dataset"])].append(r)
    written = []
    for (model, dataset), recs in sorted(by_target.items()):
        fp = next((r for r in recs if r["mode"] == "fp"), None)
        quant = [r for r in recs if r["mode"] != "fp"]
        # accuracy vs weight bits, one line per method/mode/activation width
        fig, ax = plt.subplots(figsize=(11, 5))
        lines: dict[str, list] = defaultdict(list)
        for r in quant:
            act = "A=W" if r["a_bits"] == r["w_bits"] else ("A32" if r["a_bits"] == 32 else f"A{r['a_bits']}")
            lines[f"{r['method']} ({r['mode']}, {act})"].append((r["w_bits"], r["accuracy"], r["accuracy_sd"] or 0))
        colors = plt.get_cmap("tab20").colors
        styles = ["-", "--", ":", "-."]
        markers = "osD^v<>ph*"
        for i, (label, pts) in enumerate(sorted(lines.items())):
            pts.sort()  # 20 colours x 4 line styles x 10 markers keep dozens of methods apart
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=2,
                        color=colors[i % 20], ls=styles[(i // 20) % 4], marker=markers[i % 10], ms=4, label=label)
        if fp:
            ax.axhline(fp["accuracy"], color="k", ls="--", lw=1, label=f"FP32 {fp['accuracy']:.2f}")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("weight bits")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"Accuracy vs bits: {model} on {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(lines) > 20 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        p = out / f"accuracy_vs_bits_{model}_{dataset}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
        # accuracy vs size, Pareto front marked
        fig, ax = plt.subplots(figsize=(9, 5.5))
        pts = [(_size(r), r["accuracy"], f"{r['method']} {r['bits']}") for r in recs if _size(r)]
        for size, acc, label in pts:
            ax.scatter(size, acc, s=18)
            ax.annotate(label, (size, acc), fontsize=5, xytext=(2, 2), textcoords="offset points")
        front = pareto_front([(s, a) for s, a, _ in pts])
        if front:
            ax.plot([f[0] for f in front], [f[1] for f in front], "r-", lw=1.5, marker="*", ms=9,
                    label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("model size in bytes (weights at their quantized width; real storage where no ideal)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"Accuracy vs size: {model} on {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        p = out / f"accuracy_vs_size_{model}_{dataset}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
