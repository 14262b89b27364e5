"""The managed backends' harnesses for the backend contract suite (``tests/test_backend_contract.py``).

Each runs its backend against its stand-in provider: the loopback fakes for OpenAI, Together, Fireworks and Vertex
AI (jobs move one step per poll), moto for Bedrock (the harness moves jobs, as moto never does, each time the Broker waits).
"""

from __future__ import annotations

from typing import Any

from ftbroker.spec import JobSpec

from ._jobs import Outcome
from .bedrock_fake import BedrockHarness
from .fireworks_fake import DEFAULT_MODELS as DEFAULT_FIREWORKS_MODELS
from .fireworks_fake import FakeFireworks
from .openai_fake import FakeOpenAI
from .support import FAST, write_chat
from .together_fake import FakeTogether
from .vertex_fake import FakeVertex

FAILURE = "invalid training file: line 7 has no assistant message"
OUTCOMES = {"succeed": Outcome(), "fail": Outcome.failure(FAILURE, at_step=1), "hang": Outcome.hanging()}


class _Loopback:
    name: str
    model: str
    failure_message = FAILURE
    key_variable: str
    fake_class: type

    def __init__(self, tmp_path: Any, monkeypatch: Any):
        monkeypatch.setenv(self.key_variable, f"test-key-for-{self.name}")
        self.fake = self.fake_class(advance_on_poll=True).start()
        self.data = write_chat(tmp_path / "data.jsonl")

    def options(self) -> dict[str, Any]:
        """The backend options that point the backend at the fake."""
        return {"base_url": self.fake.base_url}

    def spec(self, scenario: str) -> JobSpec:
        self.fake.next_outcome(OUTCOMES[scenario])
        return JobSpec(dataset=str(self.data), model=self.model, backend=self.name,
                       backend_options={**self.options(), **FAST})

    def wait(self, seconds: float) -> None:
        """Nothing to wait for: the fake moves a job one step each time it is polled."""

    def close(self) -> None:
        self.fake.stop()


class OpenAIContract(_Loopback):
    name, model, key_variable, fake_class = "openai", "gpt-4o-mini-2024-07-18", "OPENAI_API_KEY", FakeOpenAI


class TogetherContract(_Loopback):
    name, key_variable, fake_class = "together", "TOGETHER_API_KEY", FakeTogether
    model = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


class FireworksContract(_Loopback):
    name, key_variable, fake_class = "fireworks", "FIREWORKS_API_KEY", FakeFireworks
    model = DEFAULT_FIREWORKS_MODELS[0]

    def options(self) -> dict[str, Any]:
        return {"base_url": self.fake.base_url, "account_id": self.fake.account}


class VertexContract(_Loopback):
    """Google's application-default credentials: a service-account key whose token endpoint is the fake."""

    name, fake_class, model = "vertex", FakeVertex, "gemini-3.5-flash"

    def __init__(self, tmp_path: Any, monkeypatch: Any):
        self.fake = self.fake_class(advance_on_poll=True).start()
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(self.fake.write_credentials(tmp_path / "adc.json")))
        self.data = write_chat(tmp_path / "data.jsonl")

    def options(self) -> dict[str, Any]:
        return self.fake.options()


class BedrockContract:
    name = "bedrock"
    failure_message = FAILURE

    def __init__(self, tmp_path: Any, monkeypatch: Any):
        self.aws = BedrockHarness().__enter__()
        self.data = write_chat(tmp_path / "data.jsonl")
        self.scenarios: list[str] = []  # one per job created, in order

    def spec(self, scenario: str) -> JobSpec:
        self.scenarios.append(scenario)
        return JobSpec(dataset=str(self.data), model="meta.llama3-1-8b-instruct-v1:0:128k", backend="bedrock",
                       backend_options={**FAST, "role_arn": self.aws.role_arn, "region": self.aws.region,
                                        "s3_uri": f"s3://{self.aws.bucket}/contract"})

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


MANAGED_HARNESSES = {"openai": OpenAIContract, "together": TogetherContract, "bedrock": BedrockContract,
                     "fireworks": FireworksContract, "vertex": VertexContract}
