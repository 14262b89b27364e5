"""Broker: plan -> guards -> record -> submit -> follow -> result, the same for every backend.

    broker = Broker()
    job = broker.submit(spec)                  # validated, quoted, guarded, recorded, submitted
    result = broker.follow(job.id)             # polls until the job ends; the one Result shape

The order is what keeps money and jobs safe: everything that can refuse (dataset checks, credentials, feasibility,
the budget, the user's confirmation) runs before the ledger records the job, and the ledger records it before the
backend does anything with a side effect. A submission that may or may not have reached the provider (timeout, 5xx)
leaves the job recorded but unconfirmed; ``resume`` finishes it, and the backend's find-before-create keeps it
exactly once.

Two terminals, a cron job and a retry script may act on one job at once: whatever spends money or starts a process
for a job (submit, resume, cancel; anything a backend or a deployment adds) runs inside ``exclusive``, holding the
job's lease in the ledger, so only one process acts on a job at a time and the others are told who does
(``JobBusyError``). Backends never lock anything themselves.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ftbroker import clock
from ftbroker.backends.base import (GPU_ENV, Backend, Collectable, Credentialed, Discoverable, Environment, Exportable,
                                    Leftover, Quote, Resumable, Submission, Update, Verdict, create_backend,
                                    detect_gpus)
from ftbroker.backends.local.config import CONFIG_NAME, RUNS_DIR
from ftbroker.errors import (BackendError, BackendRateLimitError, BackendUnavailableError, BudgetExceededError,
                             DoesNotFitError, ExtraNotInstalledError, FtBrokerError, InputError, JobBusyError, JobError,
                             JobNotFoundError, LedgerDamagedError, NotConfirmedError, RouteUnavailableError,
                             SpecError)
from ftbroker.jobs import Artifact, Event, Job, JobStatus, Result
from ftbroker.ledger import LEASE_TTL_S, Claim, Ledger, default_home
from ftbroker.spec import JobSpec

MAX_POLL_FAILURES = 8  # consecutive transient poll errors before following gives up (the job is unaffected)


@dataclass(frozen=True)
class Prepared:
    """A job checked and priced, not yet recorded: what the confirmation prompt shows."""

    spec: JobSpec
    backend: Backend
    dataset: Any  # ftbroker.data.report.DatasetReport
    quote: Quote


def _load_catalog() -> Any:
    from ftbroker.pricing.catalog import load_catalog

    return load_catalog()


class _LedgerTracker:
    """The Tracker a backend records its side effects through while submitting."""

    def __init__(self, ledger: Ledger, job_id: str):
        self._ledger, self._job_id = ledger, job_id

    def remember(self, **remote: str) -> None:
        self._ledger.update(self._job_id, remote=remote)

    def event(self, message: str, *, kind: str = "log", level: str = "info",
              data: Mapping[str, Any] | None = None) -> None:
        self._ledger.update(self._job_id, events=[_event(message, kind=kind, level=level, data=data)])


def _event(message: str, *, kind: str = "status", level: str = "info", data: Mapping[str, Any] | None = None):
    return Event(time=clock.now(), kind=kind, level=level, message=message, data=dict(data or {}))


def check_guards(quote: Quote, spec: JobSpec, *, force: bool = False) -> None:
    """Refuse (exit 3) a route that is closed, a job that does not fit (unless ``force``), or one over budget.

    A budget is a promise: when the cost cannot be estimated, the job is refused rather than risked.
    """
    if quote.verdict is Verdict.ROUTE_UNAVAILABLE:
        raise RouteUnavailableError(f"{spec.backend}: {quote.reason}")
    if quote.verdict is Verdict.DOES_NOT_FIT and not force:
        raise DoesNotFitError(f"{spec.model} ({spec.method}) does not fit: {quote.reason}")
    budget = spec.budget.max_cost_usd
    if budget is None:
        return
    cost = quote.budget_cost_usd
    if cost is None:
        notes = [quote.reason] if quote.reason else quote.warnings  # the reason, else what the quote noted
        why = f" ({'; '.join(notes)})" if notes else ""
        raise BudgetExceededError(
            f"the cost of this job on {spec.backend} cannot be estimated{why}, so it cannot be held to "
            f"--max-cost ${budget}; run without --max-cost to accept an unbounded cost")
    if cost > budget:
        shown = f"${quote.cost_usd}-${cost}" if quote.cost_usd is not None and quote.cost_usd != cost else f"${cost}"
        raise BudgetExceededError(f"estimated cost {shown} is over --max-cost ${budget}")


class Broker:
    """The SDK face of ftbroker's job handling; the CLI commands are thin wrappers over it."""

    def __init__(self, home: str | Path | None = None, *, ledger: Ledger | None = None,
                 sleep: Callable[[float], None] = time.sleep, today: Callable[[], date] = clock.today,
                 lease_ttl_s: float = LEASE_TTL_S, rebuilding: bool = False):
        """``rebuilding``: open a ledger that lost its jobs anyway, to rebuild it (``rebuild``)."""
        self.home = Path(home) if home is not None else default_home()
        self.ledger = ledger if ledger is not None else Ledger(self.home / "ledger.sqlite3")
        self._sleep, self._today = sleep, today
        self.lease_ttl_s = lease_ttl_s
        self._backends: dict[str, Backend] = {}
        if not rebuilding and not self.ledger.has_jobs():
            runs = self._run_folders()
            if runs:
                self.ledger.close()
                raise LedgerDamagedError(
                    f"the job ledger {self.ledger.path} holds no jobs, but {self.home / RUNS_DIR} holds the run "
                    f"folders of {len(runs)} local job{'s' if len(runs) > 1 else ''}: the ledger was lost or emptied. "
                    "`ftbroker ledger rebuild` re-creates their entries from the run folders (or move the runs "
                    "folder aside to start afresh)")

    def _run_folders(self) -> list[Path]:
        """The local jobs' run folders (``runs/JOB`` with the trainer's config.json)."""
        try:
            return sorted(p for p in (self.home / RUNS_DIR).iterdir() if (p / CONFIG_NAME).is_file())
        except OSError:
            return []

    def close(self) -> None:
        """The ledger and every backend this Broker opened (a managed backend's SDK client holds connections)."""
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            close = getattr(backend, "close", None)
            if callable(close):
                close()
        self.ledger.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def backend(self, spec: JobSpec) -> Backend:
        key = spec.backend + repr(sorted(spec.backend_options.items()))
        if key not in self._backends:
            self._backends[key] = create_backend(spec.backend, spec.backend_options, home=self.home)
        return self._backends[key]

    # --- starting a job ---

    def prepare(self, spec: JobSpec) -> Prepared:
        """Validate the data for the backend and quote the job. No side effect, nothing recorded."""
        backend = self.backend(spec)
        caps = backend.capabilities
        missing = caps.missing_package()
        if missing is not None:  # refused here, before the ledger records a job that could never start
            raise ExtraNotInstalledError(*missing, f"the {spec.backend} backend")
        if isinstance(backend, Credentialed):  # likewise: no credentials, no job (and no failed one on every try)
            backend.check_credentials()
        report = backend.validate(spec)
        fmt = getattr(report, "format", None)
        if fmt is not None and fmt not in caps.data_formats:
            why = caps.reason(f"format.{fmt}") or f"it takes {', '.join(sorted(caps.data_formats))}"
            raise SpecError([f"dataset: {spec.backend} cannot train on {fmt} data: {why}"])
        env = Environment(today=self._today(), gpus=() if caps.managed else detect_gpus(),
                          load_catalog=_load_catalog, declared_gpu=os.environ.get(GPU_ENV) or None,
                          load_corrections=self._corrections)
        return Prepared(spec, backend, report, backend.quote(spec, report, env))

    def _corrections(self, catalog: Any) -> Any:
        """The user's measured runs in this ledger: a GPU's quote takes them into account, as a plan does."""
        from ftbroker.estimate.measured import Corrections
        from ftbroker.your_runs import measured_runs

        return Corrections.from_runs(measured_runs(self.ledger, catalog))

    def submit(self, spec: JobSpec, *, confirm: Callable[[Prepared], bool] | None = None,
               force: bool = False) -> Job:
        """Prepare, guard, ask ``confirm`` (if given), record, then submit. Returns the job as submitted."""
        prepared = self.prepare(spec)
        check_guards(prepared.quote, spec, force=force)
        if confirm is not None and not confirm(prepared):
            raise NotConfirmedError("not started: the confirmation was declined")
        quote = prepared.quote
        resources = dict(quote.resources)
        if quote.peak_vram_gib is not None:
            resources.setdefault("estimated_peak_vram_gib", quote.peak_vram_gib)
        if quote.hours is not None:
            resources.setdefault("estimated_hours", quote.hours)
        claim = Claim("submitting", self.lease_ttl_s)
        job = self.ledger.create(spec, estimated_cost_usd=quote.cost_usd, resources=resources, claim=claim)
        with self._keeping(job.id, claim):
            notes = [*quote.warnings] + ([f"started with --force although: {quote.reason}"]
                                         if quote.verdict is Verdict.DOES_NOT_FIT else [])
            if notes:
                self.ledger.update(job.id, events=[_event(n, kind="warning", level="warning") for n in notes])
            return self._submit(job, lambda tracker: prepared.backend.submit(job, tracker))

    # --- one process at a time per job ---

    @contextmanager
    def exclusive(self, ref: str, purpose: str) -> Iterator[Job]:
        """Hold the job's lease while the block runs, and yield the job as the ledger has it once the lease is held.

        Whatever spends money or starts a process for a job runs in here (``purpose``, e.g. "deploying", says what
        to whoever finds the job busy): submit, resume and cancel do; so must any backend or deployment that acts on
        a job outside them. Raises JobBusyError (exit 3), naming the holder, when another process holds it.
        """
        job_id = self.ledger.resolve(ref)
        claim = Claim(purpose, self.lease_ttl_s)
        self.ledger.claim(job_id, claim)
        with self._keeping(job_id, claim):
            yield self.ledger.get(job_id)

    @contextmanager
    def _keeping(self, job_id: str, claim: Claim) -> Iterator[None]:
        """Renew a lease already taken while the block runs, give it back after, and say so if it was lost."""
        keeper = None
        try:
            with self.ledger.kept(job_id, claim) as keeper:
                yield
        finally:  # the keeper has stopped and the lease is given back: ``lost`` is final
            if keeper is not None and keeper.lost:
                self.ledger.update(job_id, events=[_event(
                    f"this process ({claim.purpose}) stalled past its lease ({claim.ttl_s:g} s) and another took "
                    "the job over meanwhile: check the job for anything done twice", kind="warning", level="warning")])

    def _submit(self, job: Job, call: Callable[[_LedgerTracker], Submission]) -> Job:
        try:
            submission = call(_LedgerTracker(self.ledger, job.id))
        except (BackendUnavailableError, BackendRateLimitError) as exc:
            safe = (f"`ftbroker resume {job.id}` finishes the job safely: it looks for the remote job before "
                    "creating one")
            self.ledger.update(job.id, error=str(exc), events=[_event(
                f"the submission may or may not have reached {job.backend}: {exc}. {safe}", kind="warning",
                level="warning")])
            exc.add_hint(f"job {job.id} is recorded; {safe}")
            raise
        except FtBrokerError as exc:
            if job.submitted_at is None:  # never started: the refusal is how it ends
                self.ledger.update(job.id, status=JobStatus.FAILED, error=str(exc),
                                   events=[_event(f"submission refused: {exc}", level="error")])
            else:  # a refused resume leaves the job as it was
                self.ledger.update(job.id, events=[_event(f"not resumed: {exc}", level="error")])
            raise
        return self._record_submission(job, submission)

    def _record_submission(self, job: Job, submission: Submission) -> Job:
        note = "found the job already created for this id" if submission.reused else "submitted"
        return self.ledger.update(job.id, status=submission.status, detail=submission.detail,
                                  remote=submission.remote, submitted=True,
                                  events=[_event(f"{note} ({job.backend}, {submission.status.value})")])

    # --- following a job ---

    def refresh(self, ref: str) -> Job:
        """Poll the backend once (if the job is still going) and record what it says."""
        return self._refresh(self.ledger.get(ref))[0]

    def _refresh(self, job: Job) -> tuple[Job, Update | None]:
        """``refresh``, with the backend's update (None: not polled). A job never confirmed submitted is looked for
        first: the process that submitted it may have died after starting it."""
        if job.status.terminal:
            return job, None
        if job.submitted_at is None:
            job = self._discover(job)
            if job.submitted_at is None:
                return job, None
        return self._poll(job)

    def _interval(self, job: Job, update: Update | None, asked: float | None) -> float:
        """How long following waits before the next poll: what the caller asked, else what the backend's last
        poll suggested (its provider's hint, or the job's own ``poll_interval_s`` option), else its default."""
        return asked or (update.next_poll_s if update else None) or self.backend(job.spec).capabilities.poll_interval_s

    def _discover(self, job: Job) -> Job:
        """Record what an interrupted submission of ``job`` already started, if its backend can find it without a
        side effect. A job another process is submitting right now, or one the backend cannot look for now (provider
        down, no credentials, SDK missing), is left as the ledger has it: ``resume`` says why."""
        backend = self.backend(job.spec)
        if not isinstance(backend, Discoverable):
            return job
        try:
            with self.exclusive(job.id, "looking for what its submission started") as current:
                found = backend.find(current) if current.submitted_at is None else None
                return self._record_submission(current, found) if found is not None else current
        except (JobBusyError, BackendError, ExtraNotInstalledError):
            return self.ledger.get(job.id)

    def _poll(self, job: Job) -> tuple[Job, Update]:
        backend = self.backend(job.spec)
        update = backend.poll(job)
        return self._record(job, backend, update), update

    def _record(self, job: Job, backend: Backend, update: Update) -> Job:
        events = list(update.events)
        if update.status is not job.status:
            message = f"{job.status.value} -> {update.status.value}"
            if update.error:
                message += f": {update.error}"
            events.append(_event(message, level="error" if update.status is JobStatus.FAILED else "info"))
        job = self.ledger.update(
            job.id, status=update.status, detail=update.detail, remote=update.remote, cursor=update.cursor,
            progress=update.progress, error=update.error, trained_tokens=update.trained_tokens,
            actual_cost_usd=update.actual_cost_usd, output_model=update.output_model,
            resources=update.resources, events=events, metrics=update.metrics)
        if job.status.terminal and self.ledger.stored_result(job.id) is None:
            result = self._complete(backend.result(job), job)
            job = self.ledger.update(job.id, artifacts=result.artifacts, result=result)
        return job

    def _complete(self, result: Result, job: Job) -> Result:
        """Fill what the backend's result leaves out from what the ledger knows."""
        fill = {"estimated_cost_usd": job.estimated_cost_usd, "actual_cost_usd": job.actual_cost_usd,
                "trained_tokens": job.trained_tokens, "output_model": job.output_model, "error": job.error,
                "started_at": job.started_at, "finished_at": job.finished_at}
        update: dict[str, Any] = {k: v for k, v in fill.items() if getattr(result, k) is None and v is not None}
        if not result.metrics:
            update["metrics"] = self.ledger.metrics(job.id)
        return result.model_copy(update=update) if update else result

    def follow(self, ref: str, *, on_update: Callable[[Job, Update | None], None] | None = None,
               poll_interval: float | None = None) -> Result:
        """Poll until the job ends, calling ``on_update`` after each poll; return its Result.

        Transient provider errors (unreachable, rate limited) back off and retry; Ctrl-C stops following,
        never the job.
        """
        job = self.ledger.get(ref)
        if job.submitted_at is None and not job.status.terminal:
            raise JobError(f"job {job.id} was recorded but never confirmed submitted; "
                           f"`ftbroker resume {job.id}` submits it (exactly once)")
        failures = 0
        while not job.status.terminal:
            try:
                job, update = self._poll(job)
                failures = 0
            except (BackendUnavailableError, BackendRateLimitError) as exc:
                failures += 1
                if failures > MAX_POLL_FAILURES:
                    raise
                retry_after = getattr(exc, "retry_after", None)
                self._sleep(retry_after if retry_after else min(60.0, 2.0 ** failures) * random.uniform(0.5, 1.0))
                continue
            if on_update is not None:
                on_update(job, update)
            if job.status.terminal:
                break
            self._sleep(self._interval(job, update, poll_interval) * random.uniform(0.9, 1.1))
        return self.result(job.id)

    def run(self, spec: JobSpec, *, confirm: Callable[[Prepared], bool] | None = None, force: bool = False,
            on_update: Callable[[Job, Update | None], None] | None = None) -> Result:
        """Submit and follow to the end."""
        return self.follow(self.submit(spec, confirm=confirm, force=force).id, on_update=on_update)

    # --- looking at jobs ---

    def job(self, ref: str) -> Job:
        return self.ledger.get(ref)

    def jobs(self, *, limit: int | None = None, backend: str | None = None,
             status: JobStatus | None = None) -> list[Job]:
        return self.ledger.list(limit=limit, backend=backend, status=status)

    def events(self, ref: str, *, after: int = 0) -> list[tuple[int, Event]]:
        return self.ledger.events(self.ledger.resolve(ref), after=after)

    def tail(self, ref: str, *, follow: bool = False, poll_interval: float | None = None
             ) -> Iterator[tuple[int, Event]]:
        """A job's events as (sequence number, event), oldest first; with ``follow``, keeps polling and yielding
        new ones until the job ends."""
        job, update = self._refresh(self.ledger.get(ref))
        seen = 0
        while True:
            for seq, event in self.ledger.events(job.id, after=seen):
                seen = seq
                yield seq, event
            if not follow or job.status.terminal or job.submitted_at is None:
                return
            self._sleep(self._interval(job, update, poll_interval))
            job, update = self._refresh(self.ledger.get(job.id))

    def result(self, ref: str) -> Result:
        """The Result of a finished job (as recorded when it ended). A job refused before the backend made
        anything (never submitted) has the ledger's record only."""
        job = self.ledger.get(ref)
        if not job.status.terminal:
            raise JobError(f"job {job.id} is {job.status.value}; it has no result yet "
                           f"(`ftbroker logs {job.id} --follow` waits for it)")
        stored = self.ledger.stored_result(job.id)
        if stored is not None:
            return stored
        if job.submitted_at is None:
            return self._complete(Result(id=job.id, backend=job.backend, status=job.status, model=job.model), job)
        return self._complete(self.backend(job.spec).result(job), job)

    def rebuild(self) -> tuple[list[Job], list[str]]:
        """Re-create the ledger entries of local jobs from their run folders (``runs/JOB``) where the ledger lacks
        them (it was lost, emptied or moved aside): each is recorded under its own id, then polled like any job,
        which reads its status, events and result from the folder. Returns the jobs restored and, for each folder
        that could not be, why."""
        from ftbroker.backends.local.results import recover_job

        restored, skipped = [], []
        for run_dir in self._run_folders():
            try:
                self.ledger.resolve(run_dir.name)
                continue  # the ledger has it
            except JobNotFoundError:
                pass
            try:
                spec, remote = recover_job(run_dir)
            except FtBrokerError as exc:
                skipped.append(f"{run_dir}: {exc}")
                continue
            created = datetime.fromtimestamp((run_dir / CONFIG_NAME).stat().st_mtime, UTC)
            self.ledger.restore(run_dir.name, spec, status=JobStatus.RUNNING if remote else JobStatus.QUEUED,
                                created_at=created, remote=remote or {}, submitted=remote is not None,
                                note="recovered from its run folder by `ftbroker ledger rebuild`")
            restored.append(self.refresh(run_dir.name))
        return restored, skipped

    # --- acting on jobs ---

    def cancel(self, ref: str) -> Job:
        """Stop a job. A job that already ended is returned as it is."""
        job = self.ledger.get(ref)
        if job.status.terminal:
            return job
        with self.exclusive(job.id, "cancelling") as job:
            if job.status.terminal:
                return job
            backend = self.backend(job.spec)
            self._require(backend, "cancel", None)
            self.ledger.update(job.id, events=[_event("cancel requested")])
            return self._record(job, backend, backend.cancel(job))

    def resume(self, ref: str) -> Job:
        """Submit a job that was recorded but never confirmed submitted (exactly once), or continue a failed or
        cancelled one from its last checkpoint. The job's status is asked of its backend first: the ledger may still
        say running about a trainer that died unobserved."""
        with self.exclusive(ref, "resuming") as job:
            backend = self.backend(job.spec)
            if job.submitted_at is None and job.status is not JobStatus.CANCELLED:
                return self._submit(job, lambda tracker: backend.submit(job, tracker))
            if not job.status.terminal:
                job = self._poll(job)[0]
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise InputError(f"job {job.id} is {job.status.value}; only a failed or cancelled job can be "
                                 "resumed")
            self._require(backend, "resume", Resumable)
            return self._submit(job, lambda tracker: backend.resume(job, tracker))

    def export(self, ref: str, fmt: str, dest: str | Path) -> list[Artifact]:
        """Write a finished job's model as ``fmt`` under ``dest``; the files are recorded as artifacts."""
        job = self.ledger.get(ref)
        if job.status is not JobStatus.SUCCEEDED:
            wait = "" if job.status.terminal else f" (`ftbroker logs {job.id} --follow` waits for it to end)"
            raise JobError(f"job {job.id} is {job.status.value}; only a succeeded job can be exported{wait}")
        backend = self.backend(job.spec)
        self._require(backend, "export", Exportable)
        artifacts = backend.export(job, fmt, Path(dest))
        self.ledger.update(job.id, artifacts=artifacts)
        return artifacts

    # --- what jobs left running ---

    def leftovers(self, extra: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> list[tuple[Collectable, Leftover]]:
        """What was left running: by every ``Collectable`` backend, each scope (region, account) listed once (the
        scopes of the ledger's jobs' backend configurations, and of ``extra`` ones ((backend, options): e.g. a
        region the ledger never used)), and the paid deployments evaluations recorded (``ftbroker eval``)."""
        from ftbroker.evaluation.deployments import DeploymentLeftovers

        configs = {(j.backend, repr(sorted(j.spec.backend_options.items()))): (j.backend, j.spec.backend_options)
                   for j in self.ledger.list()}
        configs.update({(name, repr(sorted(options.items()))): (name, options) for name, options in extra})
        scopes: dict[tuple[str, ...], Collectable] = {}
        for name, options in configs.values():
            try:
                backend = create_backend(name, options, home=self.home)
            except InputError:  # an old job's backend, uninstalled or with options it no longer takes
                if (name, options) in extra:
                    raise
                continue
            if isinstance(backend, Collectable):
                scopes.setdefault((name, *backend.collect_scope), backend)
        collectors = [*scopes.values(), DeploymentLeftovers(self.home)]
        return [(source, leftover) for source in collectors for leftover in source.leftovers(self._known)]

    def gc(self, *, apply: bool, extra: Sequence[tuple[str, Mapping[str, Any]]] = ()
           ) -> list[tuple[Leftover, str | None]]:
        """Every leftover with what was done to it: those with a reason to go are collected when ``apply`` (else
        this is a dry run), the others stay (done None). One that cannot be stopped says why ("failed: ...") and
        the others are still collected."""
        return [(leftover, self._collect(source, leftover) if apply and leftover.reason else None)
                for source, leftover in self.leftovers(extra)]

    @staticmethod
    def _collect(source: Collectable, leftover: Leftover) -> str:
        try:
            return source.collect(leftover)
        except FtBrokerError as exc:
            return f"failed: {exc}"

    def _known(self, job_id: str) -> Job | None:
        try:
            return self.ledger.get(job_id)
        except (JobNotFoundError, InputError):
            return None

    @staticmethod
    def _require(backend: Backend, operation: str, protocol: type | None) -> None:
        why = backend.capabilities.reason(operation)
        if why is None and protocol is not None and not isinstance(backend, protocol):
            why = "not implemented"
        if why is not None:
            raise InputError(f"{backend.name} cannot {operation} jobs: {why}")
