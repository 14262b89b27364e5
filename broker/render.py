"""How plans and catalogs look: rich tables for people, CSV and JSON for programs.

Pure formatting: every function takes the objects and a stream or console; nothing here decides a number.

Tables fit the terminal (``ftbroker.tables``), one line per row; what fitting cut or left out is said at the end.
Texts (notes, reasons, sources) are grouped, said once with the route numbers they are about, and held to a line
or two unless ``verbose``; JSON and CSV keep everything.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ftbroker.planner import Plan
from ftbroker.pricing.catalog import Catalog, is_stale
from ftbroker.routes import Route, jsonable
from ftbroker.tables import Col, build, fit_widths, natural_widths

if TYPE_CHECKING:
    from rich.console import Console

MAX_SHOWN_ISSUES = 5
TEXT_LINES = 2  # lines a reason, source or plan note may take unless verbose (a route's note: 1)
MANAGED_ROWS = 10  # managed routes in the table without --all: the cheapest (the rest are counted below it)
CLOUD_ROWS = 1  # cloud routes per model and method (per method for the default models) in each pricing's table


def to_json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def money(value: Decimal | None, unknown: str = "-") -> str:
    if value is None:
        return unknown
    if 0 < value < Decimal("0.01"):
        return "<$0.01"
    return f"${value:,.2f}"


def _dollars(value: Decimal | None, unknown: str = "-") -> str:
    """Money in a column whose header says "$"."""
    return money(value, unknown).replace("$", "")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _compact(value: float | None) -> str:
    """1,234 -> 1,234; 1,500,000 -> 1.5M: table cells stay narrow (JSON and CSV keep exact numbers)."""
    if value is None:
        return "-"
    for threshold, size, unit in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if value >= threshold:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


def _numbers(numbers: Iterable[int]) -> str:
    """Route numbers as "#1, #2, #5-#9": runs of three or more as a range."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"#{r[0]}-#{r[-1]}" if len(r) > 2 else ", ".join(f"#{n}" for n in r) for r in runs)


def gist(text: str) -> str:
    """A text without its closing explanation: a long trailing parenthesis ("closes in 39 days (2027-01-06)
    (OpenAI is winding down ...)" -> "closes in 39 days (2027-01-06)"). Short ones (a date, a count) stay."""
    text = text.rstrip()
    if not text.endswith(")"):
        return text
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            head = text[:i].rstrip(" ;,:")
            return head if len(text) - i > 30 and len(head) >= 20 else text
    return text


# ---------------------------------------------------------------------------------------------- output

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


class _Footnotes:
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


def _print_issues(label: str, issues: Sequence[Any], out: Out, style: str) -> None:
    if not issues:
        return
    out.console.print(f"  [{style}]{label} ({len(issues):,}):[/{style}]")
    for issue in issues[:MAX_SHOWN_ISSUES]:
        out.text(str(issue), lead="    ", hang="      ", most=None)
    if len(issues) > MAX_SHOWN_ISSUES:
        out.console.print(f"    ... and {len(issues) - MAX_SHOWN_ISSUES:,} more", highlight=False)


# ---------------------------------------------------------------------------------------------- dataset

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


def _print_dataset(report: Any, title: str, out: Out) -> None:
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
            rows.append([name, accuracy, _compact(stats.total), _compact(stats.trained), _compact(s.mean),
                         _compact(s.p95), _compact(s.max), _count(stats.limit),
                         _count(stats.over_limit) if stats.limit else "-"])
            whys += [f"{name}: {why}"] if why else []
        out.table(_TOKEN_COLUMNS, rows, indent=1)
        for why in whys:
            out.text(why)
    _print_issues("errors", report.errors, out, style="red")
    _print_issues("warnings", report.warnings, out, style="yellow")
    for advice in report.advice:
        out.text(f"advice: {advice.message} ({advice.reason}); {advice.suggestion}", most=None)
    out.console.print()


# ---------------------------------------------------------------------------------------------- plan

def print_plan(plan: Plan, console: Console, *, all_routes: bool = False, verbose: bool = False) -> None:
    """The dataset; the best routes; a table per kind of route (managed APIs, your GPU, cloud on-demand, cloud
    spot), each with what is not available and why; the notes, grouped; the price sources.

    Without ``all_routes`` the tables hold the MANAGED_ROWS cheapest managed routes and the CLOUD_ROWS cheapest
    cloud ones per model and method (per method for the planner's default models), with the best routes wherever
    they are, and count the rest (the JSON and CSV keep every route). ``verbose``: every note of every numbered
    route, and every text in full.
    """
    out = Out(console, verbose)
    _print_dataset(plan.dataset, "Dataset", out)
    if plan.validation is not None:
        _print_dataset(plan.validation, "Validation set", out)
    sources = _Footnotes()
    sections = _sections(plan, all_routes, sources)
    shown = {id(route) for section in sections for _, route in (*section.rows, *section.out)}
    _print_best(plan, shown, out)
    for section in sections:
        _print_section(section, out, plan.dataset.path)
    _print_notes(sections, out)
    cat = plan.catalog
    sources.print(out, "Price sources",
                  f" (catalog {cat.version}: {cat.oldest} … {cat.newest}; ! = not checked against its source for 90"
                  " days)")
    out.footer("--all: every route and instance type · -v: every note, in full · --json, --csv: every figure.")


@dataclasses.dataclass
class _Section:
    """One table of routes: the rows, the routes out (listed with their reasons) and those left out of view."""

    title: str
    columns: tuple[Col, ...]
    rows: list[tuple[int, Route]]
    cells: list[list[str]]
    out: list[tuple[int, Route]]
    hidden: list[Route]
    what: str  # what its routes are called in the line that counts the hidden ones


def _section_key(route: Route) -> tuple[str, str]:
    return route.kind, route.market if route.kind == "cloud" else ""


def _sections(plan: Plan, all_routes: bool, sources: _Footnotes) -> list[_Section]:
    """The tables: each route under its plan number (the number ``ftbroker run --route`` takes, whatever is
    shown), each table's rows, then its routes out."""
    grouped: dict[tuple[str, str], list[Route]] = {key: [] for key in _LAYOUTS}
    for route in plan.routes:  # in the plan's order: feasible by cost first
        grouped.setdefault(_section_key(route), []).append(route)
    best = {id(r) for b in plan.best for r in (b.route, b.versus) if r is not None} | {id(r) for r in plan.passed_over}
    picked = {key: _pick(key[0], routes, best, all_routes) for key, routes in grouped.items() if routes}
    digits = len(str(max((r.number for rows, out in picked.values() for r in (*rows, *out)), default=1)))
    sections = []
    for key, (rows, out) in picked.items():
        title, columns, cells, what = _LAYOUTS.get(key, _LAYOUTS[("local", "")])
        columns = (Col("#".rjust(digits), right=True), *columns[1:])  # one width in every table
        numbered_rows = [(r.number, r) for r in rows]
        numbered_out = [(r.number, r) for r in out]
        chosen = {id(r) for r in (*rows, *out)}
        which = " (the cheapest per model and method)" if not all_routes and key[0] == "cloud" else ""
        if key[0] != "managed" and plan.options.stack != "ftbroker":  # whose figures these are
            which += f" · {plan.options.stack} stack"
        sections.append(_Section(title(plan).replace("{which}", which), columns, numbered_rows,
                                 [cells(n, r, sources) for n, r in numbered_rows], numbered_out,
                                 [r for r in grouped[key] if id(r) not in chosen], what))
    return sections


def _pick(kind: str, routes: Sequence[Route], best: set[int], all_routes: bool) -> tuple[list[Route], list[Route]]:
    """(the routes shown as rows, the routes out listed with their reasons); the rest are counted only: a cloud
    table keeps the cheapest per model and method, so every model planned is in it, and the best routes."""
    feasible = [r for r in routes if r.feasible]
    infeasible = [r for r in routes if not r.feasible]
    if all_routes or kind == "local":
        return feasible, infeasible
    if kind == "managed":
        return [r for i, r in enumerate(feasible) if i < MANAGED_ROWS or id(r) in best], infeasible
    def job(r: Route) -> tuple[str, str]:
        return r.model, r.method

    per_job: Counter[tuple[str, str]] = Counter()
    rows = []
    for r in feasible:
        per_job[job(r)] += 1
        if per_job[job(r)] <= CLOUD_ROWS or id(r) in best:
            rows.append(r)
    # a model and method no instance can train: its first route out says why
    fits = {job(r) for r in feasible}
    first_out: dict[tuple[str, str], Route] = {}
    for r in infeasible:
        first_out.setdefault(job(r), r)
    return rows, [r for j, r in first_out.items() if j not in fits]


def _print_section(section: _Section, out: Out, data_path: str) -> None:
    out.title(section.title)
    if section.rows:
        out.table(section.columns, section.cells)
    if section.hidden:
        out.text(f"{len(section.hidden):,} more {section.what}: {_tally(section.hidden)}. --all shows them.",
                 style="dim")
    if section.out:
        out.console.print("  Not available:", style="bold", highlight=False)
        for numbers, label, reason in _grouped([(n, r, [r.reason]) for n, r in section.out], out.verbose):
            # FILE:LINE of the dataset above as "line N"
            out.text(f"{numbers} {label}: {reason.replace(f'{data_path}:', 'line ')}", lead="   ", hang="      ")
    out.console.print()


def _tally(routes: Sequence[Route]) -> str:
    """"9 dearer (up to $60.00), 9 without a price, 2 not available"."""
    dearer = [r.cost_usd for r in routes if r.feasible and r.cost_usd is not None]
    unpriced = sum(r.feasible and r.cost_usd is None for r in routes)
    out = sum(not r.feasible for r in routes)
    return ", ".join([f"{len(dearer):,} dearer (up to {money(max(dearer))})"] * bool(dearer)
                     + [f"{unpriced:,} without a price"] * bool(unpriced) + [f"{out:,} not available"] * bool(out))


def _grouped(items: Iterable[tuple[int, Route, Sequence[str]]], verbose: bool) -> list[tuple[str, str, str]]:
    """(route numbers, what they are, text) for each text said of several routes, in the order first said;
    texts are compared by their gist unless verbose."""
    groups: dict[str, list[tuple[int, Route]]] = {}
    for n, route, texts in items:
        for text in texts:
            groups.setdefault(text if verbose else gist(text), []).append((n, route))
    return [(_numbers(n for n, _ in members), _label([r for _, r in members]), text)
            for text, members in groups.items()]


def _label(routes: Sequence[Route]) -> str:
    """What a group of routes is, briefly: "openai babbage-002, davinci-002", "bedrock nova-lite, ... and 7 more"."""
    label = " / ".join(dict.fromkeys(r.venue for r in routes))
    names = list(dict.fromkeys(_short_name(r) for r in routes))
    for i, name in enumerate(names):
        if i and len(label) + len(name) + 2 > _LABEL_WIDTH:
            return f"{label} and {len(names) - i} more"
        label += f"{',' if i else ''} {name}"
    return label


_LABEL_WIDTH = 40  # a group's label lists its routes' names up to about this length


def _short_name(route: Route) -> str:
    if route.kind == "managed":
        return route.model if route.method == "sft" else f"{route.model} {_method(route)}"
    return f"{route.model} {route.method}" + (f" on {_gpus(route)}" if route.kind == "cloud" else "")


def _print_notes(sections: Sequence[_Section], out: Out) -> None:
    """Each note once, with the routes it is about: those in the tables (verbose: the routes out too)."""
    numbered = [nr for s in sections for nr in (*s.rows, *(s.out if out.verbose else ()))]
    groups = _grouped([(n, r, (*([r.not_runnable] if r.not_runnable else []), *r.notes)) for n, r in numbered],
                      out.verbose)
    if groups:
        out.title("Notes")
        for numbers, _, text in groups:
            out.text(f"{numbers}: {text}", most=1)
        out.console.print()


# --- the best routes

_BEST_COLUMNS = (Col("", min_width=8), Col("cost", right=True), Col("hours", right=True), Col("#", right=True),
                 Col("route", flex=True, min_width=24, wrap=True), Col("trade", flex=True, min_width=16, wrap=True))


def _print_best(plan: Plan, shown: set[int], out: Out) -> None:
    """The basis every route shares (epochs, stack, budget), the best routes (``Plan.best``: the cost-time front
    the plan trusts) with what each trades, what was passed over and why, and the plan's notes."""
    options = plan.options
    out.title("Best routes", f" on {plan.today}")
    if options.epochs is not None:  # set by the planner (a plan made by hand may lack it)
        basis = f"Every route trains {options.epochs} epoch{'s' if options.epochs != 1 else ''}"
        rule = options.epochs_rule
        out.text(f"{basis} (--epochs)." if rule in ("", "--epochs") else f"{basis}: {rule}; --epochs for another.",
                 most=None)
    limits = ([f"cost at most {money(options.max_cost)}"] if options.max_cost is not None else []) + \
        ([f"done within {options.deadline_hours:g} h"] if options.deadline_hours is not None else [])
    if limits:
        out.text(f"Yours: {' and '.join(limits)} (--max-cost, --deadline).", most=None)
    rows = [[b.label, money(b.route.cost_usd), "-" if b.route.hours is None else f"{_hours(b.route.hours)} h",
             f"#{b.route.number}" if id(b.route) in shown else "", _route_name(b.route), b.trade] for b in plan.best]
    if rows:
        out.table(_BEST_COLUMNS, rows, header=False, indent=2)
    else:
        out.text("none: no available route has a price the plan trusts" + (" within your limits" if limits else ""),
                 most=None)
    if plan.passed_over:
        why = _grouped([(r.number, r, [r.doubt]) for r in plan.passed_over], out.verbose)
        out.text("passed over, the price in doubt: " + "; ".join(f"{n} {text}" for n, _, text in why), style="dim")
    for note in plan.notes:
        out.text(note if out.verbose else gist(note), style="dim")
    out.console.print()


def _route_name(route: Route) -> str:
    """What, on what, where (the kind of route, and so the pricing, is said by the line's label)."""
    if route.kind == "managed":
        return f"{route.model} {_method(route)} · {route.provider}"
    return f"{route.model} {route.method} · {_gpus(route)} · {route.venue} {route.instance_type}".rstrip()


# --- the tables' cells

def _method(route: Route) -> str:
    return route.method if route.objective == "sft" else f"{route.method} ({route.objective})"


def _gpus(route: Route) -> str:
    return f"{route.hardware.count}x{route.hardware.gpu}" if route.hardware else "-"


def _hours(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:.2f}" if hours < 10 else f"{hours:,.0f}"


def _cost_cell(route: Route) -> str:
    return _dollars(route.cost_usd, unknown="?" if not route.price_known or route.kind != "managed" else "-")


def _price_cells(route: Route, sources: _Footnotes) -> list[str]:
    """The price's month and its source's footnote, "!" when older than 90 days (the footnote has the day)."""
    as_of = route.price_as_of
    source = f"{route.price_source} (as of {as_of})" if as_of else route.price_source
    return [as_of.strftime("%Y-%m") if as_of else "-", f"{sources.ref(source)}{'!' if route.stale else ''}"]


def _batch(route: Route) -> str:
    setup = route.breakdown.get("setup") or {}
    if not setup:
        return "-"
    return f"{setup['micro_batch']}x{setup['seq_len']:,}{' ckpt' if setup['grad_checkpointing'] else ''}"


def _vram(route: Route) -> str:
    if route.vram_gib is None:
        return "-"
    return f"{route.vram_gib:.1f}/{route.breakdown.get('gpu_memory_gib', 0):g}"


def _managed_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    return [str(n), route.provider, route.model, _method(route), _count(route.epochs), _compact(route.billed_tokens),
            _cost_cell(route), *_price_cells(route, sources)]


def _local_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    return [str(n), route.model, route.method, _cost_cell(route), _hours(route.hours), _vram(route), _batch(route),
            *_price_cells(route, sources)]


def _cloud_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    per_hour = route.breakdown.get("usd_per_hour")
    return [str(n), f"{route.cloud} {route.instance_type}", _gpus(route), route.model, route.method,
            _cost_cell(route), _hours(route.hours), "-" if per_hour is None else f"{per_hour:.2f}", _vram(route),
            _batch(route), *_price_cells(route, sources)]


_NUMBER = Col("#", right=True)
_PRICE = (Col("as of", optional=True), Col("src"))
_GPU_FIGURES = (Col("cost $", right=True), Col("hours", right=True))
_LAYOUTS: dict[tuple[str, str], tuple[Callable[[Plan], str], tuple[Col, ...], Callable[..., list[str]], str]] = {
    ("managed", ""): (
        lambda plan: "Managed fine-tuning APIs",
        (_NUMBER, Col("provider"), Col("model", flex=True, min_width=14), Col("method"), Col("epochs", right=True),
         Col("tokens", right=True), Col("cost $", right=True), *_PRICE),
        _managed_cells, "managed routes"),
    ("local", ""): (
        lambda plan: (f"Your GPU: {plan.options.gpu_count} x {plan.options.gpu.name} "
                      f"({plan.options.gpu_source or '--gpu'}) · cost: its electricity{{which}}"),
        (_NUMBER, Col("model", flex=True, min_width=12), Col("method"), *_GPU_FIGURES,
         Col("GiB/GPU", right=True), Col("batch", optional=True), *_PRICE),
        _local_cells, "routes on your GPU"),
    ("cloud", "on-demand"): (
        lambda plan: "Cloud GPUs, on-demand{which}",
        (_NUMBER, Col("instance", flex=True, min_width=12), Col("GPUs", flex=True, min_width=6),
         Col("model", flex=True, min_width=12), Col("method"), *_GPU_FIGURES, Col("$/h", right=True, optional=True),
         Col("GiB/GPU", right=True), Col("batch", optional=True), *_PRICE),
        _cloud_cells, "on-demand cloud routes"),
}
_LAYOUTS[("cloud", "spot")] = (
    lambda plan: "Cloud GPUs, spot{which}: may be reclaimed; hours and cost allow for it",
    *_LAYOUTS[("cloud", "on-demand")][1:3], "spot cloud routes")


_CSV_COLUMNS = ("number", "id", "kind", "backend", "runnable", "not_runnable", "provider", "cloud", "region",
                "instance_type", "market", "model", "provider_model", "method", "objective", "gpu", "gpu_count",
                "feasible", "reason", "vram_gib", "hours", "cost_usd", "billed_tokens", "epochs", "price_source",
                "price_as_of", "stale", "doubt", "notes")


def plan_csv(plan: Plan) -> str:
    """One row per route, in the plan's order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for route in plan.routes:
        row = route.to_json()
        hardware = row.pop("hardware") or {}
        row.update(gpu=hardware.get("gpu"), gpu_count=hardware.get("count"), notes="; ".join(row["notes"]))
        writer.writerow("" if row[c] is None else str(row[c]).lower() if isinstance(row[c], bool) else row[c]
                        for c in _CSV_COLUMNS)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- catalog

CATALOG_KINDS = ("gpus", "instances", "managed", "models")


def catalog_json(cat: Catalog, kinds: Iterable[str], today: date) -> dict[str, Any]:
    oldest, newest = cat.as_of_range()
    doc: dict[str, Any] = {"version": cat.version, "files": list(cat.files),
                           "as_of": {"oldest": oldest.isoformat(), "newest": newest.isoformat()},
                           "today": today.isoformat(), "stale_rows": len(cat.stale_rows(today))}
    for kind in kinds:
        doc[kind] = [_row_json(row, today, priced=kind in ("instances", "managed")) for row in _rows(cat, kind)]
    return doc


def _rows(cat: Catalog, kind: str) -> Sequence[Any]:
    return {"gpus": list(cat.gpus.values()), "instances": cat.instances, "managed": cat.managed,
            "models": list(cat.models.values())}[kind]


def _row_json(row: Any, today: date, priced: bool) -> dict[str, Any]:
    doc = jsonable(dataclasses.asdict(row))
    if hasattr(row, "params"):
        doc["params"] = row.params
    doc["age_days"] = (today - row.as_of).days
    doc["stale"] = priced and is_stale(row, today)
    return doc


def print_catalog(cat: Catalog, kinds: Iterable[str], today: date, console: Console) -> None:
    out = Out(console)
    oldest, newest = cat.as_of_range()
    out.title(f"Catalog {cat.version}", f" · as of {oldest} … {newest} · today {today}")
    for name in cat.files:
        out.text(name)
    out.console.print()
    sources = _Footnotes()
    for kind in kinds:
        title, columns, rows = _CATALOG_TABLES[kind](cat, today, sources)
        out.title(title)
        out.table(columns, rows)
        out.console.print()
    sources.print(out, "Sources", " (! = a price not checked against its source for 90 days)")
    stale = cat.stale_rows(today)
    if stale:
        worst = min(stale, key=lambda r: r.verified or r.as_of)
        out.console.print(f"[yellow]warning:[/yellow] {len(stale)} priced row(s) not checked against their source "
                          f"for 90 days (marked !; oldest {worst.verified or worst.as_of}). Prices change: ftbroker "
                          "catalog update refreshes the cloud prices; put others in an override file.", highlight=False)
    out.footer("--json: every field of every row.")


def print_calibration(corrections: Any, console: Console) -> None:
    """``ftbroker catalog calibration``: each GPU, method and stack the user's runs correct, and by how much."""
    from ftbroker.estimate.measured import MAX_FACTOR, PRIOR_RUNS

    out = Out(console)
    out.title("Calibration by your runs", f" · {len(corrections.table)} GPU, method and stack"
              f"{'s' if len(corrections.table) != 1 else ''}")
    rows = [[c.gpu, c.method, c.stack, str(c.memory_runs), _change(c.memory, c.memory_runs), str(c.time_runs),
             _change(c.time, c.time_runs)] for c in corrections.table.values()]
    if rows:
        out.table((Col("GPU", flex=True, min_width=8), Col("method"), Col("stack"), Col("runs", right=True),
                   Col("memory", right=True), Col("runs", right=True), Col("time", right=True)), rows)
    else:
        out.text("none yet: a job run on a GPU (ftbroker run --backend local) adds its measurement when it succeeds")
    out.console.print()
    out.footer(f"Per figure: the median of measured/estimated over your runs, shrunk toward 1 as if {PRIOR_RUNS} more "
               f"runs had matched the estimate, within 1/{MAX_FACTOR:g}x-{MAX_FACTOR:g}x. Runs on the CPU or on "
               "another card than the one estimated for do not count. --json: every figure.")


def _change(factor: float, runs: int) -> str:
    return f"{(factor - 1) * 100:+.0f}%" if runs else "-"


def print_catalog_update(updates: Sequence[Any], written: Sequence[Any], console: Console) -> None:
    """What ``ftbroker catalog update`` read and changed: a line per cloud, then every changed price."""
    out = Out(console)
    out.title("Catalog update", " · SkyPilot's published catalogs (github.com/skypilot-org/skypilot-catalog)")
    rows = []
    for u in updates:
        f, counts = u.fetched, u.counts()
        left = "; ".join(f"{n} {why}" for why, n in sorted(u.skipped.items()))
        out.text(f"{f.cloud}: {len(u.rows)} GPU instance types from @{f.commit[:8]} ({f.day}): {counts['new']} new, "
                 f"{counts['price']} price changes, {counts['unchanged']} unchanged, {counts['gone']} no longer "
                 f"listed (kept, stale 90 days after their last check)" + (f"; left out: {left}" if left else ""))
        for c in u.changes:
            if c.what != "unchanged":
                rows.append([c.cloud, c.instance_type, c.gpus, c.what, _price_move(*c.on_demand),
                             _price_move(*c.spot)])
    if rows:
        out.console.print()
        out.table((Col("cloud"), Col("instance", flex=True, min_width=12), Col("GPUs", flex=True, min_width=8),
                   Col("change"), Col("on-demand $/h", right=True), Col("spot $/h", right=True)), rows)
    out.console.print()
    for path in written:  # whole, for copying
        out.console.print(f"  wrote {path}", soft_wrap=True, highlight=False)
    out.footer("ftbroker catalog show --kind instances: the prices in force.")


def _price_move(before: Decimal | None, after: Decimal | None) -> str:
    if before is None and after is None:
        return "-"
    if before is None or after is None:
        return f"{_rate(before)} → {_rate(after)}"
    change = f" ({(after / before - 1) * 100:+.0f}%)" if before != after else ""
    return f"{_rate(before)} → {_rate(after)}{change}"


_CatalogRows = tuple[str, tuple[Col, ...], list[list[str]]]
_AS_OF = (Col("as of"), Col("src"))


def _as_of(row: Any, today: date, sources: _Footnotes, priced: bool = True) -> list[str]:
    return [str(row.as_of), f"{sources.ref(row.source)}{'!' if priced and is_stale(row, today) else ''}"]


def _gpus_table(cat: Catalog, today: date, sources: _Footnotes) -> _CatalogRows:
    columns = (Col("name", flex=True, min_width=10), Col("aliases", flex=True, min_width=6, optional=True),
               Col("GiB", right=True), Col("TFLOPS", right=True), Col("GB/s", right=True), Col("W", right=True),
               Col("bf16"), *_AS_OF)
    rows = []
    for g in cat.gpus.values():
        tflops = g.bf16_tflops or g.fp16_tflops
        rows.append([g.name, ", ".join(g.aliases), f"{g.memory_gib:g}",
                     "-" if tflops is None else f"{tflops:g}" + ("" if g.bf16_tflops else " fp16"),
                     f"{g.bandwidth_gbps:g}", "-" if g.tdp_w is None else f"{g.tdp_w:g}",
                     "yes" if g.supports_bf16 else "no", *_as_of(g, today, sources, priced=False)])
    return f"GPUs ({len(cat.gpus)})", columns, rows


def _instances_table(cat: Catalog, today: date, sources: _Footnotes) -> _CatalogRows:
    columns = (Col("cloud"), Col("instance", flex=True, min_width=12), Col("GPUs", flex=True, min_width=8),
               Col("on-demand $/h", right=True), Col("spot $/h", right=True),
               Col("region", flex=True, min_width=8, optional=True), *_AS_OF,
               Col("note", flex=True, min_width=12, optional=True))
    rows = [[i.cloud, i.instance_type, f"{i.gpu_count}x{i.gpu}",
             _rate(i.on_demand_usd_per_hour), _rate(i.spot_usd_per_hour), i.region or "-",
             *_as_of(i, today, sources), i.note] for i in cat.instances]
    return f"Cloud GPU instances ({len(cat.instances)})", columns, rows


def _managed_table(cat: Catalog, today: date, sources: _Footnotes) -> _CatalogRows:
    columns = (Col("provider"), Col("model / tier", flex=True, min_width=12), Col("method"),
               Col("$/1M tok", right=True), Col("min $", right=True), Col("epochs", right=True),
               Col("new jobs until", optional=True), Col("end of life", optional=True), *_AS_OF)
    rows = []
    for o in cat.managed:
        price = (f"{o.usd_per_m_tokens:g}" if o.usd_per_m_tokens is not None
                 else f"{o.usd_per_hour:g}/h" if o.usd_per_hour is not None else "unknown")
        epochs = (str(o.default_epochs) if o.default_epochs else "auto" if o.auto_epochs else "-")
        method = o.method if o.objective == "sft" else f"{o.method} ({o.objective})"
        rows.append([o.provider, o.label + (" *" if o.secondary else ""), method, price,
                     f"{o.min_charge_usd:g}" if o.min_charge_usd else "-", epochs, str(o.available_until or "-"),
                     str(o.end_of_life or "-"), *_as_of(o, today, sources)])
    return f"Managed fine-tuning offers ({len(cat.managed)}; * = price from a secondary source)", columns, rows


def _models_table(cat: Catalog, today: date, sources: _Footnotes) -> _CatalogRows:
    columns = (Col("name", flex=True, min_width=12), Col("params B", right=True),
               Col("experts", right=True, optional=True), Col("layers", right=True), Col("hidden", right=True),
               Col("heads/kv", right=True), Col("vocab", right=True), Col("context", right=True, optional=True),
               Col("family"), Col("hf repo", flex=True, min_width=12, optional=True))
    rows = [[m.name, f"{m.params / 1e9:.2f}", f"{m.experts_per_token}/{m.num_experts}" if m.num_experts else "-",
             str(m.num_layers), str(m.hidden_size), f"{m.num_heads}/{m.num_kv_heads}", f"{m.vocab_size:,}",
             f"{m.max_position_embeddings:,}", m.tokenizer_family, m.hf_repo or ""] for m in cat.models.values()]
    return f"Model architectures ({len(cat.models)})", columns, rows


def _rate(usd_per_hour: Decimal | None) -> str:
    """$/h in a column: cents, or three figures under a dollar."""
    if usd_per_hour is None:
        return "-"
    return f"{usd_per_hour:,.2f}" if usd_per_hour >= 1 else f"{usd_per_hour:.3g}"


_CATALOG_TABLES: dict[str, Callable[[Catalog, date, _Footnotes], _CatalogRows]] = {
    "gpus": _gpus_table, "instances": _instances_table, "managed": _managed_table, "models": _models_table}
