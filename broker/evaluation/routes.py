"""How each side of an evaluation (the base model, the fine-tuned one) is called, per backend.

=========  ===========================================  ===============================================
backend    base model                                   fine-tuned model
=========  ===========================================  ===============================================
local      the run's base model (transformers, vLLM)    its adapter on that base, or its full weights
openai     chat completions, the job's base snapshot    chat completions, the job's ``ft:...`` model
together   a dedicated endpoint of the base model       a dedicated endpoint of the job's output model
bedrock    Converse, on demand (the base model id)      Converse on a Provisioned Throughput of the
                                                        job's custom model
=========  ===========================================  ===============================================

An OpenAI job with a ``base_url`` (an OpenAI-compatible server) is called there; its prices are unknown unless
``eval_prices.toml`` gives them (provider ``openai-compatible``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftbroker.errors import InputError
from ftbroker.evaluation.deployments import DEPLOYERS, Deployments, Timing
from ftbroker.evaluation.prices import DeploymentPrice, ModelPrice, PriceTable
from ftbroker.evaluation.records import Answer, Example
from ftbroker.evaluation.remote import CHAT_CLIENTS, Connection
from ftbroker.jobs import Job
from ftbroker.ledger import Ledger

_CONTEXT_SUFFIX = re.compile(r":\d+k$")  # Bedrock's customization id of a base model: meta.llama3-1-8b-...:0:128k


@dataclass
class Side:
    """One model of the comparison. ``deploy``: it needs a paid deployment first (``price`` is then None and
    ``hourly`` the deployment's price, if known)."""

    role: str  # "base" | "tuned"
    model: str
    identity: str  # what the generation cache knows it by
    price: ModelPrice | None = None
    deploy: bool = False
    hourly: DeploymentPrice | None = None


class LocalRoute:
    backend = "local"
    structured_tools = False  # a local model answers in text; tool calls are compared as the template renders them

    def __init__(self, run_dir: Path):
        from ftbroker.evaluation.local import LocalModels

        self.models = LocalModels(run_dir)
        self.sides = {role: Side(role, self.models.name(role), self.models.identity(role)) for role in ("base", "tuned")}

    def settings(self, max_tokens: int) -> dict[str, Any]:
        return self.models.settings(max_tokens)

    def reference(self, example: Example) -> Answer:
        return self.models.reference(example)

    def generate(self, side: Side, examples: Sequence[Example], max_tokens: int) -> Iterator[Answer]:
        yield from self.models.generate(side.role, examples, max_tokens)

    def close(self) -> None:
        pass


@dataclass
class RemoteRoute:
    """A managed backend: chat calls through the provider's SDK, deployments brought up when a side needs one (only
    when some answer is not in the cache), and checked against the quoted hours before every call."""

    backend: str
    job_id: str
    sides: dict[str, Side]
    connection: Connection
    deployments: Deployments | None
    deploy_settings: Mapping[str, Any] = field(default_factory=dict)
    call: Callable[[Callable[[], Answer]], Answer] = lambda fn: fn()  # with_retries
    structured_tools: bool = True
    _client: Any = None
    _invoke: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = CHAT_CLIENTS[self.backend](self.connection)
        return self._client

    def settings(self, max_tokens: int) -> dict[str, Any]:
        return CHAT_CLIENTS[self.backend].settings(max_tokens)

    def reference(self, example: Example) -> Answer:
        return example.reference

    def _model(self, side: Side) -> str:
        if not side.deploy:
            return side.model
        if side.role not in self._invoke:
            record = self.deployments.ensure(self.job_id, side.role, side.model,
                                             side.hourly.usd_per_hour if side.hourly else None, self.deploy_settings)
            self._invoke[side.role] = record.remote["invoke"]
        return self._invoke[side.role]

    def generate(self, side: Side, examples: Sequence[Example], max_tokens: int) -> Iterator[Answer]:
        model = self._model(side)
        for example in examples:
            if self.deployments is not None:
                self.deployments.check_hours()
            yield self.call(lambda e=example: self.client.complete(model, e, max_tokens))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def build(job: Job, ledger: Ledger, runs: Path, prices: PriceTable, options: Any, timing: Timing,
          call: Callable[[Callable[[], Any]], Any]) -> LocalRoute | RemoteRoute:
    """The route that calls ``job``'s two models."""
    if job.backend == "local":
        return LocalRoute(runs / job.id)
    if job.backend not in CHAT_CLIENTS:
        raise InputError(f"ftbroker eval cannot call {job.backend} models yet (it covers local, openai, together and "
                         "bedrock jobs); give the fine-tuned model's answers another way")
    if not job.output_model:
        raise InputError(f"job {job.id} has no output model to call (its provider named none)")
    settings = {**job.spec.backend_options, **options.route_settings()}
    connection = Connection(settings, options.request_timeout_s, options.max_retries)
    sides = _sides(job, prices, settings)
    deployments = None
    if any(s.deploy for s in sides.values()):
        deployer = DEPLOYERS[job.backend](connection)
        deployments = Deployments(ledger, deployer, timing, max_hours=options.deployment_hours)
    keep = ("base_url", "project_id", "config", "region", "profile", "endpoint_url")
    return RemoteRoute(job.backend, job.id, sides, connection, deployments, {k: settings.get(k) for k in keep}, call)


def _sides(job: Job, prices: PriceTable, settings: Mapping[str, Any]) -> dict[str, Side]:
    base, tuned = job.spec.model, job.output_model or ""
    if job.backend == "openai":
        where = settings.get("base_url")
        provider = "openai-compatible" if where and "api.openai.com" not in where else "openai"
        return {role: Side(role, model, f"openai:{where or 'api.openai.com'}:{model}", prices.model(provider, model))
                for role, model in (("base", base), ("tuned", tuned))}
    if job.backend == "together":
        hourly = prices.deployments.get("together")
        return {role: Side(role, model, f"together:{model}", deploy=True, hourly=hourly)
                for role, model in (("base", base), ("tuned", tuned))}
    on_demand = _CONTEXT_SUFFIX.sub("", base)  # bedrock
    return {"base": Side("base", on_demand, f"bedrock:{on_demand}", prices.model("bedrock", on_demand)),
            "tuned": Side("tuned", tuned, f"bedrock:{tuned}", deploy=True, hourly=prices.deployments.get("bedrock"))}
