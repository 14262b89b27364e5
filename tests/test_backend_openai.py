"""The OpenAI backend through the real ``openai`` SDK against the loopback fake: submit exactly once, reuse
uploads, follow, fail, cancel, result; plus OpenAI-compatible endpoints that do not filter by metadata."""

from __future__ import annotations

import json

import pytest
from fakes import Fault, FakeOpenAI, Outcome, data_double
from fakes.driver import FAST, LedgerTracker, follow, submit, write_chat

from ftbroker.backends.openai import OpenAIBackend, OpenAIOptions
from ftbroker.errors import BackendAuthError, BackendRateLimitError, DatasetError, SpecError
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture(autouse=True)
def _data(monkeypatch):
    data_double.install()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")


@pytest.fixture
def fake():
    with FakeOpenAI(advance_on_poll=True) as server:
        yield server


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        yield led


def make(fake, tmp_path, **options):
    backend = OpenAIBackend(OpenAIOptions(base_url=fake.base_url, **{**FAST, **options}), home=tmp_path / "home",
                            sleep=lambda s: None)
    return backend


def spec_for(path, **kw):
    return JobSpec(dataset=str(path), model=MODEL, backend="openai", **kw)


def test_submit_follow_result(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    spec = spec_for(write_chat(tmp_path / "data.jsonl"), hyperparameters={"epochs": 2, "micro_batch_size": 4,
                                                                           "gradient_accumulation_steps": 2})
    job = submit(backend, ledger, spec)
    assert job.status is JobStatus.VALIDATING and job.status_detail == "validating_files"
    assert set(job.remote) == {"job_id", "training_file", "training_sha256"}
    body = fake.calls("jobs.create")[0].json()
    assert body["metadata"] == {"ftbroker_job_id": job.id} and body["suffix"] == job.id
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2,
                                                                                        "batch_size": 8}}}
    upload = fake.calls("files.create")[0]
    assert b"ftbroker-" in upload.body and b'"role":"assistant"' in upload.body
    job = follow(backend, ledger, job)
    assert job.status is JobStatus.SUCCEEDED and job.output_model.startswith(f"ft:{MODEL}:")
    assert job.trained_tokens == fake.jobs[job.remote["job_id"]].trained_tokens
    assert job.progress.step == 3 and job.progress.total_steps == 3
    assert [m.step for m in ledger.metrics(job.id) if m.name == "train_loss"] == [1, 2, 3]
    assert any(e.kind == "metrics" for _, e in ledger.events(job.id))

    result = backend.result(job)
    assert result.status is JobStatus.SUCCEEDED and result.error is None
    assert [p.step for p in result.metrics if p.name == "train_loss"] == [1, 2, 3]
    kinds = [a.kind for a in result.artifacts]
    assert kinds.count("provider_model") == 1 and kinds.count("metrics") == 1 and kinds.count("checkpoint") == 3
    assert result.raw["id"] == job.remote["job_id"]
    backend.close()


def test_result_csv_in_base64_and_a_validation_file(tmp_path, ledger):
    with FakeOpenAI(advance_on_poll=True, result_base64=True) as fake:
        backend = make(fake, tmp_path)
        data = write_chat(tmp_path / "data.jsonl")
        valid = write_chat(tmp_path / "valid.jsonl", n=3, start=50)
        job = follow(backend, ledger, submit(backend, ledger, spec_for(data, validation=str(valid))))
        assert set(job.remote) >= {"validation_file", "validation_sha256"}
        result = backend.result(job)
        assert {p.name for p in result.metrics} >= {"train_loss", "eval_loss", "train_accuracy", "eval_accuracy"}


def test_submit_is_idempotent_and_uploads_are_reused(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    data = write_chat(tmp_path / "data.jsonl")
    job = submit(backend, ledger, spec_for(data))
    again = backend.submit(ledger.get(job.id), LedgerTracker(ledger, job.id))
    assert again.reused and again.remote == {"job_id": job.remote["job_id"]}
    other = submit(backend, ledger, spec_for(data))  # another job, same data: the file is reused
    assert len(fake.calls("jobs.create")) == 2 and len(fake.calls("files.create")) == 1
    assert other.remote["training_file"] == job.remote["training_file"]
    assert any("not uploaded again" in e.message for _, e in ledger.events(other.id))


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True), Fault.slow(1.0)])
def test_a_create_that_succeeded_remotely_is_found_not_repeated(fake, tmp_path, ledger, fault):
    backend = make(fake, tmp_path)
    fake.faults.on("jobs.create", fault)
    job = submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl")))
    assert len(fake.jobs) == 1 and job.remote["job_id"] in fake.jobs
    assert len(fake.calls("jobs.create")) == 1  # found by the look-up, never created twice
    assert any(e.kind == "warning" and "looking for the job" in e.message for _, e in ledger.events(job.id))


def test_an_upload_that_succeeded_remotely_is_not_repeated(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    fake.faults.on("files.create", Fault.committed_error(500))
    job = submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl")))
    assert len(fake.files) == 1 and len(fake.calls("files.create")) == 1
    assert job.remote["training_file"] in fake.files


def test_an_endpoint_without_metadata_filtering(tmp_path, ledger):
    with FakeOpenAI(advance_on_poll=True, filter_metadata=False) as fake:
        backend = make(fake, tmp_path)
        data = write_chat(tmp_path / "data.jsonl")
        first = submit(backend, ledger, spec_for(data))
        fake.faults.on("jobs.create", Fault.committed_error(500))
        second = submit(backend, ledger, spec_for(data))
        assert len(fake.jobs) == 2 and first.remote["job_id"] != second.remote["job_id"]


def test_failure_is_surfaced(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    fake.next_outcome(Outcome.failure("The job failed due to an invalid training file: line 3 has no "
                                      "assistant message."))
    job = follow(backend, ledger, submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl"))))
    assert job.status is JobStatus.FAILED
    assert job.error == ("The job failed due to an invalid training file: line 3 has no assistant message. "
                         "[invalid_training_file]")
    result = backend.result(job)
    assert result.status is JobStatus.FAILED and "invalid training file" in result.error and result.output_model is None


def test_cancel(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    fake.next_outcome(Outcome.hanging())
    job = submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl")))
    update = backend.cancel(job)
    assert update.status is JobStatus.CANCELLED
    again = backend.cancel(job)  # a second cancel reports where the job ended
    assert again.status is JobStatus.CANCELLED


def test_poll_errors_are_translated_for_the_broker_to_back_off(fake, tmp_path, ledger):
    backend = make(fake, tmp_path)
    job = submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl")))
    fake.faults.on("jobs.retrieve", Fault.rate_limited(retry_after=42))
    with pytest.raises(BackendRateLimitError) as err:
        backend.poll(job)
    assert err.value.retry_after == 42.0
    assert backend.poll(job).status in (JobStatus.QUEUED, JobStatus.VALIDATING)


def test_validate_refuses_bad_data_and_settings_before_any_upload(fake, tmp_path):
    backend = make(fake, tmp_path)
    bad = tmp_path / "bad.jsonl"
    lines = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 10
    lines.insert(3, {"messages": [{"role": "user", "content": "q", "weight": 0},
                                  {"role": "assistant", "content": "a"}]})
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(DatasetError) as err:
        backend.validate(spec_for(bad))
    assert str(err.value) == f"{bad}:4: message 1: 'weight' is only allowed on assistant messages"
    with pytest.raises(DatasetError, match="at least 10 are required"):
        backend.validate(spec_for(write_chat(tmp_path / "small.jsonl", n=3)))
    with pytest.raises(SpecError, match=r"epochs: 60 is outside \[1, 50\]"):
        backend.validate(spec_for(write_chat(tmp_path / "data.jsonl"), hyperparameters={"epochs": 60}))
    assert backend.validate(spec_for(write_chat(tmp_path / "data.jsonl"))).examples == 12
    assert fake.requests == []


def test_missing_key_is_an_auth_error(fake, tmp_path, ledger, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    backend = make(fake, tmp_path)
    with pytest.raises(BackendAuthError, match="set OPENAI_API_KEY"):
        submit(backend, ledger, spec_for(write_chat(tmp_path / "data.jsonl")))
