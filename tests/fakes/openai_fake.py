"""A loopback fake of the OpenAI files and fine-tuning API, for the real ``openai`` SDK.

Point the SDK at ``fake.base_url`` (``http://127.0.0.1:PORT/v1``). Shapes follow the official
OpenAPI spec (FineTuningJob, FineTuningJobEvent, FineTuningJobCheckpoint, OpenAIFile, the error
envelope ``{"error": {message, type, param, code}}``): github.com/openai/openai-openapi, openapi.yaml.

Routes (the names that fault injection and ``calls()`` use):
    files.create      POST /v1/files                     multipart: file, purpose
    files.list        GET  /v1/files                     purpose, after, limit, order
    files.retrieve    GET  /v1/files/{id}
    files.content     GET  /v1/files/{id}/content
    jobs.create       POST /v1/fine_tuning/jobs
    jobs.list         GET  /v1/fine_tuning/jobs          after, limit, metadata[k]=v (newest first)
    jobs.retrieve     GET  /v1/fine_tuning/jobs/{id}     advances the job one step if advance_on_poll
    jobs.cancel       POST /v1/fine_tuning/jobs/{id}/cancel
    jobs.events       GET  /v1/fine_tuning/jobs/{id}/events       after, limit (newest first)
    jobs.checkpoints  GET  /v1/fine_tuning/jobs/{id}/checkpoints
    chat.create       POST /v1/chat/completions          (chat.py): base models and succeeded fine-tunes answer

A successful job gets a result file (``step_metrics.csv``; base64-encoded when ``result_base64``,
as seen in an OpenAI cookbook example), ``fine_tuned_model``, ``trained_tokens`` (the fake's word
count of the training file x epochs) and up to three checkpoints.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._jobs import FakeJob, Lifecycle
from ._provider import FakeProvider
from ._server import Request, Response, bearer_auth, http_error
from .chat import ChatCompletions

LIFECYCLE = Lifecycle(before=("validating_files", "queued"), running="running", after=(),
                      succeeded="succeeded", failed="failed", cancelled="cancelled")

DEFAULT_MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14",
                  "gpt-4.1-mini-2025-04-14", "babbage-002", "davinci-002")
AUTO_EPOCHS = 3  # what the fake trains for when n_epochs is "auto"


@dataclass
class FakeFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


class FakeOpenAI(ChatCompletions, FakeProvider):
    """The fake server; see ``FakeProvider`` for the job controls."""

    lifecycle = LIFECYCLE

    def __init__(self, *, advance_on_poll: bool = False, result_base64: bool = False,
                 models: Iterable[str] = DEFAULT_MODELS, total_steps: int = 3, filter_metadata: bool = True):
        super().__init__(advance_on_poll=advance_on_poll, models=models, total_steps=total_steps)
        self.result_base64 = result_base64
        self.filter_metadata = filter_metadata  # False: an OpenAI-compatible server that ignores metadata[k]=v
        self.files: dict[str, FakeFile] = {}
        self._add_chat()  # POST /v1/chat/completions (chat.py)
        r = self.route
        r("POST", "/v1/files", "files.create", self._files_create)
        r("GET", "/v1/files", "files.list", self._files_list)
        r("GET", "/v1/files/{id}", "files.retrieve", self._files_retrieve)
        r("GET", "/v1/files/{id}/content", "files.content", self._files_content)
        r("POST", "/v1/fine_tuning/jobs", "jobs.create", self._jobs_create)
        r("GET", "/v1/fine_tuning/jobs", "jobs.list", self._jobs_list)
        r("GET", "/v1/fine_tuning/jobs/{id}", "jobs.retrieve", self._jobs_retrieve)
        r("POST", "/v1/fine_tuning/jobs/{id}/cancel", "jobs.cancel", self._jobs_cancel)
        r("GET", "/v1/fine_tuning/jobs/{id}/events", "jobs.events", self._jobs_events)
        r("GET", "/v1/fine_tuning/jobs/{id}/checkpoints", "jobs.checkpoints", self._jobs_checkpoints)

    # -- test controls -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def client(self, **kwargs: Any) -> Any:
        """A real ``openai.OpenAI`` client for this server (no retries unless asked)."""
        import openai

        kwargs.setdefault("api_key", "sk-test-fake")
        kwargs.setdefault("max_retries", 0)
        return self._hand_out(openai.OpenAI(base_url=self.base_url, **kwargs))

    # -- state -------------------------------------------------------------------------------------
    def _advance(self, job: FakeJob) -> bool:
        was_terminal = job.terminal
        moved = job.advance()
        if job.succeeded and not was_terminal:
            self._on_success(job)
        return moved

    def _on_success(self, job: FakeJob) -> None:
        buf = io.StringIO()
        buf.write("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n")
        has_valid = bool(job.request.get("validation_file"))
        for point in job.metrics:
            valid = f"{point['valid_loss']},{point['train_mean_token_accuracy']}" if has_valid else ","
            buf.write(f"{int(point['step'])},{point['train_loss']},{point['train_mean_token_accuracy']},{valid}\n")
        content = buf.getvalue().encode()
        if self.result_base64:
            content = base64.b64encode(content)
        result = FakeFile(self._new_id("file-"), "step_metrics.csv", "fine-tune-results", content,
                          self.clock.tick())
        self.files[result.id] = result
        job.request["_result_files"] = [result.id]

    def _hyperparameters(self, body: dict[str, Any]) -> dict[str, Any]:
        method = body.get("method") or {}
        hp = dict((method.get(method.get("type", "supervised")) or {}).get("hyperparameters") or {})
        hp.update(body.get("hyperparameters") or {})  # the deprecated top-level form
        return {"n_epochs": hp.get("n_epochs", "auto"), "batch_size": hp.get("batch_size", "auto"),
                "learning_rate_multiplier": hp.get("learning_rate_multiplier", "auto")}

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        body = job.request
        error = None
        if job.failed:
            error = {"code": job.outcome.code, "message": job.outcome.message,
                     "param": "training_file" if job.outcome.at_step is None else None}
        suffix = body.get("suffix")
        return {
            "object": "fine_tuning.job", "id": job.id, "model": body["model"],
            "created_at": job.created_at, "finished_at": job.finished_at,
            "fine_tuned_model": (f"ft:{body['model']}:fake-org:{suffix or ''}:{job.id[-6:]}"
                                 if job.succeeded else None),
            "organization_id": "org-fake", "result_files": body.get("_result_files", []),
            "status": job.status, "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "hyperparameters": self._hyperparameters(body),
            "trained_tokens": job.trained_tokens if job.succeeded else None,
            "error": error, "seed": body.get("seed", 42), "estimated_finish": None,
            "metadata": body.get("metadata"), "method": body.get("method") or {"type": "supervised"},
            "user_provided_suffix": suffix, "integrations": body.get("integrations"),
        }

    # -- files -------------------------------------------------------------------------------------
    def _files_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        form = req.form()
        if "file" not in form or "purpose" not in form:
            raise http_error(400, "'file' and 'purpose' are required")
        filename, content = form["file"]
        purpose = form["purpose"][1].decode()
        if purpose == "fine-tune":
            if not (filename or "").endswith(".jsonl"):
                raise http_error(400, "Invalid file format for Fine-Tuning API. Must be .jsonl")
        file = FakeFile(self._new_id("file-"), filename or "upload", purpose, content, self.clock.tick())
        self.files[file.id] = file
        return Response.json(file.to_json())

    def _files_list(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        files = sorted(self.files.values(), key=lambda f: f.created_at, reverse=req.arg("order", "desc") == "desc")
        if purpose := req.arg("purpose"):
            files = [f for f in files if f.purpose == purpose]
        page, has_more = _page(files, req, default_limit=10000)
        return Response.json({"object": "list", "data": [f.to_json() for f in page], "has_more": has_more})

    def _file(self, req: Request) -> FakeFile:
        return self._lookup(req, self.files, "File object")

    def _files_retrieve(self, req: Request) -> Response:
        return Response.json(self._file(req).to_json())

    def _files_content(self, req: Request) -> Response:
        return Response(200, self._file(req).content, {"Content-Type": "application/octet-stream"})

    # -- jobs --------------------------------------------------------------------------------------
    def _jobs_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        body = req.json()
        if body.get("model") not in self.models:
            raise http_error(400, f"Model {body.get('model')!r} is not available for fine-tuning or does not exist.")
        for param in ("training_file", "validation_file"):
            file_id = body.get(param)
            if param == "training_file" or file_id:
                file = self.files.get(file_id or "")
                if file is None or file.purpose != "fine-tune":
                    raise http_error(400, f"invalid {param}: {file_id}")
        metadata = body.get("metadata") or {}
        if len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items()):
            raise http_error(400, "metadata: at most 16 pairs, keys up to 64 and values up to 512 characters")
        if "suffix" in body and body["suffix"] is not None and not 1 <= len(body["suffix"]) <= 64:
            raise http_error(400, "suffix must be 1 to 64 characters")
        epochs = self._hyperparameters(body)["n_epochs"]
        epochs = AUTO_EPOCHS if epochs == "auto" else int(epochs)
        job = self._new_job("ftjob-", dict(body), self.files[body["training_file"]].content, epochs)
        return Response.json(self._job_json(job))

    def _jobs_list(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        wanted = {key[len("metadata["):-1]: values[0] for key, values in req.query.items()
                  if key.startswith("metadata[") and key.endswith("]")}
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        if self.filter_metadata:
            jobs = [j for j in jobs if all((j.request.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        page, has_more = _page(jobs, req, default_limit=20)
        return Response.json({"object": "list", "data": [self._job_json(j) for j in page], "has_more": has_more})

    def _job(self, req: Request) -> FakeJob:
        return self._lookup(req, self.jobs, "fine-tune")

    def _jobs_retrieve(self, req: Request) -> Response:
        job = self._polled(self._job(req))
        return Response.json(self._job_json(job))

    def _jobs_cancel(self, req: Request) -> Response:
        job = self._job(req)
        if job.terminal and job.status != LIFECYCLE.cancelled:
            raise http_error(400, f"Job has already {job.status}; it cannot be cancelled.")
        job.cancel()
        return Response.json(self._job_json(job))

    def _jobs_events(self, req: Request) -> Response:
        job = self._job(req)
        has_valid = bool(job.request.get("validation_file"))
        events = []
        for e in reversed(job.events):  # newest first, as the API lists them
            data = None
            if e.kind == "metrics":
                data = {k: e.data[k] for k in ("step", "total_steps", "train_loss", "train_mean_token_accuracy")}
                if has_valid:
                    data |= {"valid_loss": e.data["valid_loss"],
                             "valid_mean_token_accuracy": e.data["train_mean_token_accuracy"]}
            events.append({"object": "fine_tuning.job.event", "id": f"ftevent-{job.id[-6:]}-{e.seq:04d}",
                           "created_at": e.created_at, "level": "warn" if e.level == "warning" else e.level,
                           "message": e.message, "type": "metrics" if e.kind == "metrics" else "message",
                           "data": data})
        page, has_more = _page(events, req, default_limit=20)
        return Response.json({"object": "list", "data": page, "has_more": has_more})

    def _jobs_checkpoints(self, req: Request) -> Response:
        job = self._job(req)
        points = job.metrics[-3:] if job.succeeded else []
        name = f"ft:{job.request['model']}:fake-org::{job.id[-6:]}"
        data = [{"object": "fine_tuning.job.checkpoint", "id": f"ftckpt_{job.id[-6:]}{int(p['step']):03d}",
                 "created_at": job.finished_at, "fine_tuning_job_id": job.id, "step_number": int(p["step"]),
                 "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{int(p['step'])}",
                 "metrics": {"step": p["step"], "train_loss": p["train_loss"],
                             "train_mean_token_accuracy": p["train_mean_token_accuracy"]}}
                for p in reversed(points)]
        return Response.json({"object": "list", "data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind, code = {401: ("invalid_request_error", "invalid_api_key"),
                      404: ("invalid_request_error", None),
                      429: ("requests", "rate_limit_exceeded")}.get(status, ("server_error" if status >= 500
                                                                             else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _page(items: list[Any], req: Request, *, default_limit: int) -> tuple[list[Any], bool]:
    """Cursor pagination as the API does it: ``after`` is the id of the last item already seen."""
    after = req.arg("after")
    if after:
        ids = [item["id"] if isinstance(item, dict) else item.id for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(req.arg("limit") or default_limit)
    return items[:limit], len(items) > limit
