"""The local trainer on rented cloud instances, priced: the quote of a cloud backend that runs ``ftbroker run
--backend local``'s trainer on one or several instances of a catalog row. PURE (no I/O, no clock, no SDK).

It takes the path of the planner's cloud GPU routes (``ftbroker plan``) step for step, so a route and the quote of
the backend that runs it agree to the cent: the trainer's config (``TrainConfig``), the dataset as the trainer reads
it (``preflight.trainer_data``), the largest micro-batch up to the config's that fits (``fit_setup``, the effective
batch kept), the wall-clock with a cloud's start-up and model download (``Overheads``), and the instance price x
hours, with spot reclaims' restarts and lost work (``estimate.cost.cloud_cost``).

Several nodes (``nodes`` > 1) train one data-parallel run over every GPU of every node: the memory and the compute
are those of ``nodes`` x the instance's GPUs, the time adds the synchronisations across the nodes' network
(``estimate.comm``), and the price is ``nodes`` instances'. One node is the planner's route exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ftbroker.backends.base import Quote, Verdict
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import (TrainerData, lowered_batch_note, no_fit_reason, trainer_data,
                                               untimed_note)
from ftbroker.estimate.calibration import default_calibration
from ftbroker.estimate.comm import comm_seconds_per_step
from ftbroker.estimate.compute import Overheads, Range, trainable_bytes, trainable_params
from ftbroker.estimate.cost import CostEstimate, cloud_cost
from ftbroker.estimate.run import DatasetTime, Fit, fit_setup
from ftbroker.estimate.setup import ModelShape
from ftbroker.pricing.catalog import CloudInstance, ModelArch

MARKETS = ("on-demand", "spot")
# Inter-node bandwidth when the route does not say: 100 Gbit/s, the Ethernet of GPU clouds without InfiniBand
# (e.g. GCP A2 machines: "up to 100 Gbps", https://cloud.google.com/compute/docs/gpus#a100-gpus). Nodes with
# InfiniBand or GPUDirect reach 1,600-3,200 Gbit/s (Azure ND A100 v4: 8 x 200 Gb/s HDR,
# https://learn.microsoft.com/azure/virtual-machines/nda100-v4-series): pass the real figure where it is known.
DEFAULT_INTERCONNECT_GBPS = 100.0


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


def cloud_overheads() -> Overheads:
    """A cloud run's wall-clock outside training, billed too: the planner's start-up and model download."""
    from ftbroker.planner import CLOUD_DOWNLOAD_GBPS, CLOUD_STARTUP_S  # the planner's figures, until they move here

    return Overheads(startup_s=CLOUD_STARTUP_S, download_gbps=CLOUD_DOWNLOAD_GBPS)


def cloud_quote(config: TrainConfig, arch: ModelArch | None, place: Placement, catalog: Any, *, backend: str,
                stats: Any | None, validation: Any | None = None) -> Quote:
    """The quote of training ``config`` (the trainer's config for the job) on ``place``: peak VRAM per GPU, hours
    and cost (instance price x billed hours, spot reclaims included), or why it cannot run there.

    ``stats`` / ``validation``: the training and validation files' ``TokenStats`` counted with the model's
    tokenizer. ``breakdown["setup"]`` holds the micro-batch and gradient accumulation the estimate runs with
    (lowered from the config's, the effective batch kept, when the config's does not fit): what the backend must
    give the trainer."""
    notes = [place.instance.note] if place.instance.note else []
    if place.price is None:
        return Quote(backend=backend, verdict=Verdict.ROUTE_UNAVAILABLE, hardware=place.hardware,
                     reason=f"the catalog has no {place.market} price for {place.instance.cloud} "
                            f"{place.instance.instance_type}")
    data = trainer_data(config, stats, validation) if stats is not None and stats.length_counts else None
    if arch is None or data is None:
        why = "the model's shape is unknown" if arch is None else "the dataset's token lengths are unknown"
        return Quote(backend=backend, hardware=place.hardware, warnings=(*notes, f"no estimate: {why}"))
    if data.cut:
        notes.append(data.cut_note(f"max_seq_len {config.max_seq_length}; --max-seq-len"))
    gpu = catalog.gpus[place.instance.gpu]
    cal = default_calibration()
    fit = fit_setup(arch, gpu, config.training_setup(seq_len=data.seq_len, n_gpus=place.ranks), calibration=cal)
    reason = data.context_reason(arch) or ("" if fit.fits else no_fit_reason(fit, gpu)) or _host_memory(arch, place)
    breakdown: dict[str, Any] = {"setup": _setup_json(fit), "vram_gib": fit.memory.to_json(),
                                 "usd_per_hour": place.price, "nodes": place.nodes, "region": place.region}
    resources = {"estimated_peak_vram_gib": round(fit.memory.total, 3)}
    lowered = lowered_batch_note(config, fit) if fit.fits else ""
    notes += [lowered] if lowered else []
    cost = None
    if fit.fits:
        timed = data.time(arch, gpu, fit.setup, cloud_overheads(), cal)
        if timed.time is None:
            notes.append(untimed_note(gpu))
        else:
            cost = _cost(arch, fit, data, timed, place, breakdown, notes)
            resources["estimated_hours"] = cost.hours.expected
    return Quote(backend=backend, verdict=Verdict.DOES_NOT_FIT if reason else Verdict.OK, reason=reason or None,
                 cost_usd=cost.usd.expected if cost else None, cost_high_usd=cost.usd.high if cost else None,
                 hours=cost.hours.expected if cost else None, peak_vram_gib=fit.memory.total,
                 hardware=place.hardware, warnings=tuple(notes), breakdown=breakdown, resources=resources)


def _cost(arch: ModelArch, fit: Fit, data: TrainerData, timed: DatasetTime, place: Placement,
          breakdown: dict[str, Any], notes: list[str]) -> CostEstimate:
    """Instance price x billed hours; each spot reclaim costs a restart (start-up, download, load) and the work
    since the last checkpoint (the planner's ``_cloud_routes``)."""
    parts = dict(timed.time.breakdown)
    hours = timed.time.hours
    if place.nodes > 1:
        comm = communication_seconds(arch, fit, data, timed, place)
        parts["communication"] = Range.exact(comm)
        hours = hours + Range.exact(comm / 3600)
        notes.append(f"{place.nodes} nodes: {comm / 3600:.2f} h synchronising over {place.interconnect_gbps:g} "
                     "Gbit/s between nodes, not overlapped with compute (an upper bound)")
    restart = parts["start-up"] + parts["model download"] + parts["model load"]
    cost = cloud_cost(hours, place.price * place.nodes, spot=place.spot, restart_hours=restart.scaled(1 / 3600),
                      checkpoint_hours=parts["checkpoints"].expected / data.checkpoints / 3600)
    breakdown.update(hours=cost.hours.to_json(), hours_by_part={k: round(v.expected / 3600, 4)
                                                                for k, v in parts.items()},
                     cost_usd=cost.usd.to_json(), cost=cost.breakdown)
    return cost


def communication_seconds(arch: ModelArch, fit: Fit, data: TrainerData, timed: DatasetTime,
                          place: Placement) -> float:
    """The run's synchronisations across nodes: one per optimizer step (DDP), one per micro-batch (FSDP)."""
    setup = fit.setup
    shape = ModelShape(arch)
    element = trainable_bytes(setup)
    sharded = setup.sharding in ("fsdp", "zero3")
    train_share = timed.real_tokens / timed.padding.real_tokens if timed.padding.real_tokens else 1.0
    micro_batches = data.epochs * timed.padding.steps * train_share / place.ranks  # per rank
    syncs = micro_batches if sharded else micro_batches / setup.grad_accumulation
    per_sync = comm_seconds_per_step(param_bytes=shape.total_params * element,
                                     grad_bytes=trainable_params(shape, setup) * element, ranks=place.ranks,
                                     sharded=sharded, link_gb_per_s=place.interconnect_gbps / 8)
    return per_sync * syncs


def _host_memory(arch: ModelArch, place: Placement) -> str:
    """Loading reads the 16-bit weights through the host's RAM: an instance with less cannot load the model."""
    weights_gib = arch.params * 2 / 2**30
    memory = place.instance.memory_gib
    if memory is not None and memory < weights_gib:
        return (f"{memory:g} GiB of host RAM is less than the model's {weights_gib:.0f} GiB of 16-bit weights, "
                "which loading reads through it")
    return ""


def _setup_json(fit: Fit) -> dict[str, Any]:
    s = fit.setup
    return {"micro_batch": s.micro_batch, "grad_accumulation": s.grad_accumulation, "seq_len": s.seq_len,
            "grad_checkpointing": s.grad_checkpointing, "n_gpus": s.n_gpus, "sharding": s.sharding}
