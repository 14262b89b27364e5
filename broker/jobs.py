"""The normalized records every backend reports in: Job, JobStatus, Event, MetricPoint, Result.

Whatever the route (local trainer, OpenAI, Together, Bedrock, ...), a job is described by these
records; the provider's own record is kept verbatim in ``raw`` so nothing is lost in translation.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
