"""Tables and text that fit the terminal, for every human view (plans, catalogs, jobs, estimates).

Numbers and short fields keep their width; the long identifiers of a row (model ids, instance types) are the
columns cut with an ellipsis when the terminal is narrow; an optional column is left out before any name is cut.
Only rich is imported, and only when a table is drawn.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

GAP = 2  # spaces between columns


@dataclasses.dataclass(frozen=True)
class Col:
    """A table column: numbers right-aligned; ``flex``: a long identifier, cut with an ellipsis (not below
    ``min_width``) when the terminal is narrow, or folded onto more lines if ``wrap`` (prose); ``optional``: left
    out, right to left, rather than cut."""

    header: str
    right: bool = False
    flex: bool = False
    min_width: int = 8
    optional: bool = False
    wrap: bool = False


def natural_widths(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> list[int]:
    from rich.cells import cell_len

    return [max([cell_len(col.header), *(cell_len(row[i]) for row in rows)]) for i, col in enumerate(columns)]


def fit_widths(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int) -> list[int | None]:
    """Each column's width (None: left out) so that the table fits in ``width`` characters, if it can: optional
    columns are left out (right to left) before any name is cut; names are cut only when that is not enough."""
    natural = natural_widths(columns, rows)
    optional = [i for i, col in enumerate(columns) if col.optional]
    for n in range(len(optional) + 1):
        widths: list[int | None] = [None if i in optional[len(optional) - n:] else w for i, w in enumerate(natural)]
        if _excess(widths, width) <= 0:
            return widths
    excess = _excess(widths, width)
    while excess > 0:
        cuttable = [i for i, col in enumerate(columns) if col.flex and (widths[i] or 0) > col.min_width]
        if not cuttable:
            break
        widest = max(cuttable, key=lambda i: widths[i] or 0)
        widths[widest] = (widths[widest] or 0) - 1
        excess -= 1
    return widths


def _excess(widths: Sequence[int | None], width: int) -> int:
    shown = [w for w in widths if w is not None]
    return sum(shown) + GAP * (len(shown) - 1) - width


def build(columns: Sequence[Col], rows: Sequence[Sequence[str]], widths: Sequence[int | None], *,
          header: bool = True) -> Table:
    """A rich table of ``rows`` with these widths (from ``fit_widths``); cells are plain text, never markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_header=header, show_edge=False, pad_edge=False,
                  padding=(0, GAP - 1, 0, 0), header_style="bold")
    keep = [i for i, w in enumerate(widths) if w is not None]
    for i in keep:
        col = columns[i]
        table.add_column(col.header, width=widths[i], no_wrap=not col.wrap, overflow="fold" if col.wrap else "ellipsis",
                         justify="right" if col.right else "left")
    for row in rows:
        table.add_row(*(Text(row[i]) for i in keep))
    return table


class Fitted:
    """A table that fits whatever console prints it (a rich renderable)."""

    def __init__(self, columns: Sequence[Col], rows: Sequence[Sequence[str]], *, header: bool = True):
        self.columns, self.rows, self.header = columns, rows, header

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield build(self.columns, self.rows, fit_widths(self.columns, self.rows, options.max_width),
                    header=self.header)


def hanging(text: str, width: int) -> str:
    """Plain text fitted to ``width``: a longer line wraps under where its last column starts (after its last run
    of two or more spaces), or four spaces in when that is too far right."""
    import textwrap

    lines = []
    for line in text.splitlines():
        if len(line) <= width:
            lines.append(line)
            continue
        columns = [m.end() for m in re.finditer(r"\S {2,}(?=\S)", line[:width])]
        lead = len(line) - len(line.lstrip())
        indent = columns[-1] if columns and columns[-1] <= width * 3 // 5 else lead + 4
        lines += textwrap.wrap(line, width, subsequent_indent=" " * indent, break_long_words=False,
                               break_on_hyphens=False)
    return "\n".join(lines)

