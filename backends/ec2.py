"""The EC2 backend: the local trainer on a rented AWS GPU instance, through boto3 (the ``aws`` extra).

    ftbroker run data.jsonl --backend ec2 --model Llama-3.1-8B --method qlora \\
        --option s3_uri=s3://my-bucket/ftbroker --option instance_type=g6e.xlarge --option spot=true --max-cost 5

What happens, in order:

- ``validate``: the data read and checked as ``--backend local`` does (same tokenizer), ``s3_uri`` given and AWS
  credentials found (both before the ledger records anything), the region known to botocore.
- ``quote`` (pure): the job's route on the instance type and market asked for (default: the cheapest AWS instance
  that fits), priced by the one path of every GPU route (``gpu_routes.instance_quote``), so it is the plan's AWS
  route to the cent; the runtime cap is the estimate times ``safety_factor`` (never under its high end), or
  ``max_hours``, and the budget guard checks price x cap, the most the instance can bill (``ec2_pricing``).
- its routes in a plan (``token_needs``, ``routes``, ``plan_notes``): the GPU routes of the catalog's AWS
  instances (``capabilities.clouds``), each carrying the options that run it (instance_type, region, spot).
- ``submit``: looks for an instance already tagged with this job and attempt (a retried or crashed launch never
  starts a second one; AWS's own ClientToken, derived from the same pair, makes the launch idempotent too:
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Run_Instance_Idempotency.html); stages this very ftbroker
  (a wheel built from the running package), the trainer's config.json, the data and a local model folder to S3;
  launches the GPU deep-learning AMI (from AWS's public SSM parameter,
  https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html, or ``ami``) with ``ec2_bootstrap.sh`` as
  user data and InstanceInitiatedShutdownBehavior=terminate
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingInstanceInitiatedShutdownBehavior.html).
- ``poll``: the heartbeat, the new events and metrics from S3; terminates a stalled or overdue instance (failed,
  saying why); on a finished run downloads the output into the local run folder (so ``export`` is the local one);
  a spot instance gone before success is relaunched (bounded) and resumes from the last checkpoint in S3.
- ``cancel``: a ``cancel`` marker in S3, which the agent turns into SIGTERM (the trainer checkpoints), then the
  instance is terminated after ``cancel_grace_s``.
- ``ftbroker gc`` (``Collectable``): every ftbroker-tagged instance whose job is finished, unknown to the ledger or
  past its cap is terminated.

Money: every attempt is recorded (instance, runtime, cost); the actual cost is the sum over attempts of runtime x
the quoted price per hour, billed per second with a 60 s minimum (https://aws.amazon.com/ec2/pricing/on-demand/;
a spot instance is billed the spot price of its hours, which may differ from the catalog's).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from ftbroker import __version__, clock
from ftbroker.backends import gpu_routes
from ftbroker.backends.base import Capabilities, Environment, Quote, Submission, Tracker, Update
from ftbroker.backends.ec2_agent import CANCEL, INPUT, TRAINER_SCRIPT, JobStore, join_key, split_s3
from ftbroker.backends.wheel import build_wheel
from ftbroker.backends.ec2_follow import MIN_ATTEMPT_MINUTES, Ec2Following, recorded_attempts
from ftbroker.backends.ec2_pricing import CLOUD, NAME, Ec2Quote, ec2_quote
from ftbroker.backends.local.backend import LocalBackend, LocalOptions, TrackerOptions
from ftbroker.backends.local.config import CONFIG_NAME, OWNER_NAME
from ftbroker.errors import InputError, JobError, SpecError, UnknownNameError
from ftbroker.jobs import Artifact, Job, JobStatus, Result
from ftbroker.vocabulary import METHODS

# AWS's public SSM parameter of the GPU PyTorch deep-learning AMI (Ubuntu 24.04, x86_64), named by the rule of
# https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html; its release notes give the Python at
# /opt/pytorch/bin/python (docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-ami-gpupt29oss-ul2404-*).
# The name carries the framework version and goes stale: ``ami_parameter`` or ``ami`` override it.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"
DLAMI_PYTHON = "/opt/pytorch/bin/python"


class Ec2Options(TrackerOptions):
    """``backend_options`` of the EC2 backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_uri: str | None = Field(None, description="s3://bucket/prefix for the job's inputs, checkpoints and outputs "
                                                 "(required to run)")
    instance_type: str | None = Field(None, description="an AWS instance type of the catalog; default: the cheapest "
                                                        "priced one the job fits")
    region: str | None = Field(None, description="default: where the catalog's price was seen")
    spot: bool = Field(False, description="spot instance (relaunched and resumed when interrupted)")
    max_hours: float | None = Field(None, gt=0, le=720, description="the hard runtime cap (default: the estimate x "
                                                                    "safety_factor)")
    safety_factor: float = Field(2.0, ge=1, le=20, description="runtime cap = estimated hours x this")
    ami: str | None = Field(None, pattern=r"^ami-[0-9a-f]{8,17}$", description="an AMI id instead of the DLAMI")
    ami_parameter: str = Field(DLAMI_PARAMETER, min_length=1, description="SSM parameter naming the AMI")
    python: str = Field(DLAMI_PYTHON, min_length=1, description="the AMI's Python 3.11+ with torch")
    iam_instance_profile: str | None = Field(None, description="instance profile (name or ARN) allowed the s3_uri")
    subnet_id: str | None = None
    security_group_ids: list[str] | None = None
    disk_gib: int = Field(200, ge=20, le=16384, description="root volume (gp3), deleted with the instance")
    max_attempts: int = Field(3, ge=1, le=20, description="launches of a spot job (interruptions relaunch)")
    stall_minutes: float = Field(15.0, gt=0, description="no heartbeat this long: the instance is terminated")
    boot_minutes: float = Field(30.0, gt=0, description="allowance from launch to the first heartbeat")
    heartbeat_s: float = Field(60.0, gt=0, le=3600, description="how often the instance writes its heartbeat")
    sync_s: float = Field(30.0, gt=0, le=3600, description="how often the instance syncs its run folder to S3")
    poll_interval_s: float = Field(30.0, gt=0, description="how often following polls")
    cancel_grace_s: float = Field(120.0, gt=0, description="how long cancel waits for a checkpoint")
    merge: bool = Field(False, description="also write a merged model (LoRA / QLoRA)")
    trainer: str | None = Field(None, description="your own recipe script speaking the trainer contract, staged "
                                                  "with the inputs and run on the instance instead of ftbroker's")
    profile: str | None = Field(None, description="an AWS profile name (default: the usual credential chain)")

    @field_validator("s3_uri")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("s3://") or not split_s3(value)[0]):
            raise ValueError("expected s3://bucket/prefix")
        return value


# --- the backend -----------------------------------------------------------------------------------------------

class Ec2Backend(Ec2Following):
    """The local trainer on an EC2 GPU instance; data, checkpoints and results through S3."""

    name = NAME
    Options = Ec2Options
    capabilities = Capabilities(
        methods=frozenset(METHODS),
        data_formats=LocalBackend.capabilities.data_formats,
        unsupported=dict(LocalBackend.capabilities.unsupported),
        poll_interval_s=30.0,
        requires={"boto3": "aws"},
        clouds=frozenset({CLOUD}),  # the plan's AWS routes are this backend's
    )

    # --- its routes in a plan: the GPU routes of the catalog's AWS instances, priced as ``quote`` prices a job ---

    @classmethod
    def token_needs(cls, catalog: Any, options: Any) -> list[Any]:
        return gpu_routes.token_needs(catalog, options)

    @classmethod
    def routes(cls, context: Any) -> list[Any]:
        mine = [i for i in context.catalog.instances if i.cloud in cls.capabilities.clouds]
        return gpu_routes.cloud_gpu_routes(context, mine, backend=cls.name)

    @classmethod
    def plan_notes(cls, context: Any) -> list[str]:
        return gpu_routes.gpu_notes(context, cloud=True)

    def __init__(self, options: Ec2Options, *, home: Path):
        self.options = options
        self.home = Path(home)
        self.local = LocalBackend(LocalOptions(merge=options.merge, **options.trackers()), home=self.home)  # data checks, run folders
        self._quoted: dict[str, Ec2Quote] = {}  # spec (JSON) -> its quote: what to launch
        self._clients: dict[tuple[str, str], Any] = {}

    # --- before submission ---

    def validate(self, spec: Any) -> Any:
        """The local backend's data checks (the same tokenizer, so the quote is the plan's), then what a launch needs:
        ``s3_uri``, AWS credentials, a region botocore knows. Nothing leaves this machine."""
        problems = []
        if not self.options.s3_uri:
            problems.append("backend_options.s3_uri: required: an S3 location (s3://bucket/prefix) the instance can "
                            "read and write (its instance profile), for the job's inputs, checkpoints and outputs; "
                            "e.g. --option s3_uri=s3://my-bucket/ftbroker")
        if self.options.trainer and not Path(self.options.trainer).expanduser().is_file():
            problems.append(f"backend_options.trainer: no such file: {self.options.trainer}")
        region = self.options.region
        session = self._session()
        regions = set(session.get_available_regions("ec2")) | {
            r for p in ("aws-cn", "aws-us-gov") for r in session.get_available_regions("ec2", partition_name=p)}
        if region is not None and region not in regions:
            raise UnknownNameError("AWS region", region, regions)
        if problems:
            raise SpecError(problems)
        if session.get_credentials() is None:
            raise InputError("ec2: no AWS credentials found (environment, ~/.aws/credentials or config, SSO, an "
                             "instance role): configure them, e.g. `aws configure` or AWS_PROFILE "
                             "(https://boto3.amazonaws.com/v1/documentation/api/latest/guide/credentials.html)")
        return self.local.validate(spec)

    def quote(self, spec: Any, dataset: Any, env: Environment) -> Quote:
        """PURE: the plan's route of this job on the instance type and market asked for (or the cheapest AWS
        instance that fits), with the runtime cap (``ec2_pricing.ec2_quote``)."""
        catalog = env.catalog
        job = self.local.prepare(spec, catalog)
        job.model.need_arch()  # a model the catalog cannot shape cannot be priced on an instance
        stats = next(iter(getattr(dataset, "tokens", {}).values()), None)
        quoted = ec2_quote(job.config, job.model, stats, self.local.validation_stats(spec), catalog, self.options,
                           env.today, env.corrections)
        if quoted.cap_minutes is not None:
            self._quoted[spec.model_dump_json()] = quoted
        return quoted.quote

    # --- launching ---

    def submit(self, job: Job, tracker: Tracker) -> Submission:
        """Adopt the instance already launched for this job and attempt, else stage and launch one."""
        attempt = int(job.remote.get("attempt") or 1)
        if job.remote.get("region"):
            found = self._find(job, attempt)
            if found is not None:
                return Submission(remote=self._handles(found), status=JobStatus.RUNNING, reused=True)
        job = self._plan(job, tracker)
        found = self._find(job, attempt)  # a launch the plan's first recording did not see (another process)
        if found is not None:
            return Submission(remote=self._handles(found), status=JobStatus.RUNNING, reused=True)
        job = self._stage(job, tracker)
        remote = self._launch(job, attempt, int(job.remote["cap_minutes"]), tracker)
        return Submission(remote=remote, status=JobStatus.RUNNING, detail=f"attempt {attempt}")

    def resume(self, job: Job, tracker: Tracker) -> Submission:
        """A new attempt from the last checkpoint in S3, within what is left of the runtime cap."""
        current = self._describe(job)
        if current is not None and current.alive:
            raise JobError(f"job {job.id} still has a live instance ({current.id}, {current.state})")
        attempt = int(job.remote.get("attempt") or 1) + 1
        left = self._cap_left(job)
        if left < MIN_ATTEMPT_MINUTES:
            raise InputError(f"job {job.id} has {left} min of its {job.remote['cap_minutes']} min runtime cap left, "
                             "too little to boot and resume; start a new job (with --max-hours)")
        self.call("clearing the cancel request", self._store(job).delete, CANCEL)
        tracker.remember(cancel_requested="", attempt=str(attempt), instance_id="")
        job = job.model_copy(update={"remote": {**job.remote, "cancel_requested": "", "attempt": str(attempt)}})
        remote = self._launch(job, attempt, left, tracker)
        return Submission(remote={**remote, "cancel_requested": ""}, status=JobStatus.RUNNING,
                          detail=f"attempt {attempt}")

    def _plan(self, job: Job, tracker: Tracker) -> Job:
        """What to launch (the quote's instance, region, market, price and cap), recorded before anything is."""
        if job.remote.get("instance_type"):
            return job
        key = job.spec.model_dump_json()
        if key not in self._quoted:  # another process recorded the job: price it again (the same catalog, data)
            from ftbroker.pricing.catalog import load_catalog

            self.quote(job.spec, self.validate(job.spec), Environment(today=clock.today(), load_catalog=load_catalog))
        if key not in self._quoted:  # started with --force although it does not fit: no estimate to cap it by
            raise InputError("ec2: the run cannot be timed, so its runtime cap is unknown: give --max-hours")
        quoted = self._quoted[key]
        bucket, prefix = split_s3(self.options.s3_uri or "")
        plan = {"attempt": "1", "instance_type": quoted.instance.instance_type, "region": quoted.region,
                "market": quoted.market, "usd_per_hour": str(quoted.usd_per_hour), "cap_minutes": str(quoted.cap_minutes),
                "gpus": str(quoted.instance.gpu_count), "s3": f"s3://{join_key(bucket, prefix, job.id)}",
                "run_dir": str(self.local.run_dir(job.id)), "ftbroker_version": __version__, "attempts": "[]",
                "cancel_requested": ""}
        tracker.remember(**plan)
        return job.model_copy(update={"remote": {**job.remote, **plan}})

    def _stage(self, job: Job, tracker: Tracker) -> Job:
        """The wheel, the trainer's config, the data and a local model folder to S3; the local run folder's
        config.json (local paths: ``export`` reads it). The job, with the wheel's location."""
        spec, store = job.spec, self._store(job)
        prepared = self.local.prepare(spec)
        local = prepared.config.model_copy(update={"job_id": job.id})
        folder = prepared.model.folder
        inputs = {"data/train" + "".join(Path(spec.dataset).suffixes): Path(spec.dataset)}
        if spec.validation:
            inputs["data/validation" + "".join(Path(spec.validation).suffixes)] = Path(spec.validation)
        names = list(inputs)
        config = local.model_copy(update={"model": "model" if folder else local.model, "dataset": names[0],
                                          "validation_dataset": names[1] if spec.validation else None})
        if self.options.trainer:
            inputs[TRAINER_SCRIPT] = Path(self.options.trainer).expanduser()
        for name, path in inputs.items():
            self.call("staging the inputs on S3", store.upload, path, INPUT + name)
        if folder:
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
                self.call("staging the model on S3", store.upload, path,
                          INPUT + "model/" + path.relative_to(folder).as_posix())
        self.call("staging the config on S3", store.s3.put_object, Bucket=store.bucket,
                  Key=store.key(INPUT + CONFIG_NAME), Body=config.model_dump_json(indent=2).encode())
        run_dir = self.local.run_dir(job.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_NAME).write_text(local.model_dump_json(indent=2) + "\n")
        region = job.remote["region"]
        owner = {"backend": self.name, "state": f"on AWS: {job.remote['s3']} and its instance in {region} (`ftbroker "
                                                f"gc --backend ec2 --option region={region}` finds it if it still runs)"}
        (run_dir / OWNER_NAME).write_text(json.dumps(owner) + "\n")
        wheel = self._stage_wheel(job)
        tracker.remember(wheel=wheel)
        tracker.event(f"staged the inputs and ftbroker {__version__} under {job.remote['s3']}", kind="status")
        return job.model_copy(update={"remote": {**job.remote, "wheel": wheel}})

    def _stage_wheel(self, job: Job) -> str:
        """This ftbroker's wheel on S3 (under s3_uri/dist/, shared by jobs; uploaded once per content)."""
        bucket, prefix = split_s3(self.options.s3_uri or "")
        with tempfile.TemporaryDirectory() as folder:
            wheel = build_wheel(Path(folder))
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
            store = JobStore(f"s3://{join_key(bucket, prefix)}", client=self.client("s3", job.remote["region"]))
            name = join_key("dist", digest, wheel.name)
            if not self.call("looking for the wheel on S3", store.exists, name):
                self.call("staging ftbroker's wheel on S3", store.upload, wheel, name)
        return f"s3://{join_key(bucket, store.key(name))}"

    # --- acting on a job ---

    def cancel(self, job: Job) -> Update:
        """The cancel marker (the agent SIGTERMs the trainer, which checkpoints), a wait of up to ``cancel_grace_s``
        for the agent's last sync (none when no agent has beaten yet: there is nothing to save), then the instance is
        terminated."""
        store = self._store(job)
        self.call("asking the instance to stop", store.put_json, CANCEL, {"time": clock.now().isoformat()})
        job = job.model_copy(update={"remote": {**job.remote, "cancel_requested": "1"}})
        deadline = time.monotonic() + self.options.cancel_grace_s
        while time.monotonic() < deadline:
            inst = self._describe(job)
            beat = self._heartbeat(store, job)
            if inst is None or not inst.alive or beat is None or beat.get("phase") == "finished":
                break
            time.sleep(min(2.0, self.options.poll_interval_s))
        inst = self._describe(job)
        if inst is not None and inst.alive:
            self._terminate(inst.id, job.remote["region"], "ftbroker: cancelled")
        update = self.poll(job.model_copy(update={"remote": {**job.remote}}))
        if update.status is JobStatus.SUCCEEDED:  # it finished before the request landed
            return update
        return replace(update, status=JobStatus.CANCELLED, error=None,
                       remote={**update.remote, "cancel_requested": "1"})

    def result(self, job: Job) -> Result:
        """The trainer's result.json (downloaded), backend ec2, the attempts and the S3 location in ``raw``."""
        data = json.loads((self.local.run_dir(job.id) / "result.json").read_text()) \
            if (self.local.run_dir(job.id) / "result.json").is_file() else {}
        raw = {**(data.get("raw") or {}), "attempts": recorded_attempts(job), "s3": job.remote.get("s3"),
               "instance_type": job.remote.get("instance_type"), "region": job.remote.get("region"),
               "market": job.remote.get("market")}
        base = {"output_model": job.output_model, "started_at": job.started_at, "finished_at": job.finished_at,
                "error": job.error, "trained_tokens": job.trained_tokens, "estimated_cost_usd": job.estimated_cost_usd}
        written = {k: v for k, v in data.items() if k in Result.model_fields and v is not None}
        # the ledger's status, id, model name and cost are the job's (the trainer knows only its own attempt)
        return Result.model_validate({**base, **written, "id": job.id, "backend": self.name, "status": job.status,
                                      "model": job.model, "raw": raw, "actual_cost_usd": job.actual_cost_usd})

    def export(self, job: Job, fmt: str, dest: Path) -> list[Artifact]:
        """The local backend's export, on the run folder the output was downloaded into."""
        return self.local.export(job, fmt, dest)


__all__ = ["Ec2Backend", "Ec2Options"]
