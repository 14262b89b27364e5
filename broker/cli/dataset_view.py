"""How a dataset's report looks in a plan: its size, a table of its token counts (each counter's accuracy), its
errors, warnings and advice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ftbroker.cli.layout import Out, compact, count
from ftbroker.cli.tables import Col

MAX_SHOWN_ISSUES = 5


def _print_issues(label: str, issues: Sequence[Any], out: Out, style: str) -> None:
    if not issues:
        return
    out.console.print(f"  [{style}]{label} ({len(issues):,}):[/{style}]")
    for issue in issues[:MAX_SHOWN_ISSUES]:
        out.text(str(issue), lead="    ", hang="      ", most=None)
    if len(issues) > MAX_SHOWN_ISSUES:
        out.console.print(f"    ... and {len(issues) - MAX_SHOWN_ISSUES:,} more", highlight=False)


def counter_label(stats: Any) -> tuple[str, str, str]:
    """(short name, accuracy, why it is an estimate or "") of a token count, from its counter's fields: the llama3
    family's estimate -> ("llama3 (estimate)", "±0.3%, p90 5.9%", "")."""
    if stats.exact:
        return stats.tokenizer, "exact", ""
    if not stats.accuracy:  # a counter that does not say
        return stats.tokenizer, "estimate", ""
    return f"{stats.family or 'unknown'} (estimate)", stats.accuracy, stats.why


_TOKEN_COLUMNS = (Col("tokenizer", flex=True, min_width=10), Col("accuracy", flex=True, min_width=6),
                  Col("tokens", right=True), Col("trained", right=True), Col("mean", right=True),
                  Col("p95", right=True), Col("max", right=True), Col("limit", right=True, optional=True),
                  Col("over", right=True))


def print_dataset(report: Any, title: str, out: Out) -> None:
    out.title(title, f" {report.path}")
    line = (f"  {report.format} · {report.examples:,} example{'s' if report.examples != 1 else ''} · "
            f"{report.size_bytes:,} bytes")
    if report.messages_per_example is not None:
        m = report.messages_per_example
        line += f" · {m.min:g}-{m.max:g} messages per example (mean {m.mean:.1f})"
    out.console.print(line, highlight=False)
    if report.tokens:
        rows, whys = [], []
        for stats in report.tokens.values():
            name, accuracy, why = counter_label(stats)
            s = stats.per_example
            rows.append([name, accuracy, compact(stats.total), compact(stats.trained), compact(s.mean),
                         compact(s.p95), compact(s.max), count(stats.limit),
                         count(stats.over_limit) if stats.limit else "-"])
            whys += [f"{name}: {why}"] if why else []
        out.table(_TOKEN_COLUMNS, rows, indent=1)
        for why in whys:
            out.text(why)
    _print_issues("errors", report.errors, out, style="red")
    _print_issues("warnings", report.warnings, out, style="yellow")
    for advice in report.advice:
        out.text(f"advice: {advice.message} ({advice.reason}); {advice.suggestion}", most=None)
    out.console.print()
