"""Following a SkyPilot job (``SkyPilotFollowing``, the base of ``backend.SkyPilotBackend``): the launch request
until it has a job, then the cluster's job or the managed job: its status, the trainer's events from SkyPilot's
logs, each recovery after a preemption with its runtime and cost, the actual cost, the hard runtime cap enforced,
and the trainer's files fetched from the bucket at the end. Every step takes the adapter it runs with.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from ftbroker import clock
from ftbroker.backends.base import Update
from ftbroker.backends.local.config import CONFIG_NAME
from ftbroker.backends.local.outputs import (CHECKPOINTS_DIR, EVENTS_NAME, METRICS_NAME, OUTPUT_DIR, PLOT_NAME,
                                             RESULT_NAME)
from ftbroker.backends.local.results import tracker_records, trainer_records
from ftbroker.backends.skypilot import adapter as adapter_module
from ftbroker.backends.skypilot.runs import (CLUSTER_JOB_STATUS, MANAGED_JOB_STATUS, log_error, runtime_cost,
                                             status_of, trainer_events)
from ftbroker.backends.skypilot.task import CANCEL_GRACE_S, RUN, SETUP_MAX_S
from ftbroker.jobs import Event, Job, JobStatus, Result

# Past the trainer's cap, the broker allows set-up, provisioning and the cancel's grace before it tears down.
POLL_CAP_SLACK_S = SETUP_MAX_S + CANCEL_GRACE_S + 900


class SkyPilotFollowing:
    """What ``poll`` decides with; ``SkyPilotBackend`` gives ``run_dir``, the job's local run folder."""

    run_dir: Any

    def _launch_outcome(self, sky: adapter_module.SkyAdapter, job: Job) -> str | Update:
        """The SkyPilot job id once the launch request has succeeded; else the Update to report. A failed launch
        tears its cluster down: ``down=True`` does not cover a provisioning or setup failure."""
        state = sky.request(job.remote.get("launch_request", ""))
        if state is None:  # the API server no longer knows the request (restarted): look for what it made
            jobs = sky.managed_jobs(job.id) if self._managed(job) else []
            if jobs:
                return str(jobs[0].job_id)
            if not self._managed(job) and sky.clusters([job.id]):
                return "1"  # the cluster is the job's own: its first job is ours
            return Update(status=JobStatus.FAILED, detail="launch lost",
                          error="the launch request is unknown to the SkyPilot API server and nothing was launched"
                                f"; `ftbroker resume {job.id}` launches it again")
        if state.status not in adapter_module.FINISHED_REQUEST:
            return Update(status=JobStatus.QUEUED, detail=f"launch {state.status.lower()}")
        if state.status == "SUCCEEDED":
            ids, _handle = state.result
            return str(ids[0] if isinstance(ids, list) else ids)
        if not self._managed(job):
            sky.down(job.id)
        return Update(status=JobStatus.FAILED, detail="launch failed", actual_cost_usd=self._cluster_cost(sky, job),
                      error=f"the SkyPilot launch failed: {state.error or state.status.lower()}")

    def _poll_cluster(self, sky: adapter_module.SkyAdapter, job: Job) -> Update:
        clusters = sky.clusters([job.id])
        sky_id = int(job.remote["sky_job_id"])
        word = sky.cluster_job(job.id, sky_id) if clusters else None
        log = sky.logs(cluster=job.id, job_id=sky_id) if clusters else ""
        running_s = clock.now().timestamp() - clusters[0].launched_at if clusters and clusters[0].launched_at else None
        if word is None:  # the cluster is gone (its autodown, or by hand): the bucket has the trainer's outcome
            status, detail = self._outcome_in_bucket(sky, job), "cluster gone"
        else:
            status, detail = status_of(word, CLUSTER_JOB_STATUS), word.lower()
        error = None
        if not status.terminal and running_s is not None and running_s > self._cap(job) + POLL_CAP_SLACK_S:
            status, detail, error = JobStatus.FAILED, "past its cap", self._cap_error(job, running_s)
        if status.terminal and clusters:
            sky.down(job.id)  # now, rather than after the autodown's idle minutes
        remote = {"runtime_s": f"{running_s:.0f}"} if running_s is not None else {}
        cost = self._cluster_cost(sky, job, running_s)
        return self._update(sky, job, status, detail, log, error, cost, remote)

    def _poll_managed(self, sky: adapter_module.SkyAdapter, job: Job) -> Update:
        sky_id = int(job.remote["sky_job_id"])
        record = next((j for j in sky.managed_jobs(job.id) if j.job_id == sky_id), None)
        if record is None:
            return Update(status=JobStatus.FAILED, detail="managed job gone",
                          error=f"SkyPilot has no managed job {sky_id} for {job.id} any more")
        log = sky.logs(managed_job_id=sky_id)
        status, detail = status_of(record.status, MANAGED_JOB_STATUS), record.status.lower()
        price, nodes = Decimal(job.remote["usd_per_hour"]), int(job.remote["nodes"])
        spent = Decimal(job.remote.get("spent_usd") or 0)
        attempts, remote = self._recoveries(job, record, price, nodes)
        error = record.failure_reason
        if not status.terminal and record.job_duration > self._cap(job) + POLL_CAP_SLACK_S:
            sky.jobs_cancel(sky_id, graceful=True)
            status, detail, error = JobStatus.FAILED, "past its cap", self._cap_error(job, record.job_duration)
        cost = spent + runtime_cost(record.job_duration, price, nodes)
        update = self._update(sky, job, status, detail, log, error, cost, remote)
        return replace(update, events=[*attempts, *update.events])

    def _recoveries(self, job: Job, record: adapter_module.ManagedJob, price: Decimal, nodes: int):
        """An ``attempt`` event for each recovery SkyPilot made since the last poll, with the runtime and cost of
        the attempt(s) the preemption ended."""
        seen = int(job.remote.get("recoveries") or 0)
        if record.recovery_count <= seen:
            return [], {}
        before = float(job.remote.get("attempts_runtime_s") or 0)
        ran = max(0.0, record.job_duration - before)
        ended = (f"attempt {seen + 1}" if record.recovery_count == seen + 1
                 else f"attempts {seen + 1}-{record.recovery_count}")
        event = Event(time=clock.now(), kind="attempt", level="warning",
                      message=f"{ended} preempted after {ran / 3600:.2f} h (${runtime_cost(ran, price, nodes)}); "
                              f"SkyPilot relaunched the job (attempt {record.recovery_count + 1}), which resumes from "
                              "its last checkpoint",
                      data={"attempt": record.recovery_count + 1, "recoveries": record.recovery_count,
                            "runtime_s": round(ran, 1), "cost_usd": float(runtime_cost(ran, price, nodes))})
        return [event], {"recoveries": str(record.recovery_count), "attempts_runtime_s": f"{record.job_duration:.1f}"}

    def _update(self, sky: adapter_module.SkyAdapter, job: Job, status: JobStatus, detail: str, log: str,
                error: str | None, cost: Decimal | None, remote: dict[str, str]) -> Update:
        """The Update of a poll: the trainer's new events from the log, the error, and the outputs at the end."""
        everything = trainer_events(log, None)
        fresh = [e for e in everything if job.cursor is None or str(e.get("time", "")) > job.cursor]
        records = trainer_records(fresh, job.progress)
        cursor = str(fresh[-1]["time"]) if fresh else None
        output = None
        if status is JobStatus.SUCCEEDED:
            output = self._fetch(sky, job).get("output_model")
        if status is JobStatus.FAILED:
            error = log_error(log, everything) or error or "the run failed (no error message in its logs)"
        return Update(status=status, detail=detail, cursor=cursor, error=error if status is JobStatus.FAILED else None,
                      actual_cost_usd=cost, output_model=output, remote={**remote, **tracker_records(fresh)}, **records)

    def _outcome_in_bucket(self, sky: adapter_module.SkyAdapter, job: Job) -> JobStatus:
        result = self._fetch(sky, job)
        status = result.get("status")
        return JobStatus(status) if status in {s.value for s in JobStatus} else JobStatus.FAILED

    def _fetch(self, sky: adapter_module.SkyAdapter, job: Job) -> dict[str, Any]:
        """The trainer's files (result, events, metrics, plot, config, output folder) from the bucket into the
        local run folder, its remote paths made local; result.json's content ({} if it wrote none)."""
        run_dir = self.run_dir(job.id)
        sky.download(job.remote["run_uri"], run_dir, folders=[OUTPUT_DIR],
                     files=[RESULT_NAME, EVENTS_NAME, METRICS_NAME, PLOT_NAME, CONFIG_NAME])
        path = run_dir / RESULT_NAME
        if not path.is_file():
            return {}
        result = _localized(Result.model_validate_json(path.read_text()), run_dir, job.remote["run_uri"])
        path.write_text(result.model_dump_json(indent=2) + "\n")
        return result.model_dump(mode="json")

    def _cluster_cost(self, sky: adapter_module.SkyAdapter, job: Job, running_s: float | None = None
                      ) -> Decimal | None:
        """SkyPilot's cost report for the job's cluster, else its runtime x price."""
        spent = Decimal(job.remote.get("spent_usd") or 0)
        reported = sky.cost(job.id)
        if reported is not None:
            return spent + reported
        seconds = running_s if running_s is not None else float(job.remote.get("runtime_s") or 0)
        return spent + runtime_cost(seconds, Decimal(job.remote["usd_per_hour"]), int(job.remote["nodes"]))

    def _cap(self, job: Job) -> float:
        return float(job.remote["max_seconds"])

    def _cap_error(self, job: Job, running_s: float) -> str:
        return (f"stopped by ftbroker: {running_s / 3600:.2f} h, past the hard runtime cap of "
                f"{self._cap(job) / 3600:.2f} h (--option max_hours)")

    @staticmethod
    def _managed(job: Job) -> bool:
        return job.remote.get("mode") == "managed"


def _localized(result: Result, run_dir: Path, run_uri: str) -> Result:
    """The trainer's paths, under the node's run folder (the bucket's mount point), as the local run folder's;
    a checkpoint, which stays in the bucket, as its URI."""
    head, sep, _ = (result.output_model or "").rpartition(f"/{OUTPUT_DIR}/")
    node_dir = next((str(Path(a.uri).parent) for a in result.artifacts if a.kind == "metrics"), head if sep else RUN)

    def move(path: str | None) -> str | None:
        if not path or not path.startswith(node_dir + "/"):
            return path
        rest = path[len(node_dir) + 1:]
        return f"{run_uri}/{rest}" if rest.startswith(CHECKPOINTS_DIR) else str(run_dir / rest)

    artifacts = [a.model_copy(update={"uri": move(a.uri)}) for a in result.artifacts]
    return result.model_copy(update={"output_model": move(result.output_model), "artifacts": artifacts})
