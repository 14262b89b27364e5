"""``ftbroker validate``: one dataset file against the core's and every provider's rules, and its token counts."""

from __future__ import annotations

import click

from ftbroker.cli.output import json_text
from ftbroker.cli.params import Bounded


@click.command()
@click.argument("data")
@click.option("--tokenizer", default="cl100k_base", show_default=True, metavar="NAME",
              help="o200k_base, cl100k_base, an OpenAI model name, or a local tokenizer or model folder.")
@click.option("--max-seq-len", type=Bounded("seq_len"), metavar="N",
              help="Count the examples longer than N tokens (a trainer would cut them).")
@click.option("--json", "json_mode", is_flag=True, help="Print the report as JSON (only JSON on stdout).")
def validate(data: str, tokenizer: str, max_seq_len: int | None, json_mode: bool) -> None:
    """Check a JSONL dataset against provider rules; count its tokens.

    Exit status 2 when the file has errors (printed as FILE:LINE: message); warnings, rules that only rule out one
    provider, and advice do not fail it.

    \b
    Example:
      ftbroker validate examples/data/support_chats.jsonl --tokenizer o200k_base
    """
    from ftbroker.data.analysis import analyze
    from ftbroker.tokens.resolve import resolve

    counter = resolve(tokenizer)
    report = analyze(data, counters=[counter], limits={counter.key: max_seq_len} if max_seq_len else {})
    if json_mode:
        click.echo(json_text(report.to_json()))
    elif report.examples or not report.errors:  # a file that could not be read at all: only its error
        click.echo(_dataset_text(report))
    report.raise_for_errors()


def _dataset_text(report) -> str:
    """The report as plain lines (grep-able): counts, token statistics, warnings, provider rules, advice."""
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
