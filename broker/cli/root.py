"""The ``ftbroker`` group: the one place where errors become messages and exit codes (see ``ftbroker.errors``):
0 success, 1 the operation failed, 2 bad input or usage, 3 refused by a guard. It also shows every command's
progress while stderr is a terminal, and lists the commands in the order a newcomer meets them."""

from __future__ import annotations

import os
import sys

import click

from ftbroker import __version__
from ftbroker.cli.output import stderr_console


class _Root(click.Group):
    """Runs a command and renders any ftbroker error as one message with its exit code."""

    # --help lists the commands in the order a newcomer meets them: check and price, run and follow, the catalog.
    ORDER = ("validate", "plan", "estimate", "run", "jobs", "status", "logs", "result", "eval", "cancel", "resume",
             "export", "report", "gc", "catalog", "ledger")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands, key=lambda name: (self.ORDER.index(name) if name in self.ORDER
                                                       else len(self.ORDER), name))

    def invoke(self, ctx: click.Context):
        try:
            with _progress_shown():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do (and rich does)
            _drop_stdout()
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            from ftbroker.errors import FtBrokerError
            from ftbroker.redact import scrub

            code = exc.exit_code if isinstance(exc, FtBrokerError) else 1
            if ctx.meta.get("ftbroker.debug"):  # the traceback, masked as every message is
                import traceback

                click.echo(scrub("".join(traceback.format_exception(exc))).rstrip(), err=True)
            elif isinstance(exc, FtBrokerError):
                click.echo(scrub(f"error: {exc}"), err=True)
            else:
                click.echo(scrub(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                                 "traceback)"), err=True)
            ctx.exit(code)


def _progress_shown():
    """Every command's long work shows its progress on stderr while that is a terminal (``ftbroker.progress``)."""
    import contextlib

    console = stderr_console()
    if not console.is_terminal:
        return contextlib.nullcontext()
    from ftbroker.cli.progress_view import showing

    return showing(console)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail on the broken pipe again (the recipe
    of Python's signal module documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (tests capture output)
        pass


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftbroker")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of short error messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan, price and run LLM fine-tuning on your GPU, rented GPUs and managed APIs.

    \b
    Examples:
      ftbroker plan examples/data/support_chats.jsonl
      ftbroker run data.jsonl --model Llama-3.1-8B --method qlora --max-cost 5
      ftbroker COMMAND --help      (a command's options, with an example)
    """
    ctx.meta["ftbroker.debug"] = debug


def main() -> None:
    cli(prog_name="ftbroker")
