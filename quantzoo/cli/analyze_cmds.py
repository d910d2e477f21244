"""`quantzoo analyze`: per-layer sensitivity, ablation and mixed precision for one or several methods."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from . import cli


@cli.command("analyze")
@click.option("--method", "methods", default=None, help="A method, or several comma-separated (side by side).")
@click.option("--methods", "methods_alt", default=None, hidden=True)
@click.option("--model", required=True, help="A zoo model (quantzoo list --kind model).")
@click.option("--dataset", required=True, help="A data set the model fits.")
@click.option("--bits", default="W4A4", show_default=True, help="W/A setting, e.g. W4A4, W8A8, W4A32.")
@click.option("--mode", type=click.Choice(["ptq", "qat"]), default=None, help="Default: ptq where supported.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ablation", is_flag=True, help="Also one run per layer: only it quantized, only it float (slow).")
@click.option("--mixed", type=click.IntRange(0, 64), default=None,
              help="Keep the k most sensitive layers at 8 bits for k = 0..K and report the trade-off.")
@click.option("--batches", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Calibration batches on which per-layer SQNR is measured.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="Results database; each unit of the analysis is stored and reused "
                   "[default: .quantzoo/results.sqlite].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a PNG.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
def analyze_cmd(methods, methods_alt, model, dataset, bits, mode, seed, ablation, mixed, batches, db_path, json_out,
                plot_out, data_dir, cache_dir):
    """Where does a quantized model lose accuracy? Per layer: output SQNR against the FP model, weight and
    activation ranges; with --ablation the accuracy with only that layer quantized and with only it float;
    with --mixed K the accuracy/size curve of keeping the K most sensitive layers at 8 bits.

    Runs under the benchmark protocol (the cached FP checkpoint, the shared calibration set); the table shows
    the methods side by side so you see which method hurts which layer (docs/analyze.md).
    """
    import torch
    from tqdm import tqdm

    from ..bench.analyze import analysis_plot, analysis_table, analyze
    from ..bench.db import ResultsDB
    from ..bench.suite import parse_bits

    torch.set_num_threads(1)
    names = [m.strip() for m in (methods or methods_alt or "").split(",") if m.strip()]
    if not names:
        raise ConfigError("give --method NAME (or several, comma-separated)")
    w, a = parse_bits(bits)
    db = ResultsDB(db_path)
    results = []
    for name in names:
        bar = tqdm(total=0, desc=name, disable=not (ablation or mixed is not None), leave=False)

        def progress(what, done, total, bar=bar, name=name):
            bar.total = total
            bar.set_description(f"{name}: {what}")
            bar.n = done
            bar.refresh()

        results.append(analyze(name, model, dataset, w, a, seed=seed, mode=mode, ablation=ablation, mixed=mixed,
                               batches=batches, db=db, cache_dir=cache_dir, progress=progress,
                               data_root=str(Path(data_dir).expanduser()) if data_dir else None))
        bar.close()
    click.echo(analysis_table(results))
    for r in results:
        if isinstance(r.get("mixed_precision"), list):
            click.echo(f"\nmixed precision, {r['method']} {r['bits']} (k most sensitive layers at 8 bits):")
            for p in r["mixed_precision"]:
                click.echo(f"  k={p['k']}: {p['accuracy']:.2f}% at {p['average_weight_bits']:.2f} average weight "
                           f"bits {p['int8_layers']}")
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1, default=str))
        click.echo(f"wrote {json_out}", err=True)
    if plot_out:
        analysis_plot(results, plot_out)
        click.echo(f"wrote {plot_out}", err=True)
