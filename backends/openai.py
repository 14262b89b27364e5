"""OpenAI fine-tuning (and any OpenAI-compatible fine-tuning endpoint) through the official ``openai`` SDK.

Facts behind this module (endpoints, job and event shapes, statuses, result files): OpenAI's OpenAPI
spec (github.com/openai/openai-openapi, openapi.yaml; the training-line schemas from its 2025-04-29
version, the last that carries them), the openai-python SDK's types, and OpenAI's fine-tuning guide
(platform.openai.com/docs/guides/fine-tuning); each fact's source is in a comment where it is used.

This part is pure translation (no SDK, no I/O): the status table, events and metrics (metrics
events and the result CSV, plain or base64), the create-job request, and the conversion of a
dataset (checked by ``ftbroker.data``, with OpenAI's line rules from ``ftbroker.backends.declared.openai``) into
OpenAI's training lines.

OpenAI-compatible endpoints: the backend takes ``base_url`` (or the SDK's ``OPENAI_BASE_URL``).
Anything that serves ``/files`` and ``/fine_tuning/jobs`` with OpenAI's shapes works. What an
endpoint may lack, and what the backend does then: ``metadata`` filtering on the job list (the
backend also matches metadata and suffix itself while it scans the newest pages), ``metadata`` on
jobs at all (it falls back to the suffix, which carries the same tag), the result CSV (metrics
then come from the events only).

Azure OpenAI differs in ways a base URL alone does not cover:
- the client is ``openai.AzureOpenAI(azure_endpoint="https://<resource>.openai.azure.com",
  api_version="<YYYY-MM-DD[-preview]>", api_key=... or azure_ad_token_provider=...)``: every call
  carries ``?api-version=``; the key goes in an ``api-key`` header (``AZURE_OPENAI_API_KEY``);
  Entra ID tokens are the alternative to keys;
- the endpoint shape is ``https://<resource>.openai.azure.com/openai/fine_tuning/jobs`` (and
  ``/openai/files``), per resource and region; fine-tuning is offered in a few regions only;
- the base model names are Azure's (e.g. ``gpt-4o-mini-2024-07-18`` in a region that offers it),
  and the fine-tuned model is not callable until you create a *deployment* of it (a separate
  control-plane call, billed per hour while deployed) -- ``output_model`` is then the deployment
  name you choose, not the ``ft:...`` id;
- job statuses and file processing can take longer (files show ``pending``/``running`` before
  ``processed``); the shapes are otherwise OpenAI's.
Pass such a client to the backend (``client=``) to use Azure; the rest of the flow is the same.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from ftbroker import progress
from ftbroker.backends.base import Capabilities, Update
from ftbroker.backends.declared import openai as declared
from ftbroker.errors import BackendAuthError
from ftbroker.jobs import Artifact, Event, Job, JobStatus, MetricPoint, Progress, Result
from ftbroker.redact import scrub

from ._managed import (
    ManagedBackend,
    Upload,
    WandbOptions,
    actual_cost,
    check_range,
    plain,
    provider_tag,
    wandb_run,
)
from .managed_files import ConvertedFile, Converter, with_system_message

NAME = "openai"

# FineTuningJob.status in openai-openapi (openapi.yaml) and openai-python (types/fine_tuning/fine_tuning_job.py);
# "pausing"/"paused" come from the newer API reference (developers.openai.com/api/reference) and the pause
# endpoint's example: non-terminal, shown as running / queued.
STATUS: Mapping[str, JobStatus] = {
    "validating_files": JobStatus.VALIDATING,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "pausing": JobStatus.RUNNING,
    "paused": JobStatus.QUEUED,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

# metrics event data keys and result-CSV columns (the fine-tuning guide, "Analyzing your fine-tuned model") ->
# normalized metric names
METRIC_NAMES: Mapping[str, str] = {
    "train_loss": "train_loss",
    "train_mean_token_accuracy": "train_accuracy",
    "train_accuracy": "train_accuracy",
    "valid_loss": "eval_loss",
    "valid_mean_token_accuracy": "eval_accuracy",
    "full_valid_loss": "full_eval_loss",
    "full_valid_mean_token_accuracy": "full_eval_accuracy",
}

# the keys of a training line (openai-openapi of 2025-04-29: FineTuneChatRequestInput, FineTunePreferenceRequestInput)
CHAT_KEYS = ("tools", "parallel_tool_calls", "functions")
PREFERENCE_INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")


def _time(ts: int | float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _dump(obj: Any) -> dict[str, Any]:
    """An SDK model or a plain mapping as a plain dict (events come either way)."""
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


# -- events and metrics ------------------------------------------------------------------------------
def normalize_events(raw_events: Iterable[Any]) -> list[Event]:
    """OpenAI job events (any order) as normalized Events, oldest first."""
    events = []
    for raw in sorted((_dump(e) for e in raw_events), key=lambda e: (e["created_at"], e["id"])):
        level = {"warn": "warning"}.get(raw.get("level") or "info", raw.get("level") or "info")
        kind = "metrics" if raw.get("type") == "metrics" else {"error": "error", "warning": "warning"}.get(level, "log")
        events.append(Event(time=_time(raw["created_at"]), kind=kind, message=raw.get("message") or "",
                            level=level, data={"id": raw["id"], **(raw.get("data") or {})}))
    return events


def _points(step: int, values: Mapping[str, Any]) -> list[MetricPoint]:
    points = []
    for key, name in METRIC_NAMES.items():
        value = values.get(key)
        if value is None or value == "":
            continue
        try:
            points.append(MetricPoint(step=step, name=name, value=float(value)))
        except (TypeError, ValueError):
            continue  # a malformed cell is skipped, not fatal: metrics are informative
    return points


def metrics_from_events(raw_events: Iterable[Any]) -> list[MetricPoint]:
    """Loss/accuracy points from ``type: metrics`` events, by step."""
    points = []
    for raw in (_dump(e) for e in raw_events):
        data = raw.get("data") or {}
        if raw.get("type") == "metrics" and "step" in data:
            points.extend(_points(int(data["step"]), data))
    return sorted(points, key=lambda p: (p.step, p.name))


def decode_result_file(content: bytes) -> str:
    """A result file's text: plain CSV, or base64 of it (as in openai/openai-cookbook,
    examples/Fine_tuning_for_function_calling.ipynb)."""
    text = content.decode("utf-8-sig", errors="replace").strip()
    if text.startswith("step"):
        return text
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True).decode("utf-8-sig")
    except (binascii.Error, UnicodeDecodeError):
        return text
    return decoded.strip() if decoded.lstrip().startswith("step") else text


def metrics_from_result_csv(content: bytes) -> list[MetricPoint]:
    """Points from a job's result CSV (``step,train_loss,train_accuracy,valid_loss,...``)."""
    rows = csv.DictReader(io.StringIO(decode_result_file(content)))
    if not rows.fieldnames or "step" not in rows.fieldnames:
        return []
    points = []
    for row in rows:
        try:
            step = int(float(row["step"]))
        except (TypeError, ValueError):
            continue
        points.extend(_points(step, row))
    return sorted(points, key=lambda p: (p.step, p.name))


# -- the create-job request --------------------------------------------------------------------------
def create_request(*, model: str, training_file: str, validation_file: str | None, tag: str, job_id: str,
                   dpo: bool, epochs: int | None, batch_size: int | None, options: Mapping[str, Any],
                   wandb: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The body of POST /fine_tuning/jobs (``CreateFineTuningJobRequest``): hyperparameters under ``method``.

    ``options`` may carry ``learning_rate_multiplier``, ``beta`` (DPO), ``seed``. The job carries
    ``metadata.ftbroker_job_id`` (filterable) and the ``suffix`` ``tag`` for finding it again. ``wandb``: the W&B
    run OpenAI logs the job to (its ``integrations``, https://platform.openai.com/docs/api-reference/fine-tuning/
    create; the W&B key is the one registered in the OpenAI organization's settings, never sent here).
    """
    hyper: dict[str, Any] = {}
    if epochs is not None:
        hyper["n_epochs"] = epochs
    if batch_size is not None:
        hyper["batch_size"] = batch_size
    if options.get("learning_rate_multiplier") is not None:
        hyper["learning_rate_multiplier"] = float(options["learning_rate_multiplier"])
    if dpo and options.get("beta") is not None:
        hyper["beta"] = float(options["beta"])
    method = "dpo" if dpo else "supervised"
    body: dict[str, Any] = {
        "model": model, "training_file": training_file, "suffix": tag,
        "metadata": {"ftbroker_job_id": job_id},
        "method": {"type": method, method: {"hyperparameters": hyper}},
    }
    if validation_file:
        body["validation_file"] = validation_file
    if options.get("seed") is not None:
        body["seed"] = int(options["seed"])
    if wandb:
        body["integrations"] = [{"type": "wandb", "wandb": dict(wandb)}]
    return body


def check_hyperparameters(*, epochs: int | None, batch_size: int | None, options: Mapping[str, Any]) -> list[str]:
    """Every out-of-range value (the hyperparameters of ``CreateFineTuningJobRequest``), as readable problems."""
    problems: list[str] = []
    src = "OpenAI API"
    check_range(problems, "epochs", epochs, 1, 50, source=src)
    check_range(problems, "batch size", batch_size, 1, 256, source=src)
    check_range(problems, "learning_rate_multiplier", options.get("learning_rate_multiplier"), 0, float("inf"),
                low_open=True, source=src)
    check_range(problems, "beta", options.get("beta"), 0, 2, low_open=True, source=src)
    check_range(problems, "seed", options.get("seed"), 0, 2147483647, source=src)
    return problems


# -- dataset conversion ------------------------------------------------------------------------------
def convert(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """One example (checked by ``ftbroker.data``) as an OpenAI training line with the keys OpenAI reads (the
    2025-04-29 training-line schemas); a top-level system prompt becomes the first message. Which model takes
    which format is the catalog's (chat models: chat and, for DPO, preference lines; babbage-002 and davinci-002:
    prompt/completion)."""
    if fmt == "chat":
        return {"messages": with_system_message(example), **{k: example[k] for k in CHAT_KEYS if k in example}}
    if fmt == "preference":
        return {"input": {k: v for k, v in example["input"].items() if k in PREFERENCE_INPUT_KEYS},
                "preferred_output": example["preferred_output"],
                "non_preferred_output": example["non_preferred_output"]}
    return {"prompt": example["prompt"], "completion": example["completion"]}


# -- the backend -------------------------------------------------------------------------------------
CLOCK_SKEW_S = 600  # a remote job created before its ledger intent (minus this) cannot be ours


class OpenAIOptions(WandbOptions):
    base_url: str | None = Field(None, description="an OpenAI-compatible API (default: OPENAI_BASE_URL, "
                                                    "else https://api.openai.com/v1)")
    learning_rate_multiplier: float | None = Field(None, gt=0, description="OpenAI's learning-rate knob")
    beta: float | None = Field(None, gt=0, le=2, description="DPO beta (preference data)")


class OpenAIBackend(ManagedBackend):
    """OpenAI fine-tuning jobs. Credentials: ``OPENAI_API_KEY`` (and the SDK's other usual settings)."""

    name = NAME
    sdk_package = "openai"
    extra = "openai"
    status_table = STATUS
    line_rules = declared.line_rules  # the objects the data layer and redact read from the declared module
    key_shapes = declared.key_shapes
    Options = OpenAIOptions
    capabilities = Capabilities(
        requires={sdk_package: extra},
        providers=frozenset({"openai"}),  # the catalog's openai offers are its routes
        methods=frozenset({"lora", "full"}),  # OpenAI does not say how it trains; the method is not sent
        data_formats=frozenset({"chat", "prompt_completion", "preference"}),
        managed=True,
        poll_interval_s=30.0,
        unsupported={
            "method.qlora": "OpenAI does not offer quantized training",
            "lora": "OpenAI does not expose adapter settings (rank, alpha, target modules)",
            "hyperparameters.learning_rate": "OpenAI takes a multiplier of its own default learning rate: set "
                                             "backend_options.learning_rate_multiplier",
            "hyperparameters.max_seq_len": "OpenAI fixes the per-example limit per model (longer examples are "
                                           "truncated)",
            "hyperparameters.packing": "OpenAI decides how examples are batched",
            "hyperparameters.gradient_checkpointing": "OpenAI runs the training hardware; not a setting",
            "hyperparameters.early_stopping_patience": "OpenAI has no early-stopping setting",
            "resume": "an OpenAI job cannot be continued; start a new one",
            "export": "the model stays on OpenAI: call it by its output_model name",
        },
    )

    # -- set-up -------------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        sdk = self.sdk()
        try:
            return sdk.OpenAI(base_url=self.options.base_url, max_retries=self.options.max_retries,
                              timeout=self.options.request_timeout_s)
        except sdk.OpenAIError as exc:
            raise BackendAuthError("no credentials: set OPENAI_API_KEY (or the openai SDK's usual "
                                   "configuration)", backend=self.name) from exc

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        return (self.sdk().OpenAIError,)

    @staticmethod
    def _batch_size(job_spec: Any) -> int | None:
        hp = job_spec.hyperparameters
        return hp.micro_batch_size * (hp.gradient_accumulation_steps or 1) if hp.micro_batch_size else None

    def _spec_problems(self, spec: Any) -> list[str]:
        return check_hyperparameters(epochs=spec.hyperparameters.epochs, batch_size=self._batch_size(spec),
                                     options=self.options.model_dump())

    def _converter(self, spec: Any) -> Converter:
        return convert

    # -- submit -------------------------------------------------------------------------------------
    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        jobs = self.client.fine_tuning.jobs
        known = job.remote.get("job_id")
        if known:
            return plain(self.call("reading the job", jobs.retrieve, known))
        tag, since = provider_tag(job.id), job.created_at.timestamp() - CLOCK_SKEW_S

        def scan() -> Mapping[str, Any] | None:
            # filtered by metadata where the endpoint supports it; checked here for those that do not
            for remote in jobs.list(metadata={"ftbroker_job_id": job.id}, limit=100):
                record = plain(remote)
                if ((record.get("metadata") or {}).get("ftbroker_job_id") == job.id
                        or record.get("user_provided_suffix") == tag):
                    return record
                if record["created_at"] < since:
                    return None
            return None

        return self.call("looking for a job already created for this id", scan)

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        def scan() -> str | None:
            for file in self.client.files.list(purpose="fine-tune", limit=1000):
                if (file.filename == converted.upload_name and file.bytes == converted.size_bytes
                        and getattr(file, "status", None) != "error"):
                    return file.id
            return None

        return self.call("looking for the data already uploaded", scan)

    def _provider_upload(self, converted: ConvertedFile) -> str:
        client = self._writes().with_options(timeout=self.options.upload_timeout_s)
        with progress.sending(converted.path, f"uploading {converted.upload_name} to OpenAI") as fh:
            uploaded = self.call("uploading the data", client.files.create,
                                 file=(converted.upload_name, fh), purpose="fine-tune")
        return uploaded.id

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        spec = job.spec
        by_role = {u.role: u for u in uploads}
        body = create_request(
            model=spec.model, training_file=by_role["training"].remote_id,
            validation_file=by_role["validation"].remote_id if "validation" in by_role else None,
            tag=provider_tag(job.id), job_id=job.id, dpo=by_role["training"].file.fmt == "preference",
            epochs=spec.hyperparameters.epochs, batch_size=self._batch_size(spec),
            options={**self.options.model_dump(), "seed": spec.hyperparameters.seed},
            wandb=self.options.wandb(job.id))
        return plain(self.call("creating the fine-tuning job", self._writes().fine_tuning.jobs.create, **body))

    # -- track --------------------------------------------------------------------------------------
    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        wandb = next((i.get("wandb") or {} for i in raw.get("integrations") or () if i.get("type") == "wandb"), {})
        return {**super()._handles(raw), **wandb_run(wandb.get("project"), wandb.get("name"), wandb.get("entity"))}

    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        return plain(self.call("reading the job", self.client.fine_tuning.jobs.retrieve, job.remote["job_id"]))

    def _provider_cancel(self, job: Job) -> Mapping[str, Any]:
        return plain(self.call("cancelling the job", self.client.fine_tuning.jobs.cancel, job.remote["job_id"]))

    def _events_since(self, job: Job, cursor: str | None) -> list[dict[str, Any]]:
        """The job's events newer than ``cursor`` (an event id), oldest first."""
        def collect() -> list[dict[str, Any]]:
            fresh = []
            for event in self.client.fine_tuning.jobs.list_events(job.remote["job_id"], limit=100):
                if event.id == cursor:
                    break
                fresh.append(plain(event))
            return fresh[::-1]

        return self.call("reading the job's events", collect)

    @staticmethod
    def _error(raw: Mapping[str, Any]) -> str | None:
        error = raw.get("error") or {}
        if not error.get("message"):
            return None
        code = f" [{error['code']}]" if error.get("code") else ""
        return scrub(f"{error['message']}{code}")

    def poll(self, job: Job) -> Update:
        raw = self._provider_fetch(job)
        fresh = self._events_since(job, job.cursor)
        status, detail = self._provider_status(raw)
        metrics = metrics_from_events(fresh)
        progress = job.progress
        last = next((e["data"] for e in reversed(fresh) if e.get("type") == "metrics" and e.get("data")), None)
        if last:
            progress = Progress(step=last.get("step"), total_steps=last.get("total_steps"),
                                loss=last.get("train_loss"), eval_loss=last.get("valid_loss"))
        return Update(status=status, detail=detail, events=normalize_events(fresh), metrics=metrics,
                      progress=progress, cursor=fresh[-1]["id"] if fresh else None,
                      next_poll_s=self.options.poll_interval_s, error=self._error(raw) if status.terminal else None,
                      trained_tokens=raw.get("trained_tokens"), output_model=raw.get("fine_tuned_model"),
                      actual_cost_usd=actual_cost(job, raw.get("trained_tokens")))

    def result(self, job: Job) -> Result:
        raw = self._provider_fetch(job)
        status, _ = self._provider_status(raw)
        events = self._events_since(job, None)
        points = {(p.step, p.name): p for p in metrics_from_events(events)}
        artifacts = []
        if raw.get("fine_tuned_model"):
            artifacts.append(Artifact(kind="provider_model", uri=raw["fine_tuned_model"],
                                      description="the fine-tuned model: call it by this name"))
        for file_id in raw.get("result_files") or []:
            with progress.task(f"downloading the result file {file_id}") as fetched:
                content = self.call("reading the result file", self.client.files.content, file_id).content
                fetched.update(completed=len(content), total=len(content))
            points |= {(p.step, p.name): p for p in metrics_from_result_csv(content)}  # the CSV has every step
            artifacts.append(Artifact(kind="metrics", uri=f"openai://files/{file_id}",
                                      description="per-step metrics CSV"))
        if status is JobStatus.SUCCEEDED:
            checkpoints = self.call("listing checkpoints", lambda: [
                plain(c) for c in self.client.fine_tuning.jobs.checkpoints.list(job.remote["job_id"])])
            artifacts += [Artifact(kind="checkpoint", uri=c["fine_tuned_model_checkpoint"],
                                   description=f"step {c['step_number']}") for c in checkpoints]
        finished = raw.get("finished_at")
        return Result(id=job.id, backend=self.name, status=status, model=job.spec.model,
                      output_model=raw.get("fine_tuned_model"),
                      metrics=sorted(points.values(), key=lambda p: (p.step, p.name)),
                      trained_tokens=raw.get("trained_tokens"), estimated_cost_usd=job.estimated_cost_usd,
                      actual_cost_usd=actual_cost(job, raw.get("trained_tokens")),
                      finished_at=_time(finished), artifacts=artifacts, error=self._error(raw), raw=raw)
