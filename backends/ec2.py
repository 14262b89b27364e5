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

import base64
import hashlib
import importlib
import importlib.metadata
import json
import shlex
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from ftbroker import __version__, clock
from ftbroker.backends import gpu_routes
from ftbroker.backends.base import Capabilities, Environment, Leftover, Quote, Submission, Tracker, Update
from ftbroker.backends.ec2_agent import CANCEL, HEARTBEAT, INPUT, RUN, TRAINER_SCRIPT, JobStore, join_key, split_s3
from ftbroker.backends.ec2_pricing import CLOUD, NAME, Ec2Quote, attempt_cost, ec2_quote
from ftbroker.backends.local.backend import (
    LocalBackend,
    LocalOptions,
    TrackerOptions,
    event_lines,
    tracker_records,
    trainer_records,
)
from ftbroker.backends.local.config import CONFIG_NAME, OWNER_NAME
from ftbroker.errors import (
    BackendError,
    ExtraNotInstalledError,
    FtBrokerError,
    InputError,
    JobError,
    SpecError,
    UnknownNameError,
)
from ftbroker.jobs import Artifact, Event, Job, JobStatus, Result
from ftbroker.vocabulary import METHODS

# AWS's public SSM parameter of the GPU PyTorch deep-learning AMI (Ubuntu 24.04, x86_64), named by the rule of
# https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html; its release notes give the Python at
# /opt/pytorch/bin/python (docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-ami-gpupt29oss-ul2404-*).
# The name carries the framework version and goes stale: ``ami_parameter`` or ``ami`` override it.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"
DLAMI_PYTHON = "/opt/pytorch/bin/python"
USER_DATA_LIMIT = 16 * 1024  # bytes, before base64 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html)


TAG_MANAGED, MANAGED_BY = "ftbroker:managed-by", "ftbroker"
TAG_JOB, TAG_ATTEMPT, TAG_LEDGER = "ftbroker:job", "ftbroker:attempt", "ftbroker:ledger"
TAG_LAUNCHED, TAG_CAP, TAG_PRICE = "ftbroker:launched-at", "ftbroker:cap-minutes", "ftbroker:usd-per-hour"
TAG_ENDED = "ftbroker:terminated-by"  # why ftbroker terminated it (gc, a stall, a cancel): the next poll reads it
LIVE_STATES = ("pending", "running", "stopping", "stopped")
OVERDUE_GRACE = timedelta(minutes=10)  # past its cap, the instance's own shutdown and last sync had this long
ORPHAN_GRACE = timedelta(minutes=10)  # an instance its job never recorded may be mid-launch for this long
MIN_ATTEMPT_MINUTES = 15  # a relaunch with less of the runtime cap left could not even boot and resume
WHEEL_URL_TTL_S = 6 * 3600  # the bootstrap downloads the wheel within minutes of the launch
# The folders the ftbroker package is assembled from (pyproject's package-dir); a wheel of the running ftbroker
# is built from them, so the instance runs the very code that launched it, released or not.
PACKAGE_ROOTS = ("ftbroker", "ftbroker.backends", "ftbroker.pricing")


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


# --- what goes to the instance ---------------------------------------------------------------------------------

def build_wheel(folder: Path) -> Path:
    """A wheel of the running ftbroker (whatever installed it: a release, a checkout in editable mode) in ``folder``,
    built from its package files and its installed metadata; byte for byte the same for the same code (fixed file
    times), so it is uploaded once."""
    dist = importlib.metadata.distribution("ftbroker")
    files: dict[str, bytes] = {}
    for root in PACKAGE_ROOTS:
        for base in map(Path, importlib.import_module(root).__path__):
            for path in sorted(base.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    files.setdefault(f"{root.replace('.', '/')}/{path.relative_to(base).as_posix()}",
                                     path.read_bytes())
    info = f"ftbroker-{dist.version}.dist-info"
    # a wheel's METADATA is its installed one; from a source checkout, the egg-info's PKG-INFO (the same fields)
    files[f"{info}/METADATA"] = (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").encode()
    files[f"{info}/entry_points.txt"] = (dist.read_text("entry_points.txt") or "").encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: ftbroker\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in sorted(files.items())]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"ftbroker-{dist.version}-py3-none-any.whl"  # the wheel file name spec (PEP 427)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in sorted(files.items()):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def user_data(*, job_id: str, attempt: int, cap_minutes: int, python: str, wheel_name: str, wheel_url: str,
              s3: str, region: str, heartbeat_s: float, sync_s: float) -> str:
    """The instance's bootstrap (ec2_bootstrap.sh) for one attempt, every value shell-quoted."""
    text = (Path(__file__).with_name("ec2_bootstrap.sh")).read_text()
    values = {"VERSION": __version__, "JOB": job_id, "ATTEMPT": str(attempt), "CAP_MINUTES": str(int(cap_minutes)),
              "PYTHON": python, "WHEEL_NAME": wheel_name, "WHEEL_URL": wheel_url, "S3": s3, "REGION": region,
              "HEARTBEAT_S": f"{heartbeat_s:g}", "SYNC_S": f"{sync_s:g}"}
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value if key in ("VERSION", "JOB", "CAP_MINUTES") else shlex.quote(value))
    if len(text.encode()) > USER_DATA_LIMIT:
        raise FtBrokerError(f"ec2: the bootstrap is {len(text.encode()):,} bytes, over EC2's 16 KB user-data limit")
    return text


# --- attempts and their cost -------------------------------------------------------------------------------------

def _attempts(job: Job) -> list[dict[str, Any]]:
    return json.loads(job.remote.get("attempts") or "[]")


def _spent(attempts: Sequence[Mapping[str, Any]]) -> Decimal:
    return sum((Decimal(a["cost_usd"]) for a in attempts), Decimal(0))


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _minutes(delta: timedelta) -> str:
    minutes = max(0, round(delta.total_seconds() / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"


@dataclass(frozen=True)
class _Instance:
    """What ``describe_instances`` says of one of our instances."""

    id: str
    state: str
    instance_type: str
    tags: Mapping[str, str]
    launched_at: datetime  # ftbroker's clock at launch (the tag), so every time compared is on one clock

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> _Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        launched = _when(tags.get(TAG_LAUNCHED)) or raw["LaunchTime"]
        return cls(raw["InstanceId"], raw["State"]["Name"], raw["InstanceType"], tags, launched)

    @property
    def alive(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def cap(self) -> timedelta | None:
        return timedelta(minutes=int(self.tags[TAG_CAP])) if TAG_CAP in self.tags else None


# --- the backend -----------------------------------------------------------------------------------------------

class Ec2Backend:
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

    # --- AWS clients and errors ---

    def _session(self, region: str | None = None) -> Any:
        try:
            import boto3
        except ImportError as exc:
            raise ExtraNotInstalledError("boto3", "aws", "the ec2 backend") from exc
        return boto3.Session(profile_name=self.options.profile, region_name=region or self.options.region)

    def client(self, service: str, region: str) -> Any:
        if (service, region) not in self._clients:
            self._clients[(service, region)] = self.call(f"connecting to {service}", self._session(region).client,
                                                         service)
        return self._clients[(service, region)]

    def call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(...)`` with botocore's errors as ftbroker's (``doing`` says what for)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from ftbroker.backends.provider_calls import translate_error

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise translate_error(exc, self.name, doing) from exc

    def _store(self, job: Job) -> JobStore:
        return JobStore(job.remote["s3"], client=self.client("s3", job.remote["region"]))

    @property
    def ledger_id(self) -> str:
        """Which ledger launched an instance (its tag): gc reaps the instances of jobs unknown to ITS ledger only."""
        where = f"{socket.gethostname()}:{(self.home / 'ledger.sqlite3').resolve()}"
        return hashlib.sha256(where.encode()).hexdigest()[:16]

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

    def _launch(self, job: Job, attempt: int, cap_minutes: int, tracker: Tracker) -> dict[str, str]:
        """Run one instance for ``attempt`` (the tags and the client token name the job and the attempt)."""
        region, now = job.remote["region"], clock.now()
        ec2 = self.client("ec2", region)
        ami = self.options.ami or self._dlami(region)
        root = self.call("reading the AMI", ec2.describe_images, ImageIds=[ami])["Images"][0]["RootDeviceName"]
        bucket, key = split_s3(job.remote["wheel"])
        wheel_url = self.call("signing the wheel's URL", self.client("s3", region).generate_presigned_url,
                              "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=WHEEL_URL_TTL_S)
        script = user_data(job_id=job.id, attempt=attempt, cap_minutes=cap_minutes, python=self.options.python,
                           wheel_name=key.rsplit("/", 1)[1], wheel_url=wheel_url, s3=job.remote["s3"], region=region,
                           heartbeat_s=self.options.heartbeat_s, sync_s=self.options.sync_s)
        tags = {"Name": f"ftbroker {job.id} #{attempt}", TAG_MANAGED: MANAGED_BY, TAG_JOB: job.id,
                TAG_ATTEMPT: str(attempt), TAG_LEDGER: self.ledger_id, TAG_LAUNCHED: now.isoformat(),
                TAG_CAP: str(cap_minutes), TAG_PRICE: job.remote["usd_per_hour"]}
        request = self._run_request(job, attempt, ami, root, script, tags)
        reservation = self.call("launching the instance", ec2.run_instances, **request)
        instance_id = reservation["Instances"][0]["InstanceId"]
        remote = {"instance_id": instance_id, "attempt": str(attempt), "launched_at": now.isoformat(),
                  "attempt_cap_minutes": str(cap_minutes), "ami": ami}
        tracker.remember(**remote)
        tracker.event(f"launched {instance_id} ({job.remote['instance_type']} {job.remote['market']} in {region}, "
                      f"attempt {attempt}, runtime cap {cap_minutes} min)", kind="status",
                      data={"instance_id": instance_id, "attempt": attempt, "ami": ami})
        return remote

    def _run_request(self, job: Job, attempt: int, ami: str, root: str, script: str,
                     tags: Mapping[str, str]) -> dict[str, Any]:
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        request: dict[str, Any] = {
            "ImageId": ami, "InstanceType": job.remote["instance_type"], "MinCount": 1, "MaxCount": 1,
            "UserData": script, "InstanceInitiatedShutdownBehavior": "terminate",
            "ClientToken": f"{job.id}-a{attempt}",  # at most 64 characters; the same on every retry of this launch
            "BlockDeviceMappings": [{"DeviceName": root, "Ebs": {"VolumeSize": self.options.disk_gib,
                                                                  "VolumeType": "gp3", "DeleteOnTermination": True}}],
            "MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list},
                                  {"ResourceType": "volume", "Tags": tag_list}]}
        if job.remote["market"] == "spot":  # one-time + terminate: a reclaimed instance is gone, never stopped
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        profile = self.options.iam_instance_profile
        if profile:
            request["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        if self.options.subnet_id:
            request["SubnetId"] = self.options.subnet_id
        if self.options.security_group_ids:
            request["SecurityGroupIds"] = list(self.options.security_group_ids)
        return request

    def _dlami(self, region: str) -> str:
        ssm = self.client("ssm", region)
        found = self.call(f"looking up the AMI ({self.options.ami_parameter})", ssm.get_parameter,
                          Name=self.options.ami_parameter)
        return found["Parameter"]["Value"]

    # --- finding instances ---

    def _find(self, job: Job, attempt: int) -> _Instance | None:
        """The instance launched for this job and attempt, in any state (moto ignores ClientToken idempotency and
        the client-token filter is not everywhere: the tags are what is looked for)."""
        ec2 = self.client("ec2", job.remote["region"])
        found = self._instances(ec2, [{"Name": f"tag:{TAG_JOB}", "Values": [job.id]},
                                      {"Name": f"tag:{TAG_ATTEMPT}", "Values": [str(attempt)]}])
        alive = [i for i in found if i.alive]
        return (alive or found or [None])[0]

    def _describe(self, job: Job) -> _Instance | None:
        if not job.remote.get("instance_id"):
            return self._find(job, int(job.remote.get("attempt") or 1)) if job.remote.get("region") else None
        ec2 = self.client("ec2", job.remote["region"])
        found = self._instances(ec2, [{"Name": "instance-id", "Values": [job.remote["instance_id"]]}])
        return found[0] if found else None

    def _instances(self, ec2: Any, filters: list[dict[str, Any]]) -> list[_Instance]:
        pages = self.call("listing instances", lambda: list(
            ec2.get_paginator("describe_instances").paginate(Filters=filters)))
        return [_Instance.of(raw) for page in pages for r in page["Reservations"] for raw in r["Instances"]]

    def _handles(self, inst: _Instance) -> dict[str, str]:
        return {"instance_id": inst.id, "attempt": inst.tags.get(TAG_ATTEMPT, "1"),
                "launched_at": inst.launched_at.isoformat(), "attempt_cap_minutes": inst.tags.get(TAG_CAP, "")}

    def _terminate(self, inst_id: str, region: str, why: str) -> None:
        ec2 = self.client("ec2", region)
        self.call("tagging the instance", ec2.create_tags, Resources=[inst_id],
                  Tags=[{"Key": TAG_ENDED, "Value": why[:256]}])
        self.call("terminating the instance", ec2.terminate_instances, InstanceIds=[inst_id])

    # --- following ---

    def poll(self, job: Job) -> Update:
        """Heartbeat, new events and the instance's state; the job's status from them (see the module docstring)."""
        store, now = self._store(job), clock.now()
        inst = self._describe(job)
        beat = self._heartbeat(store, job)
        raw, cursor = self._new_events(store, job)
        found = {**trainer_records(raw, job.progress), "cursor": str(cursor)}
        if beat is not None and beat.get("phase") == "finished":
            return self._finished(job, beat, inst, found)
        if inst is None or not inst.alive:
            return self._gone(job, beat, inst, found)
        why = self._stalled_or_overdue(job, beat, inst, now)
        if why is not None:
            self._terminate(inst.id, job.remote["region"], f"ftbroker: {why}")
            ended = self._close_attempt(job, now, f"terminated: {why}")
            return Update(status=JobStatus.FAILED, error=f"instance {inst.id} {why}; it was terminated",
                          **ended, **found)
        running = attempt_cost((now - inst.launched_at).total_seconds(), Decimal(job.remote["usd_per_hour"]))
        phase = beat.get("phase") if beat else "booting"
        return Update(status=JobStatus.RUNNING, detail=phase, actual_cost_usd=_spent(_attempts(job)) + running,
                      next_poll_s=self.options.poll_interval_s, remote=tracker_records(raw), **found)

    def _heartbeat(self, store: JobStore, job: Job) -> dict[str, Any] | None:
        """This attempt's last heartbeat (an earlier attempt's does not count)."""
        try:
            body = self.call("reading the heartbeat", store.s3.get_object, Bucket=store.bucket,
                             Key=store.key(HEARTBEAT))["Body"].read()
        except BackendError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise
        beat = json.loads(body)
        return beat if str(beat.get("attempt")) == job.remote.get("attempt", "1") else None

    def _new_events(self, store: JobStore, job: Job) -> tuple[list[dict[str, Any]], int]:
        offset = int(job.cursor or 0)
        try:
            chunk = self.call("reading the events", store.s3.get_object, Bucket=store.bucket,
                              Key=store.key(RUN + "events.jsonl"), Range=f"bytes={offset}-")["Body"].read()
        except BackendError as exc:
            if getattr(exc, "status_code", None) in (404, 416):  # none yet, or nothing new
                return [], offset
            raise
        events, used = event_lines(chunk)
        return events, offset + used

    def _stalled_or_overdue(self, job: Job, beat: Mapping[str, Any] | None, inst: _Instance,
                            now: datetime) -> str | None:
        cap = timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or job.remote["cap_minutes"]))
        ran = now - inst.launched_at
        if ran > cap + OVERDUE_GRACE:
            return f"is overdue: it ran {_minutes(ran)}, past its runtime cap of {_minutes(cap)}"
        if beat is not None:
            silent = now - datetime.fromisoformat(beat["time"])
            if silent > timedelta(minutes=self.options.stall_minutes):
                return (f"stalled: no heartbeat for {_minutes(silent)} (allowed: {self.options.stall_minutes:g} min; "
                        f"the last at {beat['time']}, phase {beat.get('phase')})")
        elif ran > timedelta(minutes=self.options.boot_minutes):
            return (f"stalled: no heartbeat {_minutes(ran)} after launch (boot and install allowance "
                    f"{self.options.boot_minutes:g} min; its console output says why)")
        return None

    def _close_attempt(self, job: Job, ended: datetime, how: str) -> dict[str, Any]:
        """The current attempt, ended at ``ended``, added to the record: Update fields (remote, actual cost)."""
        launched = _when(job.remote.get("launched_at")) or ended
        seconds = max(0.0, (ended - launched).total_seconds())
        cost = attempt_cost(seconds, Decimal(job.remote["usd_per_hour"]))
        record = {"attempt": int(job.remote.get("attempt") or 1), "instance_id": job.remote.get("instance_id", ""),
                  "market": job.remote["market"], "usd_per_hour": job.remote["usd_per_hour"],
                  "launched_at": launched.isoformat(), "ended_at": ended.isoformat(), "runtime_s": round(seconds, 1),
                  "cost_usd": str(cost), "end": how}
        attempts = [a for a in _attempts(job) if a["attempt"] != record["attempt"]] + [record]
        return {"remote": {"attempts": json.dumps(attempts)}, "actual_cost_usd": _spent(attempts)}

    def _ended_at(self, job: Job, beat: Mapping[str, Any] | None, now: datetime) -> datetime:
        """When an instance that ended on its own stopped billing: its final heartbeat; else within one heartbeat
        interval of the last (it was seen alive then); else, with none, at its cap (or now, if sooner)."""
        launched = _when(job.remote.get("launched_at")) or now
        if beat is not None:
            seen = datetime.fromisoformat(beat["time"])
            end = seen if beat.get("phase") == "finished" else seen + timedelta(seconds=self.options.heartbeat_s)
        else:
            end = launched + timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or 0))
        return max(launched, min(end, now))

    def _finished(self, job: Job, beat: Mapping[str, Any], inst: _Instance | None, found: dict[str, Any]) -> Update:
        """The agent's last word: the trainer's outcome, after the last sync."""
        now = clock.now()
        if inst is not None and inst.alive:  # it powers itself off; no need to pay for that minute
            self._terminate(inst.id, job.remote["region"], "ftbroker: the run finished")
        outcome = beat.get("outcome")
        cancelled = bool(job.remote.get("cancel_requested"))
        if outcome == "cancelled" and not cancelled or outcome not in ("done", "error", "cancelled"):
            why = ("a spot interruption notice came; the trainer checkpointed" if beat.get("interrupted") else
                   "the trainer was stopped without a cancel request (the instance shutting down?)"
                   if outcome == "cancelled" else "the agent ended without the trainer's final event")
            return self._interrupted(job, beat, found, f"instance {job.remote.get('instance_id')}: {why}")
        ended = self._close_attempt(job, self._ended_at(job, beat, now), f"finished: {outcome}")
        self._download(job, beat)
        result = json.loads((self.local.run_dir(job.id) / "result.json").read_text()) \
            if (self.local.run_dir(job.id) / "result.json").is_file() else {}
        status = {"done": JobStatus.SUCCEEDED, "error": JobStatus.FAILED, "cancelled": JobStatus.CANCELLED}[outcome]
        return Update(status=status, error=str(beat.get("message") or "the trainer failed")
                      if status is JobStatus.FAILED else None, output_model=result.get("output_model"),
                      trained_tokens=result.get("trained_tokens"), **ended, **found)

    def _gone(self, job: Job, beat: Mapping[str, Any] | None, inst: _Instance | None,
              found: dict[str, Any]) -> Update:
        """The instance ended without the agent's final heartbeat."""
        now = clock.now()
        state = f"{inst.state}" if inst is not None else "no longer listed"
        if job.remote.get("cancel_requested"):
            return Update(status=JobStatus.CANCELLED, **self._close_attempt(job, now, "cancelled"), **found)
        ended_by = inst.tags.get(TAG_ENDED) if inst is not None else None
        if ended_by:
            ended = self._close_attempt(job, self._ended_at(job, beat, now), f"terminated: {ended_by}")
            return Update(status=JobStatus.FAILED, error=f"instance {inst.id} was terminated by {ended_by}",
                          **ended, **found)
        launched = _when(job.remote.get("launched_at")) or now
        cap = timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or 0))
        if now - launched >= cap:
            ended = self._close_attempt(job, min(now, launched + cap), "runtime cap")
            return Update(status=JobStatus.FAILED, error=f"stopped by its runtime cap ({_minutes(cap)}) before the "
                          "run finished; `ftbroker resume` continues from the last checkpoint in S3 with what is "
                          "left of the cap", **ended, **found)
        return self._interrupted(job, beat, found, f"instance {job.remote.get('instance_id')} {state} before the "
                                                   "run finished")

    def _interrupted(self, job: Job, beat: Mapping[str, Any] | None, found: dict[str, Any], why: str) -> Update:
        """A spot instance gone early is relaunched (bounded, within the cap left) and resumes from the last
        checkpoint; anything else fails, resumable."""
        now = clock.now()
        ended = self._close_attempt(job, self._ended_at(job, beat, now), why)
        job = job.model_copy(update={"remote": {**job.remote, **ended["remote"]}})
        attempt = int(job.remote.get("attempt") or 1)
        left = self._cap_left(job)
        if job.remote["market"] != "spot" or attempt >= self.options.max_attempts or left < MIN_ATTEMPT_MINUTES:
            limit = ("an on-demand instance is not relaunched" if job.remote["market"] != "spot" else
                     f"{attempt} of {self.options.max_attempts} attempts used" if attempt >= self.options.max_attempts
                     else f"{left} min of the runtime cap left")
            return Update(status=JobStatus.FAILED, error=f"{why} ({limit}); `ftbroker resume {job.id}` continues from "
                          "the last checkpoint in S3", **ended, **found)
        tracker = _Collected()
        next_job = job.model_copy(update={"remote": {**job.remote, "attempt": str(attempt + 1)}})
        relaunched = self._find(next_job, attempt + 1)
        remote = self._handles(relaunched) if relaunched else self._launch(next_job, attempt + 1, left, tracker)
        message = (f"{why}: relaunched as {remote['instance_id']} (attempt {attempt + 1} of "
                   f"{self.options.max_attempts}, {left} min of the runtime cap left); it resumes from the last "
                   "checkpoint in S3")
        events = [*found.pop("events"), Event(time=now, kind="warning", level="warning", message=message,
                                              data={"attempt": attempt + 1})]
        return Update(status=JobStatus.RUNNING, detail=f"attempt {attempt + 1}", events=events,
                      remote={**ended["remote"], **remote}, actual_cost_usd=ended["actual_cost_usd"],
                      next_poll_s=self.options.poll_interval_s, **found)

    def _cap_left(self, job: Job) -> int:
        used = sum(a["runtime_s"] for a in _attempts(job)) / 60
        return int(int(job.remote["cap_minutes"]) - used)

    def _download(self, job: Job, beat: Mapping[str, Any]) -> None:
        """The run folder from S3 (checkpoints stay there) into the local one; the trainer's paths made local."""
        run_dir = self.local.run_dir(job.id)
        store = self._store(job)
        self.call("downloading the results", store.download, RUN.rstrip("/"), run_dir, skip=("checkpoints/",))
        result = run_dir / "result.json"
        if result.is_file():
            remote_dir = str(beat.get("run_dir") or "")
            text = result.read_text()
            checkpoints = f"s3://{join_key(store.bucket, store.key(RUN + 'checkpoints'))}"
            text = text.replace(json.dumps(remote_dir + "/checkpoints")[1:-1], checkpoints)
            result.write_text(text.replace(json.dumps(remote_dir)[1:-1], json.dumps(str(run_dir))[1:-1]))

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
        raw = {**(data.get("raw") or {}), "attempts": _attempts(job), "s3": job.remote.get("s3"),
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

    # --- gc ---

    @property
    def collect_scope(self) -> tuple[str, ...]:
        return (self.options.profile or "", self.options.region or self._session().region_name or "us-east-1")

    def leftovers(self, job: Callable[[str], Job | None]) -> list[Leftover]:
        """Every live ftbroker instance in this region: it goes when its job is finished, unknown to this ledger,
        or past its cap; another ledger's instance goes only past its cap."""
        region = self.collect_scope[1]
        ec2 = self.client("ec2", region)
        found = self._instances(ec2, [{"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_BY]},
                                      {"Name": "instance-state-name", "Values": list(LIVE_STATES)}])
        now = clock.now()
        return [self._leftover(inst, job(inst.tags[TAG_JOB]) if TAG_JOB in inst.tags else None, region, now)
                for inst in found]

    def _leftover(self, inst: _Instance, job: Job | None, region: str, now: datetime) -> Leftover:
        ran = now - inst.launched_at
        price = Decimal(inst.tags[TAG_PRICE]) if TAG_PRICE in inst.tags else None
        reason, note = self._why_collect(inst, job, ran)
        return Leftover(backend=self.name, resource=inst.id, job_id=inst.tags.get(TAG_JOB), reason=reason, note=note,
                        description=f"{inst.instance_type} in {region}, {inst.state} {_minutes(ran)}",
                        cost_usd=attempt_cost(ran.total_seconds(), price) if price is not None else None,
                        handle={"region": region})

    def _why_collect(self, inst: _Instance, job: Job | None, ran: timedelta) -> tuple[str | None, str]:
        cap = inst.cap
        if cap is not None and ran > cap + OVERDUE_GRACE:
            return f"past its runtime cap: ran {_minutes(ran)}, cap {_minutes(cap)}", ""
        job_id = inst.tags.get(TAG_JOB, "?")
        if inst.tags.get(TAG_LEDGER) != self.ledger_id:
            return None, "another ledger's job (only its cap applies here)"
        if job is None:
            return f"its job {job_id} is not in the ledger", ""
        if job.status.terminal:
            return f"its job {job.id} is {job.status.value}", ""
        if job.remote.get("instance_id") != inst.id:
            if ran < ORPHAN_GRACE:
                return None, f"launched {_minutes(ran)} ago: job {job.id} may still be recording it"
            return f"job {job.id} never recorded it (the launching process died, or a later attempt replaced it)", ""
        return None, f"job {job.id} is {job.status.value} on it"

    def collect(self, leftover: Leftover) -> str:
        self._terminate(leftover.resource, leftover.handle["region"], f"ftbroker gc: {leftover.reason}")
        return "terminated"


class _Collected:
    """A Tracker for a relaunch from ``poll``: what it records reaches the ledger in the poll's Update instead."""

    def remember(self, **remote: str) -> None:
        pass

    def event(self, message: str, **kwargs: Any) -> None:
        pass


__all__ = ["Ec2Backend", "Ec2Options", "build_wheel", "user_data"]
