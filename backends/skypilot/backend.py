"""The SkyPilot backend: the local trainer on rented cloud GPUs, launched and looked after by SkyPilot.

``ftbroker run --backend skypilot --option instance_type=gpu_1x_h100_sxm5 --option bucket=s3://b/ftbroker`` runs
the same trainer as ``--backend local`` (``python -m ftbroker.backends.local.train RUN_DIR``, this very ftbroker
installed on the cluster from a staged wheel) on a catalog instance, priced as ``ftbroker plan`` prices it
(``gpu_routes.instance_quote``; the routes it contributes to a plan are the catalog instances of ``CLOUDS``). The
task is built in ``task.py``; every SkyPilot call goes through ``adapter.py``; the poll is ``follow.py``'s.

* **On-demand**: ``sky.launch`` of a cluster named after the job, with ``down=True`` and an autostop, so it goes
  once its job ends, whoever is watching; the broker tears it down itself when it sees the job end, and after a
  failed launch (SkyPilot keeps a cluster whose provisioning or setup failed, "for debugging").
* **Spot**: a SkyPilot managed job (``sky.jobs.launch``), which SkyPilot relaunches after a preemption; the run
  resumes from the last checkpoint in the bucket. Each recovery is recorded, with its runtime and cost.
* **Several GPUs or nodes**: the trainer under ``accelerate launch`` (DDP for LoRA / QLoRA, FSDP for full
  fine-tuning) with SkyPilot's node count, rank and head address.
* **Hard runtime cap** (``max_hours``, else the estimate's high end x ``CAP_FACTOR``): ``timeout`` around the
  trainer on the node, summed over attempts, and this backend's poll, which tears down a run past it.
* **Exactly once**: the cluster and the managed job are named after the job id, the launch request's id is in the
  ledger before SkyPilot is asked for anything else, and a launch looks for all three first.
* **Money**: the actual cost is SkyPilot's cost report for a cluster, runtime x price for a managed job (its
  runtime, every attempt together, excludes provisioning).

Checkpoints and outputs live in the job's folder in ``bucket``; ``result`` downloads the adapter (or model) into
the local run folder, where ``export`` finds it as for a local job.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from ftbroker import clock
from ftbroker.backends import gpu_routes
from ftbroker.backends.base import Capabilities, Environment, Leftover, Quote, Submission, Tracker, Update, Verdict
from ftbroker.backends.gpu_routes import DEFAULT_INTERCONNECT_GBPS, instance_quote
from ftbroker.backends.local.backend import LocalBackend, LocalOptions, TrackerOptions
from ftbroker.backends.local.config import CONFIG_NAME
from ftbroker.backends.local.outputs import FINAL_KINDS, RESULT_NAME
from ftbroker.backends.local.process import accelerate_config
from ftbroker.backends.local.results import run_result
from ftbroker.backends.skypilot import adapter as adapter_module
from ftbroker.backends.skypilot.follow import POLL_CAP_SLACK_S, SkyPilotFollowing
from ftbroker.backends.skypilot.runs import (JOB_ID, MANAGED_JOB_STATUS, JobLookup, runtime_cost, status_of,
                                             trainer_events, why_left_over)
from ftbroker.backends.skypilot.task import (
    ACCELERATE_CONFIG,
    CANCEL_GRACE_S,
    LABEL,
    LEDGER_LABEL,
    SETUP_MAX_S,
    Launch,
    Placement,
    task_config,
    unsupported,
)
from ftbroker.backends.wheel import build_wheel
from ftbroker.errors import InputError, JobError, UnknownNameError
from ftbroker.estimate.measured import Corrections
from ftbroker.jobs import Artifact, Job, JobStatus, Result
from ftbroker.pricing.catalog import CloudInstance
from ftbroker.routes import ModelRequest, Note
from ftbroker.spec import JobSpec

CAP_FACTOR = 2.0  # the hard runtime cap, by default: the estimate's high end (reclaims included) x this
MIN_CAP_HOURS = 0.5
CANCEL_CHECK_S = 0.5  # how often a cancel looks for the trainer's last event
STORES = ("s3://", "gs://", "r2://", "https://", "cos://", "oci://", "nebius://", "cw://")  # sky.cloud_stores


# The catalog's clouds this backend runs: all but AWS (the ec2 backend's) and RunPod and Vast, where SkyPilot mounts
# no bucket (task.NO_BUCKET_MOUNT): a plan still shows their routes, as no backend's.
CLOUDS = frozenset({"gcp", "azure", "lambda", "nebius", "cudo", "paperspace", "fluidstack"})


def route_options(instance: CloudInstance, market: str, region: str) -> dict[str, Any]:
    """A plan route's backend options: the instance (its cloud too: a type may be in several), market, region."""
    return {"instance_type": instance.instance_type, "cloud": instance.cloud, "region": region or None,
            "spot": market == "spot"}


def adapter() -> adapter_module.SkyAdapter:
    """The SkyPilot adapter every call goes through (tests put a fake in its place)."""
    return adapter_module.SkyAdapter()


class SkyPilotOptions(TrackerOptions):
    """``backend_options`` of the SkyPilot backend: the route (from ``ftbroker plan``), where the run folder goes,
    and the trainer's experiment trackers (report_to: give a tracking_uri the nodes reach, e.g. an MLflow server)."""

    instance_type: str = Field(description="the catalog instance to run on (ftbroker plan lists them)")
    bucket: str = Field(description="a bucket folder for the run (checkpoints, outputs): s3://, gs://, r2://, ...")
    cloud: str | None = Field(None, description="the instance's cloud, where the type is not unique")
    region: str | None = Field(None, description="default: the catalog's cheapest region for the market")
    spot: bool = Field(False, description="spot instances, as a managed job SkyPilot recovers after a preemption")
    nodes: int = Field(1, ge=1, le=64, description="instances training one run together (multi-node)")
    max_hours: float | None = Field(None, gt=0, description="hard runtime cap; default: the estimate's high end x 2")
    idle_minutes: int = Field(5, ge=0, le=1440, description="an on-demand cluster goes this long after its job")
    disk_gb: int | None = Field(None, ge=50, description="disk per node; default: from the model's size")
    image: str | None = Field(None, description="image_id for SkyPilot; default: its CUDA image for GPUs")
    interconnect_gbps: float = Field(DEFAULT_INTERCONNECT_GBPS, gt=0, description="network between nodes, Gbit/s")
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="multi-GPU strategy; auto: DDP for LoRA/QLoRA, FSDP for full fine-tuning")
    trainer: str | None = Field(None, description="your own recipe script speaking the trainer contract")
    merge: bool = Field(False, description="also write a merged model (LoRA / QLoRA) after training")

    @field_validator("bucket")
    @classmethod
    def _a_bucket(cls, value: str) -> str:
        if not value.startswith(STORES) or len(value.split("://", 1)[1].strip("/")) == 0:
            raise ValueError(f"{value!r} is not a bucket URI: give one SkyPilot can mount, e.g. s3://BUCKET/PREFIX "
                             "or gs://BUCKET/PREFIX")
        return value.rstrip("/")


class SkyPilotBackend(SkyPilotFollowing):
    """The local trainer on cloud GPUs through SkyPilot."""

    name = "skypilot"
    capabilities = Capabilities(  # what the trainer does is the local trainer's
        methods=LocalBackend.capabilities.methods,
        data_formats=LocalBackend.capabilities.data_formats,
        unsupported=LocalBackend.capabilities.unsupported,
        managed=False,  # not a managed fine-tuning API: the local trainer, on machines rented by the hour
        poll_interval_s=30.0,
        requires={"sky": "skypilot"},
        clouds=CLOUDS,
    )
    Options = SkyPilotOptions

    # --- its routes in a plan (ftbroker.routes.RouteSource): the claimed clouds' instances ---

    token_needs = staticmethod(gpu_routes.token_needs)  # each model's own tokenizer, as for every GPU route

    @classmethod
    def routes(cls, context: Any) -> list[Any]:
        mine = [i for i in context.catalog.instances if i.cloud in cls.capabilities.clouds]
        return gpu_routes.cloud_gpu_routes(context, mine, backend=cls.name, options=route_options)

    @classmethod
    def plan_notes(cls, context: Any) -> list[str]:
        notes = gpu_routes.gpu_notes(context, cloud=True)
        if context.report.format not in cls.capabilities.data_formats or not gpu_routes.gpu_jobs(context):
            return notes  # no GPU route at all: the notes say why
        bucket = Note(f"{cls.name} routes run through SkyPilot (`sky check` says which clouds your credentials "
                      "enable) and need a bucket for checkpoints and outputs (the backend option bucket)", "bucket")
        return [*notes, bucket]

    def __init__(self, options: SkyPilotOptions, *, home: Path):
        self.options = options
        self.runs = home / "runs"
        self.local = LocalBackend(LocalOptions(distributed=options.distributed, merge=options.merge,
                                               **options.trackers()), home=home)
        self._reports: dict[str, Any] = {}  # spec -> its DatasetReport (validate, for submit's quote)

    # --- before submission ---

    def validate(self, spec: JobSpec):
        """The local trainer's checks, with the tokens counted as ``ftbroker plan`` counts them."""
        report = self.local.validate(spec)
        self._reports[spec.model_dump_json()] = report
        return report

    def quote(self, spec: JobSpec, dataset, env: Environment) -> Quote:
        """The route's quote (``gpu_routes.instance_quote``: the figures ``ftbroker plan`` gives the route), with the
        hard runtime cap and what it bounds the spend to."""
        catalog = env.catalog
        place = self.placement(catalog)
        why_not = unsupported(place)
        if why_not:
            return Quote(backend=self.name, verdict=Verdict.ROUTE_UNAVAILABLE, reason=why_not, hardware=place.hardware)
        job = self.local.prepare(spec, catalog)
        arch = job.model.arch
        stats = next(iter(getattr(dataset, "tokens", {}).values()), None)
        if arch is None or stats is None or not stats.length_counts:
            why = "the model's shape is unknown" if arch is None else "the dataset's token lengths are unknown"
            return Quote(backend=self.name, hardware=place.hardware, warnings=(f"no estimate: {why}",))
        quote = instance_quote(job.config, job.model, stats, self.local.validation_stats(spec),
                               place.instance, place.market, catalog.gpus[place.instance.gpu], backend=self.name,
                               today=env.today, nodes=place.nodes, interconnect_gbps=place.interconnect_gbps,
                               corrections=Corrections() if self.options.trainer else env.corrections)
        quote = replace(quote, hardware=place.hardware)
        if quote.verdict is not Verdict.OK:
            return quote
        cap_s = self.cap_seconds(quote)
        most = place.price * place.nodes * Decimal(cap_s + SETUP_MAX_S) / 3600
        source = ("--option max_hours" if self.options.max_hours
                  else f"the estimate's high end x {CAP_FACTOR:g}; --option max_hours=H")
        note = f"hard runtime cap {cap_s / 3600:.2f} h ({source}): at most ${most:.2f} with set-up"
        return replace(quote, warnings=(*quote.warnings, note), breakdown={**quote.breakdown, "max_seconds": cap_s})

    def placement(self, catalog: Any) -> Placement:
        """The catalog instance, market, region and nodes the options name."""
        o = self.options
        found = [i for i in catalog.instances if i.instance_type == o.instance_type and o.cloud in (None, i.cloud)]
        if not found:
            names = sorted({i.instance_type for i in catalog.instances if o.cloud in (None, i.cloud)})
            raise UnknownNameError("instance type", o.instance_type, names,
                                   hint="ftbroker plan lists the instances with their prices")
        if len(found) > 1:
            raise InputError(f"instance type {o.instance_type} is in several clouds "
                             f"({', '.join(i.cloud for i in found)}): add --option cloud=NAME")
        place = Placement(found[0], "spot" if o.spot else "on-demand", o.nodes, o.interconnect_gbps)
        if o.region and o.region != place.region:
            moved = f"priced at the catalog's cheapest region ({place.region}), run in {o.region}"
            instance = replace(place.instance, region=o.region, spot_region=o.region,
                               note="; ".join(filter(None, [place.instance.note, moved])))
            place = replace(place, instance=instance)
        return place

    def cap_seconds(self, quote: Quote) -> int:
        """The trainer's hard runtime cap: ``max_hours``, else the estimate's high end (spot reclaims included) x
        CAP_FACTOR. No estimate and no ``max_hours``: refused (a paid GPU is never started without a cap)."""
        if self.options.max_hours:
            return math.ceil(self.options.max_hours * 3600)
        high = (quote.breakdown.get("hours") or {}).get("high")
        if high is None:
            raise InputError(f"{self.name}: no runtime estimate for this job ({'; '.join(quote.warnings) or 'none'}),"
                             " so no runtime cap can be set: give one with --option max_hours=H")
        return math.ceil(max(MIN_CAP_HOURS, high * CAP_FACTOR) * 3600)

    # --- submission ---

    def submit(self, job: Job, tracker: Tracker) -> Submission:
        """Launch, exactly once: a launch request in flight, a cluster or a managed job named after the job is
        reused; otherwise the run is staged, the handles recorded, then SkyPilot asked."""
        sky = adapter()
        found = self._find(sky, job)
        if found is not None:
            return found
        return self._launch(sky, job, tracker)

    def resume(self, job: Job, tracker: Tracker) -> Submission:
        """Launch again (the run resumes from the bucket's last checkpoint); the cost so far is kept."""
        sky = adapter()
        if self._active(sky, job):
            raise JobError(f"job {job.id} is still running on SkyPilot")
        spent = Decimal(job.remote.get("spent_usd") or 0) + (job.actual_cost_usd or 0)
        tracker.remember(spent_usd=str(spent), sky_job_id="", launch_request="", recoveries="0")
        fresh = job.model_copy(update={"remote": {**job.remote, "sky_job_id": "", "launch_request": ""}})
        return self._launch(sky, fresh, tracker, staged=True)

    def _find(self, sky: adapter_module.SkyAdapter, job: Job) -> Submission | None:
        request = job.remote.get("launch_request")
        if request:
            state = sky.request(request)
            if state is not None and state.status not in adapter_module.FINISHED_REQUEST:
                return Submission(remote={}, status=JobStatus.QUEUED, detail="launching", reused=True)
        in_flight = sky.launching(job.id)  # launched, but the ledger never learnt the request (a crash)
        if in_flight:
            return Submission(remote={"launch_request": in_flight[0]}, status=JobStatus.QUEUED, detail="launching",
                              reused=True)
        if self.options.spot:
            jobs = sky.managed_jobs(job.id)
            if jobs:
                return Submission(remote={"sky_job_id": str(jobs[0].job_id)}, reused=True,
                                  status=status_of(jobs[0].status, MANAGED_JOB_STATUS), detail=jobs[0].status.lower())
        elif sky.clusters([job.id]):
            return Submission(remote={}, status=JobStatus.QUEUED, detail="cluster found", reused=True)
        return None

    def _active(self, sky: adapter_module.SkyAdapter, job: Job) -> bool:
        if self.options.spot:
            return any(j.status not in adapter_module.TERMINAL_MANAGED for j in sky.managed_jobs(job.id))
        return bool(sky.clusters([job.id]))

    def _launch(self, sky: adapter_module.SkyAdapter, job: Job, tracker: Tracker, *, staged: bool = False
                ) -> Submission:
        launch = self._stage(job, reuse=staged)
        remote = {"mode": "managed" if self.options.spot else "cluster", "run_uri": launch.run_uri,
                  "usd_per_hour": str(launch.place.price), "nodes": str(launch.place.nodes),
                  "max_seconds": str(launch.max_seconds), "cancel_requested": ""}
        task = task_config(launch)
        gpus = sky.gpus(task)
        if not gpus or sum(gpus.values()) != launch.place.instance.gpu_count:
            raise InputError(f"SkyPilot would start {launch.place.instance.cloud} {launch.place.instance.instance_type}"
                             f" with {gpus or 'no GPUs'}, not the catalog's {launch.place.instance.gpu_count}x "
                             f"{launch.place.instance.gpu}: it cannot run this route; pick another instance")
        tracker.remember(**remote)
        if self.options.spot:
            request = sky.jobs_launch(task, name=launch.name)
        else:
            request = sky.launch(task, cluster=launch.name, idle_minutes=self.options.idle_minutes, down=True)
        tracker.remember(launch_request=request)
        tracker.event(f"SkyPilot {'managed job' if self.options.spot else 'cluster'} {launch.name} launching on "
                      f"{launch.place.hardware} (request {request})", kind="status",
                      data={"infra": task["resources"]["infra"], "max_seconds": launch.max_seconds})
        return Submission(remote={**remote, "launch_request": request}, status=JobStatus.QUEUED, detail="launching")

    def _stage(self, job: Job, *, reuse: bool) -> Launch:
        """The local stage folder (inputs, this ftbroker's wheel, accelerate config) and the task's inputs."""
        from ftbroker.pricing.catalog import load_catalog

        spec, catalog = job.spec, load_catalog()
        report = self._reports.get(spec.model_dump_json()) or self.validate(spec)
        env = Environment(today=clock.today(), load_catalog=lambda: catalog)
        quote = self.quote(spec, report, env)
        place = self.placement(catalog)
        stage = self.run_dir(job.id) / "stage"
        if not (reuse and stage.is_dir()):
            self._write_stage(stage, job, place, catalog)
        launch = Launch(job_id=job.id, place=place, stage_dir=str(stage), run_uri=f"{self.options.bucket}/{job.id}",
                        wheel=next(stage.glob("ftbroker-*.whl")).name, max_seconds=self.cap_seconds(quote),
                        disk_gb=self.options.disk_gb or _disk_gb(self.local.prepare(spec, catalog).model),
                        accelerate=place.ranks > 1, image=self.options.image,
                        trainer_script="trainer.py" if self.options.trainer else None,
                        secrets={k: os.environ[k] for k in ("HF_TOKEN",) if os.environ.get(k)}, ledger=self.ledger_id)
        shown = {**task_config(launch), "secrets": {k: "(set)" for k in launch.secrets}}
        (self.run_dir(job.id) / "task.yaml").write_text(yaml.safe_dump(shown, sort_keys=False))
        return launch

    def _write_stage(self, stage: Path, job: Job, place: Placement, catalog: Any) -> None:
        spec = job.spec
        shutil.rmtree(stage, ignore_errors=True)
        inputs = stage / "inputs"
        inputs.mkdir(parents=True)
        shutil.copyfile(spec.dataset, inputs / "data.jsonl")
        if spec.validation:
            shutil.copyfile(spec.validation, inputs / "validation.jsonl")
        prepared = self.local.prepare(spec, catalog)
        if prepared.model.folder:  # a local model folder travels with the job
            shutil.copytree(prepared.model.folder, inputs / "model")
        config = prepared.config.model_copy(update={
            "job_id": job.id, "model": "model" if prepared.model.folder else prepared.config.model,
            "dataset": "data.jsonl", "validation_dataset": "validation.jsonl" if spec.validation else None})
        (inputs / CONFIG_NAME).write_text(config.model_dump_json(indent=2, exclude_none=True) + "\n")
        build_wheel(stage)
        if place.ranks > 1:
            (stage / ACCELERATE_CONFIG).write_text(yaml.safe_dump(accelerate_config(
                config, place.instance.gpu_count, self.options.distributed, machines=place.nodes), sort_keys=False))
        if self.options.trainer:
            shutil.copyfile(Path(self.options.trainer).expanduser(), stage / "trainer.py")

    def run_dir(self, job_id: str) -> Path:
        return self.runs / job_id

    # --- following ---

    def poll(self, job: Job) -> Update:
        """The launch request until it has a job, then the cluster's job or the managed job: status, the trainer's
        events from SkyPilot's logs, recoveries, cost; the runtime cap enforced; the outputs fetched at the end."""
        sky = adapter()
        found: dict[str, str] = {}
        if not job.remote.get("sky_job_id"):
            launched = self._launch_outcome(sky, job)
            if isinstance(launched, Update):
                return launched
            found = {"sky_job_id": launched}
            job = job.model_copy(update={"remote": {**job.remote, **found}})
        update = self._poll_managed(sky, job) if self._managed(job) else self._poll_cluster(sky, job)
        return replace(update, remote={**found, **update.remote})

    # --- acting on jobs ---

    def cancel(self, job: Job) -> Update:
        """SIGTERM to the trainer (it saves a checkpoint), SkyPilot waits for the bucket uploads, then tears
        down: ``sky.jobs.cancel(graceful=True)`` for a managed job, ``sky.down(graceful=True)`` for a cluster. A
        launch still in flight is cancelled first."""
        sky = adapter()
        request = job.remote.get("launch_request")
        if request and not job.remote.get("sky_job_id"):
            state = sky.request(request)
            if state is not None and state.status not in adapter_module.FINISHED_REQUEST:
                sky.cancel_request(request)
        if self._managed(job):
            for record in sky.managed_jobs(job.id):
                if record.status not in adapter_module.TERMINAL_MANAGED:
                    sky.jobs_cancel(record.job_id, graceful=True)
            update = self.poll(job) if job.remote.get("sky_job_id") else Update(status=JobStatus.CANCELLED)
        else:
            if job.remote.get("sky_job_id"):
                sky.cancel(job.id, int(job.remote["sky_job_id"]))
                self._await_trainer_end(sky, job)
            sky.down(job.id, graceful=True)  # flushes the bucket uploads, then tears down
            update = Update(status=JobStatus.CANCELLED, actual_cost_usd=self._cluster_cost(sky, job))
        if update.status is JobStatus.SUCCEEDED:  # it finished before the cancel landed
            return update
        return replace(update, status=JobStatus.CANCELLED, error=None,
                       remote={**update.remote, "cancel_requested": "1"})

    def _await_trainer_end(self, sky: adapter_module.SkyAdapter, job: Job) -> None:
        """Wait for the trainer's final event (after SIGTERM it saves a checkpoint first), at most the grace
        period: SkyPilot's graceful teardown flushes the uploads but does not wait for the trainer."""
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            log = sky.logs(cluster=job.id, job_id=int(job.remote["sky_job_id"]))
            if any(e.get("kind") in FINAL_KINDS for e in trainer_events(log, job.cursor)) or not log:
                return
            time.sleep(CANCEL_CHECK_S)

    def result(self, job: Job) -> Result:
        """The trainer's result (downloaded into the local run folder), with SkyPilot's record in ``raw``."""
        run_dir = self.run_dir(job.id)
        if job.status is JobStatus.SUCCEEDED and not (run_dir / RESULT_NAME).is_file():
            self._fetch(adapter(), job)
        keys = ("mode", "sky_job_id", "run_uri", "recoveries", "usd_per_hour", "nodes", "max_seconds")
        return run_result(run_dir, job, skypilot={k: job.remote[k] for k in keys if job.remote.get(k)})

    def export(self, job: Job, fmt: str, dest: Path) -> list[Artifact]:
        """As for a local job: the downloaded run folder holds the trainer's config and output."""
        return self.local.export(job, fmt, dest)

    # --- what ftbroker gc tears down ---

    @property
    def ledger_id(self) -> str:
        """Which ledger launched a cluster or managed job (its LEDGER_LABEL): this machine and this ledger's path."""
        where = f"{socket.gethostname()}:{(self.runs.parent / 'ledger.sqlite3').resolve()}"
        return hashlib.sha256(where.encode()).hexdigest()[:16]

    @property
    def collect_scope(self) -> tuple[str, ...]:
        """One listing covers everything this user's SkyPilot API server knows, whatever the options."""
        return ()

    def leftovers(self, lookup: JobLookup) -> list[Leftover]:
        """Every cluster and active managed job named after an ftbroker job (its id, also its LABEL), with why it
        should go (``why_left_over``: its job ended, is past its cap, or this ledger lost it) or stay.
        ``lookup``: job id -> the ledger's Job, or None."""
        sky, now, found = adapter(), clock.now().timestamp(), []
        for cluster in sky.clusters():
            if JOB_ID.match(cluster.name):
                running = now - cluster.launched_at if cluster.launched_at else None
                found.append(self._leftover(cluster.name, cluster.name, "cluster", cluster.status, cluster.labels,
                                            lookup(cluster.name), running, sky.cost(cluster.name)))
        for record in sky.managed_jobs():
            name = record.name if JOB_ID.match(record.name) else record.labels.get(LABEL, "")
            if JOB_ID.match(name) and record.status not in adapter_module.TERMINAL_MANAGED:
                job = lookup(name)
                price = job.remote.get("usd_per_hour") if job is not None else None
                cost = runtime_cost(record.job_duration, Decimal(price), int(job.remote["nodes"])) if price else None
                found.append(self._leftover(str(record.job_id), name, "managed job", record.status, record.labels,
                                            job, record.job_duration, cost))
        return found

    def _leftover(self, resource: str, job_id: str, kind: str, state: str, labels: Mapping[str, str],
                  job: Job | None, running_s: float | None, cost: Decimal | None) -> Leftover:
        ledger = labels.get(LEDGER_LABEL)
        reason, note = why_left_over(job_id, job, mine=None if ledger is None else ledger == self.ledger_id,
                                     cap_s=_poll_cap(job), running_s=running_s)
        ran = f", {running_s / 3600:.2f} h" if running_s is not None else ""
        what = job_id if kind == "cluster" else f"{resource} ({job_id})"
        return Leftover(backend=self.name, resource=resource, job_id=job_id, reason=reason, note=note,
                        description=f"SkyPilot {kind} {what}, {state.lower()}{ran}",
                        cost_usd=cost, handle={"kind": kind},
                        verb="tear down" if kind == "cluster" else "cancel")

    def collect(self, leftover: Leftover) -> str:
        """Tear one leftover down (again: nothing happens); what was done, with SkyPilot's cost for a cluster."""
        sky = adapter()
        if leftover.handle["kind"] == "cluster":
            sky.down(leftover.resource)
            cost = sky.cost(leftover.resource)
            return f"tore down SkyPilot cluster {leftover.resource}" + (f" (cost ${cost:.2f})" if cost is not None
                                                                          else "")
        sky.jobs_cancel(int(leftover.resource))
        return (f"cancelled SkyPilot managed job {leftover.resource} ({leftover.job_id}); SkyPilot tears its "
                "cluster down")


def _poll_cap(job: Job | None) -> float | None:
    cap = job.remote.get("max_seconds") if job is not None else None
    return float(cap) + POLL_CAP_SLACK_S if cap else None


def _disk_gb(model: ModelRequest) -> int:
    """Room on each node for the trainer's packages, the model's download, and the bucket's local cache of the
    checkpoints and outputs (MOUNT_CACHED writes locally first): 100 GB + 4x the model's 16-bit weights, in steps
    of 50 GB. A model the catalog does not know is given the room of a 10B one."""
    weights_gb = model.arch.params * 2 / 1e9 if model.arch is not None else 20.0
    return 50 * math.ceil((100 + 4 * weights_gb) / 50)
