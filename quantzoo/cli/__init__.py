"""The `quantzoo` command line. Each command group lives in its own module of this package.

Errors a user can fix (an unknown name, a bad option, an invalid config) print one line on stderr and exit
with code 2, without a traceback; ``quantzoo --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from ..errors import QuantzooError

# click >= 8.2 raises this (exit 2) for a bare group; older versions print the help themselves.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
#: Exit code of every usage error (click's own convention for bad arguments).
USAGE_ERROR = 2


def fail(message: str) -> None:
    """Print ``Error: message`` as one line on stderr and exit with code 2."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(USAGE_ERROR)


class QuantzooGroup(click.Group):
    """Turns quantzoo's own errors into a one-line message and exit code 2 (a traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (QuantzooError, ValueError, FileNotFoundError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            fail(str(exc))


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
      quantzoo plugins                   # installed plugin packages and their status
      quantzoo new-plugin mymethod       # start a plugin from the template
      quantzoo bench --suite quick       # score every method, print the leaderboard
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _load_commands() -> None:
    # Command modules register themselves on `cli`; import order is the order in --help.
    from . import analyze_cmds, bench_cmds, registry_cmds  # noqa: F401 - imported for their @cli.command side effects


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``quantzoo`` script."""
    _load_commands()
    try:
        cli.main(args=argv, prog_name="quantzoo", obj={}, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except _NO_ARGS_IS_HELP as exc:  # bare `quantzoo`: the help, not an error
        click.echo(exc.ctx.get_help())
    except click.ClickException as exc:
        # click prints usage plus a hint over several lines; quantzoo promises one line.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        if exc.exit_code == USAGE_ERROR:
            fail(exc.format_message() + hint)
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
