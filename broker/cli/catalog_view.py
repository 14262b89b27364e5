"""How the catalog looks: ``ftbroker catalog show`` (a table per kind of row, with each row's source and age),
``catalog calibration`` and ``catalog update``; and the catalog's JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ftbroker.cli.layout import Footnotes, Out
from ftbroker.cli.tables import Col
from ftbroker.pricing.catalog import Catalog, is_stale
from ftbroker.routes import jsonable

if TYPE_CHECKING:
    from rich.console import Console


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
    sources = Footnotes()
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


def _as_of(row: Any, today: date, sources: Footnotes, priced: bool = True) -> list[str]:
    return [str(row.as_of), f"{sources.ref(row.source)}{'!' if priced and is_stale(row, today) else ''}"]


def _gpus_table(cat: Catalog, today: date, sources: Footnotes) -> _CatalogRows:
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


def _instances_table(cat: Catalog, today: date, sources: Footnotes) -> _CatalogRows:
    columns = (Col("cloud"), Col("instance", flex=True, min_width=12), Col("GPUs", flex=True, min_width=8),
               Col("on-demand $/h", right=True), Col("spot $/h", right=True),
               Col("region", flex=True, min_width=8, optional=True), *_AS_OF,
               Col("note", flex=True, min_width=12, optional=True))
    rows = [[i.cloud, i.instance_type, f"{i.gpu_count}x{i.gpu}",
             _rate(i.on_demand_usd_per_hour), _rate(i.spot_usd_per_hour), i.region or "-",
             *_as_of(i, today, sources), i.note] for i in cat.instances]
    return f"Cloud GPU instances ({len(cat.instances)})", columns, rows


def _managed_table(cat: Catalog, today: date, sources: Footnotes) -> _CatalogRows:
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


def _models_table(cat: Catalog, today: date, sources: Footnotes) -> _CatalogRows:
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


_CATALOG_TABLES: dict[str, Callable[[Catalog, date, Footnotes], _CatalogRows]] = {
    "gpus": _gpus_table, "instances": _instances_table, "managed": _managed_table, "models": _models_table}
