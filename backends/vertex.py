"""Vertex AI (Google Cloud's "Gemini Enterprise Agent Platform") supervised tuning of Gemini models, through
Google's official ``google-genai`` SDK (``vertexai=True``; its tuning calls are ``client.tunings.tune / get / list /
cancel``, REST ``projects.locations.tuningJobs`` v1beta1).

The training data are staged in the user's Cloud Storage bucket (backend option ``gcs_uri``) with the Cloud Storage
JSON API over httpx (objects.insert ``uploadType=media``, objects.get), authorised by the same application-default
credentials the SDK uses: google-genai has no Cloud Storage call, and google-cloud-storage would make the extra
heavy for two requests. An object is named by its content (``ftbroker-<sha256>.jsonl``) and created with
``ifGenerationMatch=0``: the same bytes are uploaded once and reused.

Exactly once: a tuning job cannot be given an id by its caller (CreateTuningJobRequest has only ``parent`` and
``tuning_job``), so each job carries its tag (``provider_tag``) as ``tunedModelDisplayName`` and as the label
``ftbroker-job``, and a retry lists the location's tuning jobs and looks for it before creating one. The listing is
matched here, not filtered on the server: whether tuningJobs.list filters on labels is not documented.

Which Gemini models take tuning, and until when, is the catalog's (``provider = "vertex"`` rows, with their end of
life): a closed model is refused with its date; a model the catalog does not list is refused with the list.
Sources: docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning-about (data format),
docs.cloud.google.com/gemini-enterprise-agent-platform/models/tuning/supervised-tuning/use (tuning jobs, display
name up to 128 characters), google-genai 3.6.1 ``tunings.py`` / ``types.py`` (the calls, JobState, AdapterSize).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import Field, field_validator

from ftbroker import progress
from ftbroker.backends.base import Capabilities, Update
from ftbroker.backends.declared import vertex as declared
from ftbroker.errors import BackendAuthError, ProviderAPIError, SpecError
from ftbroker.jobs import Artifact, Job, JobStatus, Progress, Result
from ftbroker.redact import scrub

from ._managed import (
    ManagedBackend,
    ManagedOptions,
    Upload,
    actual_cost,
    plain,
    provider_tag,
    state_events,
)
from .managed_files import ConvertedFile, Converter, with_system_message
from .provider_calls import raise_for_http

NAME = "vertex"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DISPLAY_NAME_MAX = 63  # the tag is also a label value (at most 63 characters); display names take up to 128
LABEL = "ftbroker-job"
STORAGE_URL = "https://storage.googleapis.com"
# AdapterSize (google-genai types.py): the LoRA rank a Gemini adapter takes
ADAPTER_SIZES = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR", 8: "ADAPTER_SIZE_EIGHT",
                 16: "ADAPTER_SIZE_SIXTEEN", 32: "ADAPTER_SIZE_THIRTY_TWO"}

# JobState (google-genai types.py); unknown words are running
STATUS: Mapping[str, JobStatus] = {f"JOB_STATE_{word}": status for word, status in {
    "UNSPECIFIED": JobStatus.QUEUED, "QUEUED": JobStatus.QUEUED, "PENDING": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING, "CANCELLING": JobStatus.RUNNING, "PAUSED": JobStatus.RUNNING,
    "UPDATING": JobStatus.RUNNING, "SUCCEEDED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
    "EXPIRED": JobStatus.FAILED, "PARTIALLY_SUCCEEDED": JobStatus.FAILED, "CANCELLED": JobStatus.CANCELLED}.items()}

NO_LOSSES = ("Vertex writes a tuning job's losses to a Vertex AI Experiment (the job's `experiment`), which "
             "google-genai cannot read: ftbroker records the job's state, epochs and billable tokens")


def _text(content: Any) -> str:
    """A message's text: a string, or its text parts joined (the data layer refuses other parts for Vertex)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if part.get("type") == "text")


def convert(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """A chat example (checked by ``ftbroker.data``, with Vertex's turn rules from ``declared.vertex``) as a Gemini
    tuning line: ``contents`` of user and model turns, the system prompt as ``systemInstruction``."""
    messages = with_system_message(example)
    line: dict[str, Any] = {}
    if messages and messages[0]["role"] == "system":
        line["systemInstruction"] = {"role": "system", "parts": [{"text": _text(messages.pop(0)["content"])}]}
    line["contents"] = [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": _text(m["content"])}]}
                        for m in messages]
    return line


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


# -- Cloud Storage -----------------------------------------------------------------------------------
class Storage:
    """The two Cloud Storage JSON API calls the backend needs, over httpx with a bearer token from ``token()``."""

    def __init__(self, token: Callable[[], str], base_url: str, timeout_s: float, upload_timeout_s: float):
        self._token, self._base = token, base_url.rstrip("/")
        self._timeout_s, self._upload_timeout_s = timeout_s, upload_timeout_s

    def size(self, bucket: str, name: str) -> int | None:
        """The object's size in bytes; None when there is none."""
        import httpx

        answer = httpx.get(f"{self._base}/storage/v1/b/{bucket}/o/{quote(name, safe='')}", timeout=self._timeout_s,
                           headers={"Authorization": f"Bearer {self._token()}"})
        if answer.status_code == 404:
            return None
        raise_for_http(answer, NAME, "looking for the data already in Cloud Storage")
        return int(answer.json()["size"])

    def create(self, bucket: str, name: str, path: Any) -> None:
        """Upload ``path`` as a new object; one that already exists (an earlier attempt's) is left as it is."""
        import httpx

        with progress.sending(path, f"uploading {name} to Cloud Storage") as fh:
            answer = httpx.post(f"{self._base}/upload/storage/v1/b/{bucket}/o", content=fh,
                                params={"uploadType": "media", "name": name, "ifGenerationMatch": "0"},
                                headers={"Authorization": f"Bearer {self._token()}",
                                         "Content-Type": "application/jsonl"}, timeout=self._upload_timeout_s)
        if answer.status_code != 412:  # 412: the object exists, and its name is its content's hash
            raise_for_http(answer, NAME, "uploading the data to Cloud Storage")


# -- the backend -------------------------------------------------------------------------------------
class VertexOptions(ManagedOptions):
    gcs_uri: str | None = Field(None, description="gs://BUCKET/PREFIX where the training data are staged (required)")
    project: str | None = Field(None, description="Google Cloud project (default: GOOGLE_CLOUD_PROJECT, else the "
                                                  "credentials')")
    location: str = Field("us-central1", description="the region the tuning job runs in")
    base_url: str | None = Field(None, description="Vertex AI endpoint (default: the SDK's, for the location)")
    storage_url: str = Field(STORAGE_URL, description="Cloud Storage JSON API endpoint")
    learning_rate_multiplier: float | None = Field(None, gt=0, description="scales Vertex's default learning rate")
    export_last_checkpoint_only: bool | None = Field(None, description="keep only the final checkpoint")

    @field_validator("gcs_uri")
    @classmethod
    def _gs(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("gs://") or not split_gcs_uri(value)[0]):
            raise ValueError(f"{value!r} is not a gs://BUCKET[/PREFIX] URI")
        return value


class VertexBackend(ManagedBackend):
    """Gemini supervised tuning on Vertex AI. Credentials: Google application-default credentials
    (``gcloud auth application-default login``, or GOOGLE_APPLICATION_CREDENTIALS)."""

    name = NAME
    sdk_package = "google.genai"
    extra = "vertex"
    status_table = STATUS
    line_rules = declared.line_rules  # the objects the data layer and redact read from the declared module
    key_shapes = declared.key_shapes
    Options = VertexOptions
    capabilities = Capabilities(
        requires={"google.genai": "vertex"},
        providers=frozenset({"vertex"}),  # the catalog's vertex offers are its routes
        methods=frozenset({"lora"}),
        data_formats=frozenset({"chat"}),
        managed=True,
        poll_interval_s=60.0,
        unsupported={
            "method.full": "ftbroker tunes Gemini adapters (LoRA); Vertex's full tuning mode is not driven",
            "method.qlora": "Vertex trains Gemini adapters; QLoRA is not a setting of its API",
            "format.preference": "Vertex preference tuning is not driven by ftbroker: supervised tuning takes chat data",
            "metrics": NO_LOSSES,
            "lora.alpha": "not a setting of Vertex tuning (the adapter size is lora.r)",
            "lora.dropout": "not a setting of Vertex tuning",
            "lora.target_modules": "not a setting of Vertex tuning",
            "hyperparameters.gradient_accumulation_steps": "not a setting of Vertex tuning",
            "hyperparameters.max_seq_len": "Vertex sets the sequence length per model",
            "hyperparameters.packing": "not a setting of Vertex tuning",
            "hyperparameters.gradient_checkpointing": "Google runs the training hardware; not a setting",
            "hyperparameters.seed": "not a setting of Vertex tuning",
            "hyperparameters.early_stopping_patience": "not a setting of Vertex tuning",
            "resume": "Vertex tuning jobs cannot be resumed",
            "export": "the tuned model lives on its Vertex endpoint: call it by its output_model name",
        },
    )

    def __init__(self, options: VertexOptions, **kwargs: Any):
        super().__init__(options, **kwargs)
        self._auth: tuple[Any, str | None] | None = None
        self._storage: Storage | None = None
        self._writer: Any = None

    # -- credentials and clients --------------------------------------------------------------------
    def credentials(self) -> tuple[Any, str]:
        """(credentials, project) from Google's application-default credentials; reads files, calls no API."""
        if self._auth is None:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._auth = google.auth.default(scopes=SCOPES)
            except DefaultCredentialsError as exc:
                raise BackendAuthError("no Google credentials: run `gcloud auth application-default login` or set "
                                       "GOOGLE_APPLICATION_CREDENTIALS", backend=self.name) from exc
        credentials, found = self._auth
        project = self.options.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or found
        if not project:
            raise BackendAuthError("no Google Cloud project: set GOOGLE_CLOUD_PROJECT or the backend option project",
                                   backend=self.name)
        return credentials, project

    def validate(self, spec: Any) -> Any:
        """The credentials first (nothing is recorded for a job that could never start), then the data; a model
        the catalog lists no Vertex tuning for is refused with the models it does list."""
        self.sdk()  # the extra, before the credentials it would read them with
        self.credentials()
        report = super().validate(spec)
        if spec.model_dump_json() not in self._contexts:
            from ftbroker.pricing.catalog import load_catalog

            tunable = sorted(o.model for o in load_catalog().managed if o.provider == NAME and o.model)
            raise SpecError([f"model: the catalog lists no Vertex tuning of {spec.model!r} (it lists "
                             f"{', '.join(tunable)}; `ftbroker catalog show --kind managed` gives their dates)"])
        return report

    def _token(self) -> str:
        """A current access token, refreshed here (the SDK's own refresh leaves its HTTP session open)."""
        credentials = self.credentials()[0]
        if not credentials.valid:
            import requests
            from google.auth.transport.requests import Request

            with requests.Session() as session:
                self.call("getting a Google access token", credentials.refresh, Request(session=session))
        return credentials.token

    def _genai(self, retries: int) -> Any:
        from google.genai import types

        self._token()
        credentials, project = self.credentials()
        retry = types.HttpRetryOptions(attempts=retries + 1) if retries else None
        options = types.HttpOptions(base_url=self.options.base_url, timeout=int(self.options.request_timeout_s * 1000),
                                    retry_options=retry)
        return self.sdk().Client(vertexai=True, project=project, location=self.options.location,
                                 credentials=credentials, http_options=options)

    def _new_client(self) -> Any:
        return self._genai(self.options.max_retries)  # reads: the SDK retries them

    def check_credentials(self) -> None:
        """Google's credentials and project, read from files: a client would fetch a token, a call the data and
        option checks that follow must be able to refuse before."""
        self.credentials()

    def _writes(self) -> Any:
        """A client without SDK retries: a retried create would start a second (billed) job."""
        if self._writer is None:
            self._writer = self._genai(0)
        return self._writer

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = Storage(self._token, self.options.storage_url, self.options.request_timeout_s,
                                    self.options.upload_timeout_s)
        return self._storage

    def close(self) -> None:
        for client in (self._client, self._writer):
            if client is not None:
                client.close()

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        import google.auth.exceptions
        import httpx
        import requests
        from google.genai import errors

        return (errors.APIError, google.auth.exceptions.GoogleAuthError, httpx.HTTPError, requests.RequestException,
                self._httpx2_error())

    @staticmethod
    def _httpx2_error() -> type[BaseException]:
        try:
            import httpx2
        except ImportError:  # an SDK release that went back to httpx
            return OSError
        return httpx2.HTTPError

    # -- the spec -----------------------------------------------------------------------------------
    def _spec_problems(self, spec: Any) -> list[str]:
        problems = []
        if not self.options.gcs_uri:
            problems.append("backend_options.gcs_uri: Vertex reads the training data from Cloud Storage: give "
                            "gs://BUCKET/PREFIX (--option gcs_uri=gs://...)")
        if spec.lora.r is not None and spec.lora.r not in ADAPTER_SIZES:
            problems.append(f"lora.r: {spec.lora.r} is not a Gemini adapter size (it takes "
                            f"{', '.join(map(str, ADAPTER_SIZES))}; google-genai AdapterSize)")
        return problems

    def _converter(self, spec: Any) -> Converter:
        return convert

    # -- submit -------------------------------------------------------------------------------------
    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        known = job.remote.get("job_id")
        if known:
            return self._get(known)
        tag = provider_tag(job.id, DISPLAY_NAME_MAX)

        def matching() -> dict[str, Any] | None:
            for remote in self.client.tunings.list(config={"page_size": 100}):
                record = plain(remote)
                if (record.get("labels") or {}).get(LABEL) == tag or record.get("tunedModelDisplayName") == tag:
                    return record
            return None

        return self.call("looking for a job already created for this id", matching)

    def _object(self, converted: ConvertedFile) -> tuple[str, str]:
        bucket, prefix = split_gcs_uri(self.options.gcs_uri or "")
        return bucket, f"{prefix}/{converted.upload_name}" if prefix else converted.upload_name

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        bucket, name = self._object(converted)
        size = self.call("looking for the data already in Cloud Storage", self.storage.size, bucket, name)
        return f"gs://{bucket}/{name}" if size == converted.size_bytes else None

    def _provider_upload(self, converted: ConvertedFile) -> str:
        bucket, name = self._object(converted)
        self.call("uploading the data to Cloud Storage", self.storage.create, bucket, name, converted.path)
        return f"gs://{bucket}/{name}"

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        from google.genai import types

        spec, hp = job.spec, job.spec.hyperparameters
        by_role = {u.role: u.remote_id for u in uploads}
        tag = provider_tag(job.id, DISPLAY_NAME_MAX)
        config = {"tuned_model_display_name": tag, "labels": {LABEL: tag}, "description": f"ftbroker job {job.id}",
                  "epoch_count": hp.epochs, "learning_rate": hp.learning_rate, "batch_size": hp.micro_batch_size,
                  "adapter_size": ADAPTER_SIZES.get(spec.lora.r) if spec.lora.r else None,
                  "learning_rate_multiplier": self.options.learning_rate_multiplier,
                  "export_last_checkpoint_only": self.options.export_last_checkpoint_only,
                  "validation_dataset": types.TuningValidationDataset(gcs_uri=by_role["validation"])
                  if "validation" in by_role else None}
        with warnings.catch_warnings():  # tunings.tune is marked experimental in the SDK; the REST call is not
            warnings.simplefilter("ignore", category=self._experimental())
            created = self.call("creating the tuning job", self._writes().tunings.tune, base_model=spec.model,
                                training_dataset=types.TuningDataset(gcs_uri=by_role["training"]),
                                config=types.CreateTuningJobConfig(**{k: v for k, v in config.items() if v is not None}))
        return plain(created)

    @staticmethod
    def _experimental() -> type[Warning]:
        from google.genai import _common

        return _common.ExperimentalWarning

    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        return {"job_id": raw["name"]}

    def _provider_status(self, raw: Mapping[str, Any]) -> tuple[JobStatus, str | None]:
        word = raw.get("state")
        return STATUS.get(word or "", JobStatus.RUNNING), (word or "").removeprefix("JOB_STATE_").lower() or None

    # -- track --------------------------------------------------------------------------------------
    def _get(self, name: str) -> dict[str, Any]:
        return plain(self.call("reading the tuning job", self.client.tunings.get, name=name))

    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        known = job.remote.get("job_id")
        raw = self._get(known) if known else self._provider_find(job)
        if raw is None:
            raise ProviderAPIError(f"reading the tuning job failed: Vertex has no job for {job.id}", backend=self.name,
                                   status_code=404)
        return raw

    def _provider_cancel(self, job: Job) -> None:
        name = self._provider_fetch(job)["name"]
        self.call("cancelling the tuning job", self._writes().tunings.cancel, name=name)

    @staticmethod
    def _stats(raw: Mapping[str, Any]) -> Mapping[str, Any]:
        return (raw.get("tuningDataStats") or {}).get("supervisedTuningDataStats") or {}

    @staticmethod
    def _error(raw: Mapping[str, Any]) -> str:
        return scrub((raw.get("error") or {}).get("message") or "the tuning job failed")

    def poll(self, job: Job) -> Update:
        raw = self._provider_fetch(job)
        status, detail = self._provider_status(raw)
        before = job.cursor
        events = state_events(before, raw.get("state"), _time(raw.get("updateTime")),
                              (raw.get("error") or {}).get("message"))
        epochs = (raw.get("tuningJobMetadata") or {}).get("completedEpochCount")
        steps = self._stats(raw).get("tuningStepCount")
        progress = Progress(epoch=float(epochs) if epochs is not None else None,
                            total_steps=int(steps) if steps else None) if (epochs is not None or steps) else job.progress
        tokens = self._stats(raw).get("totalBillableTokenCount")
        trained = int(tokens) if tokens is not None and status.terminal else None
        endpoint = (raw.get("tunedModel") or {}).get("endpoint")
        return Update(status=status, detail=detail, events=events, progress=progress, cursor=raw.get("state"),
                      next_poll_s=self.options.poll_interval_s, trained_tokens=trained,
                      actual_cost_usd=actual_cost(job, trained),
                      error=self._error(raw) if status is JobStatus.FAILED else None,
                      output_model=endpoint if status is JobStatus.SUCCEEDED else None)

    def result(self, job: Job) -> Result:
        raw = self._provider_fetch(job)
        status, _ = self._provider_status(raw)
        tuned = (raw.get("tunedModel") or {}) if status is JobStatus.SUCCEEDED else {}
        artifacts = []
        if tuned.get("endpoint"):
            artifacts.append(Artifact(kind="provider_model", uri=tuned["endpoint"], description=(
                "call it as the model of generate_content (google-genai, vertexai=True); it shares its base "
                "model's retirement date")))
        if tuned.get("model"):
            artifacts.append(Artifact(kind="provider_model", uri=tuned["model"], description="the tuned model"))
        if raw.get("experiment"):
            artifacts.append(Artifact(kind="metrics", uri=raw["experiment"],
                                      description="the job's loss curves: its Vertex AI Experiment"))
        tokens = self._stats(raw).get("totalBillableTokenCount")
        trained = int(tokens) if tokens is not None else None
        return Result(id=job.id, backend=self.name, status=status, model=job.spec.model,
                      output_model=tuned.get("endpoint"), trained_tokens=trained,
                      estimated_cost_usd=job.estimated_cost_usd, actual_cost_usd=actual_cost(job, trained),
                      started_at=_time(raw.get("startTime") or raw.get("createTime")),
                      finished_at=_time(raw.get("endTime")) if status.terminal else None, artifacts=artifacts,
                      error=self._error(raw) if status is JobStatus.FAILED else None, raw=raw)
