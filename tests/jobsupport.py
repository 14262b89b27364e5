"""Helpers for the tests of jobs (Broker, job commands, spec, registry, local backend): a small chat dataset,
the path of the scripted trainer, a wait helper, a scripted in-memory backend, and one that declares
its provider's line rules and key shapes as a plug-in does."""

from __future__ import annotations

import json
import time
import types
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ftbroker.backends.base import Capabilities, Quote, Submission, Update, Verdict
from ftbroker.data.providers import LineRules
from ftbroker.errors import BackendUnavailableError, DataIssue, DatasetError
from ftbroker.jobs import Event, Job, JobStatus, MetricPoint, Progress, Result

TESTS = Path(__file__).parent
SCRIPTED_TRAINER = TESTS / "scripted_trainer.py"


def write_chat(path: Path, n: int = 12) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                              {"role": "assistant", "content": str(2 * i)}]}) + "\n")
    return path


def ftb(*args, ok=(0,)):
    """The command line in this process (FTBROKER_HOME from the environment), its exit status checked; its output
    as into a pipe (whole lines), whatever COLUMNS the test runner has (pytest-xdist's workers set one)."""
    from click.testing import CliRunner

    from ftbroker.cli import cli

    done = CliRunner(env={"COLUMNS": None}).invoke(cli, [str(a) for a in args])
    assert done.exit_code in ok, (done.exit_code, done.output, done.exception)
    return done


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


# --- a scripted in-memory backend, for the Broker's own logic --------------------------------------------------

class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cost_usd: Decimal | None = None
    cost_high_usd: Decimal | None = None
    verdict: Literal["ok", "does_not_fit", "route_unavailable"] = "ok"
    submit_error: Literal["none", "unavailable", "refused"] = "none"
    polls_to_finish: int = 2
    outcome: Literal["succeeded", "failed"] = "succeeded"
    next_poll_s: float | None = None  # what each poll suggests waiting (a provider's hint, a job's own option)


class ScriptedBackend:
    """Does everything in memory. ``calls`` records each call with what the ledger held at that moment."""

    name = "scripted"
    capabilities = Capabilities(methods=frozenset({"lora", "full"}), data_formats=frozenset({"chat"}),
                                unsupported={"method.qlora": "scripted jobs have no 4-bit kernels",
                                             "hyperparameters.packing": "scripted jobs never pack",
                                             "resume": "scripted jobs cannot resume"},
                                managed=True, poll_interval_s=0.01)
    Options = ScriptedOptions
    calls: ClassVar[list[tuple[str, str, Any]]] = []
    remote_jobs: ClassVar[dict[str, int]] = {}  # ftbroker id -> polls so far (the "provider's" state)
    ledger_path: ClassVar[Path | None] = None

    def __init__(self, options: ScriptedOptions, *, home: Path):
        self.options, self.home = options, home

    def validate(self, spec):
        lines = Path(spec.dataset).read_text().splitlines()
        bad = [DataIssue(spec.dataset, i, "not JSON") for i, line in enumerate(lines, 1) if not line.startswith("{")]
        if bad:
            raise DatasetError(bad)
        return types.SimpleNamespace(format="chat", examples=len(lines), errors=[])

    def quote(self, spec, dataset, env):
        return Quote(backend=self.name, verdict=Verdict(self.options.verdict), reason="scripted verdict",
                     cost_usd=self.options.cost_usd, cost_high_usd=self.options.cost_high_usd, hours=0.5,
                     resources={"estimated_tokens_per_s": 1234.0})

    def _ledger_row(self, job: Job) -> Job | None:
        from ftbroker.ledger import Ledger

        with Ledger(self.home / "ledger.sqlite3") as ledger:
            found = [j for j in ledger.list() if j.id == job.id]
        return found[0] if found else None

    def submit(self, job, tracker):
        self.calls.append(("submit", job.id, self._ledger_row(job)))
        if job.id in self.remote_jobs:
            return Submission(remote={"remote_id": f"r-{job.id}"}, reused=True)
        tracker.remember(upload="file-123")
        if self.options.submit_error == "refused":
            from ftbroker.errors import ProviderAPIError

            raise ProviderAPIError("model not available for fine-tuning", backend=self.name, status_code=400)
        self.remote_jobs[job.id] = 0  # the remote side now has the job ...
        if self.options.submit_error == "unavailable":  # ... but the answer was lost
            raise BackendUnavailableError("503 from the provider", backend=self.name)
        return Submission(remote={"remote_id": f"r-{job.id}"}, status=JobStatus.QUEUED)

    def poll(self, job):
        self.remote_jobs[job.id] += 1
        n = self.remote_jobs[job.id]
        self.calls.append(("poll", job.id, n))
        if n < self.options.polls_to_finish:
            return Update(status=JobStatus.RUNNING, cursor=str(n), progress=Progress(step=n, total_steps=10),
                          events=[Event(time=job.created_at, kind="log", message=f"poll {n}")],
                          metrics=[MetricPoint(step=n, name="train_loss", value=1.0 / n)],
                          next_poll_s=self.options.next_poll_s)
        if self.options.outcome == "failed":
            return Update(status=JobStatus.FAILED, error="invalid training file: line 3 has no assistant turn")
        return Update(status=JobStatus.SUCCEEDED, output_model="ft:scripted:model", trained_tokens=4321,
                      actual_cost_usd=Decimal("0.42"))

    def cancel(self, job):
        self.calls.append(("cancel", job.id, None))
        return Update(status=JobStatus.CANCELLED)

    def result(self, job):
        return Result(id=job.id, backend=self.name, status=job.status, model=job.model,
                      raw={"provider": "scripted"})


def _acme_chat_rules(example) -> list[tuple[str, str]]:
    return [("turns", "more than one turn: Acme takes one question and its answer")] if len(example.body) > 2 else []


class DeclaringBackend(ScriptedBackend):
    """A plug-in that declares its provider's line rules and the shape of its keys on its class, as a built-in does
    in its ``ftbroker.backends.declared`` module."""

    name = "acme"
    line_rules = LineRules("acme", chat=_acme_chat_rules, formats={"text": "Acme takes chat data, not plain text"})
    key_shapes = (r"acme_[A-Za-z0-9]{24,}",)
