"""The OpenAI backend through the Broker and the real ``openai`` SDK against the loopback fake: submit exactly once,
reuse uploads, follow, fail, cancel, result; plus OpenAI-compatible endpoints that do not filter by metadata."""

from __future__ import annotations

import json

import pytest
from fakes import FakeOpenAI, Fault, Outcome
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker, _LedgerTracker
from ftbroker.errors import (
    BackendAuthError,
    BackendRateLimitError,
    BudgetExceededError,
    DatasetError,
    SpecError,
)
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it

MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def fake():
    with FakeOpenAI(advance_on_poll=True) as server:
        yield server


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    with Broker(tmp_path / "home", sleep=lambda s: None) as b:
        yield b


def spec_for(fake, path, options=None, **kw):
    return JobSpec(dataset=str(path), model=MODEL, backend="openai",
                   backend_options={**FAST, "base_url": fake.base_url, **(options or {})}, **kw)


def test_submit_follow_result(fake, broker, tmp_path):
    spec = spec_for(fake, write_chat(tmp_path / "data.jsonl"),
                    hyperparameters={"epochs": 2, "micro_batch_size": 4, "gradient_accumulation_steps": 2})
    job = broker.submit(spec)
    assert job.status is JobStatus.VALIDATING and job.status_detail == "validating_files"
    assert set(job.remote) == {"job_id", "training_file", "training_sha256"}
    body = fake.calls("jobs.create")[0].json()
    assert body["metadata"] == {"ftbroker_job_id": job.id} and body["suffix"] == job.id
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2,
                                                                                        "batch_size": 8}}}
    upload = fake.calls("files.create")[0]
    assert b"ftbroker-" in upload.body and b'"role":"assistant"' in upload.body

    result = broker.follow(job.id)
    job = broker.job(job.id)
    assert job.status is JobStatus.SUCCEEDED and job.output_model.startswith(f"ft:{MODEL}:")
    assert job.trained_tokens == fake.jobs[job.remote["job_id"]].trained_tokens
    assert job.progress.step == 3 and job.progress.total_steps == 3
    assert any(e.kind == "metrics" for _, e in broker.events(job.id))
    assert result.status is JobStatus.SUCCEEDED and result.error is None
    assert [p.step for p in result.metrics if p.name == "train_loss"] == [1, 2, 3]
    kinds = [a.kind for a in result.artifacts]
    assert kinds.count("provider_model") == 1 and kinds.count("metrics") == 1 and kinds.count("checkpoint") == 3
    assert result.raw["id"] == job.remote["job_id"]


def test_result_csv_in_base64_and_a_validation_file(broker, tmp_path):
    with FakeOpenAI(advance_on_poll=True, result_base64=True) as fake:
        valid = write_chat(tmp_path / "valid.jsonl", n=3, start=50)
        job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl"), validation=str(valid)))
        result = broker.follow(job.id)
        assert set(broker.job(job.id).remote) >= {"validation_file", "validation_sha256"}
        assert {p.name for p in result.metrics} >= {"train_loss", "eval_loss", "train_accuracy", "eval_accuracy"}


def test_submit_is_idempotent_and_uploads_are_reused(fake, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job = broker.submit(spec_for(fake, data))
    again = broker.backend(job.spec).submit(broker.job(job.id), _LedgerTracker(broker.ledger, job.id))
    assert again.reused and again.remote == {"job_id": job.remote["job_id"]}
    other = broker.submit(spec_for(fake, data))  # another job, same data: the file is reused
    assert len(fake.calls("jobs.create")) == 2 and len(fake.calls("files.create")) == 1
    assert other.remote["training_file"] == job.remote["training_file"]
    assert any("not uploaded again" in e.message for _, e in broker.events(other.id))


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True), Fault.timed_out()])
def test_a_create_that_succeeded_remotely_is_found_not_repeated(fake, broker, tmp_path, fault):
    fake.faults.on("jobs.create", fault)
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert len(fake.jobs) == 1 and job.remote["job_id"] in fake.jobs
    assert len(fake.calls("jobs.create")) == 1  # found by the look-up, never created twice
    assert any(e.kind == "warning" and "looking for the job" in e.message for _, e in broker.events(job.id))


def test_an_upload_that_succeeded_remotely_is_not_repeated(fake, broker, tmp_path):
    fake.faults.on("files.create", Fault.committed_error(500))
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert len(fake.files) == 1 and len(fake.calls("files.create")) == 1
    assert job.remote["training_file"] in fake.files


def test_an_endpoint_without_metadata_filtering(broker, tmp_path):
    with FakeOpenAI(advance_on_poll=True, filter_metadata=False) as fake:
        data = write_chat(tmp_path / "data.jsonl")
        first = broker.submit(spec_for(fake, data))
        fake.faults.on("jobs.create", Fault.committed_error(500))
        second = broker.submit(spec_for(fake, data))
        assert len(fake.jobs) == 2 and first.remote["job_id"] != second.remote["job_id"]


def test_failure_is_surfaced(fake, broker, tmp_path):
    fake.next_outcome(Outcome.failure("The job failed due to an invalid training file: line 3 has no "
                                      "assistant message."))
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    result = broker.follow(job.id)
    expected = ("The job failed due to an invalid training file: line 3 has no assistant message. "
                "[invalid_training_file]")
    assert broker.job(job.id).status is JobStatus.FAILED and broker.job(job.id).error == expected
    assert result.status is JobStatus.FAILED and result.error == expected and result.output_model is None


def test_cancel(fake, broker, tmp_path):
    fake.next_outcome(Outcome.hanging())
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    assert broker.backend(job.spec).cancel(broker.job(job.id)).status is JobStatus.CANCELLED  # already over


def test_poll_errors_are_translated_for_the_broker_to_back_off(fake, broker, tmp_path):
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    fake.faults.on("jobs.retrieve", Fault.rate_limited(retry_after=42))
    backend = broker.backend(job.spec)
    with pytest.raises(BackendRateLimitError) as err:
        backend.poll(broker.job(job.id))
    assert err.value.retry_after == 42.0
    assert backend.poll(broker.job(job.id)).status in (JobStatus.QUEUED, JobStatus.VALIDATING)


def test_validate_refuses_bad_data_and_settings_before_any_upload(fake, broker, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 10
    lines.insert(3, {"messages": [{"role": "user", "content": "q", "weight": 0},
                                  {"role": "assistant", "content": "a"}]})
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(DatasetError) as err:
        broker.submit(spec_for(fake, bad))
    assert str(err.value) == (f"{bad}:4: message 1: 'weight' on a user message: OpenAI takes it on assistant "
                              "messages only")
    with pytest.raises(DatasetError) as err:  # the catalog row's minimum, as `ftbroker plan` says it
        broker.submit(spec_for(fake, write_chat(tmp_path / "small.jsonl", n=3)))
    small = tmp_path / "small.jsonl"
    assert str(err.value) == f"{small}: {MODEL} on openai: needs at least 10 examples; the file has 3"
    completion = tmp_path / "completion.jsonl"
    completion.write_text("".join(json.dumps({"prompt": f"{i} + {i} =", "completion": f" {2 * i}"}) + "\n"
                                  for i in range(12)))
    with pytest.raises(DatasetError, match="on openai: takes chat data; this file is prompt_completion"):
        broker.submit(spec_for(fake, completion))  # a chat model; babbage-002 takes it (test below)
    valid = write_chat(tmp_path / "valid.jsonl", n=3)  # a small validation file is fine (the minimum is training's)
    weighted = tmp_path / "weighted.jsonl"
    weighted.write_text(bad.read_text().splitlines()[3] + "\n")
    with pytest.raises(DatasetError, match=r"weighted.jsonl:1: message 1: 'weight' on a user message"):
        broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl"), validation=str(weighted)))
    broker.prepare(spec_for(fake, write_chat(tmp_path / "data.jsonl"), validation=str(valid)))
    with pytest.raises(SpecError, match=r"epochs: 60 is outside \[1, 50\]"):
        broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl"), hyperparameters={"epochs": 60}))
    assert fake.requests == [] and broker.jobs() == []


def test_missing_key_is_an_auth_error_before_anything_is_recorded(fake, broker, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    for _ in range(2):  # a user retrying: no failed job (and its estimate) in the ledger per try
        with pytest.raises(BackendAuthError, match="set OPENAI_API_KEY"):
            broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert broker.jobs() == [] and fake.requests == []


def test_the_budget_is_checked_before_any_upload(fake, broker, tmp_path):
    spec = spec_for(fake, write_chat(tmp_path / "data.jsonl"), budget={"max_cost_usd": "0.000001"})
    with pytest.raises(BudgetExceededError) as err:  # over it, or (no token counts yet) not estimable
        broker.submit(spec)
    assert err.value.exit_code == 3 and fake.requests == [] and broker.jobs() == []


def test_the_quote_comes_from_the_catalog(fake, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    quote = broker.prepare(spec_for(fake, data)).quote
    assert quote.breakdown["price_source"].startswith("platform pricing docs copy")  # the catalog's gpt-4o-mini row
    assert any("2027-01-06" in w for w in quote.warnings)  # OpenAI stops taking new fine-tuning jobs then
    unknown = broker.prepare(JobSpec(dataset=str(data), model="my-own-model", backend="openai",
                                     backend_options={**FAST, "base_url": fake.base_url})).quote
    assert unknown.cost_usd is None and "no openai offer for my-own-model" in unknown.reason


def test_a_completion_model_takes_prompt_completion_lines(fake, broker, tmp_path):
    data = tmp_path / "completion.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} + {i} =", "completion": f" {2 * i}", "id": i}) + "\n"
                            for i in range(12)))
    job = broker.submit(JobSpec(dataset=str(data), model="babbage-002", backend="openai",
                                backend_options={**FAST, "base_url": fake.base_url}))
    assert fake.calls("jobs.create")[0].json()["model"] == "babbage-002"
    uploaded = broker.home / "uploads" / "openai"
    lines = [json.loads(line) for f in uploaded.glob("ftbroker-*.jsonl") for line in f.read_text().splitlines()]
    assert lines[0] == {"prompt": "0 + 0 =", "completion": " 0"} and len(lines) == 12  # the unknown key dropped
    assert job.estimated_cost_usd is not None


def test_an_unchanged_dataset_is_not_read_again(fake, broker, tmp_path, monkeypatch):
    from ftbroker.data import analysis as data_layer

    reads = []
    real = data_layer.analyze
    monkeypatch.setattr(data_layer, "analyze", lambda *a, **kw: reads.append(a) or real(*a, **kw))
    data = write_chat(tmp_path / "data.jsonl")
    spec = spec_for(fake, data)
    assert broker.prepare(spec).quote == broker.prepare(spec).quote and len(reads) == 1
    with data.open("a") as fh:
        fh.write('{"messages": []}\n')
    with pytest.raises(DatasetError, match=r"data.jsonl:13: 'messages' is empty"):  # changed: read again
        broker.prepare(spec)
    assert len(reads) == 2
