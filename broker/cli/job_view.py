"""How jobs look: the job commands' tables, the live display of a followed job, and the JSON of what only the CLI
prints (events, artifacts, ``gc``'s leftovers; a job's and a result's are their records' ``to_json``).

JSON is the contract scripts read (money as numbers, times as ISO 8601 strings); the rich views are for people
and go to stderr while a job is followed, so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftbroker import clock, progress
from ftbroker.backends.base import Leftover
from ftbroker.broker import Prepared
from ftbroker.cli.hints import RUN_HINTS, worded
from ftbroker.cli.tables import Col, Fitted
from ftbroker.jobs import TRACKER_PREFIX, Artifact, Event, Job, Result


def _number(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def event_json(seq: int, event: Event) -> dict[str, Any]:
    return {"seq": seq, **event.model_dump(mode="json")}


def artifact_json(artifact: Artifact) -> dict[str, Any]:
    return artifact.model_dump(mode="json")


def _money(value: Decimal | None) -> str:
    return f"${value:.2f}" if value is not None else "-"


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def jobs_table(jobs: Sequence[Job], scores: Mapping[str, Any] | None = None) -> Fitted:
    """One line per job, fitted to the terminal: the id is never cut (it is what the other commands take). ``scores``:
    the latest evaluation of each job (``ftbroker.evaluation.store.latest_scores``)."""
    columns = (Col("id"), Col("backend"), Col("model", flex=True, min_width=12), Col("method"),
               Col("status", flex=True, min_width=9), Col("created", optional=True), Col("est $", right=True),
               Col("actual $", right=True), Col("eval F1", right=True, optional=True))
    rows = []
    for job in jobs:
        status = job.status.value + ("" if job.submitted_at or job.status.terminal else " (not submitted)")
        rows.append([job.id, job.backend, job.model, job.spec.method, status, _when(job.created_at),
                     _money(job.estimated_cost_usd).removeprefix("$"), _money(job.actual_cost_usd).removeprefix("$"),
                     _score((scores or {}).get(job.id))])
    return Fitted(columns, rows)


def _score(score: Any) -> str:
    """The fine-tuned model's token F1 and its change over the base; '!' after a general-capability regression."""
    if score is None or score.tuned is None:
        return "-"
    change = f" ({score.tuned - score.base:+.2f})" if score.base is not None else ""
    return f"{score.tuned:.2f}{change}" + ("!" if score.regression else "")


def progress_text(job: Job) -> str:
    p = job.progress
    if p is None:
        return ""
    parts = []
    if p.step is not None:
        parts.append(f"step {p.step}" + (f"/{p.total_steps}" if p.total_steps else ""))
    if p.epoch is not None:
        parts.append(f"epoch {p.epoch:.2f}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if p.eval_loss is not None:
        parts.append(f"eval loss {p.eval_loss:.4f}")
    if p.tokens_per_s is not None:
        parts.append(f"{p.tokens_per_s:,.0f} tok/s")
    if p.eta_s is not None:
        parts.append(f"ETA {_duration(p.eta_s)}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _grid(rows: Sequence[tuple[str, object]]) -> Table:
    """A two-column label / value view."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text(str(value)))
    return table


def job_details(job: Job) -> Table:
    status = job.status.value + (f" ({job.status_detail})" if job.status_detail else "")
    if job.submitted_at is None and not job.status.terminal:
        status += f" - recorded, not submitted: `ftbroker resume {job.id}` submits it"
    rows = [("id", job.id), ("status", status), ("backend", job.backend), ("model", job.model),
            ("method", job.spec.method), ("dataset", job.spec.dataset), ("created", _when(job.created_at)),
            ("started", _when(job.started_at)), ("finished", _when(job.finished_at)),
            ("progress", progress_text(job) or "-"),
            ("cost est/actual", f"{_money(job.estimated_cost_usd)} / {_money(job.actual_cost_usd)}")]
    rows += [(f"remote {k}", v) for k, v in sorted(job.remote.items()) if v and not k.startswith(TRACKER_PREFIX)]
    rows += [(f"tracker {name}", where) for name, where in sorted(job.trackers.items())]
    if job.output_model:
        rows.append(("output model", job.output_model))
    if job.error:
        rows.append(("error", job.error))
    return _grid(rows)


def result_details(result: Result) -> Table:
    last = {m.name: m for m in result.metrics}  # metrics come sorted by name, then step
    rows = [("id", result.id), ("status", result.status.value), ("backend", result.backend),
            ("model", result.model), ("output model", result.output_model or "-"),
            ("trained tokens", f"{result.trained_tokens:,}" if result.trained_tokens is not None else "-"),
            ("cost est/actual", f"{_money(result.estimated_cost_usd)} / {_money(result.actual_cost_usd)}")]
    rows += [(f"final {name}", f"{m.value:.4f} (step {m.step})") for name, m in sorted(last.items())]
    rows += [(a.kind, a.uri) for a in result.artifacts]
    if result.error:
        rows.append(("error", result.error))
    return _grid(rows)


def quote_summary(prepared: Prepared) -> Table:
    spec, quote = prepared.spec, prepared.quote
    rows = [("backend", spec.backend), ("model", spec.model), ("method", spec.method),
            ("dataset", f"{spec.dataset} ({getattr(prepared.dataset, 'examples', '?')} examples)"),
            ("hardware", quote.hardware or "managed"),
            ("peak VRAM", f"{quote.peak_vram_gib:.1f} GiB per GPU" if quote.peak_vram_gib is not None else "-"),
            ("time", _duration(quote.hours * 3600) if quote.hours is not None else "-"),
            ("cost", _money(quote.cost_usd) + (f" (up to {_money(quote.cost_high_usd)})"
                                               if quote.cost_high_usd is not None else "")),
            ("budget", _money(spec.budget.max_cost_usd))]
    rows += [("note", worded(w, RUN_HINTS)) for w in quote.warnings]
    if quote.reason:
        rows.append(("warning", quote.reason))
    return _grid(rows)


def event_line(event: Event) -> Text:
    style = {"error": "red", "warning": "yellow"}.get(event.level, "")
    stamp = event.time.astimezone().strftime("%H:%M:%S")
    return Text(f"{stamp} {event.kind:<10} {event.message}", style=style)


def cost_so_far(job: Job) -> str:
    """What a running job has cost: the provider's figure once there is one, else the estimate in proportion to
    the steps done (``~``), against the whole estimate."""
    if job.actual_cost_usd is not None:
        return _money(job.actual_cost_usd)
    p, estimate = job.progress, job.estimated_cost_usd
    if estimate is None:
        return ""
    if p is None or not p.step or not p.total_steps:
        return f"est. {_money(estimate)}"
    return f"~{_money(estimate * Decimal(min(p.step, p.total_steps)) / p.total_steps)} of {_money(estimate)}"


class FollowView:
    """While a job is followed, its line among the command's progress (``ftbroker.progress``, drawn by
    ``progress_view`` on a terminal, beside a result's download): status, the steps' bar, loss, elapsed time, ETA
    and cost so far. Each change of status is also printed, so it stays in the scrollback (and in a log file, where
    nothing is drawn). Used as ``Broker.follow``'s ``on_update``."""

    def __init__(self, console: Console):
        self.console = console
        self._view = progress.current()
        self._shown: contextlib.AbstractContextManager | None = None
        self._task = None
        self._last_status = None

    def __enter__(self) -> FollowView:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._shown is not None:
            self._shown.__exit__(*exc_info)

    def __call__(self, job: Job, update) -> None:
        self._draw(job)
        if job.status is not self._last_status:
            line = Text(f"{job.id} {job.status.value}", style="bold")
            if job.progress:
                line.append(f"  {progress_text(job)}")
            self.console.print(line)
            self._last_status = job.status

    def _draw(self, job: Job) -> None:
        if self._shown is None:
            self._shown = self._view.task(job.id, unit="steps")
            self._task = self._shown.__enter__()
        p = job.progress
        since = job.started_at or job.submitted_at
        self._task.update(description=f"{job.id} {job.status.value}", completed=p.step if p else None,
                          total=p.total_steps if p else None,
                          eta=_duration(p.eta_s) if p is not None and p.eta_s is not None else None,
                          loss=f"{p.loss:.4f}" if p is not None and p.loss is not None else None,
                          elapsed=_duration((clock.now() - since).total_seconds()) if since else None,
                          cost=cost_so_far(job))


def leftovers_json(rows: Sequence[tuple[Leftover, str | None]], *, applied: bool) -> dict[str, Any]:
    return {"applied": applied, "leftovers": [
        {"backend": lo.backend, "resource": lo.resource, "description": lo.description, "job_id": lo.job_id,
         "reason": lo.reason, "note": lo.note or None, "cost_usd": _number(lo.cost_usd), "action": done}
        for lo, done in rows]}


def leftovers_view(rows: Sequence[tuple[Leftover, str | None]], *, applied: bool) -> Table | str:
    """What ``ftbroker gc`` found: each resource, why it goes (or stays), what it cost, what was done."""
    if not rows:
        return "nothing left running"
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("backend", "resource", "what", "job", "cost", "why", "done"):
        table.add_column(name)
    for lo, done in rows:
        action = done or (f"would {lo.verb} (--yes)" if lo.reason else "kept")
        table.add_row(lo.backend, lo.resource, lo.description, lo.job_id or "-", _money(lo.cost_usd),
                      lo.reason or lo.note, action)
    going = [lo for lo, _ in rows if lo.reason]
    cost = sum((lo.cost_usd or Decimal(0) for lo in going), Decimal(0))
    failed = sum(1 for lo, done in rows if lo.reason and done and done.startswith("failed"))
    verb = f"stopped{f' ({failed} failed)' if failed else ''}" if applied else "to stop (dry run: --yes stops them)"
    table.caption = f"{len(going)} {verb}; they had cost {_money(cost)} so far"
    return table
