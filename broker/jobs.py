"""The normalized records every backend reports in: Job, JobStatus, Event, MetricPoint, Progress, Result.

Whatever the route (local trainer, OpenAI, Together, Bedrock, ...), a job is described by these
records; the provider's own record is kept verbatim in ``raw`` so nothing is lost in translation.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftbroker.spec import JobSpec


class JobStatus(StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricPoint(_Record):
    """One point of a training curve: ``name`` is ``train_loss``, ``eval_loss``, ``train_accuracy``, ..."""

    step: int
    name: str
    value: float
    epoch: float | None = None
    tokens_seen: int | None = None


class Event(_Record):
    """Something that happened to a job: a status change, a log line, a checkpoint, a warning."""

    time: datetime
    kind: str  # "status", "log", "metrics", "checkpoint", "warning", "error"
    message: str
    level: str = "info"  # "info", "warning", "error"
    data: dict[str, Any] = Field(default_factory=dict)


class Artifact(_Record):
    """Something a job produced: an adapter folder, a merged model, a provider model id, a file."""

    kind: str  # "adapter", "merged_model", "checkpoint", "provider_model", "metrics", "plot", "file"
    uri: str
    description: str = ""


class Result(_Record):
    """The one result shape, whatever the route."""

    id: str
    backend: str
    status: JobStatus
    model: str
    output_model: str | None = None
    metrics: list[MetricPoint] = Field(default_factory=list)
    trained_tokens: int | None = None
    estimated_cost_usd: Decimal | None = None
    actual_cost_usd: Decimal | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    error: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result as ``--json`` prints it: money as numbers."""
        data = self.model_dump(mode="json")
        data["estimated_cost_usd"] = _number(self.estimated_cost_usd)
        data["actual_cost_usd"] = _number(self.actual_cost_usd)
        return data


class Progress(_Record):
    """Where a running job is: the live display and ``ftbroker status`` show it."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None


TRACKER_PREFIX = "tracker_"  # remote["tracker_mlflow"] = where an experiment tracker keeps the run


class Job(_Record):
    """A job as the ledger knows it. ``remote`` holds what a backend needs to find its job again, and where the
    experiment trackers keep the run (``trackers``).

    ``submitted_at`` is None while the job is only an intent: the ledger row was written but the backend has
    not confirmed a submission (a crash in between is recovered by ``resume``, which submits idempotently).
    ``resources`` holds estimated vs measured figures (``estimated_peak_vram_gib``, ``estimated_allocated_gib``,
    ``measured_peak_vram_allocated_gib``, ``measured_peak_vram_reserved_gib``, ``measured_peak_rss_gib`` on a CPU,
    ``estimated_tokens_per_s`` / ``measured_tokens_per_s`` (non-padding tokens), ``estimated_hours``,
    ``measured_train_seconds``, the card it ran on as ``measured_gpu``) and what they are for: ``estimated_gpu``,
    ``stack``, a correction the estimate already carried (``ftbroker.estimate.measured``): the user's own
    calibration data.
    """

    id: str
    spec: JobSpec
    status: JobStatus
    status_detail: str | None = None  # the provider's own status word, when it says more than ours
    remote: dict[str, str] = Field(default_factory=dict)
    cursor: str | None = None  # the backend's place in its event stream, opaque to everyone else
    progress: Progress | None = None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_cost_usd: Decimal | None = None
    actual_cost_usd: Decimal | None = None
    trained_tokens: int | None = None
    output_model: str | None = None
    error: str | None = None
    resources: dict[str, float | str] = Field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def trackers(self) -> dict[str, str]:
        """Experiment tracker -> where it keeps this run (a W&B run's page, an MLflow run, a TensorBoard folder)."""
        return {k.removeprefix(TRACKER_PREFIX): v for k, v in self.remote.items() if k.startswith(TRACKER_PREFIX)}

    @property
    def model(self) -> str:
        return self.spec.model

    def to_json(self) -> dict[str, Any]:
        """The job as ``--json`` prints it and the HTML report reads it: the contract scripts read (money as numbers,
        times as ISO 8601 strings)."""
        return {
            "id": self.id,
            "backend": self.backend,
            "model": self.model,
            "method": self.spec.method,
            "status": self.status.value,
            "status_detail": self.status_detail,
            "submitted": self.submitted_at is not None,
            "created_at": self.created_at.isoformat(),
            "submitted_at": _iso(self.submitted_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "progress": self.progress.model_dump(exclude_none=True) if self.progress else None,
            "estimated_cost_usd": _number(self.estimated_cost_usd),
            "actual_cost_usd": _number(self.actual_cost_usd),
            "trained_tokens": self.trained_tokens,
            "output_model": self.output_model,
            "error": self.error,
            "remote": self.remote,
            "trackers": self.trackers,
            "resources": self.resources,
            "spec": self.spec.to_json(),
        }


def _number(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
