"""The fine-tuning job state machine shared by the fake providers.

A job walks ``before`` statuses (validation, queue), then ``running`` for ``total_steps`` steps (one
metrics point per step), then ``after`` statuses (artifact stages), then the provider's success
status -- unless its ``Outcome`` fails it (at validation or at a given step) or it is cancelled.
Time is a counter (``Clock``), never the wall clock, so every run is the same.

Each provider fake describes its own status names with a ``Lifecycle`` and renders ``FakeJob`` in
its own JSON shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: 2026-11-28T00:00:00Z: the fakes' clock starts here and ticks one second per event.
EPOCH = 1_795_824_000


class Clock:
    def __init__(self, start: int = EPOCH):
        self.now = start

    def tick(self) -> int:
        self.now += 1
        return self.now


@dataclass(frozen=True)
class Lifecycle:
    before: tuple[str, ...]  # statuses before training starts, in order
    running: str
    after: tuple[str, ...]  # statuses after the last step, before success
    succeeded: str
    failed: str
    cancelled: str
    cancelling: str | None = None  # None: a cancel takes effect at once

    @property
    def terminal(self) -> frozenset[str]:
        return frozenset({self.succeeded, self.failed, self.cancelled})


@dataclass(frozen=True)
class Outcome:
    """How a job ends. ``at_step=None`` fails it during validation; a number fails it at that step.
    ``hang``: the job trains its first step, then runs for ever (until cancelled)."""

    failed: bool = False
    message: str = ""
    code: str = "invalid_training_file"
    at_step: int | None = None
    hang: bool = False

    @classmethod
    def failure(cls, message: str, code: str = "invalid_training_file", at_step: int | None = None) -> Outcome:
        return cls(True, message, code, at_step)

    @classmethod
    def hanging(cls) -> Outcome:
        return cls(hang=True)


def train_loss(step: int) -> float:
    """A deterministic, falling loss curve."""
    return round(2.4 * 0.8**step, 4)


def valid_loss(step: int) -> float:
    return round(train_loss(step) + 0.07, 4)


def token_accuracy(step: int) -> float:
    return round(1 - 0.6 * 0.8**step, 4)


@dataclass
class JobEvent:
    seq: int
    created_at: int
    kind: str  # "status" | "metrics" | "message"
    message: str
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)
    step: int = 0  # the training step the job was at


@dataclass
class FakeJob:
    id: str
    lifecycle: Lifecycle
    clock: Clock
    request: dict[str, Any]
    trained_tokens: int
    total_steps: int = 3
    outcome: Outcome = Outcome()
    status: str = ""
    step: int = 0
    created_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    events: list[JobEvent] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per step
    _seq: int = 0

    def __post_init__(self) -> None:
        self.created_at = self.clock.tick()
        self._set(self.lifecycle.before[0] if self.lifecycle.before else self.lifecycle.running)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def terminal(self) -> bool:
        return self.status in self.lifecycle.terminal

    @property
    def succeeded(self) -> bool:
        return self.status == self.lifecycle.succeeded

    @property
    def failed(self) -> bool:
        return self.status == self.lifecycle.failed

    # -- moving ----------------------------------------------------------------------------------
    def advance(self) -> bool:
        """One step of the job's life; False when nothing moved (it is over, or hung)."""
        lc = self.lifecycle
        if self.terminal:
            return False
        if self.status == lc.cancelling:
            self._finish(lc.cancelled, "Job cancelled")
        elif self.status in lc.before:
            if self.outcome.failed and self.outcome.at_step is None:
                self._finish(lc.failed, self.outcome.message, level="error")
            else:
                index = lc.before.index(self.status)
                nxt = lc.before[index + 1] if index + 1 < len(lc.before) else lc.running
                if nxt == lc.running:
                    self.started_at = self.clock.now + 1
                self._set(nxt)
        elif self.status == lc.running:
            if self.outcome.hang and self.step >= 1:
                return False  # hung: nothing moves
            self._train_step()
        elif self.status in lc.after:
            index = lc.after.index(self.status)
            if index + 1 < len(lc.after):
                self._set(lc.after[index + 1])
            else:
                self._finish(lc.succeeded, "Job completed")
        return True

    def cancel(self) -> None:
        if self.terminal:
            return
        if self.lifecycle.cancelling:
            self._set(self.lifecycle.cancelling)
        else:
            self._finish(self.lifecycle.cancelled, "Job cancelled")

    def _train_step(self) -> None:
        self.step += 1
        point = {"step": float(self.step), "train_loss": train_loss(self.step),
                 "valid_loss": valid_loss(self.step), "train_mean_token_accuracy": token_accuracy(self.step)}
        self.metrics.append(point)
        self._event("metrics", f"Step {self.step}/{self.total_steps}: training loss={point['train_loss']:.4f}",
                    data={**point, "step": self.step, "total_steps": self.total_steps})
        if self.outcome.failed and self.outcome.at_step == self.step:
            self._finish(self.lifecycle.failed, self.outcome.message, level="error")
        elif self.step >= self.total_steps:
            if self.lifecycle.after:
                self._set(self.lifecycle.after[0])
            else:
                self._finish(self.lifecycle.succeeded, "Job completed")

    def _set(self, status: str) -> None:
        self.status = status
        self._event("status", f"Job status: {status}", data={"status": status})

    def _finish(self, status: str, message: str, level: str = "info") -> None:
        self.status = status
        self.finished_at = self.clock.tick()
        self._event("status", message, level=level, data={"status": status})

    def _event(self, kind: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self._seq += 1
        self.events.append(JobEvent(self._seq, self.clock.tick(), kind, message, level, data or {}, self.step))


def count_tokens(content: bytes) -> int:
    """The fakes' stand-in tokenizer: whitespace-separated words (deterministic, not a real count)."""
    return len(content.split())
