"""The backend contract suite: every backend, through the Broker and a real ledger, behaves the same.

Each backend takes part through a harness that knows how to make its remote side succeed, fail or hang:

    class Harness:
        name: str                                  # the registry name
        failure_message: str                       # a fragment of the provider's error, surfaced in the Result
        fixtures: tuple[str, ...] = ()             # optional: pytest fixtures passed to __init__ by name
        def __init__(self, tmp_path, monkeypatch, **fixtures)
        def spec(self, scenario) -> JobSpec        # scenario: "succeed" | "fail" | "hang"
        def wait(self, seconds) -> None            # the Broker's sleep: advance a fake, or really wait a little
        def close(self) -> None

Adding a backend = one harness class and one entry in ``HARNESSES``; a managed provider's harness comes with its
record in ``tests/fakes/harnesses.py`` (``Provider.contract``), which the quote, secret and fault suites read too.
"""

from __future__ import annotations

import dataclasses
import shutil
import time

import pytest
from fakes.ec2_fake import Ec2Harness
from fakes.harnesses import PROVIDERS
from jobsupport import wait_for
from tinymodels import code_examples, write_jsonl

from ftbroker.backends import base
from ftbroker.broker import Broker
from ftbroker.jobs import Artifact, JobStatus, MetricPoint, Result
from ftbroker.spec import JobSpec
from ftbroker.vocabulary import FORMATS, METHODS

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it


class LocalHarness:
    """The real trainer on the tiny Llama: a 2-step run; a model folder whose weights are corrupt (the data and
    the tokenizer pass the checks, the trainer cannot load the model); a run long enough to be cancelled."""

    name = "local"
    failure_message = "cannot be loaded"
    fixtures = ("tiny_model_dir",)

    def __init__(self, tmp_path, monkeypatch, tiny_model_dir):
        model = tiny_model_dir
        self.data = write_jsonl(tmp_path / "data.jsonl", code_examples(8))
        self.models = {"succeed": model, "hang": model, "fail": tmp_path / "corrupt-model"}
        shutil.copytree(model, self.models["fail"])
        (self.models["fail"] / "model.safetensors").write_bytes(b"not a safetensors file")

    def spec(self, scenario: str) -> JobSpec:
        epochs = 100 if scenario == "hang" else 1
        return JobSpec(dataset=str(self.data), model=str(self.models[scenario]), backend="local",
                       hyperparameters={"epochs": epochs, "max_seq_len": 64}, backend_options={"cancel_grace_s": 60})

    def wait(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.1))

    def close(self) -> None:
        pass


class SkyPilotHarness:
    """The fake SkyPilot (its state machine; the task's own run script run by its node, the bucket a folder here)
    with the scripted trainer: its scenarios are SkyPilot's (launch, follow, fail, cancel), the real trainer runs
    through SkyPilot in test_skypilot_real_runs.py."""

    name = "skypilot"
    failure_message = "CUDA out of memory"
    SCENARIOS = {"succeed": {}, "fail": {"FTB_SCRIPT_FAIL": "CUDA out of memory"},
                 "hang": {"FTB_SCRIPT_STEPS": "100000"}}

    def __init__(self, tmp_path, monkeypatch):
        from fakes.skypilot_fake import FakeSky
        from jobsupport import SCRIPTED_TRAINER, write_chat

        from ftbroker.backends.skypilot import backend

        self.sky = FakeSky(tmp_path / "sky")
        self.data, self.trainer = write_chat(tmp_path / "data.jsonl", 30), SCRIPTED_TRAINER
        monkeypatch.setattr(backend, "adapter", lambda: self.sky)
        monkeypatch.setattr(backend.SkyPilotBackend, "capabilities",  # the fake stands in for SkyPilot's SDK
                            dataclasses.replace(backend.SkyPilotBackend.capabilities, requires={}))

    def spec(self, scenario: str) -> JobSpec:
        self.sky.env = dict(self.SCENARIOS[scenario])
        return JobSpec(dataset=str(self.data), model="Llama-3.1-8B", backend="skypilot", backend_options={
            "instance_type": "gpu_1x_h100_sxm5", "bucket": "s3://ftb-contract/runs", "trainer": str(self.trainer)})

    def wait(self, seconds: float) -> None:
        self.sky.advance(seconds)
        time.sleep(0.05)

    def close(self) -> None:
        self.sky.close()


# the managed providers on their fakes (moto for Bedrock); ec2 on moto, its instances played here
HARNESSES = {"local": LocalHarness, "ec2": Ec2Harness, "skypilot": SkyPilotHarness,
             **{name: provider.contract for name, provider in PROVIDERS.items()}}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request, tmp_path, monkeypatch):
    cls = HARNESSES[request.param]
    h = cls(tmp_path, monkeypatch, **{name: request.getfixturevalue(name) for name in getattr(cls, "fixtures", ())})
    yield h
    h.close()


@pytest.fixture
def broker(harness, tmp_path):
    with Broker(tmp_path / "home", sleep=harness.wait) as b:
        yield b
        for job in b.jobs():
            if not job.status.terminal and job.submitted_at is not None:
                b.cancel(job.id)


def check_result_shape(result: Result, job_id: str, harness) -> None:
    assert result.id == job_id and result.backend == harness.name and result.model
    assert all(isinstance(m, MetricPoint) for m in result.metrics)
    assert all(isinstance(a, Artifact) for a in result.artifacts)
    assert isinstance(result.raw, dict)
    assert result.started_at is not None and result.finished_at is not None
    Result.model_validate_json(result.model_dump_json())  # the one shape survives JSON


def test_registered_and_well_formed(harness):
    cls = base.backend_class(harness.name)
    assert cls.name == harness.name
    caps = cls.capabilities
    assert caps.methods and caps.methods <= set(METHODS)
    assert caps.data_formats and caps.data_formats <= set(FORMATS)
    assert all(isinstance(reason, str) and reason for reason in caps.unsupported.values())
    assert cls.Options.model_config.get("extra") == "forbid"


def test_submit_and_follow_to_success(harness, broker):
    job = broker.submit(harness.spec("succeed"))
    assert job.submitted_at is not None and job.remote
    result = broker.follow(job.id)
    assert result.status is JobStatus.SUCCEEDED and result.error is None
    assert result.output_model
    caps = base.backend_class(harness.name).capabilities
    assert any(m.name == "train_loss" for m in result.metrics) or not caps.supports("metrics")  # says why not
    check_result_shape(result, job.id, harness)
    assert broker.job(job.id).status is JobStatus.SUCCEEDED


def test_a_failure_surfaces_the_providers_error(harness, broker):
    job = broker.submit(harness.spec("fail"))
    result = broker.follow(job.id)
    assert result.status is JobStatus.FAILED
    assert harness.failure_message in result.error
    assert harness.failure_message in broker.job(job.id).error
    check_result_shape(result, job.id, harness)


def test_cancel(harness, broker):
    job = broker.submit(harness.spec("hang"))
    wait_for(lambda: broker.refresh(job.id).status is JobStatus.RUNNING)
    job = broker.cancel(job.id)
    if not job.status.terminal:  # some providers stop asynchronously
        job = broker.job(broker.follow(job.id).id)
    assert job.status is JobStatus.CANCELLED
    assert broker.result(job.id).status is JobStatus.CANCELLED


def test_submit_is_idempotent_on_the_job_id(harness, broker):
    job = broker.submit(harness.spec("hang"))
    backend = broker.backend(job.spec)
    again = backend.submit(broker.job(job.id), tracker=_NullTracker())
    assert again.reused
    assert all(job.remote[k] == v for k, v in again.remote.items() if k in job.remote)  # the same remote job


class _NullTracker:
    def remember(self, **remote):
        raise AssertionError(f"a reused submission must not create anything: {remote}")

    def event(self, message, **kw):
        pass
