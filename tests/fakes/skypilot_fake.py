"""A stand-in for SkyPilot behind the backend's adapter (``ftbroker.backends.skypilot.adapter.SkyAdapter``): its
state machine, with the task's ``run`` executed for real on this machine.

* A launch is a request (PENDING -> RUNNING -> SUCCEEDED | FAILED) that creates a cluster (INIT, then UP) and
  starts the task's job on it; ``fail_launch_after_cluster`` fails the request once the cluster exists, which
  SkyPilot then keeps (it does not autodown a cluster whose provisioning or setup failed).
* A node is a real process: ``bash -c RUN`` with the task's envs, SkyPilot's node variables (SKYPILOT_NODE_RANK,
  SKYPILOT_NODE_IPS, SKYPILOT_NUM_NODES, SKYPILOT_NUM_GPUS_PER_NODE) and the file mounts mapped to folders here:
  the stage folder as it is, the bucket (``s3://B/P``) under ``root/buckets/B/P``. A task of several nodes starts
  one process per node. ``setup`` is recorded, not run (it installs ftbroker from PyPI's packages).
* A cluster job ends when its processes do: SUCCEEDED (all exit 0), FAILED, or CANCELLED by a cancel.
* A managed job (``jobs_launch``) walks PENDING -> STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED;
  ``preempt`` kills its node (SIGKILL, as a reclaimed VM vanishes) and SkyPilot's recovery starts a new one
  (RECOVERING -> RUNNING, ``recovery_count`` + 1), which runs ``run`` again.
* Time starts at ftbroker's clock and moves with ``advance``: ``job_duration`` sums the running time of every
  attempt, clusters are billed from launch to teardown at ``usd_per_hour`` (the cost report).

State moves when it is looked at (``request``, ``clusters``, ``cluster_job``, ``managed_jobs``), one step per
look, as a poll sees it. ``calls`` records every call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from ftbroker import clock
from ftbroker.backends.skypilot.adapter import TERMINAL_MANAGED, Cluster, ManagedJob, Request


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (the node's ``start_new_session``) until none is left: a
    process forked meanwhile stays in the session, as no node process calls setsid."""
    while True:
        members = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    members.append(proc)
        if not members:
            return
        psutil.wait_procs(members, timeout=30)


@dataclass
class _Node:
    """The processes of one attempt of a job, one per node."""

    procs: list[subprocess.Popen]
    logs: list[Path]

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def ok(self) -> bool:
        return all(p.poll() == 0 for p in self.procs)

    def send(self, sig: int) -> None:
        """``sig`` to each node's process group, as SkyPilot signals a job; SIGKILL to every process of the node's
        session (the run script's ``timeout`` keeps the trainer in a group of its own, and may be starting it just
        now), as a vanished VM takes them all."""
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, sig)
            if sig == signal.SIGKILL:
                _kill_session(p.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> None:
        """Signal the node and wait for it to end (a real process: a generous bound, not a clock)."""
        self.send(sig)
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                p.wait()


@dataclass
class _Job:
    name: str
    task: Mapping[str, Any]
    status: str
    node: _Node | None = None
    cluster: str | None = None
    managed_id: int | None = None
    recovery_count: int = 0
    job_duration: float = 0.0
    started: float | None = None  # the running attempt's start (fake clock)
    logs: list[Path] = field(default_factory=list)
    cancelled: bool = False


@dataclass
class _Cluster:
    name: str
    status: str
    launched_at: float
    task: Mapping[str, Any]
    job: _Job | None = None
    downed_at: float | None = None


class FakeSky:
    """SkyPilot, as the backend sees it through its adapter (the same methods)."""

    def __init__(self, root: Path, *, usd_per_hour: Decimal | None = None, gpus_per_node: int = 1,
                 fail_launch_after_cluster: bool = False, env: Mapping[str, str] | None = None):
        self.root = root
        self.now = clock.now().timestamp()  # the backend reads ftbroker's clock: FTBROKER_NOW moves both
        self.usd_per_hour = usd_per_hour
        self.gpus_per_node = gpus_per_node
        self.fail_launch_after_cluster = fail_launch_after_cluster
        self.env = dict(env or {})  # added to every node's environment
        self.attached_gpus: dict[str, dict[str, float] | None] = {}  # instance type -> what SkyPilot attaches
        self.calls: list[tuple[str, Any]] = []
        self.requests: dict[str, dict[str, Any]] = {}
        self.clusters_: dict[str, _Cluster] = {}
        self.history: list[_Cluster] = []  # clusters torn down, for the cost report
        self.managed: dict[int, _Job] = {}
        self._ids = itertools.count(1)

    # --- the test's levers ---

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def preempt(self, managed_id: int) -> None:
        """The spot instance is reclaimed: its node dies at once; SkyPilot starts recovering the job."""
        job = self.managed[managed_id]
        job.node.stop(signal.SIGKILL)
        self._bill(job)
        job.status = "RECOVERING"

    def bucket(self, uri: str) -> Path:
        scheme, _, rest = uri.partition("://")
        return self.root / "buckets" / scheme / rest

    def launches(self) -> list[tuple[str, Any]]:
        return [c for c in self.calls if c[0] in ("launch", "jobs_launch")]

    # --- the adapter's methods ---

    def gpus(self, task: Mapping[str, Any]) -> dict[str, float] | None:
        """The catalog's GPUs for the task's instance type (SkyPilot's own answer is checked in
        test_skypilot_task.py against its loader)."""
        self.calls.append(("gpus", task["resources"]["instance_type"]))
        return self.attached_gpus.get(task["resources"]["instance_type"], {"GPU": self.catalog_gpus(task)})

    def catalog_gpus(self, task: Mapping[str, Any]) -> int:
        from ftbroker.pricing.catalog import load_catalog

        return next(i.gpu_count for i in load_catalog().instances
                    if i.instance_type == task["resources"]["instance_type"])

    def launch(self, task: Mapping[str, Any], *, cluster: str, idle_minutes: int, down: bool) -> str:
        self.calls.append(("launch", {"cluster": cluster, "idle_minutes": idle_minutes, "down": down, "task": task}))
        return self._request("launch", task=task, cluster=cluster)

    def jobs_launch(self, task: Mapping[str, Any], *, name: str) -> str:
        self.calls.append(("jobs_launch", {"name": name, "task": task}))
        return self._request("jobs_launch", task=task, name=name)

    def request(self, request_id: str) -> Request | None:
        self.calls.append(("request", request_id))
        req = self.requests.get(request_id)
        if req is None:
            return None
        self._step_request(request_id, req)
        return Request(request_id, req["status"], result=req.get("result"), error=req.get("error"))

    def launching(self, name: str) -> list[str]:
        self.calls.append(("launching", name))
        return [rid for rid, req in self.requests.items() if req["status"] in ("PENDING", "RUNNING")
                and name in (req.get("cluster"), req.get("name"))]

    def clusters(self, names: Sequence[str] | None = None) -> list[Cluster]:
        self.calls.append(("clusters", names))
        self._tick()
        return [Cluster(c.name, c.status, c.launched_at, True, labels=self._labels(c)) for c in self.clusters_.values()
                if names is None or c.name in names]

    @staticmethod
    def _labels(c: _Cluster) -> dict[str, str]:
        """A cluster's labels, as SkyPilot reads them from its handle: none while it provisions."""
        return {} if c.status == "INIT" else dict(c.task["resources"].get("labels", {}))

    def cluster_job(self, cluster: str, job_id: int) -> str | None:
        self.calls.append(("cluster_job", (cluster, job_id)))
        self._tick()
        c = self.clusters_.get(cluster)
        return c.job.status if c is not None and c.job is not None else None

    def managed_jobs(self, name: str | None = None) -> list[ManagedJob]:
        self.calls.append(("managed_jobs", name))
        self._tick()
        return [ManagedJob(i, j.name, j.status, j.recovery_count, self._duration(j),
                           labels=j.task["resources"].get("labels", {}))
                for i, j in sorted(self.managed.items(), reverse=True) if name is None or j.name == name]

    def down(self, cluster: str, *, graceful: bool = False) -> None:
        self.calls.append(("down", {"cluster": cluster, "graceful": graceful}))
        c = self.clusters_.pop(cluster, None)
        if c is None:
            return
        if c.job is not None and c.job.node is not None and c.job.node.alive():
            c.job.node.stop(signal.SIGTERM if graceful else signal.SIGKILL)
            c.job.status = "CANCELLED"
        c.downed_at = self.now
        self.history.append(c)

    def cancel(self, cluster: str, job_id: int) -> None:
        """SIGTERM to the job's processes, without waiting (as sky.cancel); the cluster stays."""
        self.calls.append(("cancel", {"cluster": cluster, "job_id": job_id}))
        job = self.clusters_[cluster].job
        if job.node is not None and job.node.alive():
            job.node.send(signal.SIGTERM)
            job.cancelled = True

    def jobs_cancel(self, job_id: int, *, graceful: bool = False) -> None:
        self.calls.append(("jobs_cancel", {"job_id": job_id, "graceful": graceful}))
        job = self.managed[job_id]
        if job.status in TERMINAL_MANAGED:
            return
        if job.node is not None and job.node.alive():
            job.node.stop(signal.SIGTERM if graceful else signal.SIGKILL)
        self._bill(job)
        job.status = "CANCELLED"

    def cancel_request(self, request_id: str) -> None:
        self.calls.append(("cancel_request", request_id))
        self.requests[request_id]["status"] = "CANCELLED"

    def logs(self, *, cluster: str | None = None, job_id: int | None = None,
             managed_job_id: int | None = None) -> str:
        self.calls.append(("logs", cluster or managed_job_id))
        if managed_job_id is not None:
            paths = self.managed[managed_job_id].logs
        else:
            c = self.clusters_.get(cluster)
            paths = c.job.logs if c is not None and c.job is not None else []
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def cost(self, cluster: str) -> Decimal | None:
        self.calls.append(("cost", cluster))
        if self.usd_per_hour is None:
            return None
        runs = [c for c in [*self.history, self.clusters_.get(cluster)] if c is not None and c.name == cluster]
        hours = sum(((c.downed_at or self.now) - c.launched_at) / 3600 for c in runs)
        nodes = int(runs[0].task.get("num_nodes", 1)) if runs else 1
        return (Decimal(str(hours)) * self.usd_per_hour * nodes).quantize(Decimal("0.0001")) if runs else None

    def download(self, uri: str, dest: Path, *, files: Sequence[str] = (), folders: Sequence[str] = ()) -> None:
        self.calls.append(("download", uri))
        source = self.bucket(uri)
        dest.mkdir(parents=True, exist_ok=True)
        for name in files:
            if (source / name).is_file():
                shutil.copyfile(source / name, dest / name)
        for name in folders:
            if (source / name).is_dir():
                shutil.copytree(source / name, dest / name, dirs_exist_ok=True)

    def stop_api_server(self) -> None:
        self.calls.append(("stop_api_server", None))

    # --- the state machine ---

    def _request(self, kind: str, **body: Any) -> str:
        rid = f"req-{len(self.requests) + 1}"
        self.requests[rid] = {"kind": kind, "status": "PENDING", **body}
        return rid

    def _step_request(self, rid: str, req: dict[str, Any]) -> None:
        if req["status"] == "PENDING":
            req["status"] = "RUNNING"
            if req["kind"] == "launch":  # provisioning: the cluster exists from here on
                self.clusters_[req["cluster"]] = _Cluster(req["cluster"], "INIT", self.now, req["task"])
        elif req["status"] == "RUNNING":
            if req["kind"] == "jobs_launch":
                job_id = next(self._ids)
                self.managed[job_id] = _Job(req["name"], req["task"], "PENDING", managed_id=job_id)
                req.update(status="SUCCEEDED", result=([job_id], None))
            elif self.fail_launch_after_cluster:
                req.update(status="FAILED", error="ClusterSetUpError: setup failed on the head node (exit 1)")
            elif req["cluster"] in self.clusters_:
                c = self.clusters_[req["cluster"]]
                c.status = "UP"
                c.job = _Job(req["cluster"], req["task"], "RUNNING", cluster=c.name)
                self._start(c.job)
                req.update(status="SUCCEEDED", result=(1, None))

    def _tick(self) -> None:
        for c in self.clusters_.values():
            job = c.job
            if job is not None and job.status == "RUNNING" and not job.node.alive():
                job.status = "CANCELLED" if job.cancelled else "SUCCEEDED" if job.node.ok() else "FAILED"
        for job in self.managed.values():
            if job.status == "PENDING":
                job.status = "STARTING"
            elif job.status in ("STARTING", "RECOVERING"):
                if job.status == "RECOVERING":
                    job.recovery_count += 1
                job.status = "RUNNING"
                self._start(job)
            elif job.status == "RUNNING" and not job.node.alive():
                self._bill(job)
                job.status = "SUCCEEDED" if job.node.ok() else "FAILED"

    def _start(self, job: _Job) -> None:
        """The task's run on each node, for real."""
        task = job.task
        nodes = int(task.get("num_nodes", 1))
        attempt = len(job.logs) // nodes + 1
        envs = {k: str(v) for k, v in task.get("envs", {}).items()}
        mounts = task.get("file_mounts", {})
        for target, source in mounts.items():
            local = self.bucket(source["source"]) if isinstance(source, Mapping) else Path(source)
            local.mkdir(parents=True, exist_ok=True)
            for key, value in envs.items():  # the mount points, as the node sees them
                if value == target:
                    envs[key] = str(local)
        procs, logs = [], []
        for rank in range(nodes):
            log = self.root / "nodes" / job.name / f"attempt{attempt}-rank{rank}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **envs, **task.get("secrets", {}), **self.env, "FTBROKER_PYTHON": sys.executable,
                   "SKYPILOT_NODE_RANK": str(rank), "SKYPILOT_NUM_NODES": str(nodes),
                   "SKYPILOT_NODE_IPS": "\n".join(["127.0.0.1"] * nodes),
                   "SKYPILOT_NUM_GPUS_PER_NODE": str(self.gpus_per_node), "SKYPILOT_TASK_ID": job.name}
            with log.open("w") as out:
                procs.append(subprocess.Popen(["bash", "-c", task["run"]], cwd=log.parent, env=env, stdout=out,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
            logs.append(log)
        job.node = _Node(procs, logs)
        job.logs += logs
        job.started = self.now

    def _bill(self, job: _Job) -> None:
        if job.started is not None:
            job.job_duration += self.now - job.started
            job.started = None

    def _duration(self, job: _Job) -> float:
        return job.job_duration + (self.now - job.started if job.started is not None else 0.0)

    def close(self) -> None:
        for job in [*self.managed.values(), *(c.job for c in self.clusters_.values() if c.job)]:
            if job.node is not None:
                job.node.stop(signal.SIGKILL)
