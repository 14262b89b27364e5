"""Amazon Bedrock model customization (fine-tuning) through ``boto3``, with data and results on S3.

Facts behind this module (operations, parameters, statuses, metrics files, data formats): botocore's
Bedrock service model (data/bedrock/2023-04-20/service-2.json), the Amazon Bedrock user guide
(docs.aws.amazon.com/bedrock/latest/userguide: custom-model-fine-tuning, preparing-text-data and the
per-model hyperparameter pages cm-hp-*) and moto's Bedrock (getmoto/moto, moto/bedrock) for what the
tests can exercise; each fact's source is in a comment where it is used.

Models covered (the text models Bedrock fine-tunes):

- Llama 3.1 8B/70B (``meta.llama3-1-*``): ``{"prompt","completion"}`` lines (non-conversational,
  AWS preparing-text-data); hyperparameters: AWS user guide cm-hp-meta-llama31.
- Llama 3.2 1B/3B/11B/90B (``meta.llama3-2-*``): ``{"system"?, "messages":[{role, content}]}`` chat lines
  (the Converse-style shape of preparing-text-data); hyperparameters: cm-hp-meta-llama32.
- Nova Micro/Lite/Pro (``amazon.nova-{micro,lite,pro}-*``): ``bedrock-conversation-2024`` lines (preparing-text-data);
  hyperparameters: cm-hp-nova-mm.
- Claude 3 Haiku (``anthropic.claude-3-haiku-*``): reached end of life on 2026-09-10; its rules are kept so that
  a job for it is refused by the catalog's availability date (exit 3) rather than as an unknown model.

This part is pure translation (no SDK, no I/O): the status table (refined by ``statusDetails``),
the metrics CSVs Bedrock writes next to the output, the create request with ``hyperParameters`` as
strings, and the per-family dataset conversion. ``ftbroker.data`` checks Bedrock's rules for every model
(turns, roles, text only) and the catalog each model's formats and example counts; a converter refuses only
what its family's format cannot hold (Llama 3.1: one prompt and one completion; Nova's reserved keywords;
Claude's turn markers).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from ftbroker import progress
from ftbroker.backends.base import Capabilities, Update
from ftbroker.backends.declared import bedrock as declared
from ftbroker.errors import BackendAuthError, ProviderAPIError
from ftbroker.jobs import Artifact, Job, JobStatus, MetricPoint, Result
from ftbroker.redact import scrub

from ._managed import (
    ManagedBackend,
    ManagedOptions,
    Upload,
    check_range,
    hp_string,
    map_status,
    plain,
    provider_tag,
)
from .managed_files import ConvertedFile, Converter, Rejected, with_system_message

NAME = "bedrock"

# ModelCustomizationJobStatus in botocore's service model; InProgress is refined by statusDetails (below)
STATUS: Mapping[str, JobStatus] = {
    "InProgress": JobStatus.RUNNING,
    "Completed": JobStatus.SUCCEEDED,
    "Failed": JobStatus.FAILED,
    "Stopping": JobStatus.RUNNING,
    "Stopped": JobStatus.CANCELLED,
}

TRAINING_METRICS = "training_artifacts/step_wise_training_metrics.csv"  # docs: model-customization-analyze
VALIDATION_METRICS = "validation_artifacts/post_fine_tuning_validation/validation_metrics.csv"

# Nova fine-tuning data guide (docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding):
# a user or system prompt must not start with these reserved keywords.
NOVA_RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")


def normalize_status(job: Mapping[str, Any]) -> JobStatus:
    """A job's status; ``InProgress`` refined by ``statusDetails`` where Bedrock returns them."""
    status = map_status(job.get("status"), STATUS)
    details = job.get("statusDetails") or {}
    if status is JobStatus.RUNNING and job.get("status") == "InProgress" and details:
        stages = [(details.get(k) or {}).get("status") for k in
                  ("validationDetails", "dataProcessingDetails", "trainingDetails")]
        if stages[0] == "InProgress":
            return JobStatus.VALIDATING
        if all(s in (None, "NotStarted") for s in stages):
            return JobStatus.QUEUED
    return status


def failure_message(job: Mapping[str, Any]) -> str | None:
    """Only a Failed job's message counts (moto puts "Failure Message" on every job)."""
    return job.get("failureMessage") if job.get("status") == "Failed" else None


def metrics_from_csv(content: bytes, *, validation: bool = False) -> list[MetricPoint]:
    """Points from ``step_wise_training_metrics.csv`` (step_number, epoch_number, training_loss,
    perplexity) or, with ``validation``, the post-fine-tuning ``validation_metrics.csv``."""
    column, name = ("validation_loss", "eval_loss") if validation else ("training_loss", "train_loss")
    points = []
    for row in csv.DictReader(io.StringIO(content.decode("utf-8-sig", errors="replace"))):
        try:
            points.append(MetricPoint(step=int(float(row["step_number"])), name=name, value=float(row[column]),
                                      epoch=float(row["epoch_number"]) if row.get("epoch_number") else None))
        except (KeyError, TypeError, ValueError):
            continue
    return points


# -- families: hyperparameters and data format ---------------------------------------------------------
@dataclass(frozen=True)
class Hyper:
    key: str  # Bedrock's hyperParameters key
    low: float
    high: float
    integer: bool


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    epochs: Hyper
    learning_rate: Hyper | None
    batch_size: Hyper | None
    warmup_steps: Hyper | None
    source: str
    fmt: str  # "prompt_completion" | "chat" | "claude" | "converse"

    def converter(self) -> Converter:
        return {"prompt_completion": _llama_prompt_completion, "chat": _llama_chat, "claude": _claude,
                "converse": _nova}[self.fmt]


_LLAMA_HP = dict(epochs=Hyper("epochCount", 1, 10, True), learning_rate=Hyper("learningRate", 5e-6, 0.1, False),
                 batch_size=Hyper("batchSize", 1, 1, True), warmup_steps=None)
FAMILIES: tuple[Family, ...] = (
    Family("Llama 3.1", ("meta.llama3-1-",), **_LLAMA_HP, source="AWS user guide cm-hp-meta-llama31",
           fmt="prompt_completion"),
    Family("Llama 3.2", ("meta.llama3-2-",), **_LLAMA_HP, source="AWS user guide cm-hp-meta-llama32", fmt="chat"),
    Family("Nova", ("amazon.nova-micro-", "amazon.nova-lite-", "amazon.nova-pro-"),
           epochs=Hyper("epochCount", 1, 5, True), learning_rate=Hyper("learningRate", 1e-6, 1e-4, False),
           batch_size=None, warmup_steps=Hyper("learningRateWarmupSteps", 0, 100, True),
           source="AWS user guide cm-hp-nova-mm", fmt="converse"),
    # Past end of life (2026-09-10): kept so that a job for it is refused by the catalog's date (exit 3), not
    # taken for an unknown model. Its example counts and token limit are the catalog row's.
    Family("Claude 3 Haiku", ("anthropic.claude-3-haiku-",), epochs=Hyper("epochCount", 1, 10, True),
           learning_rate=None, batch_size=Hyper("batchSize", 4, 256, True), warmup_steps=None,
           source="AWS user guide cm-hp-anth-claude-3", fmt="claude"),
)


def family_of(base_model: str) -> Family | None:
    return next((f for f in FAMILIES if base_model.startswith(f.prefixes)), None)


def hyperparameters(family: Family, *, epochs: int | None, learning_rate: float | None, batch_size: int | None,
                    warmup_steps: int | None) -> tuple[dict[str, str], list[str]]:
    """Bedrock ``hyperParameters`` (string -> string) for ``family``, and every out-of-range problem.
    Unset values are left out: Bedrock then applies its documented defaults."""
    problems: list[str] = []
    out: dict[str, str] = {}
    for label, hyper, value in (("epochs", family.epochs, epochs),
                                ("learning rate", family.learning_rate, learning_rate),
                                ("batch size", family.batch_size, batch_size),
                                ("warmup steps", family.warmup_steps, warmup_steps)):
        if value is None:
            continue
        if hyper is None:
            problems.append(f"{label}: {family.name} on Bedrock has no such hyperparameter ({family.source})")
            continue
        check_range(problems, label, value, hyper.low, hyper.high, source=f"{family.name}, {family.source}")
        out[hyper.key] = hp_string(int(value) if hyper.integer else float(value))
    return out, problems


def create_request(*, job_name: str, custom_model_name: str, role_arn: str, base_model: str, training_uri: str,
                   validation_uri: str | None, output_uri: str, hyper: Mapping[str, str], token: str,
                   tags: Mapping[str, str]) -> dict[str, Any]:
    """Arguments of ``create_model_customization_job`` (botocore's service model, CreateModelCustomizationJob)."""
    request: dict[str, Any] = {
        "jobName": job_name, "customModelName": custom_model_name, "roleArn": role_arn,
        "baseModelIdentifier": base_model, "customizationType": "FINE_TUNING",
        "trainingDataConfig": {"s3Uri": training_uri}, "outputDataConfig": {"s3Uri": output_uri},
        "hyperParameters": dict(hyper), "clientRequestToken": token,
        "jobTags": [{"key": k, "value": v} for k, v in tags.items()],
    }
    if validation_uri:
        request["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
    return request


# -- dataset conversion ------------------------------------------------------------------------------
def _text(content: Any) -> str:
    """A message's content as plain text: a string, or its text (and refusal) parts joined."""
    return content if isinstance(content, str) else "".join(part[part["type"]] for part in content)


def _turns(example: Mapping[str, Any], fmt: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt, [(role, text), ...]) of a chat or prompt/completion example, which ``ftbroker.data`` has
    checked against the rules every Bedrock chat format shares: user first, roles alternate, assistant last,
    text only. A top-level ``system`` and a first system message are one prompt."""
    if fmt == "prompt_completion":
        return None, [("user", example["prompt"]), ("assistant", example["completion"])]
    messages = with_system_message(example)
    system = "\n\n".join(_text(m["content"]) for m in messages if m["role"] == "system")
    return system or None, [(m["role"], _text(m["content"])) for m in messages if m["role"] != "system"]


def _llama_prompt_completion(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """Llama 3.1: one prompt and one completion per line; the system prompt goes in front of the prompt, as the
    format has no field for it."""
    system, turns = _turns(example, fmt)
    if len(turns) != 2:
        raise Rejected(f"Llama 3.1 on Bedrock takes one prompt and one completion per line; this conversation has "
                       f"{len(turns)} turns (split it, or use a Llama 3.2 or Nova model)")
    prompt = turns[0][1]
    return {"prompt": f"{system}\n\n{prompt}" if system else prompt, "completion": turns[1][1]}


def _llama_chat(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    system, turns = _turns(example, fmt)
    line: dict[str, Any] = {"system": system} if system else {}
    line["messages"] = [{"role": role, "content": text} for role, text in turns]
    return line


# Claude 3 Haiku lines must not contain these (anthropic turn markers; aws-samples DataValidation README)
CLAUDE_FORBIDDEN = ("\nHuman:", "\nAssistant:")


def _claude(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    line = _llama_chat(example, fmt)
    texts = [line.get("system", "")] + [m["content"] for m in line["messages"]]
    marker = next((m for m in CLAUDE_FORBIDDEN if any(m in t for t in texts)), None)
    if marker:
        raise Rejected(f"contains {marker!r}, which Claude 3 Haiku fine-tuning data must not")
    return line


def _nova(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    system, turns = _turns(example, fmt)
    for where, text in [("system prompt", system or "")] + [(f"{r} turn", t) for r, t in turns if r == "user"]:
        keyword = next((k for k in NOVA_RESERVED if text.lstrip().startswith(k)), None)
        if keyword:
            raise Rejected(f"{where} starts with {keyword!r}, a keyword Nova fine-tuning reserves")
    line: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024"}
    if system:
        line["system"] = [{"text": system}]
    line["messages"] = [{"role": role, "content": [{"text": text}]} for role, text in turns]
    return line


# -- the backend -------------------------------------------------------------------------------------
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/.+")
NAME_MAX = 63  # jobName and customModelName (botocore bedrock service-2.json)

ROLE_HELP = (
    "backend_options.role_arn: required: the ARN of an IAM role that Bedrock assumes to read your training data "
    "from S3 and to write the results there. Create a role whose trust policy lets the service principal "
    "bedrock.amazonaws.com call sts:AssumeRole, allow it s3:GetObject and s3:ListBucket on the data location and "
    "s3:PutObject on the output location (both under backend_options.s3_uri), then pass it as "
    "role_arn=arn:aws:iam::<account-id>:role/<role-name>")
S3_HELP = ("backend_options.s3_uri: required: an S3 location (s3://bucket/prefix) in the job's region where "
           "ftbroker uploads the converted data and Bedrock writes the model's outputs and metrics")


class BedrockOptions(ManagedOptions):
    role_arn: str | None = Field(None, description="IAM role Bedrock assumes (trust: bedrock.amazonaws.com)")
    s3_uri: str | None = Field(None, description="s3://bucket/prefix for the data and the outputs")
    region: str | None = Field(None, description="default: the AWS configuration's (Llama: us-west-2, "
                                                 "Nova: us-east-1)")
    profile: str | None = Field(None, description="an AWS profile name (default: the usual credential chain)")
    endpoint_url: str | None = Field(None, description="a Bedrock endpoint other than AWS's own")
    warmup_steps: int | None = Field(None, ge=0, description="learningRateWarmupSteps (Nova)")
    poll_interval_s: float = Field(60.0, gt=0)


class BedrockBackend(ManagedBackend):
    """Bedrock model-customization jobs, data staged on S3. Credentials: the AWS credential chain."""

    name = NAME
    sdk_package = "boto3"
    extra = "aws"
    status_table = STATUS
    line_rules = declared.line_rules  # the objects the data layer and redact read from the declared module
    key_shapes = declared.key_shapes
    Options = BedrockOptions
    capabilities = Capabilities(
        requires={sdk_package: extra},
        providers=frozenset({"bedrock"}),  # the catalog's bedrock offers are its routes
        methods=frozenset({"lora", "full"}),  # Bedrock does not say how it trains; the method is not sent
        data_formats=frozenset({"chat", "prompt_completion"}),
        managed=True,
        poll_interval_s=60.0,
        unsupported={
            "method.qlora": "Bedrock does not offer quantized training",
            "lora": "Bedrock does not expose adapter settings (rank, alpha, target modules)",
            "hyperparameters.max_seq_len": "Bedrock fixes the context per base model",
            "hyperparameters.packing": "Bedrock decides how examples are batched",
            "hyperparameters.gradient_checkpointing": "Bedrock runs the training hardware; not a setting",
            "hyperparameters.gradient_accumulation_steps": "not a Bedrock hyperparameter",
            "hyperparameters.seed": "not a Bedrock hyperparameter",
            "hyperparameters.early_stopping_patience": "early stopping is a Claude 3 Haiku setting, and that model is "
                                                       "past end of life",
            "resume": "a Bedrock job cannot be continued; start a new one",
            "export": "the custom model stays in Bedrock (serve it with Provisioned Throughput or a custom-model "
                      "deployment)",
        },
    )

    def __init__(self, options: BedrockOptions, **kwargs: Any):
        super().__init__(options, **kwargs)
        self._s3: Any = None

    # -- set-up -------------------------------------------------------------------------------------
    def _session(self) -> Any:
        return self.sdk().Session(profile_name=self.options.profile, region_name=self.options.region)

    def _config(self) -> Any:
        from botocore.config import Config

        return Config(retries={"mode": "standard", "max_attempts": 1 + self.options.max_retries},
                      connect_timeout=self.options.request_timeout_s, read_timeout=self.options.request_timeout_s)

    def _new_client(self) -> Any:
        # botocore retries every call (creates included: clientRequestToken makes them idempotent)
        return self.call("connecting to Bedrock", self._session().client, "bedrock", config=self._config(),
                         endpoint_url=self.options.endpoint_url)

    def check_credentials(self) -> None:
        """The AWS credential chain (environment, shared files, SSO, instance role) must yield credentials: botocore
        only asks for them at the first call, after the job would be recorded."""
        if self.call("reading the AWS credentials", self._session().get_credentials) is None:
            raise BackendAuthError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                   "AWS_PROFILE, or run where an IAM role is attached", backend=self.name)

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.call("connecting to S3", self._session().client, "s3", config=self._config())
        return self._s3

    def close(self) -> None:
        super().close()
        if self._s3 is not None:
            self._s3.close()

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _spec_problems(self, spec: Any) -> list[str]:
        problems = []
        if not self.options.role_arn or not ROLE_ARN.fullmatch(self.options.role_arn):
            problems.append(ROLE_HELP if not self.options.role_arn else
                            f"backend_options.role_arn: {self.options.role_arn!r} is not an IAM role ARN "
                            "(arn:aws:iam::<12-digit account>:role/<name>)")
        if not self.options.s3_uri or not self.options.s3_uri.startswith("s3://") or not urlsplit(
                self.options.s3_uri).netloc:
            problems.append(S3_HELP)
        family = family_of(spec.model)
        if family is None:
            prefixes = ", ".join(p + "*" for f in FAMILIES for p in f.prefixes)
            return problems + [f"model: {spec.model!r} is not a Bedrock base model ftbroker can fine-tune "
                               f"(it covers {prefixes}; e.g. meta.llama3-1-8b-instruct-v1:0:128k)"]
        return problems + self._hyper(spec, family)[1]

    def _hyper(self, spec: Any, family: Family) -> tuple[dict[str, str], list[str]]:
        hp = spec.hyperparameters
        return hyperparameters(family, epochs=hp.epochs, learning_rate=hp.learning_rate,
                               batch_size=hp.micro_batch_size, warmup_steps=self.options.warmup_steps)

    def _converter(self, spec: Any) -> Converter:
        return family_of(spec.model).converter()

    # -- S3 -----------------------------------------------------------------------------------------
    def _location(self, *parts: str) -> tuple[str, str]:
        where = urlsplit(self.options.s3_uri)
        key = "/".join(p.strip("/") for p in (where.path, *parts) if p.strip("/"))
        return where.netloc, key

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        bucket, key = self._location("data", converted.upload_name)
        try:
            head = self.call("looking for the data already on S3", self.s3.head_object, Bucket=bucket, Key=key)
        except ProviderAPIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return f"s3://{bucket}/{key}" if head.get("ContentLength") == converted.size_bytes else None

    def _provider_upload(self, converted: ConvertedFile) -> str:
        bucket, key = self._location("data", converted.upload_name)
        with progress.task(f"uploading {converted.upload_name} to S3", total=converted.size_bytes) as sent:
            self.call("uploading the data to S3", self.s3.upload_file, str(converted.path), bucket, key,
                      Callback=sent.advance)  # boto3 calls it with the bytes each part sent
        return f"s3://{bucket}/{key}"

    # -- jobs ---------------------------------------------------------------------------------------
    def _get(self, job_name: str) -> dict[str, Any] | None:
        """The job by NAME (moto finds jobs by name only; AWS takes either), None when there is none."""
        try:
            raw = self.call("reading the job", self.client.get_model_customization_job, jobIdentifier=job_name)
        except ProviderAPIError as exc:
            if isinstance(exc.__cause__, self.client.exceptions.ResourceNotFoundException):
                return None
            raise
        raw.pop("ResponseMetadata", None)
        return plain(raw)

    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        return self._get(job.remote.get("job_name") or provider_tag(job.id, NAME_MAX))

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        spec = job.spec
        by_role = {u.role: u for u in uploads}
        tag = provider_tag(job.id, NAME_MAX)
        bucket, key = self._location("output", tag)
        request = create_request(
            job_name=tag, custom_model_name=tag, role_arn=self.options.role_arn, base_model=spec.model,
            training_uri=by_role["training"].remote_id,
            validation_uri=by_role["validation"].remote_id if "validation" in by_role else None,
            output_uri=f"s3://{bucket}/{key}/", hyper=self._hyper(spec, family_of(spec.model))[0], token=tag,
            tags={"ftbroker-job-id": job.id})
        try:
            self.call("creating the customization job", self.client.create_model_customization_job, **request)
        except ProviderAPIError as exc:  # a job of this name exists: an earlier attempt's (names derive from the id)
            if not isinstance(exc.__cause__, self.client.exceptions.ResourceInUseException):
                raise
        created = self._get(tag)
        if created is None:
            raise ProviderAPIError(f"created job {tag} but cannot read it back", backend=self.name, status_code=404)
        return created

    def _provider_status(self, raw: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
        return normalize_status(raw), raw.get("status")

    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        return {"job_name": raw["jobName"], "job_arn": raw["jobArn"]}

    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        raw = self._get(job.remote["job_name"])
        if raw is None:
            raise ProviderAPIError(f"job {job.remote['job_name']} not found", backend=self.name, status_code=404)
        return raw

    def _metrics(self, raw: Mapping[str, Any]) -> tuple[list[MetricPoint], list[str]]:
        """Points from the metrics CSVs under the job's output location, and their S3 URIs."""
        out = urlsplit(raw["outputDataConfig"]["s3Uri"])
        listed = self.call("listing the job's outputs", self.s3.list_objects_v2, Bucket=out.netloc,
                           Prefix=out.path.lstrip("/"))
        points, uris = [], []
        for obj in listed.get("Contents", []):
            validation = obj["Key"].endswith(VALIDATION_METRICS)
            if validation or obj["Key"].endswith(TRAINING_METRICS):
                body = self.call("reading a metrics file", self.s3.get_object, Bucket=out.netloc, Key=obj["Key"])
                points += metrics_from_csv(body["Body"].read(), validation=validation)
                uris.append(f"s3://{out.netloc}/{obj['Key']}")
        return points, uris

    def poll(self, job: Job) -> Update:
        raw = self._provider_fetch(job)
        status, detail = self._provider_status(raw)
        error = failure_message(raw)
        points = self._metrics(raw)[0] if status is JobStatus.SUCCEEDED else []
        return Update(status=status, detail=detail, metrics=points, next_poll_s=self.options.poll_interval_s,
                      error=scrub(error) if error else None,
                      output_model=raw.get("outputModelArn") if status is JobStatus.SUCCEEDED else None)

    def _provider_cancel(self, job: Job) -> None:
        self.call("stopping the job", self.client.stop_model_customization_job, jobIdentifier=job.remote["job_name"])

    def result(self, job: Job) -> Result:
        raw = self._provider_fetch(job)
        status, _ = self._provider_status(raw)
        points, uris = self._metrics(raw) if status is JobStatus.SUCCEEDED else ([], [])
        artifacts = [Artifact(kind="metrics", uri=uri, description="metrics CSV written by Bedrock") for uri in uris]
        output = raw.get("outputModelArn") if status is JobStatus.SUCCEEDED else None
        if output:
            artifacts.insert(0, Artifact(kind="provider_model", uri=output,
                                         description="the custom model: serve it with Provisioned Throughput or a "
                                                     "custom-model deployment"))
        error = failure_message(raw)
        return Result(id=job.id, backend=self.name, status=status, model=job.spec.model, output_model=output,
                      metrics=points, estimated_cost_usd=job.estimated_cost_usd,
                      finished_at=job.finished_at if status.terminal else None, artifacts=artifacts,
                      error=scrub(error) if error else None, raw=raw)
