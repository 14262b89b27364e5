"""A loopback fake of Vertex AI tuning jobs, Cloud Storage uploads and Google's OAuth token endpoint, for the real
``google-genai`` SDK (``vertexai=True``) and ``google-auth``.

One server plays the three Google services a Vertex job touches, so a test points everything at ``fake.origin``:
the SDK's ``base_url``, the backend's ``storage_url``, and the ``token_uri`` of the service-account key file
``fake.write_credentials()`` writes (application-default credentials through GOOGLE_APPLICATION_CREDENTIALS; an
``authorized_user`` file would not do: google-auth always sends those to Google's own token endpoint). Shapes follow the Vertex REST reference (projects.locations.tuningJobs: create, get, list, cancel; v1beta1,
the SDK's default on Vertex), the Cloud Storage JSON API (objects.insert with ``uploadType=media``, objects.get) and
the OAuth 2.0 JWT-bearer grant (RFC 7523) that service-account keys use.

Routes (the names that fault injection and ``calls()`` use):
    token          POST /token                                                    a signed JWT -> access token
    gcs.upload     POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=    412 when ifGenerationMatch=0 fails
    gcs.get        GET  /storage/v1/b/{bucket}/o/{object}                         object metadata
    jobs.create    POST /v1beta1/projects/{p}/locations/{l}/tuningJobs
    jobs.list      GET  /v1beta1/projects/{p}/locations/{l}/tuningJobs            pageSize, pageToken
    jobs.get       GET  /v1beta1/projects/{p}/locations/{l}/tuningJobs/{id}       advances the job one step if asked
    jobs.cancel    POST /v1beta1/projects/{p}/locations/{l}/tuningJobs/{id}:cancel -> CANCELLING; next step CANCELLED

A tuning job gets a numeric id (Vertex chooses it; the caller cannot), its tuned model and endpoint on success, and
``tuningDataStats`` with the fake's word count of the training file as billable tokens (x epochs).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from ._jobs import FakeJob, Lifecycle
from ._provider import FakeProvider
from ._server import Request, Response, http_error
from .together_fake import iso

LIFECYCLE = Lifecycle(before=("JOB_STATE_QUEUED", "JOB_STATE_PENDING"), running="JOB_STATE_RUNNING", after=(),
                      succeeded="JOB_STATE_SUCCEEDED", failed="JOB_STATE_FAILED", cancelled="JOB_STATE_CANCELLED",
                      cancelling="JOB_STATE_CANCELLING")
PROJECT, LOCATION, BUCKET = "fake-project", "us-central1", "fake-bucket"
DEFAULT_MODELS = ("gemini-3.5-flash", "gemini-3.5-flash-lite", "gemini-3.1-flash-lite")
_STATUS_WORDS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE"}


@dataclass
class FakeObject:
    bucket: str
    name: str
    content: bytes
    generation: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": "storage#object", "bucket": self.bucket, "name": self.name, "size": str(len(self.content)),
                "generation": str(self.generation), "contentType": "application/jsonl",
                "md5Hash": hashlib.md5(self.content).hexdigest()}  # noqa: S324 -- a checksum, as GCS gives


@functools.cache
def _private_key() -> str:
    """An RSA key made here, once per process (a service-account key file needs one; nothing checks it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class FakeVertex(FakeProvider):
    """The fake server; see ``FakeProvider`` for the job controls. ``access_token`` is what the token endpoint
    issues (a test sets a canary); requests must carry a token it issued."""

    lifecycle = LIFECYCLE

    def __init__(self, *, advance_on_poll: bool = False, models: Iterable[str] = DEFAULT_MODELS,
                 total_steps: int = 3, project: str = PROJECT, location: str = LOCATION):
        super().__init__(advance_on_poll=advance_on_poll, models=models, total_steps=total_steps)
        self.project, self.location = project, location
        self.access_token = "ya29.fake-access-token"
        self.issued: set[str] = set()
        self.objects: dict[tuple[str, str], FakeObject] = {}
        base = "/v1beta1/projects/{p}/locations/{l}/tuningJobs"
        r = self.route
        r("POST", "/token", "token", self._token)
        r("POST", "/upload/storage/v1/b/{bucket}/o", "gcs.upload", self._gcs_upload)
        r("GET", "/storage/v1/b/{bucket}/o/{object}", "gcs.get", self._gcs_get)
        r("POST", base + "/{id}:cancel", "jobs.cancel", self._jobs_cancel)
        r("POST", base, "jobs.create", self._jobs_create)
        r("GET", base, "jobs.list", self._jobs_list)
        r("GET", base + "/{id}", "jobs.get", self._jobs_get)

    # -- test controls -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.origin

    def write_credentials(self, path: Path) -> Path:
        """A service-account key file (application-default credentials, GOOGLE_APPLICATION_CREDENTIALS) whose token
        endpoint is this server: google-auth signs a JWT with the key and trades it here for an access token."""
        path.write_text(json.dumps({
            "type": "service_account", "project_id": self.project, "private_key_id": "fake-key-id",
            "private_key": _private_key(), "client_email": f"ftbroker@{self.project}.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": f"{self.origin}/token"}))
        return path

    def options(self, prefix: str = "ftbroker") -> dict[str, str]:
        """The backend options that point the Vertex backend at this server."""
        return {"base_url": self.origin, "storage_url": self.origin, "project": self.project,
                "location": self.location, "gcs_uri": f"gs://{BUCKET}/{prefix}"}

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": _STATUS_WORDS.get(status, "UNKNOWN")}}

    # -- helpers -----------------------------------------------------------------------------------
    def _auth(self, req: Request) -> None:
        auth = req.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if not token or token not in self.issued:
            raise http_error(401, "Request had invalid authentication credentials.")
        if token in self.rejected_keys:
            raise http_error(403, f"Permission denied for token {token}.")  # echoed: the broker must scrub it
        if "p" in req.params and (req.params["p"], req.params["l"]) != (self.project, self.location):
            raise http_error(403, f"Permission denied on projects/{req.params['p']}/locations/{req.params['l']}")

    def _name(self, job: FakeJob) -> str:
        return f"projects/{self.project}/locations/{self.location}/tuningJobs/{job.id}"

    def _job(self, req: Request) -> FakeJob:
        self._auth(req)
        job = self.jobs.get(req.params["id"])
        if job is None:
            raise http_error(404, f"TuningJob {req.params['id']} not found")
        return job

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        body = job.request
        where = f"projects/{self.project}/locations/{self.location}"
        out: dict[str, Any] = {
            "name": self._name(job), "baseModel": body["baseModel"], "state": job.status,
            "tunedModelDisplayName": body.get("tunedModelDisplayName"), "labels": body.get("labels") or {},
            "description": body.get("description"), "supervisedTuningSpec": body.get("supervisedTuningSpec"),
            "createTime": iso(job.created_at), "updateTime": iso(self.clock.now),
            "experiment": f"{where}/metadataStores/default/contexts/tuning-experiment-{job.id}",
        }
        if job.started_at:
            out["startTime"] = iso(job.started_at)
        if job.finished_at:
            out["endTime"] = iso(job.finished_at)
        if job.step or job.succeeded:
            out["tuningDataStats"] = {"supervisedTuningDataStats": {
                "tuningDatasetExampleCount": str(body["_examples"]), "totalBillableTokenCount": str(job.trained_tokens),
                "tuningStepCount": str(job.total_steps)}}
        if job.succeeded:
            out["tunedModel"] = {"model": f"{where}/models/{job.id}7@1", "endpoint": f"{where}/endpoints/{job.id}9"}
        if job.failed:
            out["error"] = {"code": 3, "message": job.outcome.message}
        return {k: v for k, v in out.items() if v is not None}

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return str(8_000_000_000 + self._ids)  # Vertex chooses numeric ids

    # -- oauth and storage -------------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            return Response.json({"error": "invalid_grant", "error_description": "Bad Request"}, 400)
        self.issued.add(self.access_token)
        return Response.json({"access_token": self.access_token, "expires_in": 3599, "token_type": "Bearer",
                              "scope": "https://www.googleapis.com/auth/cloud-platform"})

    def _gcs_upload(self, req: Request) -> Response:
        self._auth(req)
        name, bucket = req.arg("name"), req.params["bucket"]
        if req.arg("uploadType") != "media" or not name:
            raise http_error(400, "uploadType=media and a name are required")
        existing = self.objects.get((bucket, name))
        if existing is not None and req.arg("ifGenerationMatch") == "0":
            raise http_error(412, "At least one of the pre-conditions you specified did not hold.")
        generation = (existing.generation if existing else 1_700_000_000_000_000) + 1
        self.objects[(bucket, name)] = FakeObject(bucket, name, req.body, generation)
        return Response.json(self.objects[(bucket, name)].to_json())

    def _gcs_get(self, req: Request) -> Response:
        self._auth(req)
        found = self.objects.get((req.params["bucket"], unquote(req.params["object"])))
        if found is None:
            raise http_error(404, "No such object")
        return Response.json(found.to_json())

    def _object(self, uri: str | None) -> FakeObject | None:
        bucket, _, name = (uri or "").removeprefix("gs://").partition("/")
        return self.objects.get((bucket, name))

    # -- tuning jobs -------------------------------------------------------------------------------
    def _jobs_create(self, req: Request) -> Response:
        self._auth(req)
        body = req.json()
        if body.get("baseModel") not in self.models:
            raise http_error(400, f"Base model {body.get('baseModel')} is not supported for tuning.")
        spec = body.get("supervisedTuningSpec") or {}
        training = self._object(spec.get("trainingDatasetUri"))
        if training is None:
            raise http_error(400, f"Training dataset {spec.get('trainingDatasetUri')} does not exist.")
        if spec.get("validationDatasetUri") and self._object(spec["validationDatasetUri"]) is None:
            raise http_error(400, f"Validation dataset {spec['validationDatasetUri']} does not exist.")
        epochs = int((spec.get("hyperParameters") or {}).get("epochCount") or 1)
        request = {**body, "_examples": len(training.content.splitlines())}
        job = self._new_job("", request, training.content, epochs)
        return Response.json(self._job_json(job))

    def _jobs_list(self, req: Request) -> Response:
        self._auth(req)
        size = int(req.arg("pageSize") or 100)
        start = int(req.arg("pageToken") or 0)
        jobs = list(self.jobs.values())
        out: dict[str, Any] = {"tuningJobs": [self._job_json(j) for j in jobs[start:start + size]]}
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return Response.json(out)

    def _jobs_get(self, req: Request) -> Response:
        job = self._polled(self._job(req))
        return Response.json(self._job_json(job))

    def _jobs_cancel(self, req: Request) -> Response:
        job = self._job(req)
        if job.terminal:
            raise http_error(400, f"TuningJob {job.id} is in state {job.status} and cannot be cancelled.")
        job.cancel()
        return Response.json({})
