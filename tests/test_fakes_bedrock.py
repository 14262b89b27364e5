"""boto3 against moto's Bedrock + S3, and the harness that moves jobs the way moto never does."""

from __future__ import annotations

import botocore.exceptions
import pytest
from fakes import BedrockHarness


@pytest.fixture
def aws():
    with BedrockHarness() as harness:
        yield harness


def _create(aws, name, **kw):
    return aws.bedrock().create_model_customization_job(
        jobName=name, customModelName=f"{name}-model", roleArn=aws.role_arn,
        baseModelIdentifier="meta.llama3-1-8b-instruct-v1:0:128k", customizationType="FINE_TUNING",
        trainingDataConfig={"s3Uri": f"s3://{aws.bucket}/data/train.jsonl"},
        outputDataConfig={"s3Uri": f"s3://{aws.bucket}/out/"},
        hyperParameters={"epochCount": "2", "batchSize": "1", "learningRate": "0.0001"}, **kw)


def test_moto_quirks_the_backend_must_live_with(aws):
    client = aws.bedrock()
    arn = _create(aws, "ftb-job-1", clientRequestToken="tok-1")["jobArn"]
    job = client.get_model_customization_job(jobIdentifier="ftb-job-1")
    assert (job["status"], job["failureMessage"]) == ("InProgress", "Failure Message")
    assert job["clientRequestToken"] == "tok-1" and "statusDetails" not in job
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_model_customization_job(jobIdentifier=arn)  # by ARN: not found
    with pytest.raises(client.exceptions.ResourceInUseException):
        _create(aws, "ftb-job-1")
    listed = client.list_model_customization_jobs(nameContains="ftb-job")["modelCustomizationJobSummaries"]
    assert [j["jobName"] for j in listed] == ["ftb-job-1"]
    client.stop_model_customization_job(jobIdentifier="ftb-job-1")
    assert client.get_model_customization_job(jobIdentifier="ftb-job-1")["status"] == "Stopped"


def test_harness_completes_a_job_and_writes_its_metrics(aws):
    _create(aws, "ftb-job-2", validationDataConfig={"validators": [{"s3Uri": f"s3://{aws.bucket}/data/v.jsonl"}]})
    aws.complete("ftb-job-2", steps=4)
    job = aws.bedrock().get_model_customization_job(jobIdentifier="ftb-job-2")
    assert job["status"] == "Completed" and "failureMessage" not in job
    assert job["trainingMetrics"]["trainingLoss"] > 0
    keys = sorted(o["Key"] for o in aws.s3().list_objects_v2(Bucket=aws.bucket, Prefix="out/")["Contents"])
    assert keys == [
        "out/model-customization-job-ftb-job-2/training_artifacts/step_wise_training_metrics.csv",
        "out/model-customization-job-ftb-job-2/validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
    ]
    body = aws.s3().get_object(Bucket=aws.bucket, Key=keys[0])["Body"].read().decode().splitlines()
    assert body[0] == "step_number,epoch_number,training_loss,perplexity" and len(body) == 5


def test_harness_fails_and_stops_jobs(aws):
    _create(aws, "ftb-job-3")
    aws.fail("ftb-job-3", "Input data is not in the expected format")
    job = aws.bedrock().get_model_customization_job(jobIdentifier="ftb-job-3")
    assert (job["status"], job["failureMessage"]) == ("Failed", "Input data is not in the expected format")
    _create(aws, "ftb-job-4")
    aws.stopping("ftb-job-4")
    assert aws.bedrock().get_model_customization_job(jobIdentifier="ftb-job-4")["status"] == "Stopping"


def test_moto_checks_s3_uris(aws):
    with pytest.raises(botocore.exceptions.ClientError, match="ValidationException"):
        aws.bedrock().create_model_customization_job(
            jobName="bad", customModelName="bad", roleArn=aws.role_arn, baseModelIdentifier="x",
            trainingDataConfig={"s3Uri": "/local/path.jsonl"}, outputDataConfig={"s3Uri": "s3://b/o"})
