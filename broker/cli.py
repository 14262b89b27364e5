"""The ``ftbroker`` command line.

This module is the only place where errors become messages and exit codes (see ``ftbroker.errors``):
0 success, 1 the operation failed, 2 bad input or usage, 3 refused by a guard. Heavy modules are
imported inside the commands so that ``ftbroker --help`` and ``ftbroker plan`` start fast.
"""

from __future__ import annotations

import sys

import click

from ftbroker import __version__


class _Root(click.Group):
    """Runs a command and renders any ftbroker error as one message with its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if ctx.meta.get("ftbroker.debug"):
                raise
            from ftbroker.errors import FtBrokerError

            if isinstance(exc, FtBrokerError):
                click.echo(f"error: {exc}", err=True)
                ctx.exit(exc.exit_code)
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
            ctx.exit(1)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftbroker")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of short error messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan, price and run LLM fine-tuning on your GPU, rented GPUs and managed APIs."""
    ctx.meta["ftbroker.debug"] = debug


def main() -> None:
    cli(prog_name="ftbroker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
