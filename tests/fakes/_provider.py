"""What both HTTP provider fakes share: their jobs, how the jobs end, and the controls a test drives them with."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from ._jobs import Clock, FakeJob, Lifecycle, Outcome, count_tokens
from ._server import LoopbackServer, Request, bearer_auth, http_error

T = TypeVar("T")


class FakeProvider(LoopbackServer):
    """``advance_on_poll``: every retrieve of a job moves that job one step first (a step-per-poll schedule)."""

    lifecycle: ClassVar[Lifecycle]
    id_suffix: ClassVar[str] = ""

    def __init__(self, *, advance_on_poll: bool, models: Iterable[str], total_steps: int):
        super().__init__()
        self.advance_on_poll = advance_on_poll
        self.models = set(models)
        self.total_steps = total_steps
        self.clock = Clock()
        self.rejected_keys: set[str] = set()  # keys answered 401, echoed back (see bearer_auth)
        self.jobs: dict[str, FakeJob] = {}
        self.default_outcome = Outcome()
        self._outcomes: deque[Outcome] = deque()
        self._ids = 0

    # -- test controls -----------------------------------------------------------------------------
    def next_outcome(self, outcome: Outcome) -> None:
        """The next job created ends this way (then ``default_outcome`` again)."""
        with self.lock:
            self._outcomes.append(outcome)

    def advance(self, job_id: str | None = None, steps: int = 1) -> None:
        """Move one job (or every job) ``steps`` steps along."""
        with self.lock:
            for job in [self.jobs[job_id]] if job_id else list(self.jobs.values()):
                for _ in range(steps):
                    self._advance(job)

    def finish(self, job_id: str | None = None) -> None:
        """Run one job (or every job) to its end (a hung job stays where it hangs)."""
        with self.lock:
            for job in [self.jobs[job_id]] if job_id else list(self.jobs.values()):
                while self._advance(job):
                    pass

    # -- for the subclasses ------------------------------------------------------------------------
    def _advance(self, job: FakeJob) -> bool:
        return job.advance()

    def _polled(self, job: FakeJob) -> FakeJob:
        """A job as a retrieve sees it: moved one step first under ``advance_on_poll``."""
        if self.advance_on_poll:
            self._advance(job)
        return job

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}{self.id_suffix}"

    def _new_job(self, prefix: str, request: dict[str, Any], training: bytes, epochs: int) -> FakeJob:
        outcome = self._outcomes.popleft() if self._outcomes else self.default_outcome
        job = FakeJob(self._new_id(prefix), self.lifecycle, self.clock, request,
                      trained_tokens=count_tokens(training) * epochs, total_steps=self.total_steps, outcome=outcome)
        self.jobs[job.id] = job
        return job

    def _lookup(self, req: Request, table: Mapping[str, T], what: str) -> T:
        """The ``{id}`` of the request's path in ``table``, after the key check; 404 when there is none."""
        bearer_auth(req, self.rejected_keys)
        item = table.get(req.params["id"])
        if item is None:
            raise http_error(404, f"No such {what}: {req.params['id']}")
        return item
