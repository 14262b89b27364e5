"""Bedrock model customization and S3 through moto, plus what moto lacks: moving a job along.

moto (5.2.5) implements create/get/list/stop of model-customization jobs and all of S3, in process
(``mock_aws``). Its quirks, which the Bedrock backend must live with (getmoto/moto, moto/bedrock/models.py):

- a job is ``InProgress`` forever after create; nothing makes it ``Completed`` or ``Failed``,
  and ``stop`` jumps straight to ``Stopped`` (never ``Stopping``);
- get and stop find a job by its NAME only: the ``jobArn`` that create returns gives
  ResourceNotFoundException (boto3 URL-encodes the ARN and moto compares the raw segment to names);
- ``failureMessage`` is "Failure Message" on every job, running ones included; ``endTime`` is set at
  creation; ``trainingMetrics``/``validationMetrics`` are hard-coded zeros; ``statusDetails`` is
  never returned; hyperparameters and the base model are not validated; a duplicate job name is
  ResourceInUseException.

``BedrockHarness.complete`` / ``fail`` set the moto backend object's fields and, for a completed
job, write the metrics CSVs where Bedrock writes them (docs: model-customization-analyze):
``<output>/model-customization-job-<id>/training_artifacts/step_wise_training_metrics.csv``
(step_number, epoch_number, training_loss, perplexity) and
``.../validation_artifacts/post_fine_tuning_validation/validation_metrics.csv``.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from ._jobs import train_loss, valid_loss

REGION = "us-west-2"
ACCOUNT = "123456789012"  # moto's default account
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ftbroker-bedrock-customization"
BUCKET = "ftbroker-test-bucket"


class BedrockHarness:
    """``with BedrockHarness() as aws:`` -- moto running, a bucket made, clients at hand."""

    def __init__(self, region: str = REGION, bucket: str = BUCKET):
        self.region, self.bucket, self.role_arn = region, bucket, ROLE_ARN
        self._mock: Any = None

    def __enter__(self) -> BedrockHarness:
        from moto import mock_aws

        self._mock = mock_aws()
        self._mock.start()  # also sets fake AWS credentials in the environment while it runs
        self.s3().create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": self.region})
        return self

    def __exit__(self, *exc: object) -> None:
        self._mock.stop()

    def bedrock(self) -> Any:
        import boto3

        return boto3.client("bedrock", region_name=self.region)

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", region_name=self.region)

    # -- moving jobs (what moto never does) ---------------------------------------------------------
    def job(self, name: str) -> Any:
        from moto.bedrock.models import bedrock_backends

        return bedrock_backends[ACCOUNT][self.region].model_customization_jobs[name]

    def jobs(self) -> dict[str, Any]:
        from moto.bedrock.models import bedrock_backends

        return bedrock_backends[ACCOUNT][self.region].model_customization_jobs

    def complete(self, name: str, steps: int = 3, *, write_metrics: bool = True) -> None:
        job = self.job(name)
        job.status = "Completed"
        job.failure_message = None
        job.training_metrics = {"trainingLoss": train_loss(steps)}
        job.validation_metrics = [{"validationLoss": valid_loss(steps)}] if job.validation_data_config else None
        if write_metrics:
            self._write_metrics(job, steps)

    def fail(self, name: str, message: str) -> None:
        job = self.job(name)
        job.status = "Failed"
        job.failure_message = message

    def stopping(self, name: str) -> None:
        self.job(name).status = "Stopping"

    def _write_metrics(self, job: Any, steps: int) -> None:
        out = urlsplit(job.output_data_config["s3Uri"])
        prefix = f"{out.path.strip('/')}/" if out.path.strip("/") else ""
        folder = f"{prefix}model-customization-job-{job.job_arn.rsplit('/', 1)[-1]}"
        rows = ["step_number,epoch_number,training_loss,perplexity"]
        rows += [f"{s},{(s - 1) // max(1, steps // 2)},{train_loss(s)},{math.exp(train_loss(s)):.4f}"
                 for s in range(1, steps + 1)]
        s3 = self.s3()
        s3.put_object(Bucket=out.netloc, Key=f"{folder}/training_artifacts/step_wise_training_metrics.csv",
                      Body="\n".join(rows).encode())
        if job.validation_data_config:
            rows = ["step_number,epoch_number,validation_loss,perplexity",
                    f"{steps},{steps - 1},{valid_loss(steps)},{math.exp(valid_loss(steps)):.4f}"]
            s3.put_object(Bucket=out.netloc,
                          Key=f"{folder}/validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
                          Body="\n".join(rows).encode())
