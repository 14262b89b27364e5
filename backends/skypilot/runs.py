"""What the SkyPilot backend reads back: SkyPilot's status words as ours, the trainer's events out of the logs
SkyPilot streams, money from runtime, and what ``ftbroker gc`` may tear down. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ftbroker.backends.local.outputs import EVENT_LINE_PREFIX
from ftbroker.jobs import Job, JobStatus

# A job's status on its cluster (sky.JobStatus, sky/skylet/job_lib.py). SETTING_UP is running: the GPUs are paid.
CLUSTER_JOB_STATUS = {
    "INIT": JobStatus.QUEUED, "PENDING": JobStatus.QUEUED, "SETTING_UP": JobStatus.RUNNING,
    "RUNNING": JobStatus.RUNNING, "SUCCEEDED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
    "FAILED_SETUP": JobStatus.FAILED, "FAILED_DRIVER": JobStatus.FAILED, "CANCELLED": JobStatus.CANCELLED,
}
# A managed job's status (sky.jobs.ManagedJobStatus, sky/jobs/state.py). STARTING provisions the first cluster;
# RECOVERING replaces a preempted one (the job goes on).
MANAGED_JOB_STATUS = {
    "PENDING": JobStatus.QUEUED, "SUBMITTED": JobStatus.QUEUED, "STARTING": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING, "RECOVERING": JobStatus.RUNNING, "WINDING_DOWN": JobStatus.RUNNING,
    "CANCELLING": JobStatus.RUNNING, "SUCCEEDED": JobStatus.SUCCEEDED, "CANCELLED": JobStatus.CANCELLED,
    "FAILED": JobStatus.FAILED, "FAILED_SETUP": JobStatus.FAILED, "FAILED_PRECHECKS": JobStatus.FAILED,
    "FAILED_NO_RESOURCE": JobStatus.FAILED, "FAILED_CONTROLLER": JobStatus.FAILED,
}
JOB_ID = re.compile(r"^ftb-[a-z2-9]{8}$")  # the ledger's ids (ftbroker.ledger ID_PREFIX, alphabet, length)
CAP_MESSAGE = "ftbroker: runtime cap reached"  # what run.sh prints when it stops the trainer for good
_MONEY = Decimal("0.0001")


def status_of(word: str | None, table: Mapping[str, JobStatus]) -> JobStatus:
    """Ours for SkyPilot's ``word``; an unknown word is a job still going (the word shows as the detail)."""
    return table.get(word or "", JobStatus.RUNNING)


def trainer_events(log: str, after: str | None) -> list[dict[str, Any]]:
    """The trainer's events in SkyPilot's log text (lines carrying ``EVENT_LINE_PREFIX``, whatever SkyPilot puts
    before it), those later than ``after`` (an event time: a recovered job's log starts again)."""
    found = []
    for line in log.splitlines():
        at = line.find(EVENT_LINE_PREFIX)
        if at < 0:
            continue
        try:
            event = json.loads(line[at + len(EVENT_LINE_PREFIX):])
        except ValueError:
            continue
        if isinstance(event, dict) and (after is None or str(event.get("time", "")) > after):
            found.append(event)
    return found


def log_error(log: str, events: list[dict[str, Any]]) -> str | None:
    """Why a job failed, from what it printed: the runtime cap, else the trainer's error event."""
    if CAP_MESSAGE in log:
        return next(line[line.find(CAP_MESSAGE):] for line in log.splitlines() if CAP_MESSAGE in line)
    errors = [e for e in events if e.get("kind") == "error"]
    return str(errors[-1].get("message")) if errors else None


def runtime_cost(seconds: float, usd_per_hour: Decimal, nodes: int) -> Decimal:
    """Billed runtime x the instance price x the nodes (per-second billing)."""
    return (Decimal(str(seconds)) / 3600 * usd_per_hour * nodes).quantize(_MONEY, rounding=ROUND_HALF_UP)


def why_left_over(job_id: str, job: Job | None, *, mine: bool | None, cap_s: float | None,
                  running_s: float | None) -> tuple[str | None, str]:
    """(why it should go, why it stays) for a cluster or managed job of ``job_id``. ``mine``: its ledger label
    is this ledger's (None: not readable, e.g. a cluster still provisioning).

    It goes when its job ended, runs past its hard runtime cap, or is unknown to the ledger that launched it.
    Another ledger's job stays: that ledger may still be following it, and its own cap and autodown bound it."""
    if job is None:
        if mine is None:
            return None, f"job {job_id} is unknown here and its ledger label unreadable yet (provisioning)"
        if not mine:
            return None, f"job {job_id} is another ledger's (its runtime cap and autodown apply)"
        return f"no job {job_id} in this ledger (it launched it, then lost the record)", ""
    if job.status.terminal:
        ended = f" at {job.finished_at:%Y-%m-%d %H:%M}" if job.finished_at else ""
        return f"job {job_id} {job.status.value}{ended}, but SkyPilot still has it", ""
    if cap_s is not None and running_s is not None and running_s > cap_s:
        return f"job {job_id} has run {running_s / 3600:.2f} h, past its hard cap of {cap_s / 3600:.2f} h", ""
    return None, f"job {job_id} is {job.status.value} on it"


JobLookup = Callable[[str], Job | None]
