"""How a view is laid out on a console: titles, tables fitted to its width (``ftbroker.cli.tables``), paragraphs held
to a line or two unless verbose, footnotes for long sources, and a footer that says what fitting cut; and the cell
formats the views share (money, counts).

Pure formatting: every function takes the objects and a console; nothing here decides a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from ftbroker.cli.tables import Col, build, fit_widths, natural_widths

if TYPE_CHECKING:
    from rich.console import Console

TEXT_LINES = 2  # lines a reason, source or plan note may take unless verbose (a route's note: 1)


def money(value: Decimal | None, unknown: str = "-") -> str:
    if value is None:
        return unknown
    if 0 < value < Decimal("0.01"):
        return "<$0.01"
    return f"${value:,.2f}"


def dollars(value: Decimal | None, unknown: str = "-") -> str:
    """Money in a column whose header says "$"."""
    return money(value, unknown).replace("$", "")


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def compact(value: float | None) -> str:
    """1,234 -> 1,234; 1,500,000 -> 1.5M: table cells stay narrow (JSON and CSV keep exact numbers)."""
    if value is None:
        return "-"
    for threshold, size, unit in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if value >= threshold:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


class Out:
    """A console, and what fitting to it cut: said once by ``footer``."""

    def __init__(self, console: Console, verbose: bool = False):
        self.console, self.verbose = console, verbose
        self.cut_names = False
        self.left_out: dict[str, None] = {}  # column headers, in order
        self.clipped = False

    def title(self, text: str, rest: str = "") -> None:
        from rich.text import Text

        self.console.print(Text.assemble((text, "bold"), rest), no_wrap=False)

    def table(self, columns: Sequence[Col], rows: Sequence[Sequence[str]], *, header: bool = True,
              indent: int = 0) -> None:
        from rich.padding import Padding

        widths = fit_widths(columns, rows, self.console.width - indent)
        natural = natural_widths(columns, rows)
        self.cut_names |= any(w is not None and w < n and not c.wrap for c, w, n in zip(columns, widths, natural))
        self.left_out.update((c.header, None) for c, w in zip(columns, widths) if w is None)
        table = build(columns, rows, widths, header=header)
        self.console.print(Padding(table, (0, 0, 0, indent), expand=False) if indent else table)

    def text(self, body: str, *, lead: str = "  ", hang: str = "    ", style: str = "",
             most: int | None = TEXT_LINES) -> None:
        """A paragraph with a hanging indent, held to ``most`` lines (None: any number) unless verbose."""
        from rich.text import Text

        width = max(20, self.console.width - max(len(lead), len(hang)))
        lines = Text(body, style=style).wrap(self.console, width)
        if most is not None and not self.verbose and len(lines) > most:
            lines = lines[:most]
            lines[-1].rstrip()
            lines[-1].truncate(width - 1)
            lines[-1].append("…")
            self.clipped = True
        for n, line in enumerate(lines):
            line.rstrip()
            self.console.print(Text(lead if n == 0 else hang) + line, no_wrap=True, overflow="ignore", crop=False)

    def footer(self, more: str) -> None:
        """What was cut to fit, and how to see it all."""
        cut = (["long names"] if self.cut_names else []) + (
            [f"column{'s' if len(self.left_out) > 1 else ''} {', '.join(self.left_out)}"] if self.left_out else []
        ) + (["notes and reasons (-v: in full)"] if self.clipped else [])
        fitted = f"Cut to fit {self.console.width} columns: {'; '.join(cut)}. " if cut else ""
        self.text(fitted + more, lead="", hang="  ", style="dim", most=None)


class Footnotes:
    """Long source strings shown once, at the end, and referred to as [1], [2] in the tables."""

    def __init__(self) -> None:
        self.sources: dict[str, int] = {}

    def ref(self, source: str) -> str:
        return f"[{self.sources.setdefault(source, len(self.sources) + 1)}]" if source else ""

    def print(self, out: Out, title: str = "Sources", rest: str = "") -> None:
        if self.sources:
            out.title(title, rest)
            for source, n in self.sources.items():
                out.text(source, lead=f"  [{n}] ", hang="      ")

