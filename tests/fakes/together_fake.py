"""A loopback fake of the Together files and fine-tuning API, for the real ``together`` 3.x SDK.

Point the SDK at ``fake.base_url`` (``http://127.0.0.1:PORT``, no ``/v1``: the SDK's paths carry
it). Shapes follow the official Together OpenAPI spec (github.com/togethercomputer/openapi, openapi.yaml)
and the SDK 3.1.1 types.

Routes (the names that fault injection and ``calls()`` use):
    files.create      POST /v1/files                 multipart form -> 302, Location + X-Together-File-Id
    files.put         PUT  /upload/{id}              the file bytes (the Location target)
    files.preprocess  POST /v1/files/{id}/preprocess -> FileResponse with a validation report
    files.list        GET  /v1/files
    files.retrieve    GET  /v1/files/{id}
    files.content     GET  /v1/files/{id}/content
    limits            GET  /v1/fine-tunes/models/limits?model_name=
    estimate          POST /v1/fine-tunes/estimate-price
    jobs.create       POST /v1/fine-tunes
    jobs.list         GET  /v1/fine-tunes
    jobs.retrieve     GET  /v1/fine-tunes/{id}         advances the job one step if advance_on_poll
    jobs.cancel       POST /v1/fine-tunes/{id}/cancel  -> cancel_requested; the next step -> cancelled
    jobs.events       GET  /v1/fine-tunes/{id}/events
    jobs.metrics      GET  /v1/fine-tunes/{id}/metrics   global_step_from
    jobs.checkpoints  GET  /v1/fine-tunes/{id}/checkpoints
    chat.create       POST /v1/chat/completions        (chat.py; a fine-tune answers only on a dedicated endpoint:
                                                        together_endpoints.py)

``total_price`` is in nanodollars, as the SDK's ``finetune_price_to_dollars`` reads it;
``token_count`` is the fake's word count of the training file x epochs (what is billed).
Metrics carry ``train/loss``, ``train/learning_rate``, ``train/global_step`` (the spec's example
keys) and ``eval/loss`` when a validation file was given (the eval key is the fake's choice: the
spec documents no eval key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._jobs import FakeJob, Lifecycle, count_tokens
from ._provider import FakeProvider
from ._server import Request, Response, bearer_auth, http_error
from .chat import ChatCompletions
from .together_endpoints import DedicatedEndpoints

LIFECYCLE = Lifecycle(before=("pending", "queued"), running="running", after=("compressing", "uploading"),
                      succeeded="completed", failed="error", cancelled="cancelled",
                      cancelling="cancel_requested")

DEFAULT_MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "Qwen/Qwen2.5-7B-Instruct",
                  "meta-llama/Llama-3.3-70B-Instruct-Reference")
PRICE_PER_MILLION = Decimal("0.48")  # the fake bills LoRA up to 16B at this rate (together.ai/pricing)
SUFFIX_MAX = 40  # the SDK's docstring: "Up to 40 character suffix"

# status the job enters -> the Together event type announcing it
_EVENT_TYPES = {"pending": "job_pending", "queued": "job_pending", "running": "job_start",
                "compressing": "model_compressing", "uploading": "model_uploading",
                "completed": "job_complete", "error": "job_error", "cancel_requested": "cancel_requested",
                "cancelled": "job_stopped"}


def iso(ts: int | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


@dataclass
class FakeFile:
    id: str
    filename: str
    purpose: str
    file_type: str
    checksum: str
    created_at: int
    content: bytes | None = None  # None until the PUT arrives
    processed: bool = False

    def to_json(self) -> dict[str, Any]:
        nlines = len((self.content or b"").splitlines())
        out: dict[str, Any] = {
            "id": self.id, "object": "file", "created_at": self.created_at, "filename": self.filename,
            "bytes": len(self.content or b""), "purpose": self.purpose, "FileType": self.file_type,
            "processing_status": "COMPLETED" if self.processed else "PENDING"}
        if self.processed:
            out["validation_report"] = {"valid": True, "dataset_format": "CONVERSATION", "nlines": nlines,
                                        "file_id": self.id}
        return out


class FakeTogether(DedicatedEndpoints, ChatCompletions, FakeProvider):
    """The fake server; see ``FakeProvider`` for the job controls."""

    lifecycle = LIFECYCLE
    id_suffix = "-fake"

    def __init__(self, *, advance_on_poll: bool = False, models: Iterable[str] = DEFAULT_MODELS,
                 total_steps: int = 3):
        super().__init__(advance_on_poll=advance_on_poll, models=models, total_steps=total_steps)
        self.files: dict[str, FakeFile] = {}
        # what POST /v1/fine-tunes/estimate-price answers: the account's price per 1M billed tokens (a test may set
        # it apart from the catalog's), its credit limit, and whether an estimate is available at all
        self.estimate_price_per_million = PRICE_PER_MILLION
        self.user_limit = 100.0
        self.estimation_available = True
        self._add_chat()  # POST /v1/chat/completions (chat.py)
        self._add_endpoints()  # dedicated endpoints, v2 (together_endpoints.py)
        r = self.route
        r("POST", "/v1/files", "files.create", self._files_create)
        r("PUT", "/upload/{id}", "files.put", self._files_put)
        r("POST", "/v1/files/{id}/preprocess", "files.preprocess", self._files_preprocess)
        r("GET", "/v1/files", "files.list", self._files_list)
        r("GET", "/v1/files/{id}", "files.retrieve", self._files_retrieve)
        r("GET", "/v1/files/{id}/content", "files.content", self._files_content)
        r("GET", "/v1/fine-tunes/models/limits", "limits", self._limits)
        r("POST", "/v1/fine-tunes/estimate-price", "estimate", self._estimate)
        r("POST", "/v1/fine-tunes", "jobs.create", self._jobs_create)
        r("GET", "/v1/fine-tunes", "jobs.list", self._jobs_list)
        r("GET", "/v1/fine-tunes/{id}", "jobs.retrieve", self._jobs_retrieve)
        r("POST", "/v1/fine-tunes/{id}/cancel", "jobs.cancel", self._jobs_cancel)
        r("GET", "/v1/fine-tunes/{id}/events", "jobs.events", self._jobs_events)
        r("GET", "/v1/fine-tunes/{id}/metrics", "jobs.metrics", self._jobs_metrics)
        r("GET", "/v1/fine-tunes/{id}/checkpoints", "jobs.checkpoints", self._jobs_checkpoints)

    # -- test controls -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.origin

    def client(self, **kwargs: Any) -> Any:
        """A real ``together.Together`` client for this server (no retries unless asked)."""
        import together

        kwargs.setdefault("api_key", "tg-test-fake")
        kwargs.setdefault("max_retries", 0)
        return self._hand_out(together.Together(base_url=self.base_url, **kwargs))

    # -- helpers -----------------------------------------------------------------------------------
    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        body = job.request
        epochs = int(body.get("n_epochs") or 1)
        billed = job.trained_tokens if job.status in ("running", "compressing", "uploading", "completed") else 0
        suffix = body.get("suffix")
        return {
            "id": job.id, "job_id": job.id, "status": job.status, "user_id": "user_fake",
            "owner_address": "fake@example.com",
            "created_at": iso(job.created_at), "updated_at": iso(self.clock.now),
            "started_at": iso(job.started_at),
            "model": body["model"], "training_file": body["training_file"],
            "validation_file": body.get("validation_file") or "",
            "model_output_name": f"fakeuser/{body['model'].split('/')[-1]}-{suffix or 'ft'}-{job.id[3:9]}",
            "suffix": suffix, "n_epochs": epochs, "n_checkpoints": body.get("n_checkpoints", 1),
            "n_evals": body.get("n_evals", 0), "batch_size": body.get("batch_size"),
            "learning_rate": body.get("learning_rate"), "training_type": body.get("training_type"),
            "training_method": body.get("training_method"), "random_seed": body.get("random_seed"),
            "token_count": billed, "param_count": 8_000_000_000,
            "total_price": int(billed * PRICE_PER_MILLION * 1000),  # tokens x $/1M x 1e9 nanodollars / 1e6
            "epochs_completed": epochs if job.succeeded else 0, "queue_depth": 0,
            "events": [],
            # the W&B settings echoed, the key never (FinetuneResponse: wandb_project_name, wandb_url, ...)
            "wandb_project_name": body.get("wandb_project_name"), "wandb_name": body.get("wandb_name"),
            "wandb_url": (f"https://wandb.ai/{body.get('wandb_entity') or 'fake-entity'}/"
                          f"{body['wandb_project_name']}/runs/{job.id}") if body.get("wandb_key") else None,
        }

    def _job(self, req: Request) -> FakeJob:
        return self._lookup(req, self.jobs, "fine-tune job")

    def _file(self, req: Request) -> FakeFile:
        return self._lookup(req, self.files, "file")

    # -- files -------------------------------------------------------------------------------------
    def _files_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        form = {k: v[1].decode() for k, v in req.form().items()}
        if not form.get("file_name") or form.get("purpose") not in ("fine-tune", "eval"):
            raise http_error(400, "file_name and a purpose are required")
        file = FakeFile(self._new_id("file-"), form["file_name"], form["purpose"], form.get("file_type", "jsonl"),
                        form.get("checksum", ""), self.clock.tick())
        self.files[file.id] = file
        return Response(302, b"", {"Location": f"{self.origin}/upload/{file.id}", "X-Together-File-Id": file.id})

    def _files_put(self, req: Request) -> Response:
        file = self.files.get(req.params["id"])
        if file is None:
            raise http_error(404, "no such upload")
        file.content = req.body
        return Response(200)

    def _files_preprocess(self, req: Request) -> Response:
        file = self._file(req)
        if file.content is None:
            raise http_error(400, "file content was never uploaded")
        file.processed = True
        return Response.json(file.to_json())

    def _files_list(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        return Response.json({"data": [f.to_json() for f in self.files.values()]})

    def _files_retrieve(self, req: Request) -> Response:
        return Response.json(self._file(req).to_json())

    def _files_content(self, req: Request) -> Response:
        return Response(200, self._file(req).content or b"", {"Content-Type": "application/octet-stream"})

    # -- fine-tunes --------------------------------------------------------------------------------
    def _limits(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        model = req.arg("model_name")
        if model not in self.models:
            raise http_error(404, f"model {model} is not available for fine-tuning")
        return Response.json({
            "model_name": model, "default_gradient_accumulation_steps": 1, "max_learning_rate": 1.0,
            "min_learning_rate": 1e-8, "max_num_checkpoints": 20, "max_num_epochs": 20, "max_num_evals": 100,
            "max_seq_length_sft": 8192, "max_seq_length_dpo": 8192, "min_max_seq_length": 512,
            "merge_output_lora": True, "supports_full_training": True, "supports_reasoning": False,
            "supports_tools": True, "supports_vision": False,
            "lora_training": {"default_rank": 8, "max_rank": 64, "min_batch_size": 8, "max_batch_size": 64,
                              "max_batch_size_dpo": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "up_proj", "down_proj", "gate_proj"]},
            "full_training": {"min_batch_size": 8, "max_batch_size": 32, "max_batch_size_dpo": 16},
        })

    def _estimate(self, req: Request) -> Response:
        """POST /v1/fine-tunes/estimate-price (Together OpenAPI spec): billed tokens = training tokens x n_epochs
        + validation tokens x n_evals, priced at ``estimate_price_per_million``; allowed within ``user_limit``."""
        bearer_auth(req, self.rejected_keys)
        body = req.json()
        file = self.files.get(body.get("training_file", ""))
        if not self.estimation_available or file is None or not file.processed:
            reason = "train_file_not_validated" if self.estimation_available else "estimation_unavailable"
            return Response.json({"estimation_available": False, "unavailable_reason": reason})
        train = count_tokens(file.content or b"") * int(body.get("n_epochs") or 1)
        validation = self.files.get(body.get("validation_file") or "")
        evals = count_tokens(validation.content or b"") * int(body.get("n_evals") or 0) if validation else 0
        price = float((train + evals) * self.estimate_price_per_million / 1_000_000)
        return Response.json({"estimation_available": True, "allowed_to_proceed": price <= self.user_limit,
                              "estimated_total_price": price, "estimated_train_token_count": train,
                              "estimated_eval_token_count": evals, "user_limit": self.user_limit})

    def _jobs_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        body = req.json()
        if body.get("model") not in self.models:
            raise http_error(400, f"model {body.get('model')} is not available for fine-tuning")
        file = self.files.get(body.get("training_file", ""))
        if file is None or not file.processed:
            raise http_error(400, f"training_file {body.get('training_file')} not found or not processed")
        if body.get("suffix") and len(body["suffix"]) > SUFFIX_MAX:
            raise http_error(400, f"suffix must be at most {SUFFIX_MAX} characters")
        job = self._new_job("ft-", dict(body), file.content or b"", int(body.get("n_epochs") or 1))
        return Response.json(self._job_json(job))

    def _jobs_list(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        return Response.json({"data": [self._job_json(j) for j in self.jobs.values()]})

    def _jobs_retrieve(self, req: Request) -> Response:
        job = self._polled(self._job(req))
        out = self._job_json(job)
        out["events"] = self._events(job)
        return Response.json(out)

    def _jobs_cancel(self, req: Request) -> Response:
        job = self._job(req)
        if job.terminal:
            raise http_error(400, f"fine-tune job {job.id} is already {job.status}")
        job.cancel()
        return Response.json(self._job_json(job))

    def _events(self, job: FakeJob) -> list[dict[str, Any]]:
        events = []
        for e in job.events:
            if e.kind == "metrics":
                continue  # Together events carry no losses; those are under /metrics
            kind = _EVENT_TYPES[e.data["status"]]
            events.append({"object": "fine-tune-event", "created_at": iso(e.created_at), "level": e.level,
                           "message": e.message, "type": kind, "step": e.step, "total_steps": job.total_steps,
                           "token_count": 0, "param_count": 0, "wandb_url": "", "checkpoint_path": "",
                           "model_path": "", "training_offset": 0, "hash": f"{job.id}-{e.seq}"})
        return events

    def _jobs_events(self, req: Request) -> Response:
        return Response.json({"data": self._events(self._job(req))})

    def _jobs_metrics(self, req: Request) -> Response:
        job = self._job(req)
        lr = float(job.request.get("learning_rate") or 1e-5)
        has_valid = bool(job.request.get("validation_file"))
        first = float(req.arg("global_step_from") or 0)  # the SDK sends the filters as query parameters
        out = []
        for p in (p for p in job.metrics if p["step"] >= first):
            row = {"train/loss": p["train_loss"], "train/learning_rate": lr, "train/global_step": p["step"]}
            if has_valid:
                row["eval/loss"] = p["valid_loss"]
            out.append(row)
        return Response.json({"metrics": out})

    def _jobs_checkpoints(self, req: Request) -> Response:
        job = self._job(req)
        data = []
        if job.succeeded:
            data.append({"step": job.step, "created_at": iso(job.finished_at), "checkpoint_type": "final",
                         "path": f"s3://fake-bucket/{job.id}/final"})
        return Response.json({"data": data})

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found", 429: "rate_limit_exceeded"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
