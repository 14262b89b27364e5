"""The one place ftbroker calls SkyPilot: a thin adapter over ``sky``'s client SDK (PyPI ``skypilot``, 0.14).

Every SkyPilot call of the backend goes through ``SkyAdapter``, and tests replace it with a fake that plays
SkyPilot's state machine (``tests/fakes/skypilot_fake.py``). What it returns is plain data (the records below, with
SkyPilot's own status words), so nothing else imports ``sky``.

SkyPilot's SDK is client-server: each call sends a request to an API server (started locally on first use, and
left running by design; ``stop_api_server`` stops it) and returns a request id; ``sky.get`` waits for its result
(https://docs.skypilot.co/en/latest/reference/api-server/api-server.html). A launch returns its request id at once,
so the broker keeps it in the ledger before anything else and follows the request rather than blocking on it.
Errors are translated here: an unreachable API server is ``BackendUnavailableError`` (the broker retries), the
rest ``BackendError`` with SkyPilot's message. SkyPilot paths named here are at its v0.14.1 release,
skypilot-org/skypilot@7e595970a806.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ftbroker.errors import BackendError, BackendUnavailableError

BACKEND = "skypilot"
_QUEUE_FIELDS = ["job_id", "job_name", "status", "recovery_count", "job_duration", "failure_reason", "labels",
                 "submitted_at", "end_at", "infra"]


@dataclass(frozen=True)
class Request:
    """A request to the API server: ``status`` PENDING, WAITING, RUNNING, SUCCEEDED, FAILED or CANCELLED."""

    id: str
    status: str
    result: Any = None  # when SUCCEEDED
    error: str | None = None  # when FAILED


@dataclass(frozen=True)
class Cluster:
    """A cluster (``sky.status``): ``status`` INIT, UP, STOPPED, AUTOSTOPPING."""

    name: str
    status: str
    launched_at: float | None = None  # epoch seconds
    to_down: bool = False  # autodown is set
    labels: Mapping[str, str] = field(default_factory=dict)  # its resources' labels ({} where unknown yet)


@dataclass(frozen=True)
class ManagedJob:
    """A managed job (``sky.jobs.queue_v2``), ``status`` a ``ManagedJobStatus`` word (PENDING ... FAILED_CONTROLLER).

    ``job_duration``: seconds it has run, every attempt together (provisioning and recovery excluded);
    ``recovery_count``: how many times SkyPilot relaunched it after a preemption."""

    job_id: int
    name: str
    status: str
    recovery_count: int = 0
    job_duration: float = 0.0
    failure_reason: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


TERMINAL_MANAGED = frozenset({"SUCCEEDED", "CANCELLED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS",
                              "FAILED_NO_RESOURCE", "FAILED_CONTROLLER"})
FINISHED_REQUEST = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """SkyPilot's exceptions as ftbroker's, with SkyPilot's message."""
    from sky import exceptions

    try:
        yield
    except exceptions.ApiServerConnectionError as exc:
        raise BackendUnavailableError(f"{what}: the SkyPilot API server is unreachable: {exc}",
                                      backend=BACKEND) from exc
    except (exceptions.ClusterDoesNotExist, exceptions.ClusterNotUpError):
        raise
    except Exception as exc:  # SkyPilot raises its own and plain ones (ValueError for a bad region, ...)
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}", backend=BACKEND) from exc


def _task(config: Mapping[str, Any]) -> Any:
    """A ``sky.Task`` of the task's dict (a copy: SkyPilot's loader pops what it reads, nested dicts included)."""
    import sky

    return sky.Task.from_yaml_config(copy.deepcopy(dict(config)))


def _labels(record: Any) -> dict[str, str]:
    """A cluster's labels: its handle's launched resources' (a cluster still provisioning has no handle)."""
    resources = getattr(record.get("handle"), "launched_resources", None)
    return dict(getattr(resources, "labels", None) or {})


def _body(text: str | None) -> dict[str, Any]:
    try:
        body = json.loads(text or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class SkyAdapter:
    """SkyPilot's calls, as the backend needs them. Importing ``sky`` is deferred to the first call."""

    def gpus(self, task: Mapping[str, Any]) -> dict[str, float] | None:
        """The GPUs SkyPilot will attach for ``task`` (its catalog's, for the instance type); None: none."""
        with _translated("reading the task's resources"):
            resources = next(iter(_task(task).resources))
            return dict(resources.accelerators) if resources.accelerators else None

    def launch(self, task: Mapping[str, Any], *, cluster: str, idle_minutes: int, down: bool) -> str:
        """``sky.launch`` of ``task`` on a new cluster, torn down ``idle_minutes`` after its job ends (``down``);
        the request id, at once."""
        import sky

        with _translated(f"launching {cluster}"):
            return str(sky.launch(_task(task), cluster_name=cluster,
                                  idle_minutes_to_autostop=idle_minutes, down=down, retry_until_up=False))

    def jobs_launch(self, task: Mapping[str, Any], *, name: str) -> str:
        """``sky.jobs.launch``: a managed job (recovered after a preemption); the request id, at once."""
        import sky

        with _translated(f"launching the managed job {name}"):
            return str(sky.jobs.launch(_task(task), name=name))

    def request(self, request_id: str) -> Request | None:
        """Where a request is; its result or error once finished. None: the server does not know it."""
        import sky

        with _translated(f"asking about request {request_id}"):
            found = sky.api_status([request_id])
        if not found:
            return None
        status = str(getattr(found[0].status, "value", found[0].status))
        if status not in FINISHED_REQUEST or status == "CANCELLED":
            return Request(request_id, status)
        try:
            return Request(request_id, status, result=sky.get(request_id))
        except Exception as exc:  # noqa: BLE001 (sky.get re-raises whatever failed on the server)
            return Request(request_id, "FAILED", error=f"{type(exc).__name__}: {exc}")

    def launching(self, name: str) -> list[str]:
        """The unfinished launch requests for the cluster or managed job ``name`` (a launch the server has
        accepted but not started creates nothing yet that ``clusters`` or ``managed_jobs`` would show)."""
        import sky

        with _translated(f"looking for launches of {name}"):
            pending = sky.api_status()  # the unfinished requests
        return [r.request_id for r in pending  # request names: sky/server/requests/request_names.py
                if (r.name == "launch" and r.cluster_name == name)
                or (r.name == "jobs.launch" and _body(r.request_body).get("name") == name)]

    def clusters(self, names: Sequence[str] | None = None) -> list[Cluster]:
        """Clusters by name (None: all of this user's), refreshed from the cloud for spot and autostop ones."""
        import sky
        from sky.utils.common import StatusRefreshMode

        with _translated("listing clusters"):
            records = sky.get(sky.status(list(names) if names else None, refresh=StatusRefreshMode.AUTO))
        return [Cluster(name=r["name"], status=str(getattr(r["status"], "value", r["status"])),
                        launched_at=r.get("launched_at"), to_down=bool(r.get("to_down")), labels=_labels(r))
                for r in records]

    def cluster_job(self, cluster: str, job_id: int) -> str | None:
        """The status word of job ``job_id`` on ``cluster`` (INIT ... CANCELLED); None if unknown."""
        import sky
        from sky import exceptions

        try:
            with _translated(f"asking {cluster} about job {job_id}"):
                statuses = sky.get(sky.job_status(cluster, [job_id]))
        except (exceptions.ClusterDoesNotExist, exceptions.ClusterNotUpError):
            return None
        status = statuses.get(job_id) or statuses.get(str(job_id))
        return str(getattr(status, "value", status)) if status is not None else None

    def managed_jobs(self, name: str | None = None) -> list[ManagedJob]:
        """Managed jobs (of this user), named ``name`` when given, newest first."""
        import sky
        from sky import exceptions

        try:
            with _translated("listing managed jobs"):
                records, *_ = sky.get(sky.jobs.queue_v2(refresh=False, name_match=name, fields=_QUEUE_FIELDS))
        except exceptions.ClusterNotUpError:  # no jobs controller yet: no managed job (notes of sky/jobs)
            return []
        jobs = [ManagedJob(job_id=int(r.job_id), name=r.job_name or "",
                           status=str(getattr(r.status, "value", r.status)), recovery_count=r.recovery_count or 0,
                           job_duration=float(r.job_duration or 0.0), failure_reason=r.failure_reason,
                           labels=dict(r.labels or {})) for r in records]
        return [j for j in jobs if name is None or j.name == name]

    def down(self, cluster: str, *, graceful: bool = False) -> None:
        """Tear ``cluster`` down (``graceful``: stop its job first and wait for MOUNT_CACHED uploads)."""
        import sky
        from sky import exceptions

        with contextlib.suppress(exceptions.ClusterDoesNotExist), _translated(f"tearing {cluster} down"):
            sky.get(sky.down(cluster, graceful=graceful))

    def cancel(self, cluster: str, job_id: int) -> None:
        """``sky.cancel``: SIGTERM to the job's processes on ``cluster`` (the cluster stays)."""
        import sky

        with _translated(f"cancelling job {job_id} on {cluster}"):
            sky.get(sky.cancel(cluster, job_ids=[job_id]))

    def jobs_cancel(self, job_id: int, *, graceful: bool = False) -> None:
        import sky

        with _translated(f"cancelling managed job {job_id}"):
            sky.get(sky.jobs.cancel(job_ids=[job_id], graceful=graceful))

    def cancel_request(self, request_id: str) -> None:
        import sky

        with _translated(f"cancelling request {request_id}"):
            sky.get(sky.api_cancel([request_id]))

    def logs(self, *, cluster: str | None = None, job_id: int | None = None, managed_job_id: int | None = None
             ) -> str:
        """The job's output so far (SkyPilot's log streaming, not followed): a cluster's job, or a managed job."""
        import sky
        from sky import exceptions

        out = io.StringIO()
        try:
            with _translated("reading the job's logs"):
                if managed_job_id is not None:
                    sky.jobs.tail_logs(job_id=managed_job_id, follow=False, output_stream=out)
                else:
                    sky.tail_logs(cluster, job_id, follow=False, output_stream=out)
        except (exceptions.ClusterDoesNotExist, exceptions.ClusterNotUpError):
            pass
        return out.getvalue()

    def cost(self, cluster: str) -> Decimal | None:
        """What SkyPilot's cost report says ``cluster`` cost (an estimate from its own records), None if absent."""
        import sky

        with _translated("reading the cost report"):
            for entry in sky.get(sky.cost_report(days=None)):
                if entry.get("name") == cluster and entry.get("total_cost") is not None:
                    return Decimal(str(entry["total_cost"]))
        return None

    def download(self, uri: str, dest: Path, *, files: Sequence[str] = (), folders: Sequence[str] = ()) -> None:
        """Copy ``files`` and ``folders`` under the bucket folder ``uri`` into ``dest``, with SkyPilot's own download
        commands for the store (``sky.cloud_stores``: aws s3, gsutil, az, rclone ...). A file or folder the bucket
        lacks is skipped."""
        from sky import cloud_stores

        store = cloud_stores.get_storage_from_path(uri)
        commands = [store.make_sync_file_command(f"{uri}/{name}", str(dest / name)) for name in files]
        commands += [store.make_sync_dir_command(f"{uri}/{name}", str(dest / name)) for name in folders]
        dest.mkdir(parents=True, exist_ok=True)
        for command in commands:
            subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=3600, check=False)

    def stop_api_server(self) -> None:
        """Stop the local API server daemon this process's calls may have started."""
        import sky

        sky.api_stop()
