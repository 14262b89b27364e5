"""How a plan looks: rich tables for people, CSV for programs (its JSON is ``Plan.to_json``).

Tables fit the terminal (``ftbroker.cli.tables``), one line per row; what fitting cut or left out is said at the
end. Texts (notes, reasons, sources) are grouped, said once with the route numbers they are about, and held to a
line or two unless ``verbose``; JSON and CSV keep everything.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ftbroker.cli.dataset_view import print_dataset
from ftbroker.cli.hints import worded
from ftbroker.cli.layout import Footnotes, Out, compact, count, dollars, money
from ftbroker.cli.tables import Col
from ftbroker.planner import Plan
from ftbroker.routes import AS_ASKED, Route

if TYPE_CHECKING:
    from rich.console import Console

MANAGED_ROWS = 10  # managed routes in the table without --all: the cheapest (the rest are counted below it)
CLOUD_ROWS = 1  # cloud routes per model and method (per method for the default models) in each pricing's table


def print_plan(plan: Plan, console: Console, *, all_routes: bool = False, verbose: bool = False) -> None:
    """The dataset; the best routes; a table per kind of route (managed APIs, your GPU, cloud on-demand, cloud
    spot), each with what is not available and why; the notes, grouped; the price sources.

    Without ``all_routes`` the tables hold the MANAGED_ROWS cheapest managed routes and the CLOUD_ROWS cheapest
    cloud ones per model and method (per method for the planner's default models), with the best routes wherever
    they are, and count the rest (the JSON and CSV keep every route). ``verbose``: every note of every numbered
    route, and every text in full.
    """
    out = Out(console, verbose)
    print_dataset(plan.dataset, "Dataset", out)
    if plan.validation is not None:
        print_dataset(plan.validation, "Validation set", out)
    sources = Footnotes()
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


def _sections(plan: Plan, all_routes: bool, sources: Footnotes) -> list[_Section]:
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
    said = [(n, r, (*([r.not_runnable] if r.not_runnable else []), *map(worded, r.notes))) for n, r in numbered]
    groups = _grouped(said, out.verbose)
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
        out.text(f"{basis} (--epochs)." if rule in ("", AS_ASKED) else f"{basis}: {rule}; --epochs for another.",
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
    for note in map(worded, plan.notes):
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
    return dollars(route.cost_usd, unknown="?" if not route.price_known or route.kind != "managed" else "-")


def _price_cells(route: Route, sources: Footnotes) -> list[str]:
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


def _managed_cells(n: int, route: Route, sources: Footnotes) -> list[str]:
    return [str(n), route.provider, route.model, _method(route), count(route.epochs), compact(route.billed_tokens),
            _cost_cell(route), *_price_cells(route, sources)]


def _local_cells(n: int, route: Route, sources: Footnotes) -> list[str]:
    return [str(n), route.model, route.method, _cost_cell(route), _hours(route.hours), _vram(route), _batch(route),
            *_price_cells(route, sources)]


def _cloud_cells(n: int, route: Route, sources: Footnotes) -> list[str]:
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

