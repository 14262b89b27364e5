"""``ftbroker report``: a job or a plan as one HTML file a person opens (``ftbroker.report_html`` draws it).

This is the I/O around the renderer: it reads the job, its curves, status history and latest evaluation from the
ledger (never from the provider: a report is written offline, and says what the ledger knew), or a plan from the
file ``plan --json`` wrote (or the last plan ``ftbroker plan`` kept), and writes the page. From Python::

    ftbroker.report("ftb-3k", "report.html")              # a job (an id or a unique prefix)
    ftbroker.report(plan=ftbroker.plan("data.jsonl"), output="plan.html")  # a plan, or plan="plan.json"

The SDK's ``ftbroker.report``; the command ``ftbroker report`` (``ftbroker.cli.report``) calls it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftbroker.ledger import Ledger
    from ftbroker.planner import Plan

LAST_PLAN = ""  # --plan given without a file: the last plan


def report(job: str | None = None, output: str | os.PathLike | None = None, *,
           plan: Plan | Mapping[str, Any] | str | os.PathLike | None = None, home: str | os.PathLike | None = None,
           ) -> Path:
    """Write the report of ``job`` (an id or a unique prefix), or of ``plan`` (a ``Plan``, its JSON, a file ``plan
    --json`` wrote, or ``""`` for the last plan), to ``output`` (default ``JOB.html`` or ``plan.html``); returns the
    path written. ``home``: the FTBROKER_HOME to read (default: the environment's)."""
    from ftbroker import clock
    from ftbroker.errors import InputError
    from ftbroker.ledger import LEDGER_NAME, Ledger, default_home
    from ftbroker.report_html import job_html, plan_html

    if (job is None) == (plan is None):
        raise InputError("a report is of a job (JOB) or of a plan (--plan PLAN.json), one of the two")
    where = Path(home) if home is not None else default_home()
    generated = clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if job is not None:
        with Ledger(where / LEDGER_NAME) as ledger:
            data = job_data(ledger, job)
        page, default = job_html({**data, "generated": generated}), f"{data['job']['id']}.html"
    else:
        doc, source = plan_data(plan, where)
        try:
            page, default = plan_html(doc, source=source, generated=generated), "plan.html"
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # hand-made, or from another version
            raise InputError(f"{source}: not a plan this ftbroker wrote ({type(exc).__name__}: {exc}); plan again "
                             "with `ftbroker plan DATA --json`") from exc
    return write_page(page, Path(output) if output is not None else Path(default))


def job_data(ledger: Ledger, ref: str) -> dict[str, Any]:
    """What the job report shows, as plain data: the job, its curves, its status history, its latest evaluation."""
    from ftbroker.evaluation.store import latest_evaluation

    job = ledger.get(ref)
    metrics = [p.model_dump() for p in ledger.metrics(job.id)]
    evaluation = latest_evaluation(ledger, job.id)
    data = {"job": job.to_json(), "metrics": metrics, "metrics_source": _metrics_source(job, ledger, len(metrics)),
            "history": [{"time": t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), "status": s.value, "detail": d}
                        for t, s, d in ledger.history(job.id)],
            "measured_on": _measured_on(job.resources), "ledger": str(ledger.path), "evaluation": None}
    if evaluation is not None:
        data["evaluation"] = evaluation.model_dump(mode="json")
        data["evaluation_source"] = (f"ftbroker eval {evaluation.id} of {evaluation.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
                                     f"the ledger's evaluations table ({ledger.path})")
    return data


def _measured_on(resources: Mapping[str, Any]) -> str | None:
    """The catalog's name of the card the trainer measured on (torch names it as nvidia-smi does), "the CPU", or
    None when it measured nothing."""
    from ftbroker.errors import FtBrokerError
    from ftbroker.pricing.catalog import load_catalog

    card = resources.get("measured_gpu")
    if isinstance(card, str):
        try:
            return load_catalog().gpu(card).name
        except FtBrokerError:  # a card the catalog does not know (or a catalog that does not load): its own name
            return card
    return "the CPU" if "measured_peak_rss_gib" in resources else None


def _metrics_source(job, ledger: Ledger, points: int) -> str:
    kept = f"{points} points in the ledger's metrics table ({ledger.path})"
    if job.backend == "local":
        run_dir = job.remote.get("run_dir") or "the run folder"
        return f"the trainer's progress and eval events ({run_dir}/events.jsonl), {kept}"
    theirs = job.remote.get("job_id")  # a managed backend's handle on its job
    return f"the curves {job.backend} reported" + (f" for its job {theirs}" if theirs else "") + f", {kept}"


def plan_data(plan: Any, home: Path) -> tuple[dict[str, Any], str]:
    """(the plan's JSON, where it came from)."""
    from ftbroker.planner import Plan
    from ftbroker.route_jobs import load_plan

    if isinstance(plan, Plan):
        return plan.to_json(), "ftbroker.plan()"
    if isinstance(plan, Mapping):
        return dict(plan), "a plan's JSON"
    return load_plan(None if plan == LAST_PLAN else plan, home)


def write_page(page: str, path: Path) -> Path:
    """Write ``page`` to ``path`` whole or not at all (a half-written report never replaces a good one)."""
    from ftbroker.errors import InputError

    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{path}: the report cannot be written ({exc.strerror or exc})") from exc
    return path
