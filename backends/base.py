"""The backend contract: one Protocol every route implements, the data it exchanges, and the registry.

A backend is a class with a ``name``, ``capabilities`` (data), an ``Options`` model (its
``backend_options``, validated like the rest of the spec) and six methods. The Broker drives it::

    backend = create_backend(spec.backend, spec.backend_options)   # cls(options, home=...)
    report = backend.validate(spec)                  # I/O allowed, no network: read, convert, check the data
    quote = backend.quote(spec, report, env)         # PURE: cost, time, feasibility; the guards read it
    ...ledger records the job (intent) before any side effect...
    sub = backend.submit(job, tracker)               # idempotent on job.id (find-before-create)
    upd = backend.poll(job)                          # status + new events/metrics since job.cursor
    upd = backend.cancel(job)
    res = backend.result(job)                        # the one Result shape, provider record in ``raw``

Exactly-once submission: ``job.id`` (``ftb-...``) is stable across retries and processes. A backend carries it
to the provider (OpenAI ``metadata``, Together ``suffix``, Bedrock ``clientRequestToken`` / job name) and, before
creating anything, looks for a remote job already created for it. Anything it creates on the way (an uploaded
file) it reports through ``tracker.remember(...)`` at once, so a crash between two remote calls loses nothing.

Optional operations are separate protocols (``Resumable``, ``Exportable``); a backend without one says why in
``capabilities.unsupported``. Two more are optional hooks: ``Credentialed`` (credentials checked before the job is
recorded) and ``Discoverable`` (what an interrupted submission started, found without a side effect). A backend
whose routes a plan lists also has the three classmethods of ``ftbroker.routes.RouteSource`` (``token_needs``,
``routes``, ``plan_notes``) and claims its catalog rows in ``capabilities.providers`` / ``capabilities.clouds``. A
backend that starts paid resources which can outlive a job (an instance, a cluster, a deployment) is also
``Collectable``: ``ftbroker gc`` lists what it left running and why each should go.

Concurrency is the Broker's: it calls ``submit``, ``resume`` and ``cancel`` holding the job's lease in the ledger
(``Broker.exclusive``), so no two processes act on one job at once. A backend takes no lock of its own; one that
acts on a job outside those calls (a deployment for evaluation, a teardown) does it inside ``Broker.exclusive``.

Adding a backend: one module, one line in ``BUILTIN_BACKENDS`` (``ftbroker.backends.registry``; or an entry point in
the group ``ftbroker.backends`` for a third-party package), its catalog rows, and one parameter of the contract suite
in ``tests/test_backend_contract.py`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from ftbroker.backends.registry import backend_class
from ftbroker.estimate.measured import Corrections
from ftbroker.jobs import Artifact, Event, Job, JobStatus, MetricPoint, Progress, Result

if TYPE_CHECKING:
    from ftbroker.data.report import DatasetReport
    from ftbroker.spec import JobSpec


# --- what a backend can do -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    """What a backend offers, as data, so the planner and the spec checks can say why a route is out.

    ``unsupported`` maps a feature to the reason it is not available. A feature is a JobSpec field path
    (``"hyperparameters.packing"``, ``"validation"``, ``"lora"`` for the whole section), a method
    (``"method.qlora"``, shown when that method is asked for) or an operation (``"cancel"``, ``"resume"``,
    ``"export"``). A spec that sets an unsupported field is refused with that reason.
    """

    methods: frozenset[str]  # of "full", "lora", "qlora"
    data_formats: frozenset[str]  # of "chat", "prompt_completion", "preference", "text"
    unsupported: Mapping[str, str] = field(default_factory=dict)
    managed: bool = False  # a provider runs (and bills) it; False: this machine
    poll_interval_s: float = 10.0  # how often following polls when the backend gives no hint
    requires: Mapping[str, str] = field(default_factory=dict)  # import name -> the pip extra that installs it
    # The catalog rows whose routes this backend runs: the managed offers of these providers, the instances of these
    # clouds. A plan still prices the rows no backend claims, marked not runnable.
    providers: frozenset[str] = frozenset()
    clouds: frozenset[str] = frozenset()

    def missing_package(self) -> tuple[str, str] | None:
        """(package, extra) of the first required package that is not installed; None when all are."""
        for package, extra in self.requires.items():
            if importlib.util.find_spec(package) is None:
                return package, extra
        return None

    def supports(self, feature: str) -> bool:
        return self.reason(feature) is None

    def reason(self, feature: str) -> str | None:
        """Why ``feature`` (or a section containing it) is unsupported; None when it is supported."""
        parts = feature.split(".")
        for end in range(len(parts), 0, -1):
            reason = self.unsupported.get(".".join(parts[:end]))
            if reason is not None:
                return reason
        return None

    def problems(self, spec: JobSpec, backend: str) -> list[str]:
        """One line per thing the spec asks that this backend cannot do."""
        problems = []
        if spec.method not in self.methods:
            why = self.unsupported.get(f"method.{spec.method}") or f"it offers {', '.join(sorted(self.methods))}"
            problems.append(f"method: {backend} cannot do {spec.method}: {why}")
        for path in sorted(spec.set_fields()):
            why = self.reason(path)
            if why is not None:
                problems.append(f"{path}: not supported by {backend}: {why}")
        return problems


# --- what goes in and out of the calls ------------------------------------------------------------------------

GPU_ENV = "FTBROKER_GPU"  # NAME[:COUNT]: the GPU a local job is planned for instead of (or without) those found


@dataclass(frozen=True)
class Gpu:
    """A GPU found on this machine."""

    name: str  # as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
    memory_gib: float


def detect_gpus() -> tuple[Gpu, ...]:
    """The NVIDIA GPUs this process may use (``nvidia-smi``, honouring CUDA_VISIBLE_DEVICES); () if none.

    Asks the driver rather than importing torch, so planning and the guards stay fast.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def parse_nvidia_smi(out: str, visible: str | None) -> tuple[Gpu, ...]:
    """GPUs from ``nvidia-smi --query-gpu=index,uuid,name,memory.total`` output (MiB), in CUDA_VISIBLE_DEVICES
    order when it is set (by index or UUID)."""
    by_key: dict[str, Gpu] = {}
    order = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            gpu = Gpu(name=parts[2], memory_gib=round(float(parts[3]) / 1024, 2))
        except ValueError:
            continue
        by_key[parts[0]] = by_key[parts[1]] = gpu
        order.append(gpu)
    if visible is None:
        return tuple(order)
    return tuple(by_key[v.strip()] for v in visible.split(",") if v.strip() in by_key)


@dataclass(frozen=True)
class Environment:
    """What a quote may depend on beyond the spec and the data, gathered by the Broker (quotes stay pure).

    ``catalog`` is the ``ftbroker.pricing.catalog.Catalog`` in force (prices, GPUs, models, route availability),
    loaded on first use through ``load_catalog``.
    """

    today: date
    gpus: tuple[Gpu, ...] = ()
    load_catalog: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    declared_gpu: str | None = None  # GPU_ENV: NAME[:COUNT] to plan for instead of the GPUs found
    # catalog -> the user's measured runs (``estimate.measured.Corrections``), read on first use by a GPU quote
    load_corrections: Callable[[Any], Corrections] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def catalog(self) -> Any:
        return self.load_catalog() if self.load_catalog is not None else None

    @cached_property
    def corrections(self) -> Corrections:
        return self.load_corrections(self.catalog) if self.load_corrections is not None else Corrections()


class Verdict(StrEnum):
    OK = "ok"
    DOES_NOT_FIT = "does_not_fit"  # the hardware cannot hold it: refused unless --force
    ROUTE_UNAVAILABLE = "route_unavailable"  # the provider does not take this route (closed, end of life)


@dataclass(frozen=True)
class Quote:
    """A backend's pure estimate of one job: what it will cost, take and need, and whether it can run.

    Costs are a range where inputs are uncertain; the budget guard compares ``cost_high_usd`` (or
    ``cost_usd`` when no range is given). ``None`` means "cannot be estimated", which a budget refuses.
    ``resources`` is what the ledger keeps beside the measured figures later (``estimated_peak_vram_gib``,
    ``estimated_tokens_per_s``, ``estimated_hours``; for a GPU, what ``preflight.estimate_keys`` adds).
    """

    backend: str
    verdict: Verdict = Verdict.OK
    reason: str | None = None  # why not OK, with a concrete suggestion; or, with no cost, why it is unknown
    cost_usd: Decimal | None = None
    cost_high_usd: Decimal | None = None
    hours: float | None = None
    peak_vram_gib: float | None = None  # per GPU
    hardware: str | None = None  # "1x NVIDIA RTX 4090", or None for a managed API
    billed_tokens: int | None = None
    warnings: tuple[str, ...] = ()  # e.g. "this route closes on 2027-01-06"
    breakdown: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, float | str] = field(default_factory=dict)

    @property
    def budget_cost_usd(self) -> Decimal | None:
        return self.cost_high_usd if self.cost_high_usd is not None else self.cost_usd


@dataclass(frozen=True)
class Submission:
    """What ``submit`` (or ``resume``) achieved: the remote handles and the first status."""

    remote: Mapping[str, str]  # merged into job.remote, e.g. {"job_id": "ftjob-...", "training_file": "file-..."}
    status: JobStatus = JobStatus.QUEUED
    detail: str | None = None
    reused: bool = False  # an existing remote job for this ftbroker id was found instead of creating one


@dataclass(frozen=True)
class Update:
    """What one poll (or a cancel) learnt. Events and metrics are only the new ones since ``job.cursor``.

    The ledger records everything in one transaction, cursor included, so a crash re-reads rather than drops.
    """

    status: JobStatus
    detail: str | None = None  # the provider's own status word ("pausing", "cancel_requested", ...)
    events: Sequence[Event] = ()
    metrics: Sequence[MetricPoint] = ()
    progress: Progress | None = None
    remote: Mapping[str, str] = field(default_factory=dict)  # new handles (e.g. the output model id)
    cursor: str | None = None  # None: unchanged
    next_poll_s: float | None = None  # Retry-After or the provider's own hint
    error: str | None = None  # the provider's error, surfaced verbatim (minus secrets) when failed
    trained_tokens: int | None = None
    actual_cost_usd: Decimal | None = None
    output_model: str | None = None
    resources: Mapping[str, float | str] = field(default_factory=dict)  # measured figures, named as in Job.resources


class Tracker(Protocol):
    """The ledger, as a backend sees it while submitting: record each remote side effect as it happens."""

    def remember(self, **remote: str) -> None:
        """Record remote handles now (an uploaded file id, a created job id), before the next remote call."""

    def event(self, message: str, *, kind: str = "log", level: str = "info",
              data: Mapping[str, Any] | None = None) -> None:
        """Record something that happened (an upload reused, a retry after a 503)."""


# --- the protocol ---------------------------------------------------------------------------------------------

class Backend(Protocol):
    """One route to a fine-tuned model. Construct as ``cls(options, home=...)`` (``options``: an ``Options``)."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Options: ClassVar[type[BaseModel]]  # its backend_options; extra keys forbidden

    def validate(self, spec: JobSpec) -> DatasetReport:
        """Read and check the dataset (and validation set) as this route needs it, before anything is uploaded.

        May read and convert files; never calls the network. Raises DatasetError (FILE:LINE errors) or SpecError.
        """

    def quote(self, spec: JobSpec, dataset: DatasetReport, env: Environment) -> Quote:
        """PURE: cost, time, resources and a verdict. No I/O, no clock (``env.today``), no SDK."""

    def submit(self, job: Job, tracker: Tracker) -> Submission:
        """Start the job, exactly once: first look for a remote job already created for ``job.id``."""

    def poll(self, job: Job) -> Update:
        """The job's status now, with the events and metrics that are new since ``job.cursor``.

        Only called for submitted jobs. Map the provider's status words with its table (from its API's job status
        enum), unknown non-final words to ``running`` with the raw word in ``detail``; honour Retry-After in
        ``next_poll_s``; raise BackendUnavailableError / BackendRateLimitError for transient trouble (the Broker
        backs off and polls again), other BackendErrors for what will not get better.
        """

    def cancel(self, job: Job) -> Update:
        """Ask the job to stop; return the status it reached (``cancelled``, or running with a detail).

        ``job.remote`` may lack the remote job id (recorded, submission never confirmed): look it up by ``job.id``
        as ``submit`` does, so a job created just before a crash is still stopped.
        """

    def result(self, job: Job) -> Result:
        """The normalized result of a finished job, the provider's own record in ``raw``."""


@runtime_checkable
class Resumable(Protocol):
    def resume(self, job: Job, tracker: Tracker) -> Submission:
        """Continue a failed or cancelled job from its last checkpoint."""


@runtime_checkable
class Credentialed(Protocol):
    def check_credentials(self) -> None:
        """Raise BackendAuthError when the credentials the backend needs are missing. No network: called before the
        ledger records the job."""


@runtime_checkable
class Discoverable(Protocol):
    def find(self, job: Job) -> Submission | None:
        """What a submission of ``job`` that was cut short (the CLI killed after the ledger row) already started: a
        remote job created for its id, a trainer launched in its run folder. No side effect; None if nothing."""


@runtime_checkable
class Exportable(Protocol):
    def export(self, job: Job, fmt: str, dest: Path) -> list[Artifact]:
        """Write the job's model in ``fmt`` ("ollama", "merged") under ``dest``."""


@dataclass(frozen=True)
class Leftover:
    """A paid resource a backend started that may still be running: an instance, a cluster, a deployment."""

    backend: str
    resource: str  # the provider's id ("i-0abc...")
    description: str  # what it is and its state ("g5.xlarge spot in us-east-1, running 2h05m")
    job_id: str | None  # the ftbroker job it was started for (from its tags), if it says
    reason: str | None  # why it should go; None: in use, it stays
    note: str = ""  # why it stays
    cost_usd: Decimal | None = None  # what it has cost so far (runtime x price)
    handle: Mapping[str, str] = field(default_factory=dict)  # what ``collect`` needs to find it again
    verb: str = "terminate"  # what ``collect`` does to it ("terminate" an instance, "delete" a deployment)


@runtime_checkable
class Collectable(Protocol):
    """A backend whose resources can outlive its jobs (``ftbroker gc``). ``collect_scope``: what one listing covers
    (a region and an account); two backends with equal scopes list the same resources, so each is listed once."""

    @property
    def collect_scope(self) -> tuple[str, ...]: ...

    def leftovers(self, job: Callable[[str], Job | None]) -> list[Leftover]:
        """Every resource of this backend still running in its scope, each with why it should go (or stay).
        ``job`` looks a job id up in the ledger (None: unknown to it)."""

    def collect(self, leftover: Leftover) -> str:
        """Stop one leftover (idempotent) and say what was done ("terminated")."""


# --- options and instances (the registry: ftbroker.backends.registry) -------------------------------------------

def split_list(value: Any) -> Any:
    """A list option given as ``a,b`` (``--option report_to=mlflow,tensorboard``) as the list; others as they are."""
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


def option_problems(cls: type[Backend], options: Mapping[str, Any]) -> list[str]:
    """One line per invalid backend option (unknown key, wrong type); values are never echoed."""
    try:
        cls.Options.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(str(p) for p in ("backend_options", *err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"{path}: {cls.name} has no such option (it takes: "
                                f"{', '.join(cls.Options.model_fields) or 'none'})")
            elif err["type"] == "missing":  # say what the option is and how to give it, not pydantic's words
                name = str(err["loc"][0])
                field = cls.Options.model_fields.get(name)
                what = f" ({field.description})" if field is not None and field.description else ""
                problems.append(f"{path}: required{what}: pass --option {name}=...")
            else:
                problems.append(f"{path}: {err['msg'].removeprefix('Value error, ')}")
        return problems
    return []


def create_backend(name: str, options: Mapping[str, Any] | None = None, *, home: Path | None = None) -> Backend:
    """An instance of backend ``name`` configured with ``options`` (its backend_options).

    ``home`` is ftbroker's data folder (the ledger's), where a backend may keep files (run folders, caches).
    """
    from ftbroker.errors import SpecError
    from ftbroker.ledger import default_home

    cls = backend_class(name)
    problems = option_problems(cls, options or {})
    if problems:
        raise SpecError(problems)
    return cls(cls.Options.model_validate(dict(options or {})), home=home or default_home())
