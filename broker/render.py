"""How plans and catalogs look: rich tables for people, CSV and JSON for programs.

Pure formatting: every function takes the objects and a stream or console; nothing here decides a number.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ftbroker.planner import Plan, Route, jsonable
from ftbroker.pricing.catalog import Catalog, is_stale

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

MAX_SHOWN_ISSUES = 5


def to_json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def money(value: Decimal | None, unknown: str = "-") -> str:
    if value is None:
        return unknown
    if 0 < value < Decimal("0.01"):
        return "<$0.01"
    return f"${value:,.2f}"


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


class _Footnotes:
    """Long source strings shown once, below a table, and referred to as [1], [2] in it."""

    def __init__(self) -> None:
        self.sources: dict[str, int] = {}

    def ref(self, source: str) -> str:
        return f"[{self.sources.setdefault(source, len(self.sources) + 1)}]" if source else ""

    def print(self, console: Console, title: str = "Sources") -> None:
        if self.sources:
            console.print(f"[bold]{title}[/bold]")
            for source, n in self.sources.items():
                console.print(f"  [{n}] {source}", highlight=False, markup=False)


def _table(title: str, columns: Sequence[str], wide: Mapping[str, int] | None = None) -> Table:
    """A plain table; the ``wide`` columns fold long values (down to the given width), the others do not wrap."""
    from rich import box
    from rich.table import Table

    wide = wide or {}
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name not in wide, min_width=wide.get(name),
                         justify="right" if name in _NUMERIC else "left")
    return table


_NUMERIC = {"epochs", "tokens", "cost", "total", "trained", "mean", "p95", "max", "GiB", "TFLOPS", "GB/s",
            "GiB/GPU", "hours", "$/h",
            "W", "on-demand $/h", "spot $/h", "$/1M tok", "min $", "params B", "layers", "hidden", "vocab", "context",
            "#"}


# ---------------------------------------------------------------------------------------------- plan

def print_plan(plan: Plan, console: Console, *, all_routes: bool = False) -> None:
    """The dataset, then the routes: every managed and local one; of the cloud ones, unless ``all_routes``, the
    CLOUD_ROWS cheapest feasible per model, method and GPU class (the JSON and CSV keep every route)."""
    _print_dataset(plan.dataset, "Dataset", console)
    if plan.validation is not None:
        _print_dataset(plan.validation, "Validation set", console)
    _print_routes(plan, console, all_routes)


def _print_dataset(report: Any, title: str, console: Console) -> None:
    console.print(f"[bold]{title}[/bold] {report.path}", highlight=False)
    line = f"  {report.format} · {report.examples:,} examples · {report.size_bytes:,} bytes"
    if report.messages_per_example is not None:
        m = report.messages_per_example
        line += f" · {m.min:g}-{m.max:g} messages per example (mean {m.mean:.1f})"
    console.print(line, highlight=False)
    if report.tokens:
        table = _table("", ("tokenizer", "exact", "total", "trained", "mean", "p95", "max", "over limit"),
                       wide={"tokenizer": 12})
        for stats in report.tokens.values():
            s = stats.per_example
            over = f"{stats.over_limit:,} over {stats.limit:,}" if stats.limit else "-"
            table.add_row(stats.tokenizer, "yes" if stats.exact else "estimate", _compact(stats.total),
                          _compact(stats.trained), _compact(s.mean), _compact(s.p95), _compact(s.max), over)
        console.print(table)
    _print_issues("errors", report.errors, console, style="red")
    _print_issues("warnings", report.warnings, console, style="yellow")
    for advice in report.advice:
        console.print(f"  [cyan]advice:[/cyan] {advice.message} ({advice.reason}); {advice.suggestion}",
                      highlight=False)
    console.print()


def _print_issues(label: str, issues: Sequence[Any], console: Console, style: str) -> None:
    if not issues:
        return
    console.print(f"  [{style}]{label} ({len(issues):,}):[/{style}]")
    for issue in issues[:MAX_SHOWN_ISSUES]:
        console.print(f"    {issue}", highlight=False, markup=False)
    if len(issues) > MAX_SHOWN_ISSUES:
        console.print(f"    ... and {len(issues) - MAX_SHOWN_ISSUES:,} more", highlight=False)


CLOUD_ROWS = 3  # cloud rows shown per model, method and GPU class (datacenter / workstation) without --all


def _print_routes(plan: Plan, console: Console, all_routes: bool) -> None:
    cat = plan.catalog
    console.print(f"[bold]Routes[/bold] on {plan.today} · catalog {cat.version} · prices as of {cat.oldest} … "
                  f"{cat.newest} (! = older than 90 days)", highlight=False)
    shown = plan.routes if all_routes else _shown_routes(plan)
    sources = _Footnotes()
    numbered: list[tuple[int, Route]] = []
    for kind, title, columns, wide in _ROUTE_TABLES:
        routes = [r for r in shown if r.kind == kind]
        routes = [r for r in routes if r.feasible] + [r for r in routes if not r.feasible]
        if not routes:
            continue
        table = _table(title(plan, routes), columns, wide)
        for route in routes:
            n = len(numbered) + 1
            if not route.feasible and (n == 1 or numbered[-1][1].feasible) and routes[0].feasible:
                table.add_section()
            numbered.append((n, route))
            table.add_row(*_ROUTE_CELLS[kind](n, route, sources), style=None if route.feasible else "dim")
        console.print(table)
    hidden = len(plan.routes) - len(shown)
    if hidden:
        console.print(f"  {hidden:,} more cloud routes (dearer, or out) are in --json and --csv; --all shows "
                      f"them here and adds every instance type", highlight=False)
    console.print("[bold]Notes[/bold] (# route)")
    for note in plan.notes:
        console.print(f"   -  {note}", highlight=False, markup=False)
    for n, route in numbered:
        lines = ([f"OUT: {route.reason}"] if not route.feasible else []) + list(route.notes)
        for line in lines:
            console.print(f"  {n:>2}  {line}", highlight=False, markup=False)
    sources.print(console, "Price sources")
    cheapest, fastest = plan.cheapest, plan.fastest
    console.print(f"[bold]Cheapest:[/bold] {_route_name(cheapest)} {money(cheapest.cost_usd)}" if cheapest
                  else "[bold]Cheapest:[/bold] no feasible route has a price", highlight=False)
    console.print(f"[bold]Fastest:[/bold] {_route_name(fastest)} {_hours(fastest.hours)} h "
                  f"{money(fastest.cost_usd, unknown='(cost unknown)')}" if fastest
                  else "[bold]Fastest:[/bold] no route has a time estimate (managed APIs publish none)",
                  highlight=False)


def _shown_routes(plan: Plan) -> list[Route]:
    """Every managed and local route; the cheapest feasible cloud ones per model, method and GPU class; and the
    plan's cheapest and fastest wherever they are."""
    per_group: dict[tuple, int] = {}
    keep = {id(plan.cheapest), id(plan.fastest)}
    shown = []
    for route in plan.routes:  # in the plan's order: feasible by cost first
        if route.kind == "cloud":
            group = (route.model, route.method, route.breakdown.get("gpu_class"))
            per_group[group] = per_group.get(group, 0) + 1
            if id(route) not in keep and (not route.feasible or per_group[group] > CLOUD_ROWS):
                continue
        shown.append(route)
    return shown


def _route_name(route: Route) -> str:
    if route.kind == "managed":
        return f"{route.backend} · {route.model} · {_method(route)}"
    where = route.backend if route.kind == "local" else f"{route.backend} {route.instance} ({route.pricing})"
    return f"{where} · {_gpus(route)} · {route.model} · {route.method}"


def _method(route: Route) -> str:
    return route.method if route.objective == "sft" else f"{route.method} ({route.objective})"


def _gpus(route: Route) -> str:
    return f"{route.hardware.count}x{route.hardware.gpu}" if route.hardware else "-"


def _hours(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:.2f}" if hours < 10 else f"{hours:,.0f}"


def _as_of_cell(route: Route, sources: _Footnotes) -> str:
    return f"{route.price_as_of or '-'}{' !' if route.stale else ''} {sources.ref(route.price_source)}"


def _cost_cell(route: Route) -> str:
    unknown = "unknown" if not route.price_known or (route.kind != "managed" and route.feasible) else "-"
    cost = money(route.cost_usd, unknown=unknown)
    return cost if route.feasible else f"({cost})"


def _managed_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    return [str(n), route.backend, route.model, _method(route), _count(route.epochs), _compact(route.billed_tokens),
            _cost_cell(route), _as_of_cell(route, sources)]


def _batch(route: Route) -> str:
    setup = route.breakdown.get("setup") or {}
    return f"{setup['micro_batch']}x{setup['seq_len']:,}{' ckpt' if setup['grad_checkpointing'] else ''}"


def _vram(route: Route) -> str:
    return f"{route.vram_gib:.1f}/{route.breakdown['gpu_memory_gib']:g}"


def _local_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    return [str(n), route.model, route.method, _cost_cell(route), _hours(route.hours), _batch(route), _vram(route),
            _source_cell(route, sources)]


def _source_cell(route: Route, sources: _Footnotes) -> str:
    return f"{sources.ref(f'{route.price_source} (as of {route.price_as_of})')}{' !' if route.stale else ''}"


def _cloud_cells(n: int, route: Route, sources: _Footnotes) -> list[str]:
    price = f"{route.breakdown['usd_per_hour']:.2f}{' spot' if route.pricing == 'spot' else ''}"
    return [str(n), f"{route.backend} {route.instance}", _gpus(route), route.model, route.method, _cost_cell(route),
            _hours(route.hours), price, _batch(route), _vram(route), _source_cell(route, sources)]


def _local_title(plan: Plan, routes: Sequence[Route]) -> str:
    gpu = plan.options
    return f"Your GPU: {gpu.gpu_count} x {gpu.gpu.name} ({gpu.gpu_source or '--gpu'}); cost: its electricity"


_ROUTE_TABLES = (
    ("managed", lambda plan, routes: "Managed fine-tuning APIs",
     ("#", "backend", "model", "method", "epochs", "tokens", "cost", "price as of"),
     {"model": 12, "price as of": 10, "method": 4}),
    ("local", _local_title, ("#", "model", "method", "cost", "hours", "batch", "GiB/GPU", "src"),
     {"model": 10, "batch": 5}),
    ("cloud", lambda plan, routes: "Cloud GPUs: the local trainer on a rented instance (src: price source, ! = "
                                   "older than 90 days)",
     ("#", "cloud instance", "GPUs", "model", "method", "cost", "hours", "$/h", "batch", "GiB/GPU", "src"),
     {"cloud instance": 10, "GPUs": 6, "$/h": 4, "model": 8, "batch": 5}),
)
_ROUTE_CELLS = {"managed": _managed_cells, "local": _local_cells, "cloud": _cloud_cells}


_CSV_COLUMNS = ("id", "kind", "backend", "model", "provider_model", "method", "objective", "gpu", "gpu_count",
                "instance", "pricing", "feasible", "reason", "vram_gib", "hours", "cost_usd", "billed_tokens",
                "epochs", "price_source", "price_as_of", "stale", "notes")


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
    doc["stale"] = priced and is_stale(row.as_of, today)
    return doc


def print_catalog(cat: Catalog, kinds: Iterable[str], today: date, console: Console) -> None:
    oldest, newest = cat.as_of_range()
    console.print(f"[bold]Catalog {cat.version}[/bold] · as of {oldest} … {newest} · today {today}",
                  highlight=False)
    for name in cat.files:
        console.print(f"  {name}", highlight=False, markup=False)
    notes = _Footnotes()
    for kind in kinds:
        table = _CATALOG_TABLES[kind](cat, today, notes)
        console.print(table)
    notes.print(console)
    stale = cat.stale_rows(today)
    if stale:
        worst = min(stale, key=lambda r: r.as_of)
        console.print(f"[yellow]warning:[/yellow] {len(stale)} priced row(s) are older than 90 days (marked !; oldest "
                      f"{worst.as_of}). Prices change: check them, and put newer ones in an override file.",
                      highlight=False)


def _gpus_table(cat: Catalog, today: date, notes: _Footnotes) -> Table:
    table = _table(f"GPUs ({len(cat.gpus)})", ("name", "aliases", "GiB", "TFLOPS", "GB/s", "W", "bf16", "as of"),
                   wide={"aliases": 12, "as of": 10})
    for g in cat.gpus.values():
        tflops = g.bf16_tflops or g.fp16_tflops
        table.add_row(g.name, ", ".join(g.aliases), f"{g.memory_gib:g}",
                      "-" if tflops is None else f"{tflops:g}" + ("" if g.bf16_tflops else " fp16"),
                      f"{g.bandwidth_gbps:g}", "-" if g.tdp_w is None else f"{g.tdp_w:g}",
                      "yes" if g.supports_bf16 else "no", f"{g.as_of} {notes.ref(g.source)}")
    return table


def _instances_table(cat: Catalog, today: date, notes: _Footnotes) -> Table:
    table = _table(f"Cloud GPU instances ({len(cat.instances)})",
                   ("cloud", "instance", "GPUs", "on-demand $/h", "spot $/h", "region", "as of", "note"),
                   wide={"instance": 12, "GPUs": 8, "region": 8, "as of": 10, "note": 16})
    for i in cat.instances:
        spot = "-" if i.spot_usd_per_hour is None else f"{i.spot_usd_per_hour:g}"
        table.add_row(i.cloud, i.instance_type, f"{i.gpu_count} x {i.gpu}",
                      "-" if i.on_demand_usd_per_hour is None else f"{i.on_demand_usd_per_hour:g}", spot, i.region,
                      _as_of(i.as_of, today, notes.ref(i.source)), i.note)
    return table


def _managed_table(cat: Catalog, today: date, notes: _Footnotes) -> Table:
    table = _table(f"Managed fine-tuning offers ({len(cat.managed)})",
                   ("provider", "model / tier", "method", "$/1M tok", "min $", "epochs", "open until", "as of"),
                   wide={"model / tier": 14, "open until": 10, "as of": 10})
    for o in cat.managed:
        price = (f"{o.usd_per_m_tokens:g}" if o.usd_per_m_tokens is not None
                 else f"{o.usd_per_hour:g}/h" if o.usd_per_hour is not None else "unknown")
        epochs = (str(o.default_epochs) if o.default_epochs else "auto" if o.auto_epochs else "-")
        ends = [f"new jobs {o.available_until}" if o.available_until else "",
                f"EOL {o.end_of_life}" if o.end_of_life else ""]
        method = o.method if o.objective == "sft" else f"{o.method} ({o.objective})"
        table.add_row(o.provider, o.label + (" *" if o.secondary else ""), method, price,
                      f"{o.min_charge_usd:g}" if o.min_charge_usd else "-", epochs,
                      "\n".join(e for e in ends if e) or "-", _as_of(o.as_of, today, notes.ref(o.source)))
    return table


def _models_table(cat: Catalog, today: date, notes: _Footnotes) -> Table:
    table = _table(f"Model architectures ({len(cat.models)})",
                   ("name", "params B", "layers", "hidden", "heads/kv", "vocab", "context", "family", "hf repo"),
                   wide={"name": 12, "params B": 8, "hf repo": 12})
    for m in cat.models.values():
        experts = f" MoE {m.experts_per_token}/{m.num_experts}" if m.num_experts else ""
        table.add_row(m.name, f"{m.params / 1e9:.2f}{experts}", str(m.num_layers), str(m.hidden_size),
                      f"{m.num_heads}/{m.num_kv_heads}", f"{m.vocab_size:,}", f"{m.max_position_embeddings:,}",
                      m.tokenizer_family, m.hf_repo or "")
    return table


def _as_of(as_of: date, today: date, ref: str) -> str:
    return f"{as_of}{' !' if is_stale(as_of, today) else ''} {ref}"


_CATALOG_TABLES = {"gpus": _gpus_table, "instances": _instances_table, "managed": _managed_table,
                   "models": _models_table}
