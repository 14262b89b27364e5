"""The report a person opens: one self-contained HTML file for a job (``job_html``) or a plan (``plan_html``).

Pure: each takes plain data (the JSON shapes ``ftbroker status --json``, ``eval --json`` and ``plan --json`` print,
gathered by ``ftbroker.reporting``) and returns the page as text; it reads no file, ledger or clock. The page needs
nothing but itself: its CSS is inline, its charts inline SVG (``ftbroker.svg``), it has no script and names no
font, image or stylesheet elsewhere, so it opens offline, by mail, from a phone, and prints. Every text that came
from the user or a provider (job and dataset names, model ids, notes) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import PurePath
from typing import Any

from ftbroker import svg

# the plan's sections, as ftbroker.chart draws them: (kind, market) -> (label, marker, colour)
PLAN_KINDS = {("managed", None): ("managed API", "square", "#7b3294"), ("local", None): ("your GPU", "star", "#d7191c"),
              ("cloud", "on-demand"): ("cloud on-demand", "circle", "#2c7bb6"),
              ("cloud", "spot"): ("cloud spot", "triangle", "#1a9641")}
UNTIMED_GAP = 2.5  # as in ftbroker.chart: routes without hours sit this many times right of the slowest timed one
SHORTLIST = 5  # the cheapest available routes shown per section
EVAL_LABELS = {"exact_match": "exact match", "token_f1": "token F1", "length_ratio": "length / reference",
               "json_valid": "valid JSON", "schema_valid": "matches --schema", "tool_call": "tool-call shape"}
LOSSES = (("train_loss", "train loss", svg.PALETTE[0]), ("eval_loss", "eval loss", svg.PALETTE[1]))

CSS = """
:root{--ink:#1b1b1b;--muted:#5b5b5b;--line:#d9d9d9;--band:#f5f5f5}
*{box-sizing:border-box}
body{margin:0 auto;max-width:60rem;padding:1rem;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink)}
h1{font-size:1.45rem;margin:.2rem 0 .4rem;overflow-wrap:anywhere}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}
p,li{overflow-wrap:anywhere}.muted,.source{color:var(--muted);font-size:.85rem}
p.source::before{content:"Source: ";font-weight:600}ul.source{padding-left:1.2rem}
.table{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.3rem .45rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--band)}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.id{overflow-wrap:anywhere;display:inline-block;min-width:10rem}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.5rem;margin:.6rem 0}
.facts div{background:var(--band);border-radius:.4rem;padding:.45rem .6rem}
.facts b{display:block;font-size:1.05rem;overflow-wrap:anywhere}.facts div>span{color:var(--muted);font-size:.8rem}
figure{margin:0}svg.chart{width:100%;height:auto;display:block;max-width:42rem}
svg .plot{fill:#fff;stroke:#999}svg .grid{stroke:#e6e6e6}svg .rule{stroke-dasharray:5 4;stroke-width:1.2}
svg text{font:14px system-ui,sans-serif;fill:#333}svg .title{font-size:15px;font-weight:600}
svg .axis{font-size:15px}svg .note{font-size:13px}
.legend{list-style:none;padding:0;margin:.3rem 0;display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.85rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:.15rem;margin-right:.35rem;vertical-align:-.1rem}
.bad{color:#b00020;font-weight:600}.good{color:#1a7f37}
footer{margin-top:2rem;border-top:1px solid var(--line);padding-top:.5rem}
@media (max-width:36rem){body{padding:.6rem;font-size:14px}th,td{padding:.25rem .3rem}}
@media print{body{max-width:none;padding:0;font-size:10pt}section,figure,table{break-inside:avoid}
h2{break-after:avoid}.table{overflow:visible}a{color:inherit;text-decoration:none}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


# --- small pieces ------------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape(str(value)) if value is not None else "-"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return "under $0.0001" if 0 < value < 0.0001 else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _num(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}{unit}"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 3600:.0f} s" if value < 1 / 60 else f"{value * 60:.1f} min" if value < 1 else f"{value:.2f} h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _page(title: str, body: Sequence[str], generated: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # nothing but this file may load or run: no script, no request (a second guard; the first is escaping)
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body)
            + f'<footer class="muted">Written by ftbroker on {_e(generated)}. This file is the whole report: it '
              "loads nothing and needs no network.</footer></body></html>\n")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """``rows`` are already escaped HTML cells; columns listed in ``numeric`` align right."""
    cls = [' class="num"' if i in numeric else "" for i in range(len(head))]
    top = "".join(f"<th{cls[i]}>{escape(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls[i]}>{c}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table></div>'


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="facts">' + "".join(f"<div><b>{value}</b><span>{escape(name)}</span></div>"
                                           for name, value in items) + "</div>"


def _source(text: str) -> str:
    return f'<p class="source">{escape(text)}</p>'


def _figure(chart: str, legend: str, source: str) -> str:
    return f"<figure>{chart}{legend}{_source(source)}</figure>"


# --- a job -------------------------------------------------------------------------------------------------------

def job_html(data: Mapping[str, Any]) -> str:
    """The report of one job. ``data``: ``job`` (as ``ftbroker status --json``), ``metrics`` (``step``, ``name``,
    ``value``), ``metrics_source``, ``measured_on`` (the card the trainer ran on), ``history`` (``time``,
    ``status``, ``detail``), ``evaluation`` (as ``ftbroker eval --json``, or None) with ``evaluation_source``,
    ``ledger`` (its path) and ``generated`` (when)."""
    job = data["job"]
    name = job["spec"].get("name") or job["id"]
    body = [(f"<header><h1>{_e(name)}</h1><p class=\"muted\">ftbroker job {_e(job['id'])}: {_e(job['method'])} "
             f"fine-tune of {_e(job['model'])} on {_e(job['backend'])}</p></header>"),
            _job_facts(job), _losses(data), _estimates(job, data.get("measured_on"), data["ledger"])]
    if data.get("evaluation"):
        body.append(_evaluation(data["evaluation"], data["evaluation_source"]))
    body.append(_history(data.get("history") or (), data["ledger"]))
    return _page(f"ftbroker report: {name}", body, data["generated"])


def _job_facts(job: Mapping[str, Any]) -> str:
    spec = job["spec"]
    status = f'<span class="{"bad" if job["status"] in ("failed", "cancelled") else "good"}">{_e(job["status"])}</span>'
    items = [("status", status), ("dataset", _e(PurePath(spec["dataset"]).name)),
             ("trained tokens", _e(f"{job['trained_tokens']:,}" if job.get("trained_tokens") else None))]
    if spec.get("validation"):
        items.insert(2, ("validation", _e(PurePath(spec["validation"]).name)))
    out = _facts(items)
    if job.get("output_model"):
        out += f"<p>Output model: <code>{_e(job['output_model'])}</code></p>"
    if job.get("error"):
        out += f'<p class="bad">error: {_e(job["error"])}</p>'
    return out


def _losses(data: Mapping[str, Any]) -> str:
    series = []
    for key, label, colour in LOSSES:
        points = sorted((p["step"], p["value"]) for p in data["metrics"] if p["name"] == key
                        and math.isfinite(p["value"]))
        if points:
            series.append(svg.Series(label, points, colour, marker="circle" if key == "eval_loss" else "none",
                                     tips=[f"{label} at step {s}: {v:.4g}" for s, v in points]))
    head = "<section><h2>Loss</h2>"
    if not series:
        return head + "<p>No loss was reported for this job.</p>" + _source(data["metrics_source"]) + "</section>"
    chart = svg.plot(series, svg.Axes("step", "loss"), title="loss by step",
                     label="loss curves: " + ", ".join(s.name for s in series))
    return head + _figure(chart, svg.legend(series), data["metrics_source"]) + "</section>"


def _estimates(job: Mapping[str, Any], measured_on: str | None, ledger: str) -> str:
    """Each figure the quote estimated beside what was measured, each marked with where it came from. Hardware
    figures are compared (measured / estimated) only when measured on the card they were estimated for
    (``measured_on``: the catalog's name of the card the trainer ran on, "the CPU", or None when unknown)."""
    res = job.get("resources") or {}
    gpu = res.get("estimated_gpu")
    stack = f", stack {res['stack']}" if res.get("stack") else ""
    sources = {"quote": f"the estimate{f' for {gpu}' if gpu else ''}{stack} the quote made at submission (the "
                        f"ledger's jobs.resources and jobs.estimated_cost_usd of {job['id']}, {ledger})",
               "trainer": f"measured by the trainer (its result.json, kept in jobs.resources of {job['id']})",
               "ledger": f"the ledger's start and end of {job['id']} (started_at, finished_at)",
               "backend": f"reported by {job['backend']} (jobs.actual_cost_usd)"}
    apart = (f"measured on {measured_on}, estimated for {gpu}: not comparable"
             if gpu and measured_on and measured_on != gpu else None)
    reserved = res.get("measured_peak_vram_reserved_gib")
    actual = job.get("actual_cost_usd")
    compared = [
        _compare("peak VRAM, allocated", res.get("estimated_allocated_gib"), _allocated(res), _gib, apart),
        _compare("peak VRAM, whole card", res.get("estimated_peak_vram_gib"),
                 (reserved, "trainer", "reserved by PyTorch" if reserved is not None else ""), _gib,
                 "not divided: the estimate counts the CUDA context, PyTorch's reserved memory does not"),
        _compare("throughput", res.get("estimated_tokens_per_s"), (res.get("measured_tokens_per_s"), "trainer", ""),
                 _rate, apart),
        _compare("training time", res.get("estimated_hours"), _elapsed(job, res), _hours, apart),
        _compare("cost", job.get("estimated_cost_usd"), (actual, "backend", "") if actual is not None else
                 (None, "", "no charge reported" if job["backend"] == "local" else ""), _usd, None)]
    compared = [(row, tags) for row, tags in compared if tags]  # a figure nobody estimated or measured: no row
    if not compared:
        return ""
    used = sorted(set().union(*(tags for _, tags in compared)))
    table = _table(("figure", "estimated", "measured", "measured / estimated"), [row for row, _ in compared],
                   numeric=(1, 2, 3))
    notes = "".join(f"<li>[{tag}] {escape(sources[tag])}</li>" for tag in used)
    return f'<section><h2>Estimated and measured</h2>{table}<ul class="source">{notes}</ul></section>'


def _gib(value: float | None) -> str:
    return _num(value, " GiB")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} tokens/s" if value >= 100 else f"{value:.3g} tokens/s"


def _allocated(res: Mapping[str, Any]) -> tuple[float | None, str, str]:
    """(the peak VRAM allocated, its source's tag, a note): what the estimator's ``allocated`` predicts."""
    if "measured_peak_rss_gib" in res:  # a CPU run: the process's memory, not VRAM
        return None, "trainer", f"ran on the CPU: peak memory {res['measured_peak_rss_gib']:.3g} GiB (RSS)"
    return res.get("measured_peak_vram_allocated_gib"), "trainer", ""


def _elapsed(job: Mapping[str, Any], res: Mapping[str, Any]) -> tuple[float | None, str, str]:
    if isinstance(res.get("measured_train_seconds"), int | float):
        return res["measured_train_seconds"] / 3600, "trainer", "training alone"
    if job.get("started_at") and job.get("finished_at"):
        took = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        return took.total_seconds() / 3600, "ledger", "start to end, wall-clock"
    return None, "", ""


def _compare(figure: str, estimated: Any, measured: tuple[Any, str, str], fmt,
             apart: str | None) -> tuple[list[str], set[str]]:
    """(a row of cells, the tags of the sources it shows). ``apart``: why the two are not to be divided."""
    value, tag, note = measured
    est = float(estimated) if isinstance(estimated, int | float) else None
    value = float(value) if isinstance(value, int | float) else None
    ratio = (escape(apart) if apart and est is not None and value is not None
             else f"{value / est:.2f}x" if est and value is not None else "-")
    tags = ({"quote"} if est is not None else set()) | ({tag} if tag and (value is not None or note) else set())
    est_cell = fmt(est) + (' <span class="muted">[quote]</span>' if est is not None else "")
    shown = fmt(value) + (f' <span class="muted">[{tag}]</span>' if tag and value is not None else "") + (
        f'<br><span class="muted">{escape(note)}</span>' if note else "")
    return [escape(figure), est_cell, shown, ratio], tags


def _evaluation(ev: Mapping[str, Any], source: str) -> str:
    rows, categories, base, tuned = [], [], [], []
    for metric, values in ev["overall"].items():
        percent = metric != "length_ratio"
        show = _pct if percent else (lambda v: _num(v, "", 3))
        change = (values["tuned"] - values["base"]) if None not in (values["base"], values["tuned"]) else None
        rows.append([_e(EVAL_LABELS.get(metric, metric)), show(values["base"]), show(values["tuned"]),
                     "-" if change is None else f"{change:+.1%}" if percent else f"{change:+.3g}"])
        if percent:
            categories.append(EVAL_LABELS.get(metric, metric))
            base.append((len(base), values["base"]))
            tuned.append((len(tuned), values["tuned"]))
    cap = ev.get("capability")
    if cap:
        cls = "bad" if cap["regression"] else ""
        rows.append([f'<span class="{cls}">general capability ({cap["items"]} items)</span>', _pct(cap["base"]),
                     _pct(cap["tuned"]), f'<span class="{cls}">{cap["tuned"] - cap["base"]:+.1%}</span>'])
        categories.append("general capability")
        base.append((len(base), cap["base"]))
        tuned.append((len(tuned), cap["tuned"]))
    groups = [svg.Series("base", base, svg.PALETTE[5]), svg.Series("fine-tuned", tuned, svg.PALETTE[2])]
    chart = svg.bars(categories, groups, title=f"{ev['examples']} held-out examples", y_label="score",
                     label="evaluation scores, base beside fine-tuned") if categories else ""
    lines = [(f"<p>{ev['examples']} held-out examples from {_e(ev['held_out'])}; base {_e(ev['base_model'])}, "
              f"fine-tuned {_e(ev['tuned_model'])}.</p>"),
             _table(("score", "base", "fine-tuned", "change"), rows, numeric=(1, 2, 3)),
             _figure(chart, svg.legend(groups), source) if chart else _source(source)]
    lines += [f"<p>{line}</p>" for line in _eval_lines(ev)]
    return "<section><h2>Evaluation</h2>" + "".join(lines) + "</section>"


def _eval_lines(ev: Mapping[str, Any]) -> list[str]:
    out = []
    w = ev.get("win_rate")
    if w and w.get("rate") is not None:
        interval = (f" (95% CI {w['ci_low']:.1%}-{w['ci_high']:.1%})" if w.get("ci_low") is not None else "")
        out.append(f"Win rate of the fine-tuned model: {w['rate']:.1%}{interval} over {w['judged']} pairs, judged by "
                   f"{_e(w['judge'])}.")
    c = ev["costs"]
    out.append(f"Cost of the evaluation: {_usd(c['total_usd']) if c['total_usd'] is not None else 'unknown'} "
               f"({c['calls']} calls, {c['cached_calls']} from the cache).")
    out += [f'<span class="{"bad" if n.startswith("REGRESSION") else "muted"}">note: {_e(n)}</span>'
            for n in ev.get("notes") or ()]
    return out


def _history(history: Sequence[Mapping[str, Any]], ledger: str) -> str:
    if not history:
        return ""
    rows = [[_e(h["time"]), _e(h["status"]), _e(h.get("detail"))] for h in history]
    return ("<section><h2>Timeline</h2>" + _table(("time (UTC)", "status", "detail"), rows)
            + _source(f"the ledger's status history ({ledger})") + "</section>")


# --- a plan ------------------------------------------------------------------------------------------------------

def plan_html(plan: Mapping[str, Any], *, source: str, generated: str) -> str:
    """The report of a plan (as ``ftbroker plan --json`` writes it); ``source`` names the file it was read from."""
    dataset = plan["dataset"]
    name = PurePath(dataset["path"]).name
    body = [(f"<header><h1>Plan for {_e(name)}</h1><p class=\"muted\">Priced on {_e(plan['today'])}, "
             f"{_e(plan['options'].get('epochs'))} epochs on every route; from {_e(source)}</p></header>"),
            _plan_facts(plan), _plan_chart(plan), _best(plan), _shortlists(plan), _plan_sources(plan)]
    return _page(f"ftbroker plan: {name}", body, generated)


def _plan_facts(plan: Mapping[str, Any]) -> str:
    dataset, routes = plan["dataset"], plan["routes"]
    tokens = dataset.get("tokens") or {}
    options = plan["options"]
    items = [("examples", _e(f"{dataset['examples']:,}")), ("format", _e(dataset.get("format"))),
             ("tokens (estimate)", _e(f"{tokens['total']:,}" if tokens.get("total") else None)),
             ("routes priced", _e(sum(1 for r in routes if r.get("cost_usd") is not None))),
             ("available", _e(sum(1 for r in routes if r.get("feasible")))),
             ("budget", _usd(options.get("max_cost"))), ("deadline", _hours(options.get("deadline_hours")))]
    return _facts(items)


def _kind(route: Mapping[str, Any]) -> tuple[str, str | None]:
    return route["kind"], route.get("market") if route["kind"] == "cloud" else None


def _plan_chart(plan: Mapping[str, Any]) -> str:
    """Cost against hours of every priced available route, the best routes joined as their front, the budget and
    deadline: the data of ``plan --chart``, drawn as SVG."""
    routes = [r for r in plan["routes"] if r.get("feasible") and r.get("cost_usd")]
    if not routes:
        return "<section><h2>Cost and time</h2><p>No available route has a price.</p></section>"
    timed = [r["hours"] for r in routes if r.get("hours")]
    strip = max(timed, default=1.0) * UNTIMED_GAP
    series = _route_series(plan, routes, strip)
    rules = _limits(plan["options"])
    if len(timed) < len(routes):
        rules.insert(0, svg.Rule("x", strip / UNTIMED_GAP ** 0.5, "time not published →", "#888888"))
    chart = svg.plot(series, svg.Axes("hours (wall-clock)", "cost (USD)", log_x=True, log_y=True, rules=rules),
                     title=f"{len(routes)} priced routes (hollow: price in doubt)",
                     label="cost against hours of every priced route, with the best routes")
    catalog = plan["catalog"]
    source = (f"the plan's routes (cost_usd, hours, doubt) and best routes; prices from catalog {catalog['version']} "
              f"(rows as of {catalog['as_of']['oldest']} to {catalog['as_of']['newest']}), each route's own source "
              "in the tables below")
    return "<section><h2>Cost and time</h2>" + _figure(chart, svg.legend(series), source) + "</section>"


def _route_series(plan: Mapping[str, Any], routes: Sequence[Mapping[str, Any]], strip: float) -> list[svg.Series]:
    """A series of points per kind of route (those without hours in the strip at ``strip``), then the front."""
    series = []
    for key, (label, marker, colour) in PLAN_KINDS.items():
        mine = [r for r in routes if _kind(r) == key]
        if mine:
            series.append(svg.Series(label, [(r.get("hours") or strip, r["cost_usd"]) for r in mine], colour,
                                     line=False, marker=marker, hollow=[bool(r.get("doubt")) for r in mine],
                                     tips=[_tip(r) for r in mine]))
    numbers = {r["number"]: r for r in plan["routes"]}
    front = [numbers[b["number"]] for b in plan.get("best") or () if numbers[b["number"]].get("hours")]
    if front:
        series.append(svg.Series("best routes (the front the plan trusts)",
                                 [(r["hours"], r["cost_usd"]) for r in front], "#000000", hollow=[True] * len(front),
                                 tips=[f"best: {_tip(r)}" for r in front]))
    return series


def _limits(options: Mapping[str, Any]) -> list[svg.Rule]:
    rules = []
    if options.get("max_cost"):
        rules.append(svg.Rule("y", options["max_cost"], f"your budget ${options['max_cost']:,.2f}"))
    if options.get("deadline_hours"):
        rules.append(svg.Rule("x", options["deadline_hours"], f"your deadline {options['deadline_hours']:g} h",
                              "#e08000"))
    return rules


def _tip(route: Mapping[str, Any]) -> str:
    hours = _hours(route.get("hours")) if route.get("hours") else "time not published"
    return f"#{route['number']} {route['id']}: {_usd(route.get('cost_usd'))}, {hours}"


def _route_row(route: Mapping[str, Any], first: str) -> list[str]:
    stale = ' <span class="bad">(stale)</span>' if route.get("stale") else ""
    return [first, f"#{route['number']}", f'<span class="id">{_e(route["id"])}</span>', _usd(route.get("cost_usd")),
            _hours(route.get("hours")), _num(route.get("vram_gib"), " GiB"),
            f'<span class="muted">{_e(route.get("price_source"))}, as of {_e(route.get("price_as_of"))}</span>{stale}']


ROUTE_HEAD = ("", "#", "route", "cost", "hours", "peak VRAM", "price source")


def _best(plan: Mapping[str, Any]) -> str:
    numbers = {r["number"]: r for r in plan["routes"]}
    rows = [_route_row(numbers[b["number"]], f"<b>{_e(b['label'])}</b><br>"
                       f'<span class="muted">{_e(b["trade"])}</span>') for b in plan.get("best") or ()]
    if not rows:
        return "<section><h2>Best routes</h2><p>No route is both available and trusted.</p></section>"
    return ("<section><h2>Best routes</h2>" + _table(ROUTE_HEAD, rows, numeric=(3, 4, 5))
            + _source("the plan's best routes: the cheapest, the fastest and the knees between among the routes "
                      "whose price the plan trusts") + "</section>")


def _shortlists(plan: Mapping[str, Any]) -> str:
    out = ["<section><h2>The cheapest routes of each kind</h2>"]
    for key, (label, _, _) in PLAN_KINDS.items():
        mine = [r for r in plan["routes"] if _kind(r) == key and r.get("feasible") and r.get("cost_usd") is not None]
        if mine:
            mine.sort(key=lambda r: r["cost_usd"])
            out.append(f"<h3>{escape(label)}</h3>"
                       + _table(ROUTE_HEAD, [_route_row(r, "") for r in mine[:SHORTLIST]], numeric=(3, 4, 5))
                       + (f'<p class="muted">and {len(mine) - SHORTLIST} more</p>' if len(mine) > SHORTLIST else ""))
    return "".join(out) + "</section>"


def _plan_sources(plan: Mapping[str, Any]) -> str:
    catalog = plan["catalog"]
    items = [(f"Catalog {_e(catalog['version'])}: {_e(', '.join(catalog['files']))}; rows as of "
              f"{_e(catalog['as_of']['oldest'])} to {_e(catalog['as_of']['newest'])}; {_e(catalog['stale_rows'])} "
              "priced rows not checked against their source for 90 days.")]
    items += [f"Dataset {_e(f.get('path'))} ({role}, {f.get('size_bytes', 0):,} bytes as read)"
              for role, f in (plan.get("files") or {}).items()]
    items += [_e(note) for note in plan.get("notes") or ()]
    return "<section><h2>Sources and notes</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul></section>"
