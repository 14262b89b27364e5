"""What the managed-API backends (OpenAI, Together, Bedrock) share: one policy, written once.

- ``provider_tag``: the stable, provider-safe name derived from an ftbroker job id, which every
  remote job carries so that a later call can FIND the job it may already have created.
- ``map_status``: provider status -> ``JobStatus`` through a per-provider table (each provider's job
  status enum, cited at its table); an unknown value is ``running`` (non-terminal), the raw value kept by
  the caller.
- Dataset rules live in ONE place each: ``ftbroker.data.analysis.analyze`` checks the general rules and each
  provider's own, which its backend declares (``line_rules``, the object of ``ftbroker.backends.declared``
  that ``ftbroker validate`` and ``plan`` check too; a job's file is checked against its backend's), into
  ``provider_issues``; the catalog row of a model holds what differs by model (formats, example counts, token
  limits), which its route checks (``ftbroker.backends.managed_routes``). ``validate`` raises them as
  ``DatasetError``.
- Dataset conversion (``ftbroker.backends.managed_files``): ``convert_file`` runs a per-provider
  ``convert(example, fmt)`` over parsed examples with their line numbers and streams the provider's JSONL to a file
  while hashing it. A converter only converts; it raises ``Rejected`` only for a rule of its model's target format
  that the data layer cannot express (e.g. Llama 3.1 on Bedrock: one prompt and one completion per line).
- ``check_range``: hyperparameter bounds, collected so that every problem is reported at once.
- Errors and retries (``translate_error``, ``Backoff``, ``submit_once``, and who retries what): in
  ``ftbroker.backends.provider_calls``.

``ManagedBackend`` is the flow itself (its routes for a plan, validate, quote, submit, cancel), with hooks each
provider module fills in. Its routes are the catalog offers of the providers it claims
(``capabilities.providers``), priced by ``managed_routes`` alone; its quote prices the one offer of its job the
same way, so plan and run agree; ``quote_from_route`` turns that route into the backend's Quote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftbroker import clock
from ftbroker.backends import managed_routes
from ftbroker.backends.base import Capabilities, Environment, Quote, Submission, Tracker, Update, Verdict, split_list
from ftbroker.backends.managed_files import ConvertedFile, Converter, convert_file
from ftbroker.backends.provider_calls import Backoff, submit_once, translate_error
from ftbroker.data.providers import LineRules
from ftbroker.errors import (
    BackendError,
    DataIssue,
    DatasetError,
    ExtraNotInstalledError,
    FtBrokerError,
    ProviderAPIError,
    SpecError,
    UnknownNameError,
)
from ftbroker.jobs import TRACKER_PREFIX, Event, Job, JobStatus
from ftbroker.private import private_folder
from ftbroker.routes import PlanOptions, Route, RouteContext, TokenNeed, resolve_model, route_order

if TYPE_CHECKING:
    from ftbroker.spec import JobSpec

T = TypeVar("T")


# -- naming ------------------------------------------------------------------------------------------
def provider_tag(job_id: str, max_len: int = 40) -> str:
    """``job_id`` (``ftb-...``; another id gains the prefix) lower-cased, [a-z0-9] runs joined by single
    hyphens, at most ``max_len`` long.

    Valid as an OpenAI suffix, a Together suffix (<= 40), a Bedrock job name, custom model name and
    client request token. Too long an id keeps its head and gains a hash of the whole, so two ids
    never share a tag.
    """
    body = "-".join(re.findall(r"[a-z0-9]+", job_id.lower()))
    tag = body if body.startswith("ftb-") else f"ftb-{body}" if body else "ftb"
    if len(tag) > max_len:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
        tag = f"{tag[: max_len - 9].rstrip('-')}-{digest}"
    return tag


# -- status ------------------------------------------------------------------------------------------
def map_status(raw: str | None, table: Mapping[str, JobStatus]) -> JobStatus:
    """A provider's status value, normalized; unknown values are treated as still running."""
    return table.get(raw or "", JobStatus.RUNNING)


# -- events ------------------------------------------------------------------------------------------
def state_events(before: str | None, now: str | None, when: datetime | None, message: str | None = None
                 ) -> list[Event]:
    """For providers without an events API: one status event when the job's state word changed since the last
    poll (with the provider's status message, if any), else none."""
    if not now or now == before:
        return []
    failed = "FAIL" in now.upper()
    text = f"{now}: {message}" if message else now
    return [Event(time=when or clock.now(), kind="status", message=text, level="error" if failed else "info",
                  data={"state": now})]


# -- hyperparameters ---------------------------------------------------------------------------------
def check_range(problems: list[str], name: str, value: float | None, low: float, high: float, *,
                low_open: bool = False, source: str = "") -> None:
    """Append a problem when ``value`` is outside [low, high] (or (low, high] with ``low_open``)."""
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        where = f" ({source})" if source else ""
        problems.append(f"{name}: {value:g} is outside {bracket}{low:g}, {high:g}]{where}")


def hp_string(value: float | int) -> str:
    """A hyperparameter as Bedrock wants it (a string): integers plainly, floats shortest-exact."""
    return str(value) if isinstance(value, int) else repr(float(value))


QUOTED_PRICE = "quoted_usd_per_m_tokens"  # the key a job's price per million trained tokens is kept under


# -- the backend skeleton ----------------------------------------------------------------------------
class ManagedOptions(BaseModel):
    """``backend_options`` every managed backend takes (timings; tests shrink them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_timeout_s: float = Field(60.0, gt=0, description="timeout of every API call")
    upload_timeout_s: float = Field(900.0, gt=0, description="timeout of a file upload")
    max_retries: int = Field(2, ge=0, le=10, description="SDK retries of idempotent calls (reads)")
    submit_attempts: int = Field(6, ge=1, le=50, description="look-then-create attempts before giving up")
    retry_initial_s: float = Field(2.0, gt=0, description="first wait between submit attempts")
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between submit attempts")
    poll_interval_s: float = Field(30.0, gt=0, description="how often following polls the provider")


class WandbOptions(ManagedOptions):
    """Options of a provider with its own Weights & Biases integration: it logs the job's metrics to your project."""

    report_to: list[Literal["wandb"]] = Field(default_factory=list, description="wandb: the provider logs the job "
                                              "to your W&B project (its own integration, its only tracker)")
    tracker_project: str | None = Field(None, min_length=1,
                                        description="the W&B project (default: WANDB_PROJECT, else ftbroker)")
    wandb_entity: str | None = Field(None, min_length=1, description="the W&B team or user (default: the key's)")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        return split_list(value)

    def wandb(self, job_id: str) -> dict[str, str] | None:
        """The W&B run the provider is asked for (project, run name: the ftbroker job, entity), if any."""
        if "wandb" not in self.report_to:
            return None
        project = self.tracker_project or os.environ.get("WANDB_PROJECT") or WANDB_DEFAULT_PROJECT
        return {"project": project, "name": job_id, **({"entity": self.wandb_entity} if self.wandb_entity else {})}


WANDB_DEFAULT_PROJECT = "ftbroker"


def wandb_run(project: str | None, name: str | None, entity: str | None = None, url: str | None = None
              ) -> dict[str, str]:
    """``job.remote``'s record of where W&B keeps a provider's run: its page when the provider says it, else its
    project and name."""
    if url:
        return {f"{TRACKER_PREFIX}wandb": url}
    if not project:
        return {}
    return {f"{TRACKER_PREFIX}wandb": f"W&B project {f'{entity}/' if entity else ''}{project}, run {name or '?'}"}


@dataclass(frozen=True)
class Upload:
    """A converted dataset file as uploaded: the provider's handle and what it holds."""

    role: str  # "training" | "validation"
    file: ConvertedFile
    remote_id: str
    reused: bool


class ManagedBackend:
    """The flow every managed API shares; a provider module fills in the ``_provider_*`` hooks.

    - ``validate``: the spec's provider-specific problems (SpecError); the dataset read and priced as
      ``ftbroker plan`` does it, its problems for this provider and model raised (DatasetError, FILE:LINE),
      then converted to the provider's format (what only the target format can refuse, DatasetError).
    - ``submit``: convert; then ``submit_once``: look for the job by its tag, else upload each file
      (reusing one already uploaded with the same content) and create the job with SDK retries off.
      Every remote handle is ``tracker.remember``-ed as soon as it exists.
    - ``poll`` / ``cancel`` / ``result``: SDK errors become ftbroker errors (the Broker backs off on the
      transient ones); the provider's error message is surfaced, scrubbed of secrets.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    Options: ClassVar[type[ManagedOptions]]
    sdk_package: ClassVar[str]  # the PyPI package / import name of the official SDK
    extra: ClassVar[str]  # the ftbroker extra that installs it
    status_table: ClassVar[Mapping[str, JobStatus]]  # the provider's status words, from its API reference
    line_rules: ClassVar[LineRules | None] = None  # its provider's own dataset line rules (ftbroker.data.providers)
    key_shapes: ClassVar[tuple[str, ...]] = ()  # regular expressions of its credentials' shapes (ftbroker.redact)

    def __init__(self, options: ManagedOptions, *, home: Path, client: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.options = options
        self.home = Path(home)
        self._client = client
        self.backoff = Backoff(options.retry_initial_s, options.retry_max_s, sleep=sleep)
        self._contexts: dict[str, RouteContext] = {}  # spec (JSON) -> its data as validate read them, to price
        self._validated: dict[tuple, Any] = {}  # (spec, its files' sizes and times) -> the report validate gave

    # -- the SDK ------------------------------------------------------------------------------------
    def sdk(self) -> Any:
        try:
            return importlib.import_module(self.sdk_package)
        except ImportError as exc:
            raise ExtraNotInstalledError(self.sdk_package, self.extra, f"the {self.name} backend") from exc

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def _writes(self) -> Any:
        """The (Stainless-generated) client for non-idempotent calls: SDK retries off, since ``submit_once``
        retries those itself, looking for what an earlier attempt may have created first."""
        return self.client.with_options(max_retries=0)

    def optional(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``call`` for data a job can do without (metrics): a failure costs that data this time (None), never the
        poll or the result that asked for it."""
        try:
            return self.call(doing, fn, *args, **kwargs)
        except BackendError:
            return None

    def call(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with the SDK's exceptions translated (``doing`` says what for)."""
        try:
            return fn(*args, **kwargs)
        except FtBrokerError:
            raise
        except Exception as exc:
            if not isinstance(exc, self._sdk_errors()):
                raise
            raise translate_error(exc, self.name, doing) from exc

    # -- routes (ftbroker.routes.RouteSource) --------------------------------------------------------
    @classmethod
    def token_needs(cls, catalog: Any, options: PlanOptions) -> list[TokenNeed]:
        return managed_routes.token_needs(managed_routes.candidates(catalog, options, cls.capabilities.providers))

    @classmethod
    def routes(cls, context: RouteContext) -> list[Route]:
        """The catalog offers of this backend's providers, priced for the dataset, each runnable with it."""
        return managed_routes.offer_routes(context, cls.capabilities.providers, backend=cls.name,
                                           route_options=cls._route_options)

    @classmethod
    def plan_notes(cls, context: RouteContext) -> tuple[str, ...]:
        return ()

    @classmethod
    def _route_options(cls, route: Route) -> Mapping[str, Any]:
        """The backend options that run ``route`` as it was priced (e.g. Together's ``n_evals``)."""
        return {}

    # -- validate -----------------------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> Any:
        """Provider-specific spec problems (SpecError); then the dataset read with the counter its offer bills by,
        checked against the general rules, this provider's and the model's offer (DatasetError), and converted
        (what only the target format can refuse, DatasetError)."""
        problems = self._spec_problems(spec)
        if problems:
            raise SpecError(problems)
        # the same spec on unchanged files (a sweep of jobs through the SDK) is not read again
        key = (spec.model_dump_json(), *(_stamp(path) for path in (spec.dataset, spec.validation)))
        if key in self._validated:
            return self._validated[key]
        from ftbroker import clock
        from ftbroker.data.analysis import analyze

        context = self._read(spec)
        if context is None:  # a model the catalog does not know: checked all the same, its price unknown
            report = analyze(spec.dataset, rules=self._own_rules())
            validation = analyze(spec.validation, rules=self._own_rules()) if spec.validation else None
            route = None
        else:
            self._contexts[spec.model_dump_json()] = context
            report, validation = context.report, context.validation
            route = self._route(dataclasses.replace(context, today=clock.today()))
        issues = self._dataset_issues(report, validation, route)
        if issues:
            raise DatasetError(issues)
        formats = {"training": report.format, "validation": validation.format if validation else None}
        issues = [issue for _, converted in self.convert(spec, formats) for issue in converted.errors]
        if issues:
            raise DatasetError(issues)
        self._validated[key] = report
        return report

    def _read(self, spec: JobSpec) -> RouteContext | None:
        """The dataset (and validation set) read as a plan reads it for this provider's offers of the spec's model,
        counted with the tokenizer they bill by, and what prices them; None when the catalog knows the model under
        none of ``_catalog_names``."""
        from ftbroker import clock
        from ftbroker.data.analysis import analyze
        from ftbroker.pricing.catalog import load_catalog
        from ftbroker.tokens.resolve import resolve

        catalog = load_catalog()
        for name in self._catalog_names(spec.model):
            try:
                request = resolve_model(catalog, name)
            except UnknownNameError:
                continue
            options = PlanOptions(models=(request,), method=spec.method, epochs=spec.hyperparameters.epochs,
                                  **self._plan_options(spec))
            needs = self.token_needs(catalog, options)
            counters = {need.spec: resolve(need.spec.tokenizer, hf_repo=need.spec.hf_repo, family=need.spec.family)
                        for need in needs}
            limits = {counters[n.spec].key: n.limit for n in needs if n.limit}
            unique = list({c.key: c for c in counters.values()}.values())
            report = analyze(spec.dataset, counters=unique, limits=limits, rules=self._own_rules())
            validation = (analyze(spec.validation, counters=unique, limits=limits, rules=self._own_rules())
                          if spec.validation else None)
            return RouteContext(report, validation, catalog, options, {s: c.key for s, c in counters.items()},
                                clock.today())
        return None

    def _own_rules(self) -> tuple[LineRules, ...]:
        """The provider's line rules a job's file is checked by: its own, the very object a plan checks."""
        return (self.line_rules,) if self.line_rules else ()

    def _route(self, context: RouteContext) -> Route | None:
        """The offer this job runs on, priced for its data on ``context.today``: the plan's first of them."""
        routes = sorted(self.routes(context), key=route_order)
        return routes[0] if routes else None

    def _dataset_issues(self, report: Any, validation: Any, route: Any) -> list[DataIssue]:
        """What in the data this provider and model refuse, each rule from the one place that holds it: the data
        layer's general rules (errors) and this provider's (provider_issues), and the catalog row of the model
        (why its route is out, e.g. too few examples or a format the model does not take)."""
        issues = sorted([*report.errors, *report.provider_issues.get(self.name, ())], key=lambda i: i.line)
        if validation is not None:
            # rules about a whole file (line 0: its format, how many examples) are the training file's
            issues += sorted([*validation.errors, *(i for i in validation.provider_issues.get(self.name, ())
                                                    if i.line)], key=lambda i: i.line)
            if not validation.errors and validation.format != report.format:
                issues.append(DataIssue(validation.path, 0, f"the validation data are {validation.format}; the "
                                                            f"training data are {report.format}"))
        if not issues and route is not None and not route.feasible and not route.closed:
            issues.append(DataIssue(report.path, 0, f"{route.model} on {self.name}: {route.reason}"))
        return issues

    def convert(self, spec: JobSpec, formats: Mapping[str, str | None] | None = None
                ) -> list[tuple[str, ConvertedFile]]:
        """The training (and validation) data in the provider's format, under ``home/uploads/<backend>``.
        ``formats``: each role's data format where known (else read from the head of its file)."""
        from ftbroker.data.reader import file_format, read_examples

        private_folder(self.home / "uploads")  # copies of the training data
        folder = private_folder(self.home / "uploads" / self.name)
        convert = self._converter(spec)
        out = []
        for role, path in (("training", spec.dataset), ("validation", spec.validation)):
            if path is None:
                continue
            fmt = (formats or {}).get(role) or file_format(path)
            fd, target = tempfile.mkstemp(dir=folder, prefix=f".{role}-", suffix=".jsonl")  # private: 0600
            os.close(fd)
            try:
                converted = convert_file(read_examples(path), source=path, fmt=fmt, convert=convert,
                                         out=Path(target))
                final = folder / converted.upload_name  # named by its content: the same bytes, the same name
                os.replace(target, final)
            finally:
                Path(target).unlink(missing_ok=True)
            out.append((role, dataclasses.replace(converted, path=final)))
        return out

    # -- quote --------------------------------------------------------------------------------------
    def quote(self, spec: JobSpec, dataset: Any, env: Environment) -> Quote:
        """PURE: the offer ``validate`` read the data for, priced as a plan prices it (catalog price x billed
        tokens, availability on ``env.today``), as a Quote. No catalog offer for the model: the cost is unknown (a
        budget then refuses the job, saying why). A closed route is ``ROUTE_UNAVAILABLE`` with its date."""
        context = self._contexts.get(spec.model_dump_json())
        route = self._route(dataclasses.replace(context, today=env.today)) if context is not None else None
        if route is None:
            return Quote(backend=self.name, reason=f"the catalog has no {self.name} offer for {spec.model}: its "
                                                   "cost cannot be estimated")
        return quote_from_route(self.name, route)

    # -- submit -------------------------------------------------------------------------------------
    def submit(self, job: Job, tracker: Tracker) -> Submission:
        files = self.convert(job.spec)
        errors = [issue for _, converted in files for issue in converted.errors]
        if errors:
            raise DatasetError(errors)

        def find() -> tuple[Mapping[str, Any], bool] | None:
            found = self._provider_find(job)
            return None if found is None else (found, True)

        def create() -> tuple[Mapping[str, Any], bool]:
            self._provider_preflight(job)
            uploads = [self._upload(job, role, converted, tracker) for role, converted in files]
            self._provider_price_check(job, uploads, tracker)
            raw = self._provider_create(job, uploads)
            tracker.remember(**self._handles(raw))
            return raw, False

        def on_retry(attempt: int, exc: BaseException) -> None:
            tracker.event(f"submission attempt {attempt} failed ({exc}); looking for the job before trying again",
                          kind="warning", level="warning")

        raw, reused = submit_once(find, create, attempts=self.options.submit_attempts, backoff=self.backoff,
                                  on_retry=on_retry)
        return self._submission(raw, reused)

    def find(self, job: Job) -> Submission | None:
        """The remote job created for ``job.id`` by a submission cut short, looked up by its tag (a read)."""
        raw = self._provider_find(job)
        return self._submission(raw, reused=True) if raw is not None else None

    def _submission(self, raw: Mapping[str, Any], reused: bool) -> Submission:
        status, detail = self._provider_status(raw)
        return Submission(remote=self._handles(raw), status=status, detail=detail, reused=reused)

    def check_credentials(self) -> None:
        """Build an SDK client as the environment is now, before anything is recorded: the SDK refuses a missing key
        (no network call)."""
        client = self._new_client()
        close = getattr(client, "close", None)
        if callable(close):
            close()

    def _upload(self, job: Job, role: str, converted: ConvertedFile, tracker: Tracker) -> Upload:
        remembered = job.remote.get(f"{role}_file")
        if remembered and job.remote.get(f"{role}_sha256") == converted.sha256:
            remote_id, reused = remembered, True
        else:
            remote_id = self._provider_find_upload(converted)
            reused = remote_id is not None
            if remote_id is None:
                remote_id = self._provider_upload(converted)
        tracker.remember(**{f"{role}_file": remote_id, f"{role}_sha256": converted.sha256})
        if reused:
            tracker.event(f"{role} data already uploaded as {remote_id} (same content): not uploaded again")
        return Upload(role, converted, remote_id, reused)

    # -- hooks a provider fills in ------------------------------------------------------------------
    def _new_client(self) -> Any:
        raise NotImplementedError

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _spec_problems(self, spec: JobSpec) -> list[str]:
        raise NotImplementedError

    def _converter(self, spec: JobSpec) -> Converter:
        """The per-line converter into the provider's format for the spec's model."""
        raise NotImplementedError

    def _catalog_names(self, model: str) -> tuple[str, ...]:
        """The names to look the provider's model id up by in the catalog, in order."""
        return (model,)

    def _plan_options(self, spec: JobSpec) -> dict[str, Any]:
        """``PlanOptions`` fields that price the job as the backend will submit it (e.g. ``n_evals``)."""
        return {}

    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def _provider_preflight(self, job: Job) -> None:
        """Checks that need the provider (e.g. its per-model limits), before anything is uploaded."""

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        raise NotImplementedError

    def _provider_upload(self, converted: ConvertedFile) -> str:
        raise NotImplementedError

    def _provider_price_check(self, job: Job, uploads: list[Upload], tracker: Tracker) -> None:
        """The provider's own price for the uploaded data, beside the catalog's, before the job is created: a
        refusal here (a budget it exceeds) creates nothing. Providers without a price endpoint: nothing to do."""

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        raise NotImplementedError

    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        """The provider's record of a submitted job."""
        raise NotImplementedError

    def _provider_cancel(self, job: Job) -> Mapping[str, Any] | None:
        """Ask the provider to stop the job; its record if the answer carries one."""
        raise NotImplementedError

    def _provider_status(self, raw: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
        """(normalized status, the provider's own word) of a job record."""
        return map_status(raw.get("status"), self.status_table), raw.get("status")

    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        """What ``job.remote`` keeps to find the job again."""
        return {"job_id": raw["id"]}

    # -- cancel -------------------------------------------------------------------------------------
    def cancel(self, job: Job) -> Update:
        try:
            raw = self._provider_cancel(job) or self._provider_fetch(job)
        except ProviderAPIError:
            raw = self._provider_fetch(job)  # refused because it already ended: report where it ended
            if not self._provider_status(raw)[0].terminal:
                raise
        status, detail = self._provider_status(raw)
        return Update(status=status, detail=detail)


def _stamp(path: str | None) -> tuple[int, int] | None:
    """What changes when a file does: its size and modification time (None: no file, or none to read)."""
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns) if stat else None


def quote_from_route(backend: str, route: Route) -> Quote:
    """A managed route (an offer priced for this dataset, open or closed) as the backend's Quote."""
    closed = route.closed
    reason = None
    if closed:
        reason = f"{route.model}: {route.reason}"
    elif route.cost_usd is None:  # said when a budget refuses the job
        reason = (f"price unknown: the catalog has no {backend} training price for {route.model}"
                  if not route.price_known else f"{route.model}: {'; '.join(route.notes)}")
    breakdown = {**route.breakdown, "price_source": route.price_source,
                 "price_as_of": str(route.price_as_of) if route.price_as_of else None, "epochs": route.epochs}
    price = route.breakdown.get("usd_per_m_tokens")
    # kept with the job (ledger ``resources``) so the actual cost is priced as quoted: trained tokens x this
    resources = {QUOTED_PRICE: float(price)} if price is not None else {}
    return Quote(backend=backend, verdict=Verdict.ROUTE_UNAVAILABLE if closed else Verdict.OK, reason=reason,
                 cost_usd=route.cost_usd, billed_tokens=route.billed_tokens, warnings=tuple(route.notes),
                 breakdown=breakdown, resources=resources)


def actual_cost(job: Job, trained_tokens: int | None) -> Decimal | None:
    """What a job cost, from the tokens the provider says it trained and the price it was quoted at."""
    price = job.resources.get(QUOTED_PRICE)
    if trained_tokens is None or price is None:
        return None
    return (Decimal(trained_tokens) * Decimal(str(price)) / Decimal(1_000_000)).quantize(Decimal("0.0001"))


def plain(raw: Any) -> dict[str, Any]:
    """A provider record as JSON-able data (SDK models dumped; datetimes as ISO strings)."""
    if hasattr(raw, "model_dump"):  # SDK models are lenient: a value off their type is kept, not warned about
        raw = raw.model_dump(mode="json", by_alias=True, warnings=False)
    return json.loads(json.dumps(raw, default=str))
