"""The Together backend through the Broker and the real ``together`` SDK against the loopback fake."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fakes import FakeTogether, Fault, Outcome
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker, _LedgerTracker
from ftbroker.errors import BackendAuthError, BudgetExceededError, DatasetError, SpecError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


@pytest.fixture
def fake():
    with FakeTogether(advance_on_poll=True) as server:
        yield server


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-test-together-key")
    with Broker(tmp_path / "home", sleep=lambda s: None) as b:
        yield b


def spec_for(fake, path, **kw):
    return JobSpec(dataset=str(path), model=MODEL, backend="together",
                   backend_options={**FAST, "base_url": fake.base_url}, **kw)


def test_submit_follow_result(fake, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    spec = spec_for(fake, data, validation=str(write_chat(tmp_path / "valid.jsonl", n=2, start=40)),
                    hyperparameters={"epochs": 2, "micro_batch_size": 8, "learning_rate": 1e-4, "seed": 3},
                    lora={"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]})
    job = broker.submit(spec)
    assert job.status is JobStatus.QUEUED and job.status_detail == "pending"
    assert [r.route for r in fake.requests] == [
        "jobs.list", "limits", "files.list", "files.create", "files.put", "files.preprocess", "files.list",
        "files.create", "files.put", "files.preprocess", "estimate", "estimate", "jobs.create"]  # ours, the SDK's
    ours = fake.calls("estimate")[0].json()
    assert ours["training_type"]["type"] == "Lora" and ours["n_epochs"] == 2 and ours["n_evals"] == 1
    assert ours["training_method"] == {"method": "sft", "train_on_inputs": "auto"} and ours["validation_file"]
    said = next(e for _, e in broker.events(job.id) if "Together's own price estimate: $" in e.message)
    assert said.data["catalog_estimated_cost_usd"] == float(job.estimated_cost_usd)
    assert said.data["provider_estimated_cost_usd"] > 0
    body = fake.calls("jobs.create")[0].json()
    assert body["suffix"] == job.id and body["n_epochs"] == 2 and body["batch_size"] == 8
    assert body["training_type"] == {"type": "Lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                                     "lora_trainable_modules": "q_proj,v_proj"}
    assert body["training_method"] == {"method": "sft", "train_on_inputs": "auto"}
    assert body["n_evals"] == 1 and body["random_seed"] == 3 and body["validation_file"]

    result = broker.follow(job.id)
    job = broker.job(job.id)
    assert job.status is JobStatus.SUCCEEDED
    remote = fake.jobs[job.remote["job_id"]]
    assert job.trained_tokens == remote.trained_tokens
    assert job.actual_cost_usd == Decimal(remote.trained_tokens * 480) / Decimal(10**9)
    assert job.output_model.startswith("fakeuser/Meta-Llama-3.1-8B-Instruct-Reference-")
    assert {(m.name, m.step) for m in broker.ledger.metrics(job.id)} >= {("train_loss", 3), ("eval_loss", 3)}
    assert job.progress.step == 3
    assert result.status is JobStatus.SUCCEEDED and result.output_model == job.output_model
    assert result.actual_cost_usd == job.actual_cost_usd and result.started_at is not None
    assert [a.kind for a in result.artifacts] == ["provider_model", "checkpoint"]


def test_idempotent_submit_and_upload_reuse(fake, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job = broker.submit(spec_for(fake, data))
    again = broker.backend(job.spec).submit(broker.job(job.id), _LedgerTracker(broker.ledger, job.id))
    assert again.reused and again.remote == {"job_id": job.remote["job_id"]}
    broker.submit(spec_for(fake, data))
    assert len(fake.calls("jobs.create")) == 2 and len(fake.calls("files.create")) == 1


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True), Fault.timed_out()])
def test_a_create_that_succeeded_remotely_is_found(fake, broker, tmp_path, fault):
    fake.faults.on("jobs.create", fault)
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert list(fake.jobs) == [job.remote["job_id"]] and len(fake.calls("jobs.create")) == 1


def test_a_broken_upload_is_redone_a_finished_one_is_not(fake, broker, tmp_path):
    fake.faults.on("files.put", Fault.error(500))  # the PUT failed: the file id exists but holds nothing
    fake.faults.on("files.preprocess", Fault.committed_error(503))
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    complete = [f for f in fake.files.values() if f.processed]
    assert len(complete) == 1 and job.remote["training_file"] == complete[0].id
    assert len(fake.calls("files.put")) == 2  # the empty one was not taken for the data


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True), Fault.timed_out()])
def test_an_upload_that_stored_the_bytes_but_failed_is_finished_not_reused_broken(fake, broker, tmp_path, fault):
    fake.faults.on("files.put", fault)  # the bytes arrived; the client saw an error, and never asked to process them
    data = write_chat(tmp_path / "data.jsonl")
    jobs = [broker.submit(spec_for(fake, data)) for _ in range(2)]  # and every later job on the same data
    assert [j.status for j in jobs] == [JobStatus.QUEUED] * 2 and len(fake.jobs) == 2
    [file] = fake.files.values()  # finished (processed), then reused: not uploaded again
    assert file.processed and {j.remote["training_file"] for j in jobs} == {file.id}
    assert [broker.follow(j.id).status for j in jobs] == [JobStatus.SUCCEEDED] * 2


def test_a_file_being_processed_or_refused_is_not_reused(fake, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job = broker.submit(spec_for(fake, data))
    [good] = fake.files.values()
    good.processed = False  # still PENDING as Together sees it, and it will not process it
    fake.faults.on("files.preprocess", Fault.error(400))  # asked to finish it, Together refuses
    second = broker.submit(spec_for(fake, data))
    assert len(fake.files) == 2 and job.remote["training_file"] == good.id != second.remote["training_file"]
    assert fake.jobs[second.remote["job_id"]].request["training_file"] == second.remote["training_file"]


def test_metrics_are_optional_status_is_not(fake, broker, tmp_path):
    fake.faults.on("jobs.metrics", Fault.error(500), times=4)  # the metrics endpoint fails for a while
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    job = broker.refresh(job.id)  # `ftbroker status` works, and the job moves on
    assert job.status_detail == "queued"
    assert broker.follow(job.id).status is JobStatus.SUCCEEDED
    steps = sorted(m.step for m in broker.ledger.metrics(job.id) if m.name == "train_loss")
    assert steps == [1, 2, 3]  # the points the failed calls missed were read once it answered again


def test_limits_refuse_before_upload(fake, broker, tmp_path):
    with pytest.raises(SpecError) as err:
        broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl"), lora={"r": 128},
                               hyperparameters={"micro_batch_size": 4}))
    assert [p.split(":")[0] for p in err.value.problems] == ["batch size", "lora r"]
    assert fake.calls("files.create") == []


def test_failure_is_surfaced(fake, broker, tmp_path):
    fake.next_outcome(Outcome.failure("CUDA error: an illegal memory access was encountered", at_step=2))
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    result = broker.follow(job.id)
    job = broker.job(job.id)
    assert job.status is JobStatus.FAILED and job.error == "CUDA error: an illegal memory access was encountered"
    assert result.status is JobStatus.FAILED and result.error == job.error and result.output_model is None


def test_cancel_goes_through_cancel_requested(fake, broker, tmp_path):
    fake.next_outcome(Outcome.hanging())
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    job = broker.cancel(job.id)
    assert (job.status, job.status_detail) == (JobStatus.RUNNING, "cancel_requested")
    assert broker.follow(job.id).status is JobStatus.CANCELLED
    assert broker.backend(job.spec).cancel(broker.job(job.id)).status is JobStatus.CANCELLED  # already over


def test_spec_problems_and_missing_key(fake, broker, tmp_path, monkeypatch):
    data = write_chat(tmp_path / "data.jsonl")
    with pytest.raises(SpecError, match="needs a validation file"):
        broker.submit(spec_for(fake, data, hyperparameters={"early_stopping_patience": 2}))
    monkeypatch.delenv("TOGETHER_API_KEY")
    with pytest.raises(BackendAuthError, match="set TOGETHER_API_KEY"):
        broker.submit(spec_for(fake, data))
    assert fake.requests == [] and broker.jobs() == []  # refused before the ledger records anything


def test_togethers_data_rules_are_checked_before_upload(fake, broker, tmp_path):
    lines = [json.loads(line) for line in write_chat(tmp_path / "data.jsonl").read_text().splitlines()]
    lines[2] = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                             {"role": "assistant", "content": "c"}]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({**line, "id": i}) + "\n" for i, line in enumerate(lines)))
    with pytest.raises(DatasetError) as err:  # Together's rule, held by ftbroker.data (unknown keys are dropped)
        broker.submit(spec_for(fake, bad))
    assert str(err.value) == (f"{bad}:3: after the system message, turns must start with user and alternate "
                              "user/assistant (Together)")
    assert fake.requests == [] and broker.jobs() == []


def test_togethers_own_estimate_over_the_budget_creates_nothing(fake, broker, tmp_path):
    """The catalog's estimate passed --max-cost; Together prices the uploaded data higher: refused before create."""
    data = write_chat(tmp_path / "data.jsonl")
    fake.estimate_price_per_million = Decimal("500")  # the account's own price, far over the catalog's 0.48
    spec = spec_for(fake, data, budget={"max_cost_usd": Decimal("0.01")})
    with pytest.raises(BudgetExceededError, match=r"Together estimates this job at .* over --max-cost \$0.01"):
        broker.submit(spec)
    assert fake.calls("estimate") and not fake.calls("jobs.create")
    job = broker.jobs()[0]
    assert job.status is JobStatus.FAILED and "nothing was created" in job.error


def test_without_togethers_estimate_the_catalogs_stands(fake, broker, tmp_path):
    fake.estimation_available = False
    job = broker.submit(spec_for(fake, write_chat(tmp_path / "data.jsonl")))
    assert job.status is JobStatus.QUEUED and fake.calls("jobs.create")
    assert any("Together gave no price estimate (estimation_unavailable)" in e.message
               for _, e in broker.events(job.id))
