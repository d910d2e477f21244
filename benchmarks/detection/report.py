"""Markdown table of a detection sweep (benchmarks/detection/sweep.py): mean ± sd over seeds of mAP@0.5 and
mAP@[.5:.95] (×100) per method and W/A, the refusals with their errors, and the cells' wall time."""

import json
import statistics
import sys
from collections import defaultdict


def mean_sd(values):
    v = [100 * x for x in values if x is not None]
    if not v:
        return ""
    return f"{statistics.mean(v):.2f}" + (f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "")


def main(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["w"], r["a"])].append(r)
    print("| method | mode | W/A | backend | seeds | mAP@0.5 (×100) | mAP@[.5:.95] (×100) | cells' wall s |")
    print("|---|---|---|---|---|---|---|---|")
    refused = []
    for (label, w, a), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "fp", kv[0][0], -(kv[0][1] or 99))):
        ok = [r for r in rs if r["ok"]]
        if not ok:
            refused.append((label, w, a, rs[0]["error"], rs[0].get("quantzoo_error")))
            continue
        bits = "FP32" if w is None else f"W{w}A{a}"
        print(f"| {label} | {ok[0]['mode']} | {bits} | {ok[0]['backend']} | {len(ok)} | "
              f"{mean_sd([r['map50'] for r in ok])} | {mean_sd([r['map50_95'] for r in ok])} | "
              f"{sum(r['cell_s'] for r in rs):.0f} |")
    print()
    for label, w, a, err, qz in refused:
        print(f"- refused: {label} W{w}A{a} ({'quantzoo error' if qz else 'NOT a quantzoo error'}): {err}")
    print(f"\n{len(rows)} cells, {sum(r['cell_s'] for r in rows):.0f} s of wall time in all "
          f"(FP baselines: {sum(r['cell_s'] for r in rows if r['label'] == 'fp'):.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1])
