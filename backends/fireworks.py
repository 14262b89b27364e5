"""Fireworks AI supervised fine-tuning (LoRA) through the official ``fireworks-ai`` SDK (1.2.x, Stainless).

Every call goes through the SDK (datasets, supervised fine-tuning jobs) except two plain HTTPS GET/PUT over httpx
that the SDK has no call for because they are not Fireworks API calls: the PUT of a large dataset to the signed
upload URL ``getUploadEndpoint`` returns, and the GET of the job's metrics file from its signed
``metricsFileSignedUrl``. Signed URLs carry their own authorisation, so the API key is never sent with them.

Sources: the Fireworks REST reference (docs.fireworks.ai/api-reference: create-supervised-fine-tuning-job,
get-/list-/cancel-supervised-fine-tuning-job, create-dataset, upload-dataset, get-dataset-upload-endpoint,
validate-dataset-upload) and the SDK's ``resources/supervised_fine_tuning_jobs.py`` and ``resources/datasets.py``.

- Exactly once: the job is created with ``supervisedFineTuningJobId`` set to the job's tag (``provider_tag``), so a
  retry finds it by GET before creating, and a create that raced another answers 409 and is found.
- A dataset is named by its content (``ftbroker-<sha256>``): the same bytes are uploaded once and reused.
- Fireworks trains LoRA adapters ("Fireworks uses LoRA", docs.fireworks.ai/fine-tuning): the catalog's full-parameter
  prices are compared in a plan but are out (the API has no full-tuning setting). DPO jobs (``dpoJobs``) exist, but
  their data format was not confirmed: those routes are priced and marked not runnable.
- The tuned model is a LoRA addon (``outputModel``); Fireworks serves LoRA fine-tunes on dedicated (on-demand)
  deployments only (docs.fireworks.ai/fine-tuning/deploying-loras), which bill while up: ftbroker does not deploy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field

from ftbroker import progress
from ftbroker.backends.base import Capabilities, Update
from ftbroker.backends.declared import fireworks as declared
from ftbroker.errors import BackendAuthError, ProviderAPIError
from ftbroker.jobs import Artifact, Job, JobStatus, MetricPoint, Progress, Result
from ftbroker.redact import scrub

from ._managed import (
    ManagedBackend,
    ManagedOptions,
    Upload,
    actual_cost,
    check_range,
    plain,
    provider_tag,
    state_events,
)
from .managed_files import ConvertedFile, Converter, with_system_message
from .provider_calls import raise_for_http

NAME = "fireworks"
ID_MAX = 63  # Fireworks resource ids (job, dataset, model): lower-case letters, digits and hyphens
SMALL_UPLOAD_BYTES = 150 * 1024 * 1024  # datasets.upload handles files "up to 150Mb" (SDK docstring)
# the OpenAI chat format: "existing OpenAI SFT datasets work with no conversion" (docs.fireworks.ai/fine-tuning/
# managed-finetuning-intro)
MESSAGE_KEYS = ("role", "content", "weight", "name", "tool_calls", "tool_call_id")

# JobState (SDK types/supervised_fine_tuning_job.py); unknown words are running
STATUS: Mapping[str, JobStatus] = {f"JOB_STATE_{word}": status for word, status in {
    "UNSPECIFIED": JobStatus.QUEUED, "PENDING": JobStatus.QUEUED, "CREATING": JobStatus.QUEUED,
    "CREATING_INPUT_DATASET": JobStatus.QUEUED, "RE_QUEUEING": JobStatus.QUEUED, "IDLE": JobStatus.QUEUED,
    "VALIDATING": JobStatus.VALIDATING, "RUNNING": JobStatus.RUNNING, "WRITING_RESULTS": JobStatus.RUNNING,
    "CANCELLING": JobStatus.RUNNING, "PAUSED": JobStatus.RUNNING, "COMPLETED": JobStatus.SUCCEEDED,
    "EARLY_STOPPED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED, "EXPIRED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED}.items()}

FULL_NOT_OFFERED = ("Fireworks' fine-tuning API trains LoRA adapters: it has no full-parameter setting "
                    "(docs.fireworks.ai/fine-tuning; fireworks-ai 1.2.30); full tuning is priced for comparison only")
DPO_NOT_DRIVEN = ("ftbroker's fireworks backend runs supervised (SFT) jobs; Fireworks' DPO jobs are priced for "
                  "comparison (their data format is not confirmed)")
SOURCE_RANGES = "docs.fireworks.ai/fine-tuning/rft-parameters-reference"


def catalog_names(model_id: str) -> tuple[str, ...]:
    """Names to look a Fireworks model id up by in the catalog: the id, its last segment, and that segment with
    Fireworks' version spelling undone (``accounts/fireworks/models/llama-v3p1-8b-instruct`` ->
    ``llama-3.1-8b-instruct``, a catalog alias of Llama-3.1-8B, priced by the size tier it falls in)."""
    bare = model_id.rsplit("/", 1)[-1]
    plain_name = re.sub(r"(\d)p(\d)", r"\1.\2", re.sub(r"-v(\d)", r"-\1", bare))
    return tuple(dict.fromkeys((model_id, bare, plain_name)))


def hyperparameter_problems(spec: Any) -> list[str]:
    """The job's settings outside the ranges Fireworks documents for its fine-tuning parameters (epochs 1-10,
    learning rate 1e-5 to 5e-4, LoRA rank a power of two from 4 to 32), each with its source."""
    hp, problems = spec.hyperparameters, []
    check_range(problems, "hyperparameters.epochs", hp.epochs, 1, 10, source=SOURCE_RANGES)
    check_range(problems, "hyperparameters.learning_rate", hp.learning_rate, 1e-5, 5e-4, source=SOURCE_RANGES)
    rank = spec.lora.r
    if rank is not None and rank not in (4, 8, 16, 32):
        problems.append(f"lora.r: {rank} is not a LoRA rank Fireworks takes (4, 8, 16 or 32; {SOURCE_RANGES})")
    return problems


def convert(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """A chat example (checked by ``ftbroker.data``, with Fireworks' line rules from ``declared.fireworks``) as a
    Fireworks line: the OpenAI chat format with only its keys, a top-level system prompt as the first message."""
    line: dict[str, Any] = {"messages": [{k: m[k] for k in MESSAGE_KEYS if k in m} for m in with_system_message(example)]}
    if "tools" in example:
        line["tools"] = example["tools"]
    return line


def read_metrics(text: str) -> list[MetricPoint]:
    """The lines of a job's metrics file as points. Fireworks documents the file's signed URL, not its lines: a
    line is read as ``{"step", "data": {"train/loss", ...}}`` or with the keys at its top level (the shapes a
    third-party client reads); ``train/`` and ``eval/`` keys become ``train_*`` and ``eval_*`` points."""
    points = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int | float):
            continue
        data = record["data"] if isinstance(record.get("data"), dict) else record
        epoch = data.get("train/epoch", data.get("epoch"))
        for key, value in data.items():
            prefix, _, name = key.partition("/")
            if not name or prefix not in ("train", "eval") or not isinstance(value, int | float) or name == "epoch":
                continue
            points.append(MetricPoint(step=int(record["step"]), name=f"{prefix}_{name.replace('/', '_')}",
                                      value=float(value), epoch=float(epoch) if epoch is not None else None))
    return sorted(points, key=lambda p: (p.step, p.name))


def money(amount: Mapping[str, Any] | None) -> Decimal | None:
    """A ``google.type.Money``-shaped amount (``units`` string, ``nanos``) in dollars."""
    if not amount or amount.get("currencyCode", "USD") != "USD":
        return None
    return Decimal(str(amount.get("units") or 0)) + Decimal(int(amount.get("nanos") or 0)) / Decimal(10**9)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- the backend -------------------------------------------------------------------------------------
class FireworksOptions(ManagedOptions):
    base_url: str | None = Field(None, description="default: FIREWORKS_BASE_URL, else https://api.fireworks.ai")
    account_id: str | None = Field(None, description="the Fireworks account (default: FIREWORKS_ACCOUNT_ID)")
    early_stop: bool | None = Field(None, description="stop when the evaluation loss stops improving")
    eval_auto_carveout: bool | None = Field(None, description="carve an evaluation set out of the training data")


class FireworksBackend(ManagedBackend):
    """Fireworks supervised fine-tuning jobs. Credentials: ``FIREWORKS_API_KEY`` and ``FIREWORKS_ACCOUNT_ID``."""

    name = NAME
    sdk_package = "fireworks"
    extra = "fireworks"
    status_table = STATUS
    line_rules = declared.line_rules  # the objects the data layer and redact read from the declared module
    Options = FireworksOptions
    capabilities = Capabilities(
        requires={sdk_package: extra},
        providers=frozenset({"fireworks"}),  # the catalog's fireworks offers are its routes
        methods=frozenset({"lora"}),
        data_formats=frozenset({"chat"}),
        managed=True,
        poll_interval_s=30.0,
        unsupported={
            "method.full": FULL_NOT_OFFERED,
            "method.qlora": "Fireworks trains LoRA adapters; QLoRA is not a setting of its API",
            "format.preference": DPO_NOT_DRIVEN,
            "lora.alpha": "not a setting of Fireworks' fine-tuning API",
            "lora.dropout": "not a setting of Fireworks' fine-tuning API",
            "lora.target_modules": "not a setting of Fireworks' fine-tuning API",
            "hyperparameters.micro_batch_size": "Fireworks sizes its batches itself (batchSize counts tokens)",
            "hyperparameters.packing": "not a setting of Fireworks' fine-tuning API",
            "hyperparameters.gradient_checkpointing": "Fireworks runs the training hardware; not a setting",
            "hyperparameters.seed": "not a setting of Fireworks' fine-tuning API",
            "hyperparameters.early_stopping_patience": "Fireworks' early stop takes no patience: set the "
                                                       "backend option early_stop=true",
            "resume": "continuing a job (its :resume call) is not driven by ftbroker yet",
            "export": "the model is a LoRA addon on Fireworks: deploy it there by its output_model name",
        },
    )

    # -- routes -------------------------------------------------------------------------------------
    @classmethod
    def routes(cls, context: Any) -> list[Any]:
        """The fireworks offers, priced; those its API cannot run as ftbroker drives it say why."""
        return [cls._as_run(route) for route in super().routes(context)]

    @staticmethod
    def _as_run(route: Any) -> Any:
        if route.objective == "dpo" and route.feasible:  # out, not merely unrunnable: a plan recommends what runs
            return dataclasses.replace(route, feasible=False, reason=DPO_NOT_DRIVEN)
        if route.method == "full" and route.feasible:
            return dataclasses.replace(route, feasible=False, reason=FULL_NOT_OFFERED)
        return route

    # -- set-up -------------------------------------------------------------------------------------
    @property
    def account(self) -> str | None:
        return self.options.account_id or os.environ.get("FIREWORKS_ACCOUNT_ID")

    def validate(self, spec: Any) -> Any:
        """The credentials first (nothing is recorded for a job that could never start), then the data."""
        missing = [name for name, value in (("FIREWORKS_API_KEY", os.environ.get("FIREWORKS_API_KEY")),
                                            ("FIREWORKS_ACCOUNT_ID", self.account)) if not value]
        if missing:
            raise BackendAuthError(f"no credentials: set {' and '.join(missing)} (or the backend option "
                                   "account_id)", backend=self.name)
        return super().validate(spec)

    def _new_client(self) -> Any:
        sdk = self.sdk()
        try:
            return sdk.Fireworks(base_url=self.options.base_url, account_id=self.account,
                                 max_retries=self.options.max_retries, timeout=self.options.request_timeout_s)
        except sdk.FireworksError as exc:
            raise BackendAuthError("no credentials: set FIREWORKS_API_KEY", backend=self.name) from exc

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        import httpx  # the signed-URL transfers go over plain httpx

        return (self.sdk().FireworksError, httpx.HTTPError)

    def _spec_problems(self, spec: Any) -> list[str]:
        problems = hyperparameter_problems(spec)
        if not spec.model.startswith("accounts/"):
            problems.append(f"model: {spec.model!r} is not a Fireworks model id: Fireworks names base models "
                            "accounts/ACCOUNT/models/ID, e.g. accounts/fireworks/models/llama-v3p1-8b-instruct (its "
                            "model page says whether it is tunable)")
        return problems

    def _converter(self, spec: Any) -> Converter:
        return convert

    def _catalog_names(self, model: str) -> tuple[str, ...]:
        return catalog_names(model)

    # -- submit -------------------------------------------------------------------------------------
    def _job_id(self, job: Job) -> str:
        return job.remote.get("job_id") or provider_tag(job.id, ID_MAX)

    def _get(self, job_id: str) -> dict[str, Any] | None:
        """The job's record, or None when Fireworks has none by that id."""
        try:
            return plain(self.call("reading the job", self.client.supervised_fine_tuning_jobs.get, job_id))
        except ProviderAPIError as exc:
            if exc.status_code == 404:
                return None
            raise

    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        return self._get(self._job_id(job))

    @staticmethod
    def _dataset_id(converted: ConvertedFile) -> str:
        return f"ftbroker-{converted.sha256[:40]}"

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        try:
            found = plain(self.call("looking for the data already uploaded", self.client.datasets.get,
                                    self._dataset_id(converted)))
        except ProviderAPIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return found["name"] if found.get("state") == "READY" else None  # else a broken upload: upload again

    def _provider_upload(self, converted: ConvertedFile) -> str:
        dataset_id, writes = self._dataset_id(converted), self._writes()
        try:
            self.call("creating the dataset", writes.datasets.create, dataset_id=dataset_id, dataset={
                "displayName": converted.upload_name, "exampleCount": str(converted.examples), "format": "CHAT",
                "userUploaded": {}})
        except ProviderAPIError as exc:
            if exc.status_code != 409:  # 409: an earlier attempt created it; its upload may not have finished
                raise
        uploads = writes.with_options(timeout=self.options.upload_timeout_s)
        if converted.size_bytes <= SMALL_UPLOAD_BYTES:
            with progress.sending(converted.path, f"uploading {converted.upload_name} to Fireworks") as fh:
                self.call("uploading the data", uploads.datasets.upload, dataset_id,
                          file=(converted.upload_name, fh, "application/jsonl"))
        else:
            self._upload_large(uploads, dataset_id, converted)
        return f"accounts/{self.account}/datasets/{dataset_id}"

    def _upload_large(self, client: Any, dataset_id: str, converted: ConvertedFile) -> None:
        """Over 150 MB: ask for a signed URL, PUT the file there, then have Fireworks validate the upload."""
        import httpx

        answer = self.call("asking where to upload the data", client.datasets.get_upload_endpoint, dataset_id,
                           filename_to_size={converted.upload_name: str(converted.size_bytes)})
        url = plain(answer)["filenameToSignedUrls"][converted.upload_name]

        def put() -> Any:
            with progress.sending(converted.path, f"uploading {converted.upload_name} to Fireworks") as fh:
                return httpx.put(url, content=fh, timeout=self.options.upload_timeout_s,
                                 headers={"Content-Type": "application/octet-stream"})

        raise_for_http(self.call("uploading the data", put), self.name, "uploading the data")
        self.call("validating the upload", client.datasets.validate_upload, dataset_id, body={})

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        spec, hp, options = job.spec, job.spec.hyperparameters, self.options
        by_role = {u.role: u.remote_id for u in uploads}
        optional = {"evaluation_dataset": by_role.get("validation"), "epochs": hp.epochs,
                    "learning_rate": hp.learning_rate, "lora_rank": spec.lora.r, "max_context_length": hp.max_seq_len,
                    "gradient_accumulation_steps": hp.gradient_accumulation_steps, "early_stop": options.early_stop,
                    "eval_auto_carveout": options.eval_auto_carveout}
        job_id = provider_tag(job.id, ID_MAX)
        try:
            created = self.call("creating the fine-tuning job", self._writes().supervised_fine_tuning_jobs.create,
                                dataset=by_role["training"], base_model=spec.model, supervised_fine_tuning_job_id=job_id,
                                display_name=spec.name or job.id, **{k: v for k, v in optional.items() if v is not None})
        except ProviderAPIError as exc:
            found = self._get(job_id) if exc.status_code == 409 else None  # created by a racing attempt
            if found is None:
                raise
            return found
        return plain(created)

    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        return {"job_id": raw["name"].rsplit("/", 1)[-1]}

    def _provider_status(self, raw: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
        word = raw.get("state")
        return STATUS.get(word or "", JobStatus.RUNNING), (word or "").removeprefix("JOB_STATE_").lower() or None

    # -- track --------------------------------------------------------------------------------------
    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        raw = self._get(self._job_id(job))
        if raw is None:
            raise ProviderAPIError(f"reading the job failed: Fireworks has no job {self._job_id(job)}",
                                   backend=self.name, status_code=404)
        return raw

    def _provider_cancel(self, job: Job) -> None:
        self.call("cancelling the job", self.client.supervised_fine_tuning_jobs.cancel, self._job_id(job), body={})

    def _metrics(self, raw: Mapping[str, Any]) -> list[MetricPoint]:
        """The job's metrics file (a signed URL, fetched without the API key); none while it has none."""
        import httpx

        url = raw.get("metricsFileSignedUrl")
        if not url:
            return []
        answer = self.call("reading the job's metrics", httpx.get, url, timeout=self.options.request_timeout_s)
        if answer.status_code == 404:  # not written yet
            return []
        raise_for_http(answer, self.name, "reading the job's metrics")
        return read_metrics(answer.text)

    @staticmethod
    def _error(raw: Mapping[str, Any]) -> str | None:
        status = raw.get("status") or {}
        return scrub(status.get("message") or status.get("code") or "the job failed")

    def poll(self, job: Job) -> Update:
        raw = self._provider_fetch(job)
        status, detail = self._provider_status(raw)
        cursor = json.loads(job.cursor) if job.cursor else {"state": None, "step": 0}
        points = [p for p in self._metrics(raw) if p.step > cursor["step"]]
        events = state_events(cursor["state"], raw.get("state"), _time(raw.get("updateTime")),
                              (raw.get("status") or {}).get("message"))
        progress = job.progress
        if points:
            last = max(p.step for p in points)
            losses = {p.name: p for p in points if p.step == last}
            train = losses.get("train_loss")
            progress = Progress(step=last, loss=train.value if train else None, epoch=train.epoch if train else None,
                                eval_loss=losses["eval_loss"].value if "eval_loss" in losses else None)
        new_cursor = {"state": raw.get("state"), "step": max([cursor["step"], *(p.step for p in points)])}
        trained = (raw.get("jobProgress") or {}).get("inputTokens") if status.terminal else None
        return Update(status=status, detail=detail, events=events, metrics=points, progress=progress,
                      cursor=json.dumps(new_cursor), next_poll_s=self.options.poll_interval_s,
                      error=self._error(raw) if status is JobStatus.FAILED else None, trained_tokens=trained,
                      actual_cost_usd=actual_cost(job, trained),
                      output_model=raw.get("outputModel") if status is JobStatus.SUCCEEDED else None)

    def result(self, job: Job) -> Result:
        raw = self._provider_fetch(job)
        status, _ = self._provider_status(raw)
        output = raw.get("outputModel") if status is JobStatus.SUCCEEDED else None
        artifacts = [Artifact(kind="provider_model", uri=output, description=(
            "a LoRA addon: Fireworks serves it on a dedicated deployment (billed while up), e.g. firectl "
            f"deployment create {output}"))] if output else []
        trained = (raw.get("jobProgress") or {}).get("inputTokens")
        estimate = money(raw.get("estimatedCost"))
        if estimate is not None:
            raw = {**raw, "ftbroker_provider_estimate_usd": str(estimate)}
        return Result(id=job.id, backend=self.name, status=status, model=job.spec.model, output_model=output,
                      metrics=self._metrics(raw), trained_tokens=trained, estimated_cost_usd=job.estimated_cost_usd,
                      actual_cost_usd=actual_cost(job, trained), started_at=_time(raw.get("createTime")),
                      finished_at=_time(raw.get("completedTime")) if status.terminal else None, artifacts=artifacts,
                      error=self._error(raw) if status is JobStatus.FAILED else None, raw=raw)
