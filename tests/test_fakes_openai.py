"""The real ``openai`` SDK against the loopback fake: every route, the state machine, every fault."""

from __future__ import annotations

import base64
import io
import time

import openai
import pytest
from fakes import Fault, FakeOpenAI, Outcome

MODEL = "gpt-4o-mini-2024-07-18"
TRAIN = b'{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]}\n' * 10


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def _upload(client, content: bytes = TRAIN, name: str = "train.jsonl"):
    return client.files.create(file=(name, io.BytesIO(content)), purpose="fine-tune")


def _create(client, file_id: str, **kw):
    return client.fine_tuning.jobs.create(model=MODEL, training_file=file_id, **kw)


def test_upload_create_follow_to_success(fake):
    client = fake.client()
    file = _upload(client)
    assert (file.filename, file.bytes, file.purpose) == ("train.jsonl", len(TRAIN), "fine-tune")
    assert client.files.retrieve(file.id).id == file.id
    assert client.files.content(file.id).content == TRAIN

    job = _create(client, file.id, metadata={"ftbroker_job": "j1"}, suffix="j1",
                  method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}})
    assert job.status == "validating_files"
    seen = [job.status]
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed"):
        fake.advance(job.id)
        seen.append(job.status)
    assert seen == ["validating_files", "validating_files", "queued", "running", "running", "running"]
    assert job.fine_tuned_model.startswith(f"ft:{MODEL}:fake-org:j1:")
    assert job.trained_tokens == 2 * len(TRAIN.split())
    assert job.hyperparameters.n_epochs == 2
    assert job.metadata == {"ftbroker_job": "j1"}

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [3, 2, 1]  # newest first
    assert set(metrics[0].data) == {"step", "total_steps", "train_loss", "train_mean_token_accuracy"}
    csv = client.files.content(job.result_files[0]).text
    assert csv.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(csv.splitlines()) == 4
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [3, 2, 1]
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-3")


def test_advance_on_poll_and_validation_metrics():
    with FakeOpenAI(advance_on_poll=True, result_base64=True) as fake:
        client = fake.client()
        train, valid = _upload(client), _upload(client, name="valid.jsonl")
        job = _create(client, train.id, validation_file=valid.id)
        statuses = [client.fine_tuning.jobs.retrieve(job.id).status for _ in range(6)]
        assert statuses == ["queued", "running", "running", "running", "succeeded", "succeeded"]
        job = client.fine_tuning.jobs.retrieve(job.id)
        metrics = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
        assert "valid_loss" in metrics[0].data
        raw = client.files.content(job.result_files[0]).content
        assert base64.b64decode(raw).decode().startswith("step,train_loss")


def test_list_filters_by_metadata_and_paginates(fake):
    client = fake.client()
    file = _upload(client)
    ids = [_create(client, file.id, metadata={"ftbroker_job": f"j{i}"}).id for i in range(5)]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == ids[::-1]  # newest first, 3 pages
    assert len(fake.calls("jobs.list")) == 3
    found = list(client.fine_tuning.jobs.list(metadata={"ftbroker_job": "j3"}))
    assert [j.id for j in found] == [ids[3]]
    assert fake.calls("jobs.list")[-1].query == {"metadata[ftbroker_job]": ["j3"]}
    assert list(client.fine_tuning.jobs.list(metadata={"ftbroker_job": "nope"})) == []


def test_cancel_and_failure(fake):
    client = fake.client()
    file = _upload(client)
    job = _create(client, file.id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    fake.advance(job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"

    fake.next_outcome(Outcome.failure("Training file has 3 examples; at least 10 are required."))
    failing = _create(client, file.id)
    fake.finish(failing.id)
    failed = client.fine_tuning.jobs.retrieve(failing.id)
    assert failed.status == "failed"
    assert (failed.error.code, failed.error.param) == ("invalid_training_file", "training_file")
    assert "at least 10" in failed.error.message
    with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
        client.fine_tuning.jobs.cancel(failing.id)

    fake.next_outcome(Outcome.failure("GPU fell over", code="server_error", at_step=2))
    mid = _create(client, file.id)
    fake.finish(mid.id)
    assert fake.jobs[mid.id].step == 2 and client.fine_tuning.jobs.retrieve(mid.id).status == "failed"


def test_bad_requests_use_the_error_envelope(fake):
    client = fake.client()
    with pytest.raises(openai.BadRequestError) as err:
        _create(client, "file-missing")
    assert err.value.body == {"message": "invalid training_file: file-missing", "type": "invalid_request_error",
                              "param": None, "code": None}
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    fake.rejected_keys.add("sk-revoked")
    with pytest.raises(openai.AuthenticationError):
        fake.client(api_key="sk-revoked").fine_tuning.jobs.list()


@pytest.mark.parametrize(("fault", "error", "status"), [
    (Fault.rate_limited(retry_after=7), openai.RateLimitError, 429),
    (Fault.error(500), openai.InternalServerError, 500),
    (Fault.unavailable(), openai.InternalServerError, 503),
    (Fault.dropped(), openai.APIConnectionError, None),
    (Fault.timed_out(commit=False), openai.APITimeoutError, None),
])
def test_each_fault_as_the_sdk_sees_it(fake, fault, error, status):
    client = fake.client()
    fake.faults.on("jobs.list", fault)
    with pytest.raises(error) as err:
        client.fine_tuning.jobs.list()
    if status:
        assert err.value.status_code == status
    if status == 429:
        assert err.value.response.headers["retry-after"] == "7"
    assert list(client.fine_tuning.jobs.list()) == []  # the next call is fine
    assert fake.faults.calls("jobs.list") == 2


@pytest.fixture(params=["idle", "loaded"])
def machine(request, monkeypatch):
    """As fast as it gets, or loaded: every answer of the fake comes 0.4 s late (once, this suite's clients timed out
    after 0.3 s, and a busy machine turned ordinary calls into timeouts)."""
    if request.param == "loaded":
        from fakes._server import LoopbackServer

        run = LoopbackServer._run

        def late(server, handler, req):
            time.sleep(0.4)
            return run(server, handler, req)

        monkeypatch.setattr(LoopbackServer, "_run", late)
    return request.param


@pytest.mark.parametrize("fault", [Fault.committed_error(500), Fault.dropped(commit=True), Fault.timed_out()])
def test_create_succeeds_on_the_server_but_the_client_sees_an_error(machine, fake, fault):
    client = fake.client()
    file = _upload(client)
    fake.faults.on("jobs.create", fault)
    with pytest.raises(openai.APIError):
        _create(client, file.id, metadata={"ftbroker_job": "x"})
    assert len(fake.jobs) == 1  # it exists all the same: a blind retry would make a second one
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"ftbroker_job": "x"})] == list(fake.jobs)


def test_a_held_answer_times_out_at_once_whatever_the_clients_timeout(fake):
    client = fake.client(timeout=3600)
    fake.faults.on("jobs.list", Fault.timed_out(commit=False))
    with pytest.raises(openai.APITimeoutError):
        client.fine_tuning.jobs.list()
    assert [r.fault for r in fake.calls("jobs.list")] == [Fault.timed_out(commit=False)]


def test_a_gate_holds_calls_until_the_test_opens_it(fake):
    import threading

    gate = fake.hold("jobs.list")
    client = fake.client()
    answers = []
    callers = [threading.Thread(target=lambda: answers.append(list(client.fine_tuning.jobs.list())))
               for _ in range(3)]
    for caller in callers:
        caller.start()
    assert gate.wait_arrived(3) and gate.arrived == 3 and answers == []  # every call is in, none answered
    gate.open()
    for caller in callers:
        caller.join()
    assert answers == [[], [], []]


def test_uncommitted_faults_change_nothing_and_sdk_retries_reads(fake):
    client = fake.client()
    file = _upload(client)
    fake.faults.on("jobs.create", Fault.error(500))
    with pytest.raises(openai.InternalServerError):
        _create(client, file.id)
    assert fake.jobs == {}
    fake.faults.on("files.retrieve", Fault.error(503, retry_after=0.01), times=2)
    assert fake.client(max_retries=2).files.retrieve(file.id).id == file.id
    assert [r.headers["x-stainless-retry-count"] for r in fake.calls("files.retrieve")] == ["0", "1", "2"]


def test_faults_pinned_and_random_are_deterministic(fake):
    client = fake.client()
    fake.faults.at("files.list", 2, Fault.error(500))
    client.files.list()
    with pytest.raises(openai.InternalServerError):
        client.files.list()
    client.files.list()

    def run(seed):
        with FakeOpenAI() as other:
            other.faults.random(0.5, [Fault.error(500)], seed=seed, routes=["files.list"])
            c = other.client()
            outcome = []
            for _ in range(12):
                try:
                    c.files.list()
                    outcome.append("ok")
                except openai.InternalServerError:
                    outcome.append("500")
            return outcome, other.faults.injected
    first, injected = run(3)
    assert run(3)[0] == first and "500" in first and "ok" in first
    assert injected["HTTP 500"] == first.count("500")
