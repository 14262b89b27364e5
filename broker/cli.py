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


# --- data area: validate --------------------------------------------------------------------------------
@cli.command()
@click.argument("data")
@click.option("--tokenizer", default="cl100k_base", show_default=True, metavar="NAME",
              help="o200k_base, cl100k_base, an OpenAI model, or a local tokenizer or model folder.")
@click.option("--max-seq-len", type=click.IntRange(min=1), metavar="N",
              help="Warn about examples longer than N tokens (they would be truncated).")
@click.option("--json", "json_mode", is_flag=True, help="Print the report as JSON (only JSON on stdout).")
def validate(data: str, tokenizer: str, max_seq_len: int | None, json_mode: bool) -> None:
    """Check a dataset file (JSONL) against every provider's rules and count its tokens.

    Exits 2 when the file has errors (printed as FILE:LINE: message); warnings, rules that only rule out one
    provider, and advice do not fail it.
    """
    import json

    from ftbroker.data import analyze
    from ftbroker.tokens import resolve

    counter = resolve(tokenizer)
    report = analyze(data, counters=[counter], limits={counter.key: max_seq_len} if max_seq_len else {})
    if json_mode:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif report.examples or not report.errors:  # a file that could not be read at all: only its error
        click.echo(_dataset_text(report))
    report.raise_for_errors()


def _dataset_text(report) -> str:
    plural = "s" if report.examples != 1 else ""
    lines = [f"{report.path}: {report.format}, {report.examples:,} valid example{plural}, "
             f"{report.size_bytes:,} bytes"]
    if report.messages_per_example:
        m = report.messages_per_example
        lines.append(f"messages per example: mean {m.mean:g}, p50 {m.p50:g}, min {m.min:g}, max {m.max:g}")
    for stats in report.tokens.values():
        s = stats.per_example
        lines.append(f"tokens ({stats.tokenizer}{', exact' if stats.exact else ''}): {stats.total:,} in all, "
                     f"{stats.trained:,} trained; per example min {s.min:g}, mean {s.mean:g}, p50 {s.p50:g}, "
                     f"p95 {s.p95:g}, max {s.max:g}"
                     + (f"; {stats.over_limit:,} over {stats.limit:,}" if stats.limit else ""))
    for title, issues in [("warnings", report.warnings)] + [
            (f"{provider} rules (they rule {provider} out)", issues)
            for provider, issues in report.provider_issues.items()]:
        if issues:
            lines.append(f"{title}:")
            lines += [f"  {issue}" for issue in issues]
    if report.advice:
        lines.append("advice:")
        lines += [f"  {a.message}: {a.reason}; {a.suggestion}" for a in report.advice]
    return "\n".join(lines)
# --- end of data block ---


def main() -> None:
    cli(prog_name="ftbroker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
