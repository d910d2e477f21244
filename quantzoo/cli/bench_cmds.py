"""Harness commands: bench, leaderboard, quantize, suites."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from . import cli

FORMAT_CHOICE = click.Choice(["github", "markdown", "html", "latex", "csv", "json"])


def _data_root(data_dir):
    return str(Path(data_dir).expanduser()) if data_dir else None


@cli.command("bench")
@click.option("--suite", "suite_name", required=True,
              help="Suite name (`quantzoo suites` lists them) or a .toml path.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="Results database (SQLite) [default: .quantzoo/results.sqlite].")
@click.option("--methods", default=None, help="Only methods matching these fnmatch patterns (comma-separated).")
@click.option("--models", default=None, help="Only targets matching these patterns ('cnn', 'cnn/digits', ...).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (--executor ray); default: a local instance.")
@click.option("--jobs", type=click.IntRange(1, 256), default=None,
              help="Parallel cells (local: worker processes; ray: CPUs of the local instance) [default: the "
                   "suite's `jobs`, else 1].")
@click.option("--force", is_flag=True, help="Recompute cells already in the database.")
@click.option("--retry-failed", is_flag=True, help="Run failed cells again (finished ones are kept).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Root holding MNIST/raw/ [default: $QUANTZOO_DATA, then ../shared/data next to the checkout].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="FP baseline cache [default: $QUANTZOO_CACHE or .quantzoo/cache].")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="github", show_default=True,
              help="Format of the leaderboard printed at the end.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the leaderboard as Markdown to this file.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None, help="Write PNG plots here.")
@click.option("--dry-run", is_flag=True, help="List the cells and exit.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def bench_cmd(suite_name, db_path, methods, models, executor, address, jobs, force, retry_failed, data_dir,
              cache_dir, fmt, markdown_out, plot_dir, dry_run, no_progress):
    """Score every installed method of a suite, then print the leaderboard.

    Finished cells are kept in the database and skipped on the next run (resume); --force recomputes them.
    """
    from ..bench.db import ResultsDB
    from ..bench.runner import run_plan
    from ..bench.suite import load_suite, plan_suite

    import torch

    torch.set_num_threads(1)  # the protocol's thread count (cells set it again); also makes fork-based pools safe
    suite = load_suite(suite_name)  # validated before anything runs
    plan = plan_suite(suite, methods=methods, models=models, data_root=_data_root(data_dir))
    if methods and not any(c.mode != "fp" for c in plan.cells):
        raise ConfigError(f"--methods {methods!r} selects no cell of suite {suite.name!r}; "
                          "see `quantzoo list --kind quantizer`")
    if not plan.cells:
        raise ConfigError(f"--models {models!r} selects no target of suite {suite.name!r}")
    if dry_run:
        for c in plan.cells:
            click.echo(c.label)
        click.echo(f"{len(plan.cells)} cells; {len(plan.skipped)} unsupported combinations skipped")
        return
    _warn_unmatched(plan)
    _check_data(plan)
    from ..registry import get_registry
    from .registry_cmds import warn_broken

    warn_broken(get_registry())  # a plugin that failed to import is named; the others run
    jobs = jobs or suite.jobs
    db = ResultsDB(db_path)
    click.echo(f"suite {suite.name}: {len(plan.cells)} cells, db {db.path}, executor {executor} (jobs {jobs})",
               err=True)
    summary = run_plan(plan, db, executor=executor, jobs=jobs, address=address, force=force,
                       retry_failed=retry_failed, cache_dir=cache_dir, progress=not no_progress)
    records = _records(db, [c.key for c in plan.cells])
    _emit(records, fmt, markdown_out, plot_dir, suite, plan.notes)
    for line in summary.lines():
        click.echo(line, err=True)


def _warn_unmatched(plan) -> None:
    for u in plan.unmatched:
        click.echo(f"note: {u} matches no installed method (plugin not installed?)", err=True)


def _check_data(plan) -> None:
    """Load each data set once before any cell runs: a missing or corrupt file is one error now, not a failed
    row per cell (the splits stay cached for the cells of this process and of forked workers)."""
    from ..bench.data import load_splits

    for dataset, root in sorted({(c.dataset, c.data_root or "") for c in plan.cells}):
        load_splits(dataset, root or None)


def _records(db, keys):
    from ..bench.leaderboard import aggregate

    return aggregate(db.rows(keys))


def _emit(records, fmt, markdown_out, plot_dir, suite=None, said=None) -> None:
    from ..bench.leaderboard import notes, render
    from ..bench.suite import rank_targets

    ranks = rank_targets(suite) if suite else None
    trends = suite.trends if suite else None
    click.echo(render(records, fmt, ranks, said, trends))
    if markdown_out:
        title = f"# quantzoo leaderboard{f' — suite `{suite.name}`' if suite else ''}\n\n"
        desc = f"{suite.description}\n\n" if suite and suite.description else ""
        body = render(records, "markdown", ranks, said, trends)
        foot = "\n".join(f"- {n}" for n in notes(records))
        Path(markdown_out).write_text(f"{title}{desc}{body}\n\n{foot}\n")
        click.echo(f"wrote {markdown_out}", err=True)
    if plot_dir:
        from ..bench.plots import make_plots

        paths = make_plots(records, plot_dir)
        click.echo(f"wrote {len(paths)} plots to {plot_dir}", err=True)


@cli.command("leaderboard")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="Results database [default: .quantzoo/results.sqlite].")
@click.option("--suite", "suite_name", default=None,
              help="Only the cells of this suite (name or path); its trends are checked.")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="github", show_default=True)
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None, help="Write PNG plots here.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write to a file instead.")
def leaderboard_cmd(db_path, suite_name, fmt, plot_dir, output):
    """Print the leaderboard from the results database."""
    from ..bench.db import ResultsDB
    from ..bench.leaderboard import aggregate, render
    from ..bench.suite import load_suite, plan_suite, rank_targets

    db = ResultsDB(db_path, readonly=True)
    keys = ranks = said = trends = None
    if suite_name:
        suite = load_suite(suite_name)
        plan = plan_suite(suite)
        keys, ranks, said, trends = [c.key for c in plan.cells], rank_targets(suite), plan.notes, suite.trends
    records = aggregate(db.rows(keys))
    text = render(records, fmt, ranks, said, trends)
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)
    if plot_dir:
        from ..bench.plots import make_plots

        click.echo(f"wrote {len(make_plots(records, plot_dir))} plots to {plot_dir}", err=True)


@cli.command("suites")
def suites_cmd():
    """List the built-in suites."""
    from ..bench.suite import builtin_suites, load_suite

    for name, path in builtin_suites().items():
        s = load_suite(path)
        click.echo(f"{name:<10} {s.description.splitlines()[0] if s.description else ''}  ({path})")


def _parse_set(values) -> dict:
    """``--set weight.bits=4 --set first_layer=fp`` → nested dict; values parsed as JSON when they parse."""
    out: dict = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set first_layer=fp)")
        key, raw = item.split("=", 1)
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        d = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = val
    return out


@cli.command("quantize")
@click.option("--method", required=True, help="A registered quantizer name.")
@click.option("--model", required=True, help="A registered model (quantzoo list --kind model).")
@click.option("--dataset", required=True, help="A data set the model fits.")
@click.option("--bits", default=None, help="W/A setting, e.g. W4A4 or W2A32 (default: the method's defaults).")
@click.option("--mode", type=click.Choice(["ptq", "qat"]), default=None, help="Default: ptq where supported.")
@click.option("--set", "sets", multiple=True, help="Config override key=value (dots for nesting); repeatable.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Method config file (.json, .yaml, .toml; or the method's own format).")
@click.option("--epochs", type=click.IntRange(0, 1000), default=None, help="QAT epochs [protocol default: 1].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Where to save the quantized model (tensors and the config; quantzoo.load_quantized reads it).")
@click.option("--report", "show_report", is_flag=True,
              help="Print the quantization report: per layer what was quantized and what stayed float, and why.")
def quantize_cmd(method, model, dataset, bits, mode, sets, config_file, epochs, seed, data_dir, cache_dir, out_file,
                 show_report):
    """Quantize one model with one method under the benchmark protocol; print accuracy, size and the path.

    Load the saved model with ``quantzoo.load_quantized(path, float_model, example_input)``.
    """

    from ..api import get_quantizer
    from ..bench.configs import deep_merge, load_method_config
    from ..bench.run import make_cell, quantize_cell
    from ..bench.protocol import Budget, Protocol
    from ..bench.suite import parse_bits

    cls = get_quantizer(method)
    overrides = _parse_set(sets)
    w, a = parse_bits(bits) if bits else (None, None)
    proto = Protocol()
    if epochs is not None:
        proto = proto.model_copy(update={"qat": Budget(**{**proto.qat.model_dump(), "epochs": epochs})})
    if config_file:
        base = load_method_config(config_file, cls).model_dump()
        config = cls.make_config(deep_merge(base, overrides))
    else:
        config = overrides
    if w is None and not isinstance(config, dict):
        cell = make_cell(cls.name, model, dataset, None, None, seed, config, mode=mode, protocol=proto,
                         data_root=_data_root(data_dir))
    else:
        if not isinstance(config, dict):
            config = config.model_dump()
        cell = make_cell(cls.name, model, dataset, w, a, seed, config, mode=mode, protocol=proto,
                         data_root=_data_root(data_dir))
    from ..layer_report import quantization_report
    from ..saving import save_quantized

    metrics, converted = quantize_cell(cell, cache_dir=cache_dir)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_quantized(converted, out, {"method": cell.method, "version": cell.config_version, "config": cell.config,
                                    "model": cell.model, "dataset": cell.dataset, "bits": cell.bits_label,
                                    "mode": cell.mode})
    click.echo(f"{cell.method} ({cell.mode}) {cell.bits_label} on {cell.model}/{cell.dataset}, seed {seed}")
    m = metrics
    click.echo(f"accuracy: {m.accuracy:.2f}% on {m.backend} (FP32 {m.fp_accuracy:.2f}%, Δ {m.delta:+.2f}); "
               f"fake-quant {m.fakequant_accuracy:.2f}%")
    ideal = m.ideal_size_bytes
    click.echo(f"size: {int(m.size_bytes)} bytes on {m.backend} (FP32 {int(m.fp_size_bytes)} bytes)"
               + (f"; {int(ideal)} bytes with weights at their bit width" if ideal else ""))
    report = quantization_report(converted)
    if show_report:
        click.echo(report.to_markdown())
    for name, why in report.float_layers().items():
        click.echo(f"warning: layer {name!r} stays float ({why})", err=True)
    click.echo(f"saved: {out.resolve()}")
