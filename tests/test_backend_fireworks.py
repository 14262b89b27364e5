"""The Fireworks backend through the real ``fireworks-ai`` SDK against the loopback fake: what it sends, what it
refuses before sending anything, the dataset reused by its content, the job found by the id ftbroker gives it, a plan's
route run as priced, and the pure translations (model names, metrics file, money)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from fakes import FakeFireworks, Fault, Outcome
from fakes.support import FAST, write_chat

from ftbroker.backends import fireworks
from ftbroker.backends._managed import provider_tag
from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.errors import BackendAuthError
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # on the frozen catalog: its Fireworks prices

MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-test-key-0123456789")
    with FakeFireworks(advance_on_poll=True) as server:
        yield server


def spec(fake, data, **fields) -> JobSpec:
    options = {**FAST, "base_url": fake.base_url, "account_id": fake.account, **fields.pop("options", {})}
    return JobSpec(dataset=str(data), model=MODEL, backend="fireworks", backend_options=options,
                   hyperparameters={"epochs": 2}, **fields)


def test_the_job_carries_its_id_settings_and_data_and_ends_in_the_one_result_shape(fake, tmp_path):
    data, valid = write_chat(tmp_path / "data.jsonl"), write_chat(tmp_path / "valid.jsonl", n=5, start=100)
    with Broker(sleep=lambda s: None) as broker:
        job = broker.submit(spec(fake, data, validation=str(valid), lora={"r": 16},
                                 options={"early_stop": True}))
        result = broker.follow(job.id)
    (created,) = fake.calls("jobs.create")
    body = created.json()
    assert created.arg("supervisedFineTuningJobId") == provider_tag(job.id, 63) == job.remote["job_id"]
    assert (body["baseModel"], body["epochs"], body["loraRank"], body["earlyStop"]) == (MODEL, 2, 16, True)
    assert body["dataset"].startswith(f"accounts/{fake.account}/datasets/ftbroker-")
    assert body["evaluationDataset"] != body["dataset"] and body["displayName"] == job.id
    training = fake.datasets[body["dataset"].rsplit("/", 1)[-1]].content.decode().splitlines()
    assert json.loads(training[0]) == {"messages": [{"role": "user", "content": "What is 0 + 0?"},
                                                    {"role": "assistant", "content": "0"}]}
    assert result.status is JobStatus.SUCCEEDED
    assert result.output_model == f"accounts/{fake.account}/models/{job.remote['job_id']}"
    assert [m.value for m in result.metrics if m.name == "train_loss"] == [1.92, 1.536, 1.2288]
    assert any(m.name == "eval_loss" for m in result.metrics)
    assert result.trained_tokens == fake.jobs[job.remote["job_id"]].trained_tokens
    # the frozen catalog's "up to 16B" LoRA price, $0.50 per 1M trained tokens
    assert result.actual_cost_usd == (result.trained_tokens * Decimal("0.50") / 10**6).quantize(Decimal("0.0001"))
    assert result.raw["ftbroker_provider_estimate_usd"]  # Fireworks' own estimate, kept beside ours
    assert "dedicated deployment" in result.artifacts[0].description
    assert [r.headers.get("authorization") for r in fake.calls("metrics")] == [None] * len(fake.calls("metrics"))


def test_the_same_data_is_uploaded_once_and_a_retry_finds_the_job(fake, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    fake.faults.on("jobs.create", Fault.committed_error(500))  # created, but the answer is an error
    with Broker(sleep=lambda s: None) as broker:
        first = broker.submit(spec(fake, data))
        second = broker.submit(spec(fake, data))
    assert len(fake.jobs) == len(fake.calls("jobs.create")) == 2  # the retry found the job the error hid
    assert len(fake.calls("datasets.create")) == len(fake.calls("datasets.upload")) == 1
    assert first.remote["training_file"] == second.remote["training_file"]
    with Ledger() as ledger:
        first_said = [event.message for _, event in ledger.events(first.id)]
        second_said = [event.message for _, event in ledger.events(second.id)]
    assert any("looking for the job before trying again" in m for m in first_said)
    assert any("(same content): not uploaded again" in m for m in second_said)


def test_a_large_file_goes_through_a_signed_url(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(fireworks, "SMALL_UPLOAD_BYTES", 10)
    data = write_chat(tmp_path / "data.jsonl")
    with Broker(sleep=lambda s: None) as broker:
        job = broker.submit(spec(fake, data))
    assert [len(fake.calls(r)) for r in ("datasets.upload", "datasets.endpoint", "datasets.put",
                                         "datasets.validate")] == [0, 1, 1, 1]
    assert fake.calls("datasets.put")[0].headers.get("authorization") is None  # the URL is signed: no key sent
    assert fake.datasets[job.remote["training_file"].rsplit("/", 1)[-1]].state == "READY"


@pytest.mark.parametrize("fields, words", [
    ({"lora": {"r": 64}}, "lora.r: 64 is not a LoRA rank Fireworks takes (4, 8, 16 or 32"),
    ({"hyperparameters": {"epochs": 11}}, "hyperparameters.epochs: 11 is outside [1, 10]"),
    ({"hyperparameters": {"learning_rate": 0.01}}, "hyperparameters.learning_rate: 0.01 is outside [1e-05, 0.0005]"),
    ({"model": "meta-llama/Llama-3.1-8B"}, "is not a Fireworks model id"),
    ({"method": "full"}, "Fireworks' fine-tuning API trains LoRA adapters"),
    ({"lora": {"alpha": 32}}, "lora.alpha: not supported by fireworks"),
])
def test_settings_outside_its_documented_ranges_are_refused_before_anything_is_sent(fake, tmp_path, fields, words):
    data = write_chat(tmp_path / "data.jsonl")
    base = spec(fake, data).model_dump()
    for key, value in fields.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    doc = tmp_path / "job.yaml"
    doc.write_text(json.dumps(base))
    ran = ftb("run", "--config", doc, "--yes")
    assert ran.exit_code == 2 and words in ran.stderr, ran.output
    assert fake.requests == [] and Ledger().list() == []


def test_data_fireworks_refuses_is_named_by_file_and_line_and_credentials_come_first(fake, tmp_path, monkeypatch):
    data = write_chat(tmp_path / "data.jsonl")
    with data.open("a") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"},
                                          {"role": "assistant", "content": "ok"}]}) + "\n")
    options = [f"--option={k}={v}" for k, v in {**FAST, "base_url": fake.base_url, "account_id": fake.account}.items()]
    ran = ftb("run", data, "--backend", "fireworks", "--model", MODEL, "--epochs", 1, "--yes", *options)
    assert ran.exit_code == 2 and f"{data}:13: a system message after the first message (Fireworks)" in ran.stderr
    monkeypatch.delenv("FIREWORKS_API_KEY")
    ran = ftb("run", data, "--backend", "fireworks", "--model", MODEL, "--epochs", 1, "--yes", *options)
    assert ran.exit_code == 1 and "no credentials: set FIREWORKS_API_KEY" in ran.stderr
    assert fake.requests == [] and Ledger().list() == []


def test_a_failure_and_a_cancel_are_reported_as_fireworks_says(fake, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    fake.next_outcome(Outcome.failure("dataset line 3: assistant message missing", at_step=1))
    fake.next_outcome(Outcome.hanging())
    with Broker(sleep=lambda s: None) as broker:
        failed = broker.follow(broker.submit(spec(fake, data)).id)
        hung = broker.submit(spec(fake, data))
        broker.refresh(hung.id)
        cancelled = broker.cancel(hung.id)
    assert failed.status is JobStatus.FAILED and failed.error == "dataset line 3: assistant message missing"
    assert cancelled.status in (JobStatus.RUNNING, JobStatus.CANCELLED)
    assert len(fake.calls("jobs.cancel")) == 1 and fake.calls("jobs.cancel")[0].body == b"{}"


def test_pure_translations():
    assert fireworks.catalog_names("accounts/fireworks/models/llama-v3p1-8b-instruct") == (
        "accounts/fireworks/models/llama-v3p1-8b-instruct", "llama-v3p1-8b-instruct", "llama-3.1-8b-instruct")
    assert fireworks.catalog_names("accounts/fireworks/models/qwen2p5-7b-instruct")[-1] == "qwen2.5-7b-instruct"
    text = "\n".join([json.dumps({"step": 1, "data": {"train/loss": 2.0, "train/epoch": 0, "eval/loss": 2.1}}),
                      json.dumps({"step": 2, "train/loss": 1.5}), "not json", json.dumps({"loss": 3})])
    points = [(p.step, p.name, p.value) for p in fireworks.read_metrics(text)]
    assert points == [(1, "eval_loss", 2.1), (1, "train_loss", 2.0), (2, "train_loss", 1.5)]
    assert fireworks.money({"currencyCode": "USD", "units": "1", "nanos": 250_000_000}) == Decimal("1.25")
    assert fireworks.money({"currencyCode": "EUR", "units": "1"}) is None
    assert fireworks.STATUS["JOB_STATE_EARLY_STOPPED"] is JobStatus.SUCCEEDED


def test_without_an_account_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-test-key-0123456789")
    data = write_chat(tmp_path / "data.jsonl")
    with Broker() as broker, pytest.raises(BackendAuthError, match="FIREWORKS_ACCOUNT_ID"):
        broker.submit(JobSpec(dataset=str(data), model=MODEL, backend="fireworks", backend_options=FAST))
        assert broker.jobs() == []
