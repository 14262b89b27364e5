"""EC2, S3, SSM and IAM in moto's server mode on loopback, and what moto never does: run an instance.

``MotoAws``: a ``ThreadedMotoServer`` on 127.0.0.1 (a free port, its state reset), the environment pointed at it
(AWS_ENDPOINT_URL, moto's fake credentials, no instance metadata, no ~/.aws files), AWS's public DLAMI parameter
seeded in SSM (moto ships no /aws/service/deeplearning/* and refuses put_parameter under /aws, so it is written into
moto's backend), a bucket and an instance profile (moto checks that the profile exists).

``Instance``: plays one launched instance on this machine. It reads the instance's user data back from moto and runs
it with bash, in a process group of its own, with:

- ``shutdown`` on PATH: ``fake_shutdown.py``, which records ``-h +N`` (the cap) and, for ``-h now``, does what EC2
  does when an instance's OS powers off: terminate (InstanceInitiatedShutdownBehavior=terminate) or stop;
- the "AMI's Python" (``instance_python``): a venv of its own that sees this venv's packages through a .pth file, so
  the bootstrap's ``pip install WHEEL[local,aws]`` installs the wheel the backend built and staged (PIP_NO_INDEX:
  every dependency is already there, nothing is downloaded) and the agent and the trainer run from that wheel;
- FTB_WORK: its own folder; FTB_IMDS_URL empty (no instance metadata: no spot notices).
"""

from __future__ import annotations

import base64
import os
import signal
import site
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
BUCKET = "ftbroker-ec2-test"
PROFILE = "ftbroker-worker"
AMI = "ami-03cf127a"  # one of the Amazon images moto preloads in every region
HERE = Path(__file__).parent
SCRIPTED_TRAINER = HERE.parent / "scripted_trainer.py"


class MotoAws:
    """``MotoAws(monkeypatch).start(regions)``; ``stop()`` at the end. One server can serve several tests: ``use``
    empties moto's state and points a test's environment at it."""

    def __init__(self, monkeypatch: Any):
        self.monkeypatch = monkeypatch
        self.server: Any = None
        self.url = ""
        self._clients: dict[tuple[str, str], Any] = {}  # one per (service, region), closed on stop()

    def start(self, regions: tuple[str, ...] = (REGION,)) -> MotoAws:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.use(self.monkeypatch, regions)

    def use(self, monkeypatch: Any, regions: tuple[str, ...] = (REGION,)) -> MotoAws:
        """A clean AWS for the test of ``monkeypatch``: its environment set, the bucket, instance profile and DLAMI
        parameter (in ``regions``) created, nothing else."""
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10)  # moto's state is per process: start clean
        for name, value in self.environment().items():
            monkeypatch.setenv(name, value)
        self.client("s3").create_bucket(Bucket=BUCKET)
        self.client("iam").create_instance_profile(InstanceProfileName=PROFILE)
        for region in regions:
            self.seed_ami(region)
        return self

    def environment(self) -> dict[str, str]:
        missing = str(Path(os.devnull))
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "FOOBARKEY", "AWS_SECRET_ACCESS_KEY": "FOOBARSECRET",
                "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_SHARED_CREDENTIALS_FILE": missing, "AWS_CONFIG_FILE": missing}

    def stop(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        if self.server is not None:
            self.server.stop()

    def seed_ami(self, region: str) -> None:
        from moto.ssm.models import Parameter, ssm_backends

        from ftbroker.backends.ec2 import DLAMI_PARAMETER

        ssm_backends[ACCOUNT][region]._parameters[DLAMI_PARAMETER].append(Parameter(
            account_id=ACCOUNT, name=DLAMI_PARAMETER, value=AMI, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=datetime.now(), version=1,
            data_type="aws:ec2:image"))

    def client(self, service: str, region: str = REGION) -> Any:
        import boto3

        if (service, region) not in self._clients:
            self._clients[(service, region)] = boto3.client(service, region_name=region, endpoint_url=self.url)
        return self._clients[(service, region)]

    def instances(self, region: str = REGION, job_id: str | None = None) -> list[dict[str, Any]]:
        filters = [{"Name": "tag:ftbroker:job", "Values": [job_id]}] if job_id else []
        pages = self.client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def attribute(self, instance_id: str, name: str, region: str = REGION) -> str:
        key = name[0].upper() + name[1:]
        answer = self.client("ec2", region).describe_instance_attribute(InstanceId=instance_id, Attribute=name)
        value = answer[key]["Value"]
        return base64.b64decode(value).decode() if name == "userData" else value

    def objects(self, prefix: str = "") -> list[str]:
        listed = self.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]


def instance_python(folder: Path) -> Path:
    """A venv for the played instances: its own site-packages (the wheel goes there) over this venv's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    Path(own, "parent-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


class Instance:
    """One launched instance, played here: ``Instance(aws, id, region, tmp).start()``; ``kill()`` is the hardware
    going away (a spot reclaim, a hung machine); ``wait()`` for the bootstrap to end. ``env``: more of the machine's
    environment (what the scripted trainer reads: how many steps, how fast, a failure). Its pip installs the wheel
    alone unless ``full_install`` (then with the dependencies of its extras, which this venv already holds: checked
    once, by the one real training, rather than a second or so per played instance)."""

    def __init__(self, aws: MotoAws, instance_id: str, region: str, folder: Path, env: dict[str, str] | None = None,
                 *, full_install: bool = False):
        self.aws, self.id, self.region = aws, instance_id, region
        self.env = dict(env or {}) if full_install else {"PIP_NO_DEPS": "1", **(env or {})}
        self.folder = folder / instance_id
        self.work = self.folder / "work"
        self.proc: subprocess.Popen | None = None

    @property
    def run_dir(self) -> Path:
        return self.work / "run"

    @property
    def shutdowns(self) -> list[str]:
        log = self.folder / "shutdown.log"
        return log.read_text().splitlines() if log.is_file() else []

    def start(self) -> Instance:
        bin_dir = self.folder / "bin"
        bin_dir.mkdir(parents=True)
        shutdown = bin_dir / "shutdown"
        shutdown.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_shutdown.py'} \"$@\"\n")
        shutdown.chmod(0o755)
        script = self.folder / "user-data.sh"
        script.write_text(self.aws.attribute(self.id, "userData", self.region))
        env = {**os.environ, **self.aws.environment(), "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "AWS_DEFAULT_REGION": self.region, "FTB_WORK": str(self.work), "FTB_IMDS_URL": "",
               "PIP_NO_INDEX": "1", "FTB_FAKE_INSTANCE": self.id,
               "FTB_FAKE_SHUTDOWN_LOG": str(self.folder / "shutdown.log"), **self.env}
        env.pop("VIRTUAL_ENV", None)
        with (self.folder / "console.log").open("wb") as log:
            self.proc = subprocess.Popen(["bash", str(script)], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def console(self) -> str:
        path = self.folder / "console.log"
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""

    def trainer_pid(self) -> int | None:
        path = self.run_dir / "trainer.pid"
        return int(path.read_text()) if path.is_file() else None

    def kill(self) -> None:
        """Every process of the machine, at once (SIGKILL): nothing more is synced, no shutdown runs."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def wait(self, timeout: float = 300) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)


def ec2_options(python: Path, **extra: Any) -> dict[str, Any]:
    """backend_options of a test job: moto's bucket and profile, the played instance's Python, quick timings."""
    return {"s3_uri": f"s3://{BUCKET}/jobs", "python": str(python),
            "iam_instance_profile": PROFILE, "heartbeat_s": 1, "sync_s": 0.5, "poll_interval_s": 0.5, **extra}


class Ec2Harness:
    """The contract suite's harness (tests/test_backend_contract.py): moto, and every launched instance played here
    through the real bootstrap and agent. The job's recipe is the scripted trainer (the ``trainer`` option): what the
    contract checks is the backend, and the real trainer's one run on a played instance is test_backend_ec2.py's
    walk-through. "fail": the recipe fails with a message; "hang": it runs until cancelled."""

    name = "ec2"
    failure_message = "cannot be loaded"
    fixtures = ("tiny_model_dir", "ec2_instance_python")
    SCENARIOS: ClassVar[dict[str, dict[str, str]]] = {
        "succeed": {"FTB_SCRIPT_STEPS": "3"},
        "hang": {"FTB_SCRIPT_STEPS": "100000", "FTB_SCRIPT_STEP_S": "0.05"},
        "fail": {"FTB_SCRIPT_FAIL": "the model cannot be loaded: model.safetensors is not a safetensors file"}}

    def __init__(self, tmp_path: Path, monkeypatch: Any, tiny_model_dir: Path, ec2_instance_python: Path):
        from tinymodels import code_examples, write_jsonl

        self.aws = MotoAws(monkeypatch).start()
        self.tmp, self.python, self.model = tmp_path, ec2_instance_python, tiny_model_dir
        self.data = write_jsonl(tmp_path / "data.jsonl", code_examples(8))
        self.scenario = "succeed"
        self.played: dict[str, Instance] = {}

    def spec(self, scenario: str) -> Any:
        from ftbroker.spec import JobSpec

        self.scenario = scenario  # one scenario per test: the instances launched next play it
        return JobSpec(dataset=str(self.data), model=str(self.model), backend="ec2",
                       hyperparameters={"epochs": 1, "max_seq_len": 64},
                       backend_options=ec2_options(self.python, instance_type="g6e.xlarge",
                                                   trainer=str(SCRIPTED_TRAINER), max_hours=1, cancel_grace_s=60))

    def wait(self, seconds: float) -> None:
        """The Broker waits between polls: play every instance launched since (moto never runs one)."""
        for inst in self.aws.instances():
            if inst["InstanceId"] not in self.played and inst["State"]["Name"] in ("pending", "running"):
                self.played[inst["InstanceId"]] = Instance(self.aws, inst["InstanceId"], REGION, self.tmp,
                                                           env=self.SCENARIOS[self.scenario]).start()
        time.sleep(min(seconds, 0.2))

    def close(self) -> None:
        for instance in self.played.values():
            instance.kill()
        self.aws.stop()
