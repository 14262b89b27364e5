"""Paid deployments an evaluation needs: a Together dedicated endpoint, a Bedrock Provisioned Throughput.

A fine-tuned model at these providers cannot be called per token: Together serves it only on a dedicated endpoint
(docs.together.ai/docs/fine-tuning/deployment), Bedrock only through Provisioned Throughput (non-Nova custom
models: docs.aws.amazon.com/bedrock/latest/userguide/model-customization-use.html; one model unit, no commitment,
at most two per account: .../prov-throughput.html). Each bills by the hour while it exists, busy or idle, so it is
handled like a rented GPU:

1. quoted (hours x the hourly price) and held to ``--max-cost`` before anything is created;
2. recorded in the ledger (state ``intent``) BEFORE the provider is asked to create it, under a name derived
   from the job (``ftb-...-tuned-1``), so a crash between the two loses nothing;
3. created exactly once: the provider is searched for that name first (Bedrock also gets it as its idempotency
   token), and every handle is written to the ledger as soon as it exists;
4. torn down in the evaluation's ``finally``, and, should the process die first, found again by any later process:
   ``live_deployments()`` lists what is not deleted, ``delete_deployment()`` deletes one (what ``ftbroker gc``
   calls, through ``DeploymentLeftovers``). Together deployments also stop themselves after 30 idle minutes
   (``inactive_timeout``), a second net;
5. never kept past the quoted hours: the evaluation checks their age before each batch of calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ftbroker.backends._managed import provider_tag
from ftbroker.backends.base import Leftover
from ftbroker.backends.provider_calls import Backoff
from ftbroker.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailableError,
    BudgetExceededError,
    ProviderAPIError,
)
from ftbroker.evaluation import store
from ftbroker.evaluation.lock import JobBusyError
from ftbroker.evaluation.remote import Connection, boto_config, boto_errors, boto_session, guarded, sdk, with_retries
from ftbroker.evaluation.store import DeploymentRecord
from ftbroker.ledger import Ledger

INACTIVE_TIMEOUT_MIN = 30  # Together stops an idle deployment after this (its minimum)


class Deployer(Protocol):
    provider: str

    def find(self, record: DeploymentRecord) -> dict[str, str] | None:
        """The handles of the deployment named ``record.id`` if the provider has it (None otherwise)."""

    def create(self, record: DeploymentRecord, remember: Callable[..., None]) -> None:
        """Create it; ``remember(**handles)`` each handle the moment it exists."""

    def state(self, record: DeploymentRecord) -> tuple[str, str | None]:
        """("creating" | "live" | "failed" | "gone", the provider's word)."""

    def delete(self, record: DeploymentRecord) -> None:
        """Delete it; one already gone is fine."""


def _gone(exc: ProviderAPIError) -> bool:
    return exc.status_code == 404 or "ResourceNotFound" in str(exc)


class TogetherDeployer:
    """A dedicated endpoint with one deployment of the model (Together SDK 3.x, project-scoped v2 API:
    ``endpoints.create`` / ``endpoints.deployments.create``; ``TOGETHER_PROJECT_ID``). The deployment is called by
    its own name (``<project>/<endpoint>/<deployment>``), which needs no traffic split. The model is passed as the
    job names it (its output model); the SDK documents model resource names ``projects/{id}/models/{id}``, and how
    a fine-tune's output name maps to one is not confirmed: a config revision (``--option config=...``) selects the
    hardware."""

    provider = "together"
    _READY: ClassVar[dict[str, str]] = {"DEPLOYMENT_STATE_READY": "live", "DEPLOYMENT_STATE_FAILED": "failed",
              "DEPLOYMENT_STATE_STOPPED": "failed"}

    def __init__(self, connection: Connection):
        module = sdk("together", "together", "a Together dedicated endpoint")
        self._errors = (module.TogetherError,)
        try:
            self.client = module.Together(base_url=connection.settings.get("base_url"), timeout=connection.timeout_s,
                                          max_retries=connection.max_retries,
                                          project_id=connection.settings.get("project_id"))
        except module.TogetherError as exc:
            raise BackendAuthError("no credentials: set TOGETHER_API_KEY", backend=self.provider) from exc
        self.settings = connection.settings

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        return guarded(self.provider, doing, self._errors, fn)

    def find(self, record: DeploymentRecord) -> dict[str, str] | None:
        endpoints = self._call("looking for the endpoint", lambda: list(
            self.client.endpoints.list(filter=f'name:"{record.id}"')))
        endpoint = next((e for e in endpoints if e.name == record.id or e.name.endswith("/" + record.id)), None)
        if endpoint is None:
            return None
        found = {"endpoint_id": endpoint.id}
        deployments = self._call("looking for the deployment", lambda: list(
            self.client.endpoints.deployments.list(endpoint.id)))
        if deployments:
            found |= {"deployment_id": deployments[0].id, "invoke": deployments[0].name}
        return found

    def create(self, record: DeploymentRecord, remember: Callable[..., None]) -> None:
        endpoint_id = record.remote.get("endpoint_id")
        if not endpoint_id:
            endpoint = self._call("creating the endpoint", lambda: self.client.endpoints.create(name=record.id))
            endpoint_id = endpoint.id
            remember(endpoint_id=endpoint_id)
        options = {k: self.settings[k] for k in ("config",) if self.settings.get(k)}
        deployment = self._call("creating the deployment", lambda: self.client.endpoints.deployments.create(
            endpoint_id, name="ftbroker", model=record.model, autoscaling={"min_replicas": 1, "max_replicas": 1},
            inactive_timeout=INACTIVE_TIMEOUT_MIN, **options))
        remember(deployment_id=deployment.id, invoke=deployment.name)

    def state(self, record: DeploymentRecord) -> tuple[str, str | None]:
        try:
            deployment = self._call("reading the deployment", lambda: self.client.endpoints.deployments.retrieve(
                record.remote["deployment_id"], endpoint_id=record.remote["endpoint_id"]))
        except ProviderAPIError as exc:
            if _gone(exc):
                return "gone", None
            raise
        word = deployment.status.state
        return self._READY.get(word, "creating"), word

    def delete(self, record: DeploymentRecord) -> None:
        """Every deployment of the endpoint (one the ledger never learnt of included), then the endpoint; an
        endpoint created but never recorded (a create answered with an error) is found by its name."""
        endpoint_id = record.remote.get("endpoint_id") or (self.find(record) or {}).get("endpoint_id")
        if not endpoint_id:
            return
        deployments = _unless_gone(lambda: self._call("listing the endpoint's deployments", lambda: list(
            self.client.endpoints.deployments.list(endpoint_id)))) or []
        for deployment in deployments:
            _unless_gone(lambda d=deployment: self._call("deleting the deployment", lambda: self.client.endpoints.
                                                         deployments.delete(d.id, endpoint_id=endpoint_id)))
        _unless_gone(lambda: self._call("deleting the endpoint", lambda: self.client.endpoints.delete(endpoint_id)))


def _unless_gone(fn: Callable[[], Any]) -> Any:
    """``fn()``; None when the provider says what it acts on is already gone (404)."""
    try:
        return fn()
    except ProviderAPIError as exc:
        if not _gone(exc):
            raise
        return None


class BedrockDeployer:
    """Provisioned Throughput of a custom model: one model unit, no commitment (hourly)."""

    provider = "bedrock"
    _STATES: ClassVar[dict[str, str]] = {"InService": "live", "Failed": "failed", "Creating": "creating", "Updating": "creating"}

    def __init__(self, connection: Connection):
        session = boto_session(connection.settings)
        self._errors = boto_errors()
        self.client = guarded(self.provider, "connecting to Bedrock", self._errors, lambda: session.client(
            "bedrock", config=boto_config(connection), endpoint_url=connection.settings.get("endpoint_url")))

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        return guarded(self.provider, doing, self._errors, fn)

    def find(self, record: DeploymentRecord) -> dict[str, str] | None:
        listed = self._call("looking for the provisioned throughput", lambda: self.client.
                            list_provisioned_model_throughputs(nameContains=record.id))
        found = next((s for s in listed.get("provisionedModelSummaries", [])
                      if s["provisionedModelName"] == record.id), None)
        return {"arn": found["provisionedModelArn"], "invoke": found["provisionedModelArn"]} if found else None

    def create(self, record: DeploymentRecord, remember: Callable[..., None]) -> None:
        created = self._call("creating the provisioned throughput", lambda: self.client.
                             create_provisioned_model_throughput(
                                 modelUnits=1, provisionedModelName=record.id, modelId=record.model,
                                 clientRequestToken=record.id,
                                 tags=[{"key": "ftbroker-job-id", "value": record.job_id}]))
        remember(arn=created["provisionedModelArn"], invoke=created["provisionedModelArn"])

    def state(self, record: DeploymentRecord) -> tuple[str, str | None]:
        try:
            got = self._call("reading the provisioned throughput", lambda: self.client.
                             get_provisioned_model_throughput(provisionedModelId=record.remote["arn"]))
        except ProviderAPIError as exc:
            if _gone(exc):
                return "gone", None
            raise
        return self._STATES.get(got["status"], "creating"), got["status"]

    def delete(self, record: DeploymentRecord) -> None:
        arn = record.remote.get("arn") or (self.find(record) or {}).get("arn")  # one created but never recorded
        if arn:
            _unless_gone(lambda: self._call("deleting the provisioned throughput", lambda: self.client.
                                            delete_provisioned_model_throughput(provisionedModelId=arn)))


DEPLOYERS: dict[str, type] = {"together": TogetherDeployer, "bedrock": BedrockDeployer}


@dataclass
class Timing:
    """How deployments are waited for: polls every ``poll_s`` (slept through ``sleep``, so tests wait on nothing),
    up to ``ready_timeout_s`` of waiting; transient errors retried ``attempts`` times."""

    poll_s: float = 30.0
    ready_timeout_s: float = 3600.0
    attempts: int = 4
    backoff: Backoff | None = None
    sleep: Callable[[float], None] = time.sleep


class Deployments:
    """The deployments of one evaluation: created (exactly once), waited for, checked, torn down."""

    def __init__(self, ledger: Ledger, deployer: Deployer, timing: Timing, *, max_hours: float):
        self.ledger, self.deployer, self.timing, self.max_hours = ledger, deployer, timing, max_hours
        self.used: list[str] = []  # ids of the deployments this evaluation brought up or reused

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        return with_retries(fn, attempts=self.timing.attempts, backoff=self.timing.backoff or Backoff())

    def ensure(self, job_id: str, side: str, model: str, usd_per_hour: Decimal | None,
               settings: Mapping[str, Any]) -> DeploymentRecord:
        """A live deployment of ``model`` for the job's ``side``: the job's own one still up, else a new one."""
        prefix = f"{provider_tag(job_id)}-{side}-"
        existing = store.deployments_of(self.ledger, job_id, prefix)
        # reused: one still coming up or live (a crashed evaluation's); one failing to delete is left to gc
        active = [r for r in existing if r.state in ("intent", "creating", "live") and r.model == model]
        if active:
            record = active[-1]
        else:  # a new name each time: Bedrock keeps idempotency tokens for a while after a delete
            remote = {k: str(v) for k, v in settings.items() if v is not None}
            record = store.record_intent(self.ledger, DeploymentRecord(
                id=f"{prefix}{len(existing) + 1}", job_id=job_id, provider=self.deployer.provider, model=model,
                state="intent", remote=remote, usd_per_hour=usd_per_hour))
        self.used.append(record.id)
        if record.state == "intent" or not record.remote.get("invoke"):
            record = self._bring_up(record)
        return self._wait(record)

    def _bring_up(self, record: DeploymentRecord) -> DeploymentRecord:
        """Create it exactly once: every attempt (a retry after a create that may have succeeded, or a rerun after a
        crash) first looks for it by name, and finishes what it finds half made."""
        store.update_deployment(self.ledger, record.id, state="creating")

        def remember(**handles: str) -> None:
            store.update_deployment(self.ledger, record.id, remote=handles)

        def attempt() -> None:
            found = self.deployer.find(self._fresh(record.id))
            if found:
                remember(**found)
                if found.get("invoke"):
                    store.update_deployment(self.ledger, record.id, detail="found at the provider: not created again")
                    return
            self.deployer.create(self._fresh(record.id), remember)

        self._retrying(attempt)
        return self._fresh(record.id)

    def _fresh(self, deployment_id: str) -> DeploymentRecord:
        return store.get_deployment(self.ledger, deployment_id)

    def _wait(self, record: DeploymentRecord) -> DeploymentRecord:
        waited = 0.0
        while True:
            state, word = self._retrying(lambda: self.deployer.state(record))
            if state == "live":
                return store.update_deployment(self.ledger, record.id, state="live", detail=word)
            if state in ("failed", "gone"):
                store.update_deployment(self.ledger, record.id, state="failed", detail=word or state)
                raise BackendError(f"deployment {record.id} of {record.model} {state} ({word or 'not found'})",
                                   backend=self.deployer.provider)
            if waited >= self.timing.ready_timeout_s:
                raise BackendUnavailableError(f"deployment {record.id} is still {word} after {waited:g} s",
                                              backend=self.deployer.provider)
            self.timing.sleep(self.timing.poll_s)
            waited += self.timing.poll_s

    def check_hours(self) -> None:
        """Refuse to go on with a deployment older than the hours the quote allowed (the budget's promise)."""
        for deployment_id in self.used:
            record = store.get_deployment(self.ledger, deployment_id)
            if record.hours() > self.max_hours:
                raise BudgetExceededError(f"deployment {record.id} has run {record.hours():.2f} h, past the "
                                          f"{self.max_hours:g} h the quote allowed; stopping (it is deleted now)")

    def teardown(self) -> list[str]:
        """Delete every deployment this evaluation used; the problems, one line each (empty: all deleted)."""
        problems = []
        for deployment_id in dict.fromkeys(self.used):
            try:
                delete(self.ledger, store.get_deployment(self.ledger, deployment_id), self.deployer,
                       self._retrying)
            except BackendError as exc:
                problems.append(f"{deployment_id}: {exc}")
        return problems

    def cost(self) -> tuple[Decimal, bool]:
        """(what the used deployments cost so far, whether every one of them has a known price)."""
        total, known = Decimal(0), True
        for deployment_id in dict.fromkeys(self.used):
            record = store.get_deployment(self.ledger, deployment_id)
            if record.usd_per_hour is None:
                known = False
            else:
                total += record.usd_per_hour * Decimal(str(round(record.hours(), 6)))
        return total, known


def delete(ledger: Ledger, record: DeploymentRecord, deployer: Deployer,
           retrying: Callable[[Callable[[], Any]], Any] | None = None) -> DeploymentRecord:
    """Delete one deployment at the provider and mark it deleted (kept ``deleting`` with the error if that fails)."""
    if record.state == "deleted":
        return record
    store.update_deployment(ledger, record.id, state="deleting")
    try:
        (retrying or (lambda fn: fn()))(lambda: deployer.delete(store.get_deployment(ledger, record.id)))
    except BackendError as exc:
        store.update_deployment(ledger, record.id, detail=f"delete failed: {exc}")
        raise
    return store.update_deployment(ledger, record.id, state="deleted")


def deployer_for(record: DeploymentRecord, *, timeout_s: float = 60.0, max_retries: int = 2) -> Deployer:
    """The deployer that reaches ``record``'s deployment, from what the record keeps (region, base URL...)."""
    return DEPLOYERS[record.provider](Connection(record.remote, timeout_s, max_retries))


# --- the hook for a general clean-up (``ftbroker gc``) ---------------------------------------------------------

def live_deployments(home: Path | None = None) -> list[DeploymentRecord]:
    """Every deployment an evaluation recorded and that is not known to be deleted (intent, creating, live,
    deleting, failed), oldest first; ``in_use`` is True while an evaluation of its job runs (leave those)."""
    from ftbroker.evaluation.lock import locked

    home = home or default_home()
    with Ledger(home / "ledger.sqlite3") as ledger:
        records = store.active_deployments(ledger)
    return store.mark_in_use(records, {r.job_id: locked(home, r.job_id) for r in records})


def delete_deployment(deployment_id: str, home: Path | None = None) -> DeploymentRecord:
    """Delete one recorded deployment at its provider and mark it deleted in the ledger; idempotent (one already
    gone at the provider is marked deleted). Refused (JobBusyError, exit 3) while an evaluation of its job runs:
    it takes the job's lock for the time of the delete."""
    from ftbroker.evaluation.lock import job_lock

    home = home or default_home()
    with Ledger(home / "ledger.sqlite3") as ledger:
        record = store.get_deployment(ledger, deployment_id)
        with job_lock(home, record.job_id, f"deleting deployment {deployment_id}"):
            return delete(ledger, store.get_deployment(ledger, deployment_id), deployer_for(record))


def default_home() -> Path:
    from ftbroker.ledger import default_home as home

    return home()


class DeploymentLeftovers:
    """``ftbroker gc``'s view of the paid deployments evaluations recorded (a ``Collectable``): every one not known
    to be deleted is listed with what it has cost (its hourly price x the hours since its create call); it goes
    unless an evaluation of its job is running now (that evaluation holds the job's lock and deletes it itself)."""

    name = "eval"

    def __init__(self, home: Path):
        self.home = home

    @property
    def collect_scope(self) -> tuple[str, ...]:
        return (str(self.home),)

    def leftovers(self, job: Callable[[str], Any]) -> list[Leftover]:
        return [self._leftover(record) for record in live_deployments(self.home)]

    def _leftover(self, record: DeploymentRecord) -> Leftover:
        hours = record.hours()
        cost = (record.usd_per_hour * Decimal(str(hours))).quantize(Decimal("0.0001")) \
            if record.usd_per_hour is not None else None
        reason = None if record.in_use else (f"no evaluation of job {record.job_id} is running, and the deployment is "
                                             f"{record.state}")
        note = "" if cost is not None else "its hourly price is unknown"
        if record.in_use:
            note = "an evaluation of its job is running (it deletes the deployment when it ends)"
        return Leftover(backend=self.name, resource=record.id, job_id=record.job_id, reason=reason, note=note,
                        description=f"{record.provider} deployment of {record.model}, {record.state} {_duration(hours)}",
                        cost_usd=cost, verb="delete")

    def collect(self, leftover: Leftover) -> str:
        try:
            delete_deployment(leftover.resource, self.home)
        except JobBusyError:  # an evaluation of its job started since it was listed: it is in use now
            return "kept: an evaluation of its job started meanwhile"
        return "deleted"


def _duration(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"
