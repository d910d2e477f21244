"""Commands that show the registry: plugins, list, info, new-plugin."""

from __future__ import annotations

import json

import click

from ..registry import KINDS, get_registry
from . import cli


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, kind, provider, ...}.")
def list_cmd(pattern, kind, as_json):
    """List registered components, optionally filtered by an fnmatch PATTERN (e.g. 'dorefa*')."""
    reg = get_registry()
    rows = [{"name": e.name, "kind": e.kind, "provider": e.provider, "aliases": list(e.aliases),
             "description": e.description} for e in reg.entries(kind, pattern)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['kind']:<10} {r['name']:<28} {r['provider']:<14} {r['description']}")
