"""A loopback fake of the Fireworks datasets and supervised fine-tuning API, for the real ``fireworks-ai`` SDK.

Point the SDK at ``fake.base_url`` (with a base URL set, the SDK's control-plane paths are ``{base}/v1/accounts/...``).
Shapes follow the Fireworks REST reference (docs.fireworks.ai/api-reference: create / get / list / cancel supervised
fine-tuning job, create dataset, upload dataset, get dataset upload endpoint, validate dataset upload) and the SDK
1.2.30 types; keys are camelCase on the wire.

Routes (the names that fault injection and ``calls()`` use; ``{a}`` is the account):
    datasets.create     POST /v1/accounts/{a}/datasets                       body {datasetId, dataset}; 409 if taken
    datasets.upload     POST /v1/accounts/{a}/datasets/{id}:upload            multipart ``file`` -> READY
    datasets.endpoint   POST /v1/accounts/{a}/datasets/{id}:getUploadEndpoint {filenameToSize} -> signed PUT URLs
    datasets.put        PUT  /signed/datasets/{id}/{file}                     the bytes (no key: a signed URL)
    datasets.validate   POST /v1/accounts/{a}/datasets/{id}:validateUpload    -> READY
    datasets.get        GET  /v1/accounts/{a}/datasets/{id}
    jobs.create         POST /v1/accounts/{a}/supervisedFineTuningJobs?supervisedFineTuningJobId=  409 if taken
    jobs.list           GET  /v1/accounts/{a}/supervisedFineTuningJobs
    jobs.get            GET  /v1/accounts/{a}/supervisedFineTuningJobs/{id}   advances the job one step if advance_on_poll
    jobs.cancel         POST /v1/accounts/{a}/supervisedFineTuningJobs/{id}:cancel -> CANCELLING; next step CANCELLED
    metrics             GET  /signed/metrics/{id}.jsonl                       the job's metricsFileSignedUrl

The metrics file has one JSON line per step, ``{"step", "timestamp", "data": {"train/loss", "train/epoch",
"eval/loss"?}}`` -- the fake's choice: Fireworks documents the signed URL, not the file's lines (a third-party
client reads this shape). ``jobProgress.inputTokens`` is the fake's word count of the dataset x epochs; the
estimated cost prices it at the up-to-16B LoRA rate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._jobs import FakeJob, Lifecycle, count_tokens
from ._provider import FakeProvider
from ._server import Request, Response, bearer_auth, http_error
from .together_fake import iso

PREFIX = "JOB_STATE_"
LIFECYCLE = Lifecycle(before=(PREFIX + "PENDING", PREFIX + "VALIDATING"), running=PREFIX + "RUNNING",
                      after=(PREFIX + "WRITING_RESULTS",), succeeded=PREFIX + "COMPLETED", failed=PREFIX + "FAILED",
                      cancelled=PREFIX + "CANCELLED", cancelling=PREFIX + "CANCELLING")
ACCOUNT = "fake-account"
DEFAULT_MODELS = ("accounts/fireworks/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/qwen2p5-7b-instruct")
PRICE_PER_MILLION = Decimal("0.50")  # fireworks.ai/pricing, LoRA SFT up to 16B
_STATUS_CODES = {404: "NOT_FOUND", 409: "ALREADY_EXISTS", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class FakeDataset:
    id: str
    display_name: str
    example_count: str
    created_at: int
    content: bytes | None = None
    state: str = "UPLOADING"

    def to_json(self, account: str) -> dict[str, Any]:
        return {"name": f"accounts/{account}/datasets/{self.id}", "displayName": self.display_name,
                "createTime": iso(self.created_at), "state": self.state, "exampleCount": self.example_count,
                "format": "CHAT", "userUploaded": {}, "status": {"code": "OK", "message": ""}}


class FakeFireworks(FakeProvider):
    """The fake server; see ``FakeProvider`` for the job controls."""

    lifecycle = LIFECYCLE

    def __init__(self, *, advance_on_poll: bool = False, models: Iterable[str] = DEFAULT_MODELS,
                 total_steps: int = 3, account: str = ACCOUNT):
        super().__init__(advance_on_poll=advance_on_poll, models=models, total_steps=total_steps)
        self.account = account
        self.datasets: dict[str, FakeDataset] = {}
        base = "/v1/accounts/{a}"
        r = self.route
        r("POST", base + "/datasets/{id}:upload", "datasets.upload", self._datasets_upload)
        r("POST", base + "/datasets/{id}:getUploadEndpoint", "datasets.endpoint", self._datasets_endpoint)
        r("POST", base + "/datasets/{id}:validateUpload", "datasets.validate", self._datasets_validate)
        r("PUT", "/signed/datasets/{id}/{file}", "datasets.put", self._datasets_put)
        r("POST", base + "/datasets", "datasets.create", self._datasets_create)
        r("GET", base + "/datasets/{id}", "datasets.get", self._datasets_get)
        r("POST", base + "/supervisedFineTuningJobs/{id}:cancel", "jobs.cancel", self._jobs_cancel)
        r("POST", base + "/supervisedFineTuningJobs", "jobs.create", self._jobs_create)
        r("GET", base + "/supervisedFineTuningJobs", "jobs.list", self._jobs_list)
        r("GET", base + "/supervisedFineTuningJobs/{id}", "jobs.get", self._jobs_get)
        r("GET", "/signed/metrics/{id}", "metrics", self._metrics)

    # -- test controls -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.origin

    def client(self, **kwargs: Any) -> Any:
        """A real ``fireworks.Fireworks`` client for this server (no retries unless asked)."""
        import fireworks

        kwargs.setdefault("api_key", "fw-test-fake")
        kwargs.setdefault("max_retries", 0)
        return self._hand_out(fireworks.Fireworks(base_url=self.base_url, account_id=self.account, **kwargs))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The gRPC-gateway error shape (``code``, ``message``, ``details``)."""
        return {"code": status, "message": message, "status": _STATUS_CODES.get(status, "UNKNOWN"), "details": []}

    # -- helpers -----------------------------------------------------------------------------------
    def _auth(self, req: Request) -> None:
        bearer_auth(req, self.rejected_keys)
        if req.params.get("a") != self.account:
            raise http_error(403, f"the key may not act for account {req.params.get('a')}")

    def _dataset(self, req: Request) -> FakeDataset:
        self._auth(req)
        found = self.datasets.get(req.params["id"])
        if found is None:
            raise http_error(404, f"dataset {req.params['id']} not found")
        return found

    def _job(self, req: Request) -> FakeJob:
        self._auth(req)
        found = self.jobs.get(req.params["id"])
        if found is None:
            raise http_error(404, f"supervised fine-tuning job {req.params['id']} not found")
        return found

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        body, name = job.request, f"accounts/{self.account}/supervisedFineTuningJobs/{job.id}"
        epochs = int(body.get("epochs") or 1)
        trained = job.step >= job.total_steps or job.succeeded
        billed = job.trained_tokens if trained else 0
        estimate = job.trained_tokens * PRICE_PER_MILLION / 1_000_000
        status = {"code": "OK", "message": ""}
        if job.failed:
            status = {"code": "INVALID_ARGUMENT", "message": job.outcome.message}
        elif job.status == LIFECYCLE.cancelled:
            status = {"code": "CANCELLED", "message": "Job cancelled"}
        out = {
            "name": name, "displayName": body.get("displayName", ""), "dataset": body["dataset"],
            "baseModel": body.get("baseModel"), "state": job.status, "status": status,
            "createTime": iso(job.created_at), "updateTime": iso(self.clock.now),
            "completedTime": iso(job.finished_at),
            "outputModel": body.get("outputModel") or f"accounts/{self.account}/models/{job.id}",
            "epochs": epochs, "learningRate": body.get("learningRate"), "loraRank": body.get("loraRank"),
            "maxContextLength": body.get("maxContextLength"), "evaluationDataset": body.get("evaluationDataset"),
            "createdBy": "fake@example.com",
            "jobProgress": {"percent": int(100 * job.step / job.total_steps), "epoch": max(0, job.step - 1),
                            "inputTokens": billed},
            "estimatedCost": {"currencyCode": "USD", "units": str(int(estimate)),
                              "nanos": int((estimate - int(estimate)) * 1_000_000_000)},
        }
        if job.step:
            out["metricsFileSignedUrl"] = f"{self.origin}/signed/metrics/{job.id}.jsonl?X-Goog-Signature=fake"
        return {k: v for k, v in out.items() if v is not None}

    # -- datasets ----------------------------------------------------------------------------------
    def _datasets_create(self, req: Request) -> Response:
        self._auth(req)
        body = req.json()
        dataset_id = body.get("datasetId")
        if not dataset_id or "dataset" not in body:
            raise http_error(400, "datasetId and dataset are required")
        if dataset_id in self.datasets:
            raise http_error(409, f"dataset {dataset_id} already exists")
        spec = body["dataset"]
        dataset = FakeDataset(dataset_id, spec.get("displayName", ""), str(spec.get("exampleCount", "0")),
                              self.clock.tick())
        self.datasets[dataset_id] = dataset
        return Response.json(dataset.to_json(self.account))

    def _datasets_upload(self, req: Request) -> Response:
        dataset = self._dataset(req)
        filename, content = req.form()["file"]
        dataset.content, dataset.state = content, "READY"
        return Response.json({"filenameToSignedUrls": {}, "name": filename})

    def _datasets_endpoint(self, req: Request) -> Response:
        dataset = self._dataset(req)
        sizes = req.json().get("filenameToSize") or {}
        urls = {name: f"{self.origin}/signed/datasets/{dataset.id}/{name}?X-Goog-Signature=fake" for name in sizes}
        return Response.json({"filenameToSignedUrls": urls})

    def _datasets_put(self, req: Request) -> Response:
        dataset = self.datasets.get(req.params["id"])
        if dataset is None:
            raise http_error(404, "no such upload")
        dataset.content = req.body
        return Response(200)

    def _datasets_validate(self, req: Request) -> Response:
        dataset = self._dataset(req)
        if dataset.content is None:
            raise http_error(400, f"dataset {dataset.id} has no uploaded file")
        dataset.state = "READY"
        return Response.json({})

    def _datasets_get(self, req: Request) -> Response:
        return Response.json(self._dataset(req).to_json(self.account))

    # -- jobs --------------------------------------------------------------------------------------
    def _jobs_create(self, req: Request) -> Response:
        self._auth(req)
        body = req.json()
        job_id = req.arg("supervisedFineTuningJobId") or self._new_id("sftj-")
        if job_id in self.jobs:
            raise http_error(409, f"supervised fine-tuning job {job_id} already exists")
        if body.get("baseModel") not in self.models:
            raise http_error(400, f"model {body.get('baseModel')} is not tunable")
        dataset = self.datasets.get(str(body.get("dataset", "")).rsplit("/", 1)[-1])
        if dataset is None or dataset.state != "READY":
            raise http_error(400, f"dataset {body.get('dataset')} not found or not READY")
        outcome = self._outcomes.popleft() if self._outcomes else self.default_outcome
        epochs = int(body.get("epochs") or 1)
        job = FakeJob(job_id, self.lifecycle, self.clock, dict(body),
                      trained_tokens=count_tokens(dataset.content or b"") * epochs, total_steps=self.total_steps,
                      outcome=outcome)
        self.jobs[job_id] = job
        return Response.json(self._job_json(job))

    def _jobs_list(self, req: Request) -> Response:
        self._auth(req)
        size = int(req.arg("pageSize") or 50)
        start = int(req.arg("pageToken") or 0)
        jobs = list(self.jobs.values())
        page = jobs[start:start + size]
        out: dict[str, Any] = {"supervisedFineTuningJobs": [self._job_json(j) for j in page], "totalSize": len(jobs)}
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return Response.json(out)

    def _jobs_get(self, req: Request) -> Response:
        job = self._polled(self._job(req))
        return Response.json(self._job_json(job))

    def _jobs_cancel(self, req: Request) -> Response:
        job = self._job(req)
        if job.terminal:
            raise http_error(400, f"job {job.id} is already {job.status}")
        job.cancel()
        return Response.json({})

    def _metrics(self, req: Request) -> Response:
        job = self.jobs.get(req.params["id"].removesuffix(".jsonl"))
        if job is None or not req.arg("X-Goog-Signature"):
            raise http_error(403, "signature does not match")
        lines = []
        for event, point in zip((e for e in job.events if e.kind == "metrics"), job.metrics, strict=True):
            data = {"train/loss": point["train_loss"], "train/epoch": point["step"] - 1}
            if job.request.get("evaluationDataset"):
                data["eval/loss"] = point["valid_loss"]
            lines.append(json.dumps({"step": int(point["step"]), "timestamp": iso(event.created_at), "data": data}))
        return Response(200, ("\n".join(lines) + "\n").encode(), {"Content-Type": "application/jsonl"})
