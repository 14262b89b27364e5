"""The real ``together`` 3.x SDK against the loopback fake: the 3-step upload, create, track, faults."""

from __future__ import annotations

import pytest
import together
from fakes import Fault, FakeTogether, Outcome

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
LINE = '{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture
def fake():
    with FakeTogether() as server:
        yield server


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(LINE * 10)
    return path


def _create(client, file_id, **kw):
    kw.setdefault("train_on_inputs", "auto")
    return client.fine_tuning.create(model=MODEL, training_file=file_id, **kw)


def test_three_step_upload(fake, train):
    client = fake.client()
    file = client.files.upload(train, purpose="fine-tune")
    assert [(r.method, r.route) for r in fake.requests] == [
        ("POST", "files.create"), ("PUT", "files.put"), ("POST", "files.preprocess")]
    form = fake.requests[0]
    assert b'name="checksum"' in form.body and b'name="file_name"' in form.body
    assert "authorization" not in fake.requests[1].headers  # the key never goes to the storage URL
    assert fake.requests[1].body == train.read_bytes()
    assert (file.filename, file.bytes, file.processing_status) == ("train.jsonl", train.stat().st_size, "COMPLETED")
    assert client.files.retrieve(file.id).validation_report.nlines == 10
    assert [f.id for f in client.files.list().data] == [file.id]


def test_create_follow_to_success_with_events_and_metrics(fake, train):
    client = fake.client()
    file = client.files.upload(train, purpose="fine-tune")
    job = _create(client, file.id, suffix="ftb-j1", lora=True, lora_r=16, n_epochs=2, batch_size=8,
                  validation_file=file.id, n_evals=1)
    assert [r.route for r in fake.requests[3:]] == ["limits", "estimate", "jobs.create"]
    sent = fake.calls("jobs.create")[0].json()
    assert sent["training_type"] == {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                                     "lora_trainable_modules": "all-linear", "type": "Lora"}
    assert (sent["suffix"], sent["n_epochs"], sent["batch_size"]) == ("ftb-j1", 2, 8)
    assert job.status == "pending"
    seen = []
    while (job := client.fine_tuning.retrieve(job.id)).status not in ("completed", "error"):
        seen.append(job.status)
        fake.advance(job.id)
    assert seen == ["pending", "queued", "running", "running", "running", "compressing", "uploading"]
    assert job.token_count == 2 * len((LINE * 10).split())
    assert job.total_price == job.token_count * 480  # nanodollars at $0.48 per 1M tokens
    assert job.x_model_output_name.startswith("fakeuser/Meta-Llama-3.1-8B-Instruct-Reference-ftb-j1-")
    events = client.fine_tuning.list_events(job.id).data
    assert [e.type for e in events][-3:] == ["model_compressing", "model_uploading", "job_complete"]
    metrics = client.fine_tuning.list_metrics(job.id).metrics
    assert [m["train/global_step"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["train/loss"] > metrics[-1]["train/loss"] and "eval/loss" in metrics[0]
    assert client.fine_tuning.list_checkpoints(job.id).data[0].checkpoint_type == "final"
    assert [j.suffix for j in client.fine_tuning.list().data] == ["ftb-j1"]


def test_cancel_goes_through_cancel_requested(fake, train):
    client = fake.client()
    job = _create(client, client.files.upload(train, purpose="fine-tune").id)
    assert client.fine_tuning.cancel(job.id).status == "cancel_requested"
    fake.advance(job.id)
    assert client.fine_tuning.retrieve(job.id).status == "cancelled"
    with pytest.raises(together.BadRequestError):
        client.fine_tuning.cancel(job.id)


def test_failure_and_refusals(fake, train):
    client = fake.client()
    file = client.files.upload(train, purpose="fine-tune")
    fake.next_outcome(Outcome.failure("No valid samples in the training file"))
    job = _create(client, file.id)
    fake.finish(job.id)
    assert client.fine_tuning.retrieve(job.id).status == "error"
    assert client.fine_tuning.list_events(job.id).data[-1].type == "job_error"
    with pytest.raises(together.NotFoundError):
        client.fine_tuning.create(model="no/such-model", training_file=file.id)
    with pytest.raises(together.BadRequestError, match="at most 40"):
        _create(client, file.id, suffix="x" * 41)
    fake.rejected_keys.add("tg-revoked")
    with pytest.raises(together.AuthenticationError):
        fake.client(api_key="tg-revoked").fine_tuning.list()


@pytest.mark.parametrize(("fault", "error", "status"), [
    (Fault.rate_limited(retry_after=5), together.RateLimitError, 429),
    (Fault.error(500), together.InternalServerError, 500),
    (Fault.unavailable(), together.InternalServerError, 503),
    (Fault.dropped(), together.APIConnectionError, None),
    (Fault.timed_out(commit=False), together.APITimeoutError, None),
])
def test_each_fault_as_the_sdk_sees_it(fake, fault, error, status):
    client = fake.client()
    fake.faults.on("jobs.list", fault)
    with pytest.raises(error) as err:
        client.fine_tuning.list()
    if status:
        assert err.value.status_code == status
    if status == 429:
        assert err.value.response.headers["retry-after"] == "5"
    assert client.fine_tuning.list().data == []


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True)])
def test_create_succeeds_on_the_server_but_the_client_sees_an_error(fake, train, fault):
    client = fake.client()
    file = client.files.upload(train, purpose="fine-tune")
    fake.faults.on("jobs.create", fault)
    with pytest.raises(together.APIError):
        _create(client, file.id, suffix="ftb-x")
    assert [j.suffix for j in client.fine_tuning.list().data] == ["ftb-x"]


def test_a_fault_in_the_middle_of_the_upload(fake, train):
    client = fake.client()
    fake.faults.on("files.put", Fault.error(500))
    with pytest.raises(together.APIStatusError):
        client.files.upload(train, purpose="fine-tune")
    (orphan,) = fake.files.values()
    assert orphan.content is None and not orphan.processed
    assert client.files.list().data[0].processing_status == "PENDING"
