"""One record per managed provider, read by every suite that runs a managed backend against its stand-in.

``PROVIDERS[name]`` says how to run backend ``name`` offline: its stand-in (a loopback fake for OpenAI, Together,
Fireworks and Vertex AI; moto for Bedrock), its credentials set-up, its model as the backend and as ``plan --model``
name it, its route in a plan, the options that point it at the stand-in, and what the fault suite needs to find its
remote jobs. The contract suite (``tests/test_backend_contract.py``) runs every record; the quote, secret, fault and
plan-route suites run the records that have what they test (a price, a loopback fake, a fault plan). Adding a managed
provider adds one record here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ftbroker.backends._managed import provider_tag
from ftbroker.spec import JobSpec

from ._jobs import Outcome
from ._provider import FakeProvider
from ._server import Fault
from .bedrock_fake import BedrockHarness
from .fireworks_fake import DEFAULT_MODELS as DEFAULT_FIREWORKS_MODELS
from .fireworks_fake import FakeFireworks
from .openai_fake import FakeOpenAI
from .support import FAST, write_chat
from .together_fake import FakeTogether
from .vertex_fake import FakeVertex

FAILURE = "invalid training file: line 7 has no assistant message"
OUTCOMES = {"succeed": Outcome(), "fail": Outcome.failure(FAILURE, at_step=1), "hang": Outcome.hanging()}


@dataclass(frozen=True)
class Faults:
    """How the fault suite (``tests/test_backend_faults.py``) finds the remote jobs a provider's fake holds."""

    upload_route: str  # the fake's route that stores the data
    owner: Callable[[Any], str]  # remote job -> the ftbroker job it was created for, as the provider carries it
    remote_id: Callable[[Any], str] = lambda job: job.remote["job_id"]  # ledger job -> the fake's key of its job
    tag: Callable[[str], str] = lambda job_id: job_id  # ftbroker job id -> what the provider carries of it
    jobs: int = 50
    rate: float = 0.3
    pinned: Mapping[str, Fault] = field(default_factory=dict)  # route -> the fault its first call gets


@dataclass(frozen=True)
class Provider:
    """A managed provider's backend, run against its stand-in."""

    name: str  # the registry name
    fake: type  # the stand-in: a ``FakeProvider`` (loopback), or ``BedrockHarness`` (moto)
    model: str  # as the backend takes it
    key_variable: str | None = None  # where the backend reads its key
    key_prefix: str = "test-key-"  # how the provider's keys start (a canary of that shape is one redact knows)
    refusal: str = "Incorrect API key provided: ***"  # what a rejected key's refusal says, the key masked
    plan_model: str | None = None  # the model as `plan --model` names it
    route_id: str | None = None  # its priced route in a plan; None: the catalog has no price for it
    plan_settings: tuple[Any, ...] = ()  # what a plan of its route needs besides the model
    faults: Faults | None = None  # None: not in the fault suite

    @property
    def loopback(self) -> bool:
        return issubclass(self.fake, FakeProvider)

    def credentials(self, fake: Any, key: str, monkeypatch: Any, tmp_path: Any) -> None:
        """Give the backend ``key`` as its credentials, the way its users do."""
        monkeypatch.setenv(self.key_variable, key)

    def options(self, fake: Any) -> dict[str, Any]:
        """The backend options that point the backend at ``fake``."""
        return {"base_url": fake.base_url}

    def contract(self, tmp_path: Any, monkeypatch: Any) -> Any:
        """Its harness in the backend contract suite."""
        return LoopbackContract(self, tmp_path, monkeypatch)


class _Fireworks(Provider):
    def options(self, fake: Any) -> dict[str, Any]:
        return {"base_url": fake.base_url, "account_id": fake.account}


class _Vertex(Provider):
    """Google's application-default credentials: a service-account key whose token endpoint is the fake; the key
    a user's process holds is the access token the fake issues."""

    def credentials(self, fake: Any, key: str, monkeypatch: Any, tmp_path: Any) -> None:
        fake.access_token = key
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.write_credentials(tmp_path / "adc.json")))

    def options(self, fake: Any) -> dict[str, Any]:
        return fake.options()


class _Bedrock(Provider):
    """moto's Bedrock and S3: the AWS credentials are moto's own."""

    def options(self, fake: Any) -> dict[str, Any]:
        return {"role_arn": fake.role_arn, "region": fake.region, "s3_uri": f"s3://{fake.bucket}/ftbroker"}

    def contract(self, tmp_path: Any, monkeypatch: Any) -> Any:
        return BedrockContract(self, tmp_path)


PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("openai", FakeOpenAI, "gpt-4o-mini-2024-07-18", "OPENAI_API_KEY", "sk-canary-",
             plan_model="gpt-4o-mini-2024-07-18", route_id="openai:gpt-4o-mini-2024-07-18:sft",
             faults=Faults("files.create", lambda remote: remote.request["metadata"]["ftbroker_job_id"])),
    Provider("together", FakeTogether, "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "TOGETHER_API_KEY",
             "tgp_v1_canary", plan_model="Meta-Llama-3.1-8B-Instruct", route_id="together:Llama-3.1-8B:lora",
             # its id, as Together takes suffixes; every route, its three-call upload included, the first PUT
             # storing the bytes and answering 500 (that upload must not poison the data for the jobs after it)
             faults=Faults("files.put", lambda remote: remote.request["suffix"], jobs=12, rate=0.5,
                           pinned={"files.put": Fault.committed_error(500)})),
    _Fireworks("fireworks", FakeFireworks, DEFAULT_FIREWORKS_MODELS[0], "FIREWORKS_API_KEY", "fw_canary",
               plan_model="Llama-3.1-8B", route_id="fireworks:Llama-3.1-8B:lora",
               plan_settings=("--epochs", 2),  # Fireworks publishes no default epoch count
               faults=Faults("datasets.upload", lambda remote: remote.id, tag=lambda job_id: provider_tag(job_id, 63))),
    _Vertex("vertex", FakeVertex, "gemini-3.5-flash", key_prefix="ya29.canary", refusal="Permission denied for token ***",
            faults=Faults("gcs.upload", lambda remote: remote.request["labels"]["ftbroker-job"],
                          remote_id=lambda job: job.remote["job_id"].rsplit("/", 1)[-1],
                          tag=lambda job_id: provider_tag(job_id, 63))),
    _Bedrock("bedrock", BedrockHarness, "meta.llama3-1-8b-instruct-v1:0:128k"),
)}


def with_faults() -> list[str]:
    return sorted(name for name, p in PROVIDERS.items() if p.faults is not None)


def loopback() -> list[str]:
    return sorted(name for name, p in PROVIDERS.items() if p.loopback)


def priced() -> list[str]:
    return sorted(name for name, p in PROVIDERS.items() if p.route_id is not None)


class LoopbackContract:
    """The contract harness over a loopback fake: jobs move one step per poll."""

    failure_message = FAILURE

    def __init__(self, provider: Provider, tmp_path: Any, monkeypatch: Any):
        self.provider, self.name = provider, provider.name
        self.fake = provider.fake(advance_on_poll=True).start()
        provider.credentials(self.fake, f"{provider.key_prefix}for-the-contract", monkeypatch, tmp_path)
        self.data = write_chat(tmp_path / "data.jsonl")

    def spec(self, scenario: str) -> JobSpec:
        self.fake.next_outcome(OUTCOMES[scenario])
        return JobSpec(dataset=str(self.data), model=self.provider.model, backend=self.name,
                       backend_options={**self.provider.options(self.fake), **FAST})

    def wait(self, seconds: float) -> None:
        """Nothing to wait for: the fake moves a job one step each time it is polled."""

    def close(self) -> None:
        self.fake.stop()


class BedrockContract:
    """The contract harness over moto, which never moves a job: the harness moves them each time the Broker waits."""

    failure_message = FAILURE

    def __init__(self, provider: Provider, tmp_path: Any):
        self.provider, self.name = provider, provider.name
        self.aws = provider.fake().__enter__()
        self.data = write_chat(tmp_path / "data.jsonl")
        self.scenarios: list[str] = []  # one per job created, in order

    def spec(self, scenario: str) -> JobSpec:
        self.scenarios.append(scenario)
        options = {**self.provider.options(self.aws), "s3_uri": f"s3://{self.aws.bucket}/contract"}
        return JobSpec(dataset=str(self.data), model=self.provider.model, backend=self.name,
                       backend_options={**FAST, **options})

    def wait(self, seconds: float) -> None:
        """The Broker waits between polls: finish the jobs whose scenario ends (moto never moves them)."""
        for scenario, job in zip(self.scenarios, list(self.aws.jobs().values()), strict=False):
            if job.status != "InProgress":
                continue
            if scenario == "succeed":
                self.aws.complete(job.job_name)
            elif scenario == "fail":
                self.aws.fail(job.job_name, FAILURE)

    def close(self) -> None:
        self.aws.__exit__(None, None, None)
