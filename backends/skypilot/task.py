"""A SkyPilot task for one ftbroker job, as the dict of SkyPilot's task YAML. PURE: no SDK, no I/O beyond this
package's two shell scripts.

The task (https://docs.skypilot.co/en/latest/reference/yaml-spec.html):

* ``resources``: the route's cloud and region (``infra``), its instance type (which fixes the GPUs and their
  count: clouds name the same GPU differently, e.g. Vast lists an 80 GB A100 as ``A100``), spot or on-demand, the
  disk, the ``ftbroker-job`` and ``ftbroker-ledger`` labels (instance tags where the cloud has them: ``ftbroker gc``
  finds them by these) and, for spot, the managed job's recovery. No image is named unless asked: SkyPilot starts
  GPU instances from its own CUDA images (or the cloud's, on clouds where no image can be chosen);
* ``num_nodes``: the route's nodes;
* ``file_mounts``: the local stage folder (the job's inputs, this ftbroker as a wheel, the accelerate config) at
  ``STAGE``, and the job's folder in the bucket at ``RUN`` (``MOUNT_CACHED``: written locally, uploaded in the
  background, kept after the cluster goes) where the trainer writes events, checkpoints and the adapter;
* ``setup`` (``setup.sh``): this ftbroker with the ``local`` extra; ``run`` (``run.sh``): the same trainer as
  ``--backend local``, resuming when the bucket holds a checkpoint, under ``timeout`` (the hard runtime cap, summed
  over the attempts), and under ``accelerate launch`` with SkyPilot's node rank and head address on several GPUs.

SkyPilot source paths in this package are at its v0.14.1 release commit, skypilot-org/skypilot@7e595970a806.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from ftbroker.backends.gpu_routes import DEFAULT_INTERCONNECT_GBPS
from ftbroker.backends.local.process import trainer_command
from ftbroker.pricing.catalog import CloudInstance

STAGE = "/ftbroker/stage"  # the local stage folder, copied to every node
RUN = "/ftbroker/run"  # the job's folder in the bucket, mounted on every node
LABEL = "ftbroker-job"  # resources label carrying the job id
LEDGER_LABEL = "ftbroker-ledger"  # and the one naming the ledger that launched it (ftbroker gc reaps its own only)
MAIN_PORT = 29500  # torch.distributed's rendezvous port on the head node
CANCEL_GRACE_S = 120  # SIGTERM to SIGKILL: the trainer's time to save a checkpoint
SETUP_MAX_S = 3600  # installing ftbroker and its trainer's packages
ACCELERATE_CONFIG = "accelerate.yaml"  # in the stage folder, for several GPUs

# What SkyPilot 0.14 cannot do on a cloud (its ``_CLOUD_UNSUPPORTED_FEATURES`` in sky/clouds/<cloud>.py at the
# v0.14.1 release, skypilot-org/skypilot@7e595970a806), where that rules a route out: the run folder is a mounted
# bucket, and several nodes must reach each other.
NO_BUCKET_MOUNT = frozenset({"runpod", "vast"})
NO_MULTI_NODE = frozenset({"runpod", "vast"})
# The catalog's region for a cloud whose SkyPilot catalog has none to choose.
NO_REGION = frozenset({"all DCs"})


@dataclass(frozen=True)
class Placement:
    """Where a run goes: a catalog instance, how many of them, which market and region."""

    instance: CloudInstance
    market: str = "on-demand"  # "on-demand" | "spot"
    nodes: int = 1
    interconnect_gbps: float = DEFAULT_INTERCONNECT_GBPS  # one node's bandwidth to the others

    @property
    def spot(self) -> bool:
        return self.market == "spot"

    @property
    def price(self) -> Decimal | None:
        """One instance's price per hour in this market."""
        return self.instance.spot_usd_per_hour if self.spot else self.instance.on_demand_usd_per_hour

    @property
    def region(self) -> str:
        i = self.instance
        return (i.spot_region or i.region) if self.spot else i.region

    @property
    def ranks(self) -> int:
        return self.instance.gpu_count * self.nodes

    @property
    def hardware(self) -> str:
        i = self.instance
        nodes = f"{self.nodes} nodes x " if self.nodes > 1 else ""
        return f"{nodes}{i.gpu_count}x {i.gpu} ({i.cloud} {i.instance_type}, {self.market})"


@dataclass(frozen=True)
class Launch:
    """Everything a job's task is made of."""

    job_id: str
    place: Placement
    stage_dir: str  # the local folder mounted at STAGE
    run_uri: str  # the job's folder in the bucket, e.g. s3://bucket/ftbroker/ftb-abc
    wheel: str  # the ftbroker wheel's file name in the stage folder
    max_seconds: int  # hard cap on the trainer's runtime, all attempts together
    disk_gb: int
    accelerate: bool  # several GPUs: the stage folder holds accelerate.yaml
    image: str | None = None
    trainer_script: str | None = None  # a recipe script in the stage folder, instead of the trainer module
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # e.g. HF_TOKEN; setup and run only
    ledger: str = ""  # the launching ledger's id, a label

    @property
    def name(self) -> str:
        """The cluster's or managed job's name: the job id itself, so a launch can look for it first."""
        return self.job_id


def unsupported(place: Placement) -> str:
    """Why SkyPilot cannot run the job on ``place`` ("" when it can)."""
    cloud = place.instance.cloud
    if cloud in NO_BUCKET_MOUNT:
        return (f"SkyPilot cannot mount a bucket on {cloud} (sky/clouds/{cloud}.py: STORAGE_MOUNTING), where the "
                "trainer's checkpoints and adapter go")
    if place.nodes > 1 and cloud in NO_MULTI_NODE:
        return f"SkyPilot runs no multi-node cluster on {cloud} (sky/clouds/{cloud}.py: MULTI_NODE)"
    return ""


def infra(place: Placement) -> str:
    """``cloud/region`` (SkyPilot's ``infra``), or the cloud alone where its catalog has no region to choose."""
    cloud = place.instance.cloud
    return cloud if place.region in NO_REGION else f"{cloud}/{place.region}"


def task_config(launch: Launch) -> dict[str, Any]:
    """The task, as the dict ``sky.Task.from_yaml_config`` loads."""
    place = launch.place
    resources_: dict[str, Any] = {"infra": infra(place), "instance_type": place.instance.instance_type,
                                  "use_spot": place.spot, "disk_size": launch.disk_gb,
                                  "labels": {LABEL: launch.job_id, **({LEDGER_LABEL: launch.ledger} if launch.ledger
                                                                      else {})}}
    if place.spot:  # a reclaimed instance is replaced; the trainer's own failure is not retried
        resources_["job_recovery"] = {"strategy": "FAILOVER", "max_restarts_on_errors": 0}
    if launch.image:
        resources_["image_id"] = launch.image
    config: dict[str, Any] = {
        "name": launch.name,
        "num_nodes": place.nodes,
        "resources": resources_,
        "envs": {"FTBROKER_JOB_ID": launch.job_id, "FTBROKER_STAGE": STAGE, "FTBROKER_RUN": RUN,
                 "FTBROKER_WHEEL": launch.wheel, "FTBROKER_MAX_SECONDS": str(launch.max_seconds),
                 "FTBROKER_GRACE_SECONDS": str(CANCEL_GRACE_S), "FTBROKER_SETUP_MAX_SECONDS": str(SETUP_MAX_S),
                 "FTBROKER_PORT": str(MAIN_PORT), "FTBROKER_EVENTS_TO_STDOUT": "1", "PYTHONUNBUFFERED": "1"},
        "file_mounts": {STAGE: launch.stage_dir, RUN: {"source": launch.run_uri, "mode": "MOUNT_CACHED"}},
        "setup": _script("setup.sh"),
        "run": _script("run.sh").replace("@TRAINER@", shell_line(run_command(launch))),
    }
    if launch.secrets:
        config["secrets"] = dict(launch.secrets)
    return config


class Expanded(str):
    """A word the shell expands (a variable), left unquoted by ``shell_line``."""


def run_command(launch: Launch) -> list[str]:
    """The trainer's command on a node, as ``--backend local`` builds it (``trainer_command``), with SkyPilot's
    node count, rank and head address for ``accelerate launch`` (SKYPILOT_NUM_NODES, SKYPILOT_NODE_RANK,
    SKYPILOT_NODE_IPS: https://docs.skypilot.co/en/stable/running-jobs/distributed-jobs.html)."""
    place = launch.place
    launch_args: list[str] = []
    if launch.accelerate:
        launch_args = ["--config_file", Expanded(f'"$FTBROKER_STAGE/{ACCELERATE_CONFIG}"')]
        if place.nodes > 1:
            launch_args += ["--num_machines", Expanded('"$SKYPILOT_NUM_NODES"'),
                            "--machine_rank", Expanded('"$SKYPILOT_NODE_RANK"'),
                            "--main_process_ip", Expanded('"$HEAD_IP"'),
                            "--main_process_port", Expanded('"$FTBROKER_PORT"'),
                            "--num_processes", Expanded('"$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))"')]
    script = Expanded(f'"$FTBROKER_STAGE/{launch.trainer_script}"') if launch.trainer_script else None
    return trainer_command(Expanded('"$PY"'), [Expanded('"$RUN"'), Expanded("${RESUME:+--resume}")],
                           script=script, launch=launch_args)


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(word if isinstance(word, Expanded) else shlex.quote(word) for word in argv)


@cache
def _script(name: str) -> str:
    return resources.files("ftbroker.backends.skypilot").joinpath(name).read_text(encoding="utf-8")
