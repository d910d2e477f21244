"""The `quantzoo` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

import sys

import click

from ..errors import QuantzooError


class QuantzooGroup(click.Group):
    """Turns quantzoo's own errors into a one-line message and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (QuantzooError, ValueError, FileNotFoundError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=QuantzooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="quantzoo")
@click.pass_context
def cli(ctx, debug):
    """quantzoo: every well-known quantization method for PyTorch behind one registry,
    scored on the same models, data and budget.

    \b
    Typical use:
      quantzoo list                      # what is installed
      quantzoo info dorefa               # a method, its paper and config schema
      quantzoo bench --suite quick       # score every method, print the leaderboard
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _load_commands() -> None:
    # Command modules register themselves on `cli`; import order is the order in --help.
    from . import registry_cmds  # noqa: F401

    try:
        from . import bench_cmds  # noqa: F401
    except ImportError:  # the harness commands are optional while it is being built
        pass


def main() -> None:
    _load_commands()
    cli(obj={})
