"""The EC2 backend's instances: the AWS clients and their errors, the launch of one instance per job and attempt
(tagged with both, the client token derived from them), finding it again, terminating it, and ``ftbroker gc``'s
view of every instance ftbroker launched (``Ec2Instances``, the base of ``ec2.Ec2Backend``).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ftbroker import clock
from ftbroker.backends.base import Leftover, Tracker
from ftbroker.backends.ec2_agent import JobStore, split_s3
from ftbroker.backends.ec2_bootstrap import WHEEL_URL_TTL_S, user_data
from ftbroker.backends.ec2_pricing import attempt_cost
from ftbroker.errors import ExtraNotInstalledError
from ftbroker.jobs import Job

TAG_MANAGED, MANAGED_BY = "ftbroker:managed-by", "ftbroker"
TAG_JOB, TAG_ATTEMPT, TAG_LEDGER = "ftbroker:job", "ftbroker:attempt", "ftbroker:ledger"
TAG_LAUNCHED, TAG_CAP, TAG_PRICE = "ftbroker:launched-at", "ftbroker:cap-minutes", "ftbroker:usd-per-hour"
TAG_ENDED = "ftbroker:terminated-by"  # why ftbroker terminated it (gc, a stall, a cancel): the next poll reads it
LIVE_STATES = ("pending", "running", "stopping", "stopped")
OVERDUE_GRACE = timedelta(minutes=10)  # past its cap, the instance's own shutdown and last sync had this long
ORPHAN_GRACE = timedelta(minutes=10)  # an instance its job never recorded may be mid-launch for this long


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def duration(delta: timedelta) -> str:
    minutes = max(0, round(delta.total_seconds() / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"


@dataclass(frozen=True)
class Ec2Instance:
    """What ``describe_instances`` says of one of our instances."""

    id: str
    state: str
    instance_type: str
    tags: Mapping[str, str]
    launched_at: datetime  # ftbroker's clock at launch (the tag), so every time compared is on one clock

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Ec2Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        launched = parse_time(tags.get(TAG_LAUNCHED)) or raw["LaunchTime"]
        return cls(raw["InstanceId"], raw["State"]["Name"], raw["InstanceType"], tags, launched)

    @property
    def alive(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def cap(self) -> timedelta | None:
        return timedelta(minutes=int(self.tags[TAG_CAP])) if TAG_CAP in self.tags else None


class Ec2Instances:
    """The AWS side of the EC2 backend: its clients, the instances of its jobs, and gc. ``Ec2Backend`` sets
    ``name``, ``options`` (``Ec2Options``), ``home`` and ``_clients``."""

    name: str
    options: Any
    home: Any
    _clients: dict[tuple[str, str], Any]

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

    def close(self) -> None:
        """Close the AWS clients this backend opened (their connection pools)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

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

    # --- launching an instance ---

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

    def _find(self, job: Job, attempt: int) -> Ec2Instance | None:
        """The instance launched for this job and attempt, in any state (moto ignores ClientToken idempotency and
        the client-token filter is not everywhere: the tags are what is looked for)."""
        ec2 = self.client("ec2", job.remote["region"])
        found = self._instances(ec2, [{"Name": f"tag:{TAG_JOB}", "Values": [job.id]},
                                      {"Name": f"tag:{TAG_ATTEMPT}", "Values": [str(attempt)]}])
        alive = [i for i in found if i.alive]
        return (alive or found or [None])[0]

    def _describe(self, job: Job) -> Ec2Instance | None:
        if not job.remote.get("instance_id"):
            return self._find(job, int(job.remote.get("attempt") or 1)) if job.remote.get("region") else None
        ec2 = self.client("ec2", job.remote["region"])
        found = self._instances(ec2, [{"Name": "instance-id", "Values": [job.remote["instance_id"]]}])
        return found[0] if found else None

    def _instances(self, ec2: Any, filters: list[dict[str, Any]]) -> list[Ec2Instance]:
        pages = self.call("listing instances", lambda: list(
            ec2.get_paginator("describe_instances").paginate(Filters=filters)))
        return [Ec2Instance.of(raw) for page in pages for r in page["Reservations"] for raw in r["Instances"]]

    def _handles(self, inst: Ec2Instance) -> dict[str, str]:
        return {"instance_id": inst.id, "attempt": inst.tags.get(TAG_ATTEMPT, "1"),
                "launched_at": inst.launched_at.isoformat(), "attempt_cap_minutes": inst.tags.get(TAG_CAP, "")}

    def _terminate(self, inst_id: str, region: str, why: str) -> None:
        ec2 = self.client("ec2", region)
        self.call("tagging the instance", ec2.create_tags, Resources=[inst_id],
                  Tags=[{"Key": TAG_ENDED, "Value": why[:256]}])
        self.call("terminating the instance", ec2.terminate_instances, InstanceIds=[inst_id])

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

    def _leftover(self, inst: Ec2Instance, job: Job | None, region: str, now: datetime) -> Leftover:
        ran = now - inst.launched_at
        price = Decimal(inst.tags[TAG_PRICE]) if TAG_PRICE in inst.tags else None
        reason, note = self._why_collect(inst, job, ran)
        return Leftover(backend=self.name, resource=inst.id, job_id=inst.tags.get(TAG_JOB), reason=reason, note=note,
                        description=f"{inst.instance_type} in {region}, {inst.state} {duration(ran)}",
                        cost_usd=attempt_cost(ran.total_seconds(), price) if price is not None else None,
                        handle={"region": region})

    def _why_collect(self, inst: Ec2Instance, job: Job | None, ran: timedelta) -> tuple[str | None, str]:
        cap = inst.cap
        if cap is not None and ran > cap + OVERDUE_GRACE:
            return f"past its runtime cap: ran {duration(ran)}, cap {duration(cap)}", ""
        job_id = inst.tags.get(TAG_JOB, "?")
        if inst.tags.get(TAG_LEDGER) != self.ledger_id:
            return None, "another ledger's job (only its cap applies here)"
        if job is None:
            return f"its job {job_id} is not in the ledger", ""
        if job.status.terminal:
            return f"its job {job.id} is {job.status.value}", ""
        if job.remote.get("instance_id") != inst.id:
            if ran < ORPHAN_GRACE:
                return None, f"launched {duration(ran)} ago: job {job.id} may still be recording it"
            return f"job {job.id} never recorded it (the launching process died, or a later attempt replaced it)", ""
        return None, f"job {job.id} is {job.status.value} on it"

    def collect(self, leftover: Leftover) -> str:
        self._terminate(leftover.resource, leftover.handle["region"], f"ftbroker gc: {leftover.reason}")
        return "terminated"
