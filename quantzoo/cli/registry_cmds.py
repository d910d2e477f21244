"""Commands that show the registry: plugins, list, info, new-plugin."""

from __future__ import annotations

import difflib
import inspect
import json
from pathlib import Path

import click

from ..errors import UnknownNameError
from ..registry import KINDS, Entry, Registry, get_registry
from . import cli


def warn_broken(reg: Registry) -> None:
    """One line on stderr per plugin that failed to load (the others are listed as usual)."""
    for info in reg.plugins:
        if info.status != "ok":
            dist = f" ({info.distribution} {info.version})" if info.distribution else ""
            click.echo(f"Warning: plugin {info.name!r}{dist} is broken and was skipped: {info.error}", err=True)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- plugins ---------------------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {name, distribution, version, hooks, status, error}.")
def plugins_cmd(as_json):
    """List the plugin distributions quantzoo found, their hooks and whether they loaded."""
    reg = get_registry()
    rows = [p.as_dict() for p in reg.plugins]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        status = "ok" if r["status"] == "ok" else f"broken: {r['error']}"
        dist = f"{r['distribution'] or '-'} {r['version'] or ''}".strip()
        click.echo(f"{r['name']:<16} {dist:<32} {','.join(r['hooks']) or '-':<40} {status}")


# -- list ------------------------------------------------------------------------------------------------
@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, kind, provider, ...}.")
def list_cmd(pattern, kind, as_json):
    """List registered components, optionally filtered by an fnmatch PATTERN (e.g. 'dorefa*')."""
    reg = get_registry()
    warn_broken(reg)
    rows = [{"name": e.name, "kind": e.kind, "provider": e.provider, "aliases": list(e.aliases),
             "description": e.description} for e in reg.entries(kind, pattern)]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        what = f"{kind} names" if kind else "names"
        click.echo(f"No {what} match {pattern!r}." if pattern else f"No {kind or 'component'} is registered.",
                   err=True)
    for r in rows:
        click.echo(f"{r['kind']:<10} {r['name']:<28} {r['provider']:<14} {r['description']}")


# -- info ------------------------------------------------------------------------------------------------
def find_entry(reg: Registry, name: str, kind: str | None) -> Entry:
    """The entry called ``name`` in ``kind`` (or in the one kind that has it); clear errors otherwise."""
    if kind:
        return reg.entry(kind, name)
    hits = []
    for k in KINDS:
        try:
            hits.append(reg.entry(k, name))
        except UnknownNameError:
            pass
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        kinds = " and ".join(f"{'an' if e.kind[0] in 'aeiou' else 'a'} {e.kind}" for e in hits)
        raise click.UsageError(f"{name!r} is {kinds}: pass --kind {hits[0].kind} (or another kind) to choose")
    # Unknown everywhere: report it in the kind whose names are closest (quantizer when none is close).
    def closeness(k: str) -> float:
        return max((difflib.SequenceMatcher(None, name.lower(), n).ratio() for n in reg.names(k)), default=0.0)

    best = max(KINDS, key=closeness)
    best = best if closeness(best) >= 0.6 else "quantizer"
    raise UnknownNameError(best, name, reg.names(best))


def describe_entry(entry: Entry) -> dict:
    """What ``quantzoo info`` shows: common fields plus what applies to the entry's kind."""
    obj = entry.obj
    # Descriptors (ModelDef/DatasetDef instances) carry their text in `description`; their class docstring
    # would describe the descriptor type, not the model.
    doc = (inspect.getdoc(obj) or "") if inspect.isclass(obj) else ""
    info = {"name": entry.name, "kind": entry.kind, "provider": entry.provider, "aliases": list(entry.aliases),
            "description": entry.description, "details": doc if doc and doc != entry.description else "",
            "config_schema": None}
    if entry.kind == "quantizer":
        from ..testing import HARNESS_SETTINGS

        settings = []
        for w, a in HARNESS_SETTINGS:
            try:
                obj.config_for_bits(w, a)
            except Exception:  # noqa: BLE001 - unsupported (or broken: the conformance kit reports that)
                continue
            settings.append(f"W{w}A{a if a is not None else 'fp'}")
        info.update(family=obj.family, paper=obj.paper, class_=f"{obj.__module__}.{obj.__qualname__}",
                    capabilities=obj.capabilities.model_dump(mode="json"), default_backend=obj.default_backend,
                    harness_settings=settings, config_defaults=obj.Config().model_dump(mode="json"),
                    config_schema=obj.Config.model_json_schema())
    elif entry.kind == "observer":
        info.update(class_=f"{obj.__module__}.{obj.__qualname__}",
                    signature=f"{obj.__name__}{inspect.signature(obj.__init__)}".replace("(self, ", "("))
    elif entry.kind == "backend":
        backend = obj()
        available, reason = backend.is_available()
        info.update(class_=f"{obj.__module__}.{obj.__qualname__}", real_integer=obj.real_integer,
                    available=available, unavailable_reason=reason or None)
    elif entry.kind == "model":
        info.update(datasets=list(obj.datasets))
    elif entry.kind == "dataset":
        info.update(input_shape=list(obj.input_shape), num_classes=obj.num_classes)
    return {("class" if k == "class_" else k): v for k, v in info.items()}


@cli.command("info")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), help="Look NAME up in this kind only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object {name, kind, provider, config_schema, ...}.")
def info_cmd(name, kind, as_json):
    """Show one component: description, paper, capabilities and the JSON Schema of its config."""
    reg = get_registry()
    info = describe_entry(find_entry(reg, name, kind))
    if as_json:
        _echo_json(info)
        return
    click.echo(f"{info['name']} ({info['kind']}, provided by {info['provider']})")
    for key in ("aliases", "description", "family", "paper", "class", "signature", "default_backend",
                "real_integer", "available", "unavailable_reason", "datasets", "input_shape", "num_classes",
                "harness_settings"):
        value = info.get(key)
        if value not in (None, "", []):
            click.echo(f"  {key.replace('_', ' ')}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    if info.get("capabilities"):
        caps = info["capabilities"]
        click.echo("  capabilities: " + ", ".join(f"{k}={v}" for k, v in caps.items()))
    if info.get("details"):
        click.echo("\n" + info["details"])
    if info["config_schema"] is not None:
        click.echo("\nconfig (JSON Schema):")
        click.echo(json.dumps(info["config_schema"], indent=2))


# -- new-plugin ------------------------------------------------------------------------------------------
@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", default="plugins", show_default=True, type=click.Path(file_okay=False),
              help="Directory that receives quantzoo-plugin-NAME/.")
def new_plugin_cmd(name, parent):
    """Create quantzoo-plugin-NAME/ from the template: pyproject with the entry point, a hookimpl module
    with a working example quantizer, and a test that runs the conformance kit."""
    from ..templates import render_plugin

    target = render_plugin(name, Path(parent))
    click.echo(f"Created {target}")
    click.echo(f"Next: .venv/bin/pip install -q -c constraints.txt --no-deps -e {target} && "
               f".venv/bin/python -m pytest {target} -q")
