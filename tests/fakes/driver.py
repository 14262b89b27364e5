"""Drive a backend the way the Broker does (record, submit, poll to the end) against a real Ledger.

For the providers' own tests, which must not depend on the Broker's pacing; the contract suite drives the
real Broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftbroker.jobs import Event, Job
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec


#: backend_options that make a managed backend quick under test (no real waiting, short timeouts)
FAST = {"poll_interval_s": 0.01, "retry_initial_s": 0.001, "retry_max_s": 0.01, "request_timeout_s": 0.5,
        "max_retries": 0}


def write_chat(path: Path, n: int = 12, start: int = 0) -> Path:
    """A small chat dataset: ``n`` single-turn arithmetic examples."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                              {"role": "assistant", "content": str(2 * i)}]}) + "\n")
    return path


class LedgerTracker:
    """The Tracker protocol over a ledger: every remembered handle is written at once."""

    def __init__(self, ledger: Ledger, job_id: str):
        self.ledger, self.job_id = ledger, job_id

    def remember(self, **remote: str) -> None:
        self.ledger.update(self.job_id, remote=remote)

    def event(self, message: str, *, kind: str = "log", level: str = "info",
              data: Mapping[str, Any] | None = None) -> None:
        self.ledger.update(self.job_id, events=[Event(time=datetime.now(UTC), kind=kind, level=level,
                                                      message=message, data=dict(data or {}))])


def submit(backend: Any, ledger: Ledger, spec: JobSpec) -> Job:
    job = ledger.create(spec)
    sub = backend.submit(job, LedgerTracker(ledger, job.id))
    return ledger.update(job.id, status=sub.status, detail=sub.detail, remote=sub.remote, submitted=True)


def follow(backend: Any, ledger: Ledger, job: Job, *, max_polls: int = 200,
           between: Callable[[], None] = lambda: None) -> Job:
    """Poll until the job ends; record each update as the Broker does."""
    for _ in range(max_polls):
        if job.status.terminal:
            return job
        between()
        update = backend.poll(job)
        job = ledger.update(job.id, status=update.status, detail=update.detail, remote=update.remote,
                            cursor=update.cursor, progress=update.progress, error=update.error,
                            trained_tokens=update.trained_tokens, actual_cost_usd=update.actual_cost_usd,
                            output_model=update.output_model, events=update.events, metrics=update.metrics)
    raise AssertionError(f"job {job.id} still {job.status} after {max_polls} polls")
