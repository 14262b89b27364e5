"""Following an EC2 job (``Ec2Following``, the base of ``ec2.Ec2Backend``): the agent's heartbeat and the
trainer's events from S3 and the instance's state give the job's status; a stalled or overdue instance is
terminated (failed, saying why); a finished run's output is downloaded into the local run folder; a spot instance
gone before success is relaunched (bounded) and resumes from the last checkpoint in S3. Every attempt is recorded
with its runtime and cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ftbroker import clock
from ftbroker.backends.base import Update
from ftbroker.backends.ec2_agent import HEARTBEAT, RUN, JobStore, join_key
from ftbroker.backends.ec2_instances import (OVERDUE_GRACE, TAG_ENDED, Ec2Instance, Ec2Instances, duration,
                                             parse_time)
from ftbroker.backends.ec2_pricing import attempt_cost
from ftbroker.backends.local.results import event_lines, tracker_records, trainer_records
from ftbroker.errors import BackendError
from ftbroker.jobs import Event, Job, JobStatus

MIN_ATTEMPT_MINUTES = 15  # a relaunch with less of the runtime cap left could not even boot and resume


def recorded_attempts(job: Job) -> list[dict[str, Any]]:
    return json.loads(job.remote.get("attempts") or "[]")


def _spent(attempts: Sequence[Mapping[str, Any]]) -> Decimal:
    return sum((Decimal(a["cost_usd"]) for a in attempts), Decimal(0))


class _Collected:
    """A Tracker for a relaunch from ``poll``: what it records reaches the ledger in the poll's Update instead."""

    def remember(self, **remote: str) -> None:
        pass

    def event(self, message: str, **kwargs: Any) -> None:
        pass


class Ec2Following(Ec2Instances):
    """``poll`` and what it decides with; ``Ec2Backend`` adds ``local`` (the local backend: run folders)."""

    local: Any

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
        return Update(status=JobStatus.RUNNING, detail=phase, actual_cost_usd=_spent(recorded_attempts(job)) + running,
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

    def _stalled_or_overdue(self, job: Job, beat: Mapping[str, Any] | None, inst: Ec2Instance,
                            now: datetime) -> str | None:
        cap = timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or job.remote["cap_minutes"]))
        ran = now - inst.launched_at
        if ran > cap + OVERDUE_GRACE:
            return f"is overdue: it ran {duration(ran)}, past its runtime cap of {duration(cap)}"
        if beat is not None:
            silent = now - datetime.fromisoformat(beat["time"])
            if silent > timedelta(minutes=self.options.stall_minutes):
                return (f"stalled: no heartbeat for {duration(silent)} (allowed: {self.options.stall_minutes:g} min; "
                        f"the last at {beat['time']}, phase {beat.get('phase')})")
        elif ran > timedelta(minutes=self.options.boot_minutes):
            return (f"stalled: no heartbeat {duration(ran)} after launch (boot and install allowance "
                    f"{self.options.boot_minutes:g} min; its console output says why)")
        return None

    def _close_attempt(self, job: Job, ended: datetime, how: str) -> dict[str, Any]:
        """The current attempt, ended at ``ended``, added to the record: Update fields (remote, actual cost)."""
        launched = parse_time(job.remote.get("launched_at")) or ended
        seconds = max(0.0, (ended - launched).total_seconds())
        cost = attempt_cost(seconds, Decimal(job.remote["usd_per_hour"]))
        record = {"attempt": int(job.remote.get("attempt") or 1), "instance_id": job.remote.get("instance_id", ""),
                  "market": job.remote["market"], "usd_per_hour": job.remote["usd_per_hour"],
                  "launched_at": launched.isoformat(), "ended_at": ended.isoformat(), "runtime_s": round(seconds, 1),
                  "cost_usd": str(cost), "end": how}
        attempts = [a for a in recorded_attempts(job) if a["attempt"] != record["attempt"]] + [record]
        return {"remote": {"attempts": json.dumps(attempts)}, "actual_cost_usd": _spent(attempts)}

    def _ended_at(self, job: Job, beat: Mapping[str, Any] | None, now: datetime) -> datetime:
        """When an instance that ended on its own stopped billing: its final heartbeat; else within one heartbeat
        interval of the last (it was seen alive then); else, with none, at its cap (or now, if sooner)."""
        launched = parse_time(job.remote.get("launched_at")) or now
        if beat is not None:
            seen = datetime.fromisoformat(beat["time"])
            end = seen if beat.get("phase") == "finished" else seen + timedelta(seconds=self.options.heartbeat_s)
        else:
            end = launched + timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or 0))
        return max(launched, min(end, now))

    def _finished(self, job: Job, beat: Mapping[str, Any], inst: Ec2Instance | None, found: dict[str, Any]) -> Update:
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

    def _gone(self, job: Job, beat: Mapping[str, Any] | None, inst: Ec2Instance | None,
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
        launched = parse_time(job.remote.get("launched_at")) or now
        cap = timedelta(minutes=int(job.remote.get("attempt_cap_minutes") or 0))
        if now - launched >= cap:
            ended = self._close_attempt(job, min(now, launched + cap), "runtime cap")
            return Update(status=JobStatus.FAILED, error=f"stopped by its runtime cap ({duration(cap)}) before the "
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
        used = sum(a["runtime_s"] for a in recorded_attempts(job)) / 60
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
