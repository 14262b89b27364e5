"""The Bedrock backend through the Broker and boto3 against moto's Bedrock and S3 (the harness moves the jobs)."""

from __future__ import annotations

import json

import pytest
from fakes import BedrockHarness
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker, _LedgerTracker
from ftbroker.errors import BackendAuthError, DatasetError, RouteUnavailableError, SpecError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

LLAMA = "meta.llama3-1-8b-instruct-v1:0:128k"
NOVA = "amazon.nova-micro-v1:0:128k"
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # its Bedrock rows: no price, Claude 3 Haiku closed 2026-09-10


@pytest.fixture
def aws():
    with BedrockHarness() as harness:
        yield harness


@pytest.fixture
def broker(tmp_path, monkeypatch):
    with Broker(tmp_path / "home", sleep=lambda s: None) as b:
        yield b


def spec_for(aws, path, model=LLAMA, options=None, **kw):
    return JobSpec(dataset=str(path), model=model, backend="bedrock", **kw, backend_options={
        **FAST, "role_arn": aws.role_arn, "s3_uri": f"s3://{aws.bucket}/ftbroker", "region": aws.region,
        **(options or {})})


def test_submit_follow_result_llama(aws, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job = broker.submit(spec_for(aws, data, hyperparameters={"epochs": 3, "learning_rate": 1e-4},
                                 validation=str(write_chat(tmp_path / "v.jsonl", n=2, start=30))))
    assert job.status is JobStatus.RUNNING and job.remote["job_name"] == job.id
    moto_job = aws.job(job.id)
    assert moto_job.hyper_parameters == {"epochCount": "3", "learningRate": "0.0001"}
    assert moto_job.client_request_token == job.id and moto_job.role_arn == aws.role_arn
    assert moto_job.training_data_config["s3Uri"].startswith(f"s3://{aws.bucket}/ftbroker/data/ftbroker-")
    assert moto_job.output_data_config["s3Uri"] == f"s3://{aws.bucket}/ftbroker/output/{job.id}/"
    staged = aws.s3().get_object(Bucket=aws.bucket, Key=moto_job.training_data_config["s3Uri"].split("/", 3)[3])
    first = json.loads(staged["Body"].read().decode().splitlines()[0])
    assert first == {"prompt": "What is 0 + 0?", "completion": "0"}  # Llama 3.1: prompt/completion lines

    assert broker.refresh(job.id).error is None  # moto's "Failure Message" on a running job is not an error
    aws.complete(job.id, steps=4)
    result = broker.follow(job.id)
    job = broker.job(job.id)
    assert job.status is JobStatus.SUCCEEDED and job.output_model == moto_job.output_model_arn
    assert [m.step for m in broker.ledger.metrics(job.id) if m.name == "train_loss"] == [1, 2, 3, 4]
    assert result.status is JobStatus.SUCCEEDED and result.output_model == job.output_model
    assert {p.name for p in result.metrics} == {"train_loss", "eval_loss"}
    assert [a.kind for a in result.artifacts] == ["provider_model", "metrics", "metrics"]


def test_nova_lines_and_warmup(aws, broker, tmp_path):
    job = broker.submit(spec_for(aws, write_chat(tmp_path / "data.jsonl"), model=NOVA, options={"warmup_steps": 5},
                                 hyperparameters={"epochs": 2}))
    moto_job = aws.job(job.id)
    assert moto_job.hyper_parameters == {"epochCount": "2", "learningRateWarmupSteps": "5"}
    key = moto_job.training_data_config["s3Uri"].split("/", 3)[3]
    line = json.loads(aws.s3().get_object(Bucket=aws.bucket, Key=key)["Body"].read().splitlines()[0])
    assert line["schemaVersion"] == "bedrock-conversation-2024"
    assert line["messages"][0] == {"role": "user", "content": [{"text": "What is 0 + 0?"}]}


def test_idempotent_by_job_name_and_staged_data_reused(aws, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job = broker.submit(spec_for(aws, data))
    again = broker.backend(job.spec).submit(broker.job(job.id), _LedgerTracker(broker.ledger, job.id))
    assert again.reused and again.remote == {"job_name": job.id, "job_arn": job.remote["job_arn"]}
    other = broker.submit(spec_for(aws, data))
    assert other.remote["training_file"] == job.remote["training_file"]
    assert any("not uploaded again" in e.message for _, e in broker.events(other.id))
    assert len(aws.jobs()) == 2


def test_a_create_whose_answer_was_lost_is_found(aws, broker, tmp_path, monkeypatch):
    spec = spec_for(aws, write_chat(tmp_path / "data.jsonl"))
    client = broker.backend(spec).client
    real = client.create_model_customization_job
    calls = []

    def create_then_lose_the_answer(**request):
        calls.append(request["jobName"])
        real(**request)
        if len(calls) == 1:
            from botocore.exceptions import ReadTimeoutError
            raise ReadTimeoutError(endpoint_url="https://bedrock.us-west-2.amazonaws.com")

    monkeypatch.setattr(client, "create_model_customization_job", create_then_lose_the_answer)
    job = broker.submit(spec)
    assert calls == [job.id] and len(aws.jobs()) == 1


def test_failure_and_cancel(aws, broker, tmp_path):
    spec = spec_for(aws, write_chat(tmp_path / "data.jsonl"))
    job = broker.submit(spec)
    aws.fail(job.id, "Data validation failed: line 3 is not a valid prompt/completion record")
    result = broker.follow(job.id)
    assert broker.job(job.id).status is JobStatus.FAILED and result.error.startswith("Data validation failed")
    assert broker.job(job.id).error == result.error

    other = broker.submit(spec)
    assert broker.cancel(other.id).status is JobStatus.CANCELLED
    backend = broker.backend(spec)
    assert backend.cancel(broker.job(other.id)).status is JobStatus.CANCELLED  # moto refuses nothing
    aws.stopping(other.id)
    assert backend.poll(broker.job(other.id)).status is JobStatus.RUNNING


def test_no_aws_credentials_is_an_auth_error_before_anything_is_recorded(aws, broker, tmp_path, monkeypatch):
    with monkeypatch.context() as env:  # undone before the harness stops (moto puts its own keys back)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(name, raising=False)
        for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
            env.setenv(name, str(tmp_path / "absent"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
        with pytest.raises(BackendAuthError, match="no AWS credentials found"):
            broker.submit(spec_for(aws, write_chat(tmp_path / "data.jsonl")))
    assert broker.jobs() == [] and aws.jobs() == {}


def test_role_and_bucket_are_required_and_explained(aws, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    with pytest.raises(SpecError) as err:
        broker.submit(spec_for(aws, data, options={"role_arn": None, "s3_uri": None}))
    assert err.value.exit_code == 2
    role, bucket = err.value.problems
    assert role.startswith("backend_options.role_arn: required: the ARN of an IAM role that Bedrock assumes")
    assert "bedrock.amazonaws.com" in role and "sts:AssumeRole" in role
    assert bucket.startswith("backend_options.s3_uri: required")
    with pytest.raises(SpecError, match="is not an IAM role ARN"):
        broker.submit(spec_for(aws, data, options={"role_arn": "my-role"}))
    assert broker.jobs() == [] and aws.jobs() == {}


def test_model_data_and_hyperparameter_checks(aws, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    with pytest.raises(SpecError, match="is not a Bedrock base model ftbroker can fine-tune"):
        broker.submit(spec_for(aws, data, model="cohere.command-text-v14:7:4k"))
    with pytest.raises(SpecError, match=r"epochs: 7 is outside \[1, 5\]"):
        broker.submit(spec_for(aws, data, model=NOVA, hyperparameters={"epochs": 7}))
    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
                     + "\n")
    with pytest.raises(DatasetError, match=r"multi.jsonl:1: Llama 3.1 on Bedrock takes one prompt"):
        broker.submit(spec_for(aws, multi))  # the target format's own rule, checked by the converter
    tools = tmp_path / "tools.jsonl"
    tools.write_text(json.dumps({"messages": [
        {"role": "user", "content": "where is 7?"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "shipped"}, {"role": "assistant", "content": "Shipped."}]})
        + "\n")
    with pytest.raises(DatasetError) as err:  # Bedrock's rule for every model, held by ftbroker.data
        broker.submit(spec_for(aws, tools, model=NOVA))
    assert str(err.value) == (f"{tools}:1: tool calls, tool or developer messages: Bedrock fine-tuning data has user "
                              "and assistant turns (and a system prompt) only")
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(DatasetError) as err:  # the catalog row's formats for the model
        broker.submit(spec_for(aws, pc, model=NOVA))
    assert str(err.value) == f"{pc}: {NOVA} on bedrock: takes chat data; this file is prompt_completion"
    llama32 = spec_for(aws, multi, model="meta.llama3-2-3b-instruct-v1:0:128k")
    assert broker.backend(llama32).validate(llama32).examples == 1


def test_claude_3_haiku_is_refused_by_its_end_of_life_date(aws, broker, tmp_path):
    data = write_chat(tmp_path / "data.jsonl", n=40)
    with pytest.raises(RouteUnavailableError) as err:
        broker.submit(spec_for(aws, data, model="anthropic.claude-3-haiku-20240307-v1:0:200k"))
    assert err.value.exit_code == 3
    assert "closed: the model reached end of life on 2026-09-10" in str(err.value)
    assert broker.jobs() == [] and aws.jobs() == {}
