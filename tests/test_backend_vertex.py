"""The Vertex AI backend through the real ``google-genai`` SDK and google-auth against the loopback fake (tuning jobs,
Cloud Storage, Google's token endpoint): the Gemini line format, the data staged once in the user's bucket, the job
found by its label when its creation was never confirmed, the tuned endpoint as the output model, and what is refused
before anything is sent or recorded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes import FakeVertex, Fault, Outcome
from fakes.support import FAST, write_chat

from ftbroker.backends import vertex
from ftbroker.backends._managed import provider_tag
from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.errors import BackendUnavailableError
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with FakeVertex(advance_on_poll=True) as server:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.write_credentials(tmp_path / "adc.json")))
        yield server


def spec(fake, data, **fields) -> JobSpec:
    options = {**FAST, **fake.options(), **fields.pop("options", {})}
    return JobSpec(dataset=str(data), model="gemini-3.5-flash", backend="vertex", backend_options=options,
                   hyperparameters={"epochs": 3}, **fields)


def test_a_tuning_job_carries_its_id_and_data_and_ends_on_its_endpoint(fake, tmp_path):
    data, valid = write_chat(tmp_path / "data.jsonl"), write_chat(tmp_path / "valid.jsonl", n=5, start=100)
    with Broker(sleep=lambda s: None) as broker:
        job = broker.submit(spec(fake, data, validation=str(valid), lora={"r": 8},
                                 options={"learning_rate_multiplier": 0.5}))
        result = broker.follow(job.id)
    (created,) = fake.calls("jobs.create")
    body, tag = created.json(), provider_tag(job.id, 63)
    assert (body["tunedModelDisplayName"], body["labels"], body["description"]) == (
        tag, {"ftbroker-job": tag}, f"ftbroker job {job.id}")
    tuning = body["supervisedTuningSpec"]
    assert tuning["hyperParameters"] == {"epochCount": 3, "adapterSize": "ADAPTER_SIZE_EIGHT",
                                         "learningRateMultiplier": 0.5}
    assert tuning["trainingDatasetUri"].startswith("gs://fake-bucket/ftbroker/ftbroker-")
    assert tuning["validationDatasetUri"] != tuning["trainingDatasetUri"]
    line = json.loads(fake._object(tuning["trainingDatasetUri"]).content.splitlines()[0])
    assert line == {"contents": [{"role": "user", "parts": [{"text": "What is 0 + 0?"}]},
                                 {"role": "model", "parts": [{"text": "0"}]}]}
    assert result.status is JobStatus.SUCCEEDED and result.output_model.endswith("/endpoints/80000000019")
    assert result.trained_tokens == fake.jobs["8000000001"].trained_tokens
    assert any(a.kind == "metrics" and "metadataStores" in a.uri for a in result.artifacts)
    assert all(r.headers["authorization"] == f"Bearer {fake.access_token}"
               for r in fake.requests if r.route != "token")


def test_the_system_prompt_is_the_system_instruction():
    example = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]}
    assert vertex.convert(example, "chat") == {
        "systemInstruction": {"role": "system", "parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]}]}


def test_the_data_are_staged_once_and_a_job_whose_creation_was_lost_is_found_by_its_label(fake, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    fake.faults.on("jobs.create", Fault.dropped(commit=True))  # created; the answer never arrives
    with Broker(sleep=lambda s: None) as broker:
        lost = spec(fake, data, options={"submit_attempts": 1})
        with pytest.raises(BackendUnavailableError):
            broker.submit(lost)
        (recorded,) = broker.jobs()
        assert recorded.submitted_at is None and "job_id" not in recorded.remote
        cancelled = broker.cancel(recorded.id)  # stopped although ftbroker never learnt its id
        resumed = broker.resume(recorded.id)
        again = broker.submit(spec(fake, data))
    assert len(fake.jobs) == 2 and len(fake.calls("jobs.create")) == 2
    assert resumed.remote["job_id"].endswith("/tuningJobs/8000000001")
    assert cancelled.status in (JobStatus.RUNNING, JobStatus.CANCELLED) and len(fake.calls("jobs.cancel")) == 1
    assert len(fake.calls("gcs.upload")) == 1 and again.remote["training_file"] == resumed.remote["training_file"]


@pytest.mark.parametrize("options, fields, code, words", [
    ({"gcs_uri": None}, {}, 2, "backend_options.gcs_uri: Vertex reads the training data from Cloud Storage"),
    ({}, {"lora": {"r": 3}}, 2, "lora.r: 3 is not a Gemini adapter size"),
    ({}, {"hyperparameters": {"max_seq_len": 2048}}, 2, "max_seq_len: not supported by vertex"),
    ({"gcs_uri": "s3://bucket"}, {}, 2, "'s3://bucket' is not a gs://BUCKET[/PREFIX] URI"),
    ({}, {"model": "gemini-2.5-flash"}, 3, "closed: the model reached end of life on 2026-10-16"),
])
def test_what_vertex_would_refuse_is_refused_before_anything_is_sent(fake, tmp_path, options, fields, code, words):
    data = write_chat(tmp_path / "data.jsonl")
    base = spec(fake, data, options=options).model_dump()
    base["backend_options"] = {k: v for k, v in base["backend_options"].items() if v is not None}
    for key, value in fields.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    doc = tmp_path / "job.yaml"
    doc.write_text(json.dumps(base))
    ran = ftb("run", "--config", doc, "--yes")
    assert ran.exit_code == code and words in ran.stderr, ran.output
    assert [r.route for r in fake.requests] == [] and Ledger().list() == []


def test_a_turn_vertex_cannot_take_is_named_by_file_and_line_and_missing_credentials_come_first(fake, tmp_path,
                                                                                                  monkeypatch):
    data = write_chat(tmp_path / "data.jsonl")
    with data.open("a") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "ok", "weight": 0},
                                          {"role": "user", "content": "and?"},
                                          {"role": "assistant", "content": "done"}]}) + "\n")
    options = [f"--option={k}={v}" for k, v in {**FAST, **fake.options()}.items()]
    run = ["run", data, "--backend", "vertex", "--model", "gemini-3.5-flash", "--epochs", 1, "--yes", *options]
    ran = ftb(*run)
    assert ran.exit_code == 2 and f"{data}:13: 'weight: 0' turns cannot be expressed in Vertex's format" in ran.stderr
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    ran = ftb(*run)
    assert ran.exit_code == 1 and "no Google credentials: run `gcloud auth application-default login`" in ran.stderr
    assert fake.requests == [] and Ledger().list() == []


def test_a_failed_tuning_job_says_vertexs_error(fake, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    fake.next_outcome(Outcome.failure("Dataset row 7 has no model turn.", at_step=1))
    with Broker(sleep=lambda s: None) as broker:
        result = broker.follow(broker.submit(spec(fake, data)).id)
    assert result.status is JobStatus.FAILED and result.error == "Dataset row 7 has no model turn."
