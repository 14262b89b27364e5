"""Pricing an EC2 job, PURE (no I/O, no clock, no boto3): the one computation behind the EC2 backend's quote and
the plan's AWS routes, so they agree to the cent.

``price_instance(config, arch, stats, instance_row, catalog, market)`` is the local trainer's estimate for that
instance's GPUs (``preflight.trainer_data``, ``estimate.run.fit_setup``, ``TrainerData.time``) with the start-up and
model-download overheads of a rented machine (``CLOUD_OVERHEADS``), times the catalog's on-demand or spot price
(``estimate.cost.cloud_cost``, which adds the expected spot reclaims). ``ec2_quote`` turns one price into the
backend's Quote: refused when it does not fit, with the changes that would and the AWS instances that do; the budget
checked against price x the runtime cap (``runtime_cap_minutes``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from ftbroker.backends.base import Quote, Verdict
from ftbroker.backends.gpu_routes import CLOUD_OVERHEADS  # boot, set-up and model download: the plan's figures
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import (
    lowered_batch_note,
    no_fit_reason,
    not_fit_reason,
    trainer_data,
    untimed_note,
)
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate import summarize
from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.compute import Range
from ftbroker.estimate.cost import CostEstimate, cloud_cost
from ftbroker.estimate.run import DatasetTime, Fit, fit_setup
from ftbroker.pricing.catalog import CloudInstance, GpuSpec, ModelArch, is_stale

NAME = "ec2"
CLOUD = "aws"
Market = Literal["on-demand", "spot"]



@dataclass(frozen=True)
class Ec2Price:
    """One job priced on one instance type in one market, as ``quote`` and the plan's AWS routes show it."""

    instance: CloudInstance
    gpu: GpuSpec
    market: Market
    region: str
    usd_per_hour: Decimal
    fit: Fit  # the setup that fits (the config's, else the largest smaller micro-batch), or why none does
    time: DatasetTime | None  # None: it does not fit
    cost: CostEstimate | None  # None: it does not fit, or the GPU's throughput is unknown
    reason: str = ""  # why it cannot run there ("" when it can)

    @property
    def hours(self) -> Range | None:
        """Billed hours: the estimate's wall-clock, and for spot the expected reclaims' restarts and lost work."""
        if self.cost is not None:
            return self.cost.hours
        return self.time.time.hours if self.time is not None and self.time.time is not None else None

    @property
    def feasible(self) -> bool:
        return not self.reason

    @property
    def hardware(self) -> str:
        return f"{self.instance.gpu_count}x {self.gpu.name} ({self.instance.instance_type} {self.market}, " \
               f"{self.region})"


def market_price(inst: CloudInstance, market: Market) -> tuple[Decimal | None, str]:
    """The catalog's price per instance-hour in ``market`` and the region it was seen in."""
    if market == "spot":
        return inst.spot_usd_per_hour, inst.spot_region or inst.region
    return inst.on_demand_usd_per_hour, inst.region


def price_instance(config: TrainConfig, arch: ModelArch, stats: Any, inst: CloudInstance, catalog: Any,
                   market: Market, *, validation: Any = None, calibration: Calibration | None = None
                   ) -> Ec2Price | None:
    """The trainer under ``config`` on ``inst`` (a catalog row) in ``market``: the setup that fits, the hours and the
    cost, or why it cannot run; None when the catalog has no price in that market. ``stats`` / ``validation``: the
    training and validation files' TokenStats counted with the model's tokenizer. The ONE pricing of an AWS route:
    the plan's routes and ``Ec2Backend.quote`` both call it, so they agree to the cent."""
    price, region = market_price(inst, market)
    if price is None:
        return None
    cal = calibration or default_calibration()
    gpu = catalog.gpus[inst.gpu]
    data = trainer_data(config, stats, validation)
    fit = fit_setup(arch, gpu, config.training_setup(seq_len=data.seq_len, n_gpus=inst.gpu_count), calibration=cal)
    reason = data.context_reason(arch)
    if not fit.fits:
        return Ec2Price(inst, gpu, market, region, price, fit, None, None, reason or no_fit_reason(fit, gpu))
    timed = data.time(arch, gpu, fit.setup, CLOUD_OVERHEADS, cal)
    weights_gib = arch.params * 2 / 2**30
    if not reason and inst.memory_gib is not None and inst.memory_gib < weights_gib:
        reason = (f"{inst.memory_gib:g} GiB of host RAM is less than the model's {weights_gib:.0f} GiB of 16-bit "
                  "weights, which loading reads through it")
    cost = None
    if timed.time is not None:
        parts = timed.time.breakdown
        restart = parts["start-up"] + parts["model download"] + parts["model load"]
        cost = cloud_cost(timed.time.hours, price, spot=market == "spot", restart_hours=restart.scaled(1 / 3600),
                          checkpoint_hours=parts["checkpoints"].expected / data.checkpoints / 3600)
    return Ec2Price(inst, gpu, market, region, price, fit, timed, cost, reason)


def aws_instances(catalog: Any) -> list[CloudInstance]:
    return [i for i in catalog.instances if i.cloud == CLOUD]


def aws_instance(catalog: Any, instance_type: str) -> CloudInstance:
    """The catalog's row of an AWS instance type (UnknownNameError, with the closest names, when it has none)."""
    rows = {i.instance_type: i for i in aws_instances(catalog)}
    if instance_type not in rows:
        raise UnknownNameError("AWS instance type", instance_type, rows,
                               hint="`ftbroker catalog show --kind instances` lists them")
    return rows[instance_type]


def aws_prices(config: TrainConfig, arch: ModelArch, stats: Any, catalog: Any, market: Market, *,
               validation: Any = None) -> list[Ec2Price]:
    """The job priced on every AWS instance of the catalog in ``market``: feasible and priced first, cheapest first."""
    prices = [p for i in aws_instances(catalog)
              if (p := price_instance(config, arch, stats, i, catalog, market, validation=validation))]
    return sorted(prices, key=lambda p: (not p.feasible, p.cost is None, p.cost.usd.expected if p.cost else 0,
                                         p.usd_per_hour))


def runtime_cap_minutes(price: Ec2Price, options: Any) -> int | None:
    """The hard cap the instance sets on itself: ``max_hours``, else the estimate x ``safety_factor`` but never under
    the estimate's high end; None when neither is known."""
    if options.max_hours is not None:
        return math.ceil(options.max_hours * 60)
    hours = price.hours
    if hours is None:
        return None
    return math.ceil(max(hours.expected * options.safety_factor, hours.high) * 60)


def _usd(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _alternatives(prices: Sequence[Ec2Price], shown: int = 3) -> str:
    fits = [p for p in prices if p.feasible][:shown]
    if not fits:
        return "no AWS instance of the catalog fits it"
    return "AWS instances that fit: " + "; ".join(
        f"{p.instance.instance_type} ({p.instance.gpu_count}x {p.gpu.name} {p.gpu.memory_gib:g} GiB, "
        f"${p.usd_per_hour}/h {p.market}" + (f", about ${p.cost.usd.expected:.2f}" if p.cost else "") + ")"
        for p in fits)


def ec2_quote(price: Ec2Price, config: TrainConfig, arch: ModelArch, options: Any, prices: Sequence[Ec2Price],
              today: Any) -> Quote:
    """The backend's Quote of ``price`` (``options``: its Ec2Options): refused (does not fit) with the changes that
    would fit and the AWS instances that do (``prices``: the job on every AWS instance); the budget is checked
    against price x the runtime cap."""
    inst, fit = price.instance, price.fit
    notes = [n for n in (inst.note,) if n]
    if is_stale(inst.as_of, today):
        notes.append(f"the catalog's {inst.instance_type} price is from {inst.as_of}, over 90 days old")
    reason = price.reason
    if not fit.fits:
        setup = config.training_setup(seq_len=fit.setup.seq_len, n_gpus=inst.gpu_count)
        reason = not_fit_reason(summarize(arch, setup, price.gpu), config)
    elif not reason:
        reason = lowered_batch_note(config, fit)
    if reason:
        force = "; or --force to run anyway"
        reason = f"{reason.removesuffix(force)}; {_alternatives(prices)}{force}"
    cap = runtime_cap_minutes(price, options)
    hours = price.hours
    if not reason and cap is None:
        raise InputError(f"ec2: the run on {inst.instance_type} cannot be timed ({untimed_note(price.gpu)}), so its "
                         "runtime cap is unknown: give one with --max-hours (or --option max_hours=H)")
    if hours is None and fit.fits:
        notes.append(untimed_note(price.gpu))
    if cap is not None:
        notes.append(f"runtime cap {cap // 60}h{cap % 60:02d}m, set on the instance itself: it powers off (and "
                     "terminates) then, whatever happens to this machine")
    breakdown: dict[str, Any] = {
        "instance_type": inst.instance_type, "region": price.region, "market": price.market,
        "usd_per_hour": str(price.usd_per_hour), "price_source": inst.source, "price_as_of": inst.as_of.isoformat(),
        "runtime_cap_minutes": cap, "safety_factor": options.safety_factor,
        "setup": {"micro_batch": fit.setup.micro_batch, "grad_accumulation": fit.setup.grad_accumulation,
                  "seq_len": fit.setup.seq_len, "n_gpus": fit.setup.n_gpus},
        "vram_gib": fit.memory.to_json()}
    if price.time is not None and price.time.time is not None:
        breakdown["hours_by_part"] = {k: round(v.expected / 3600, 4) for k, v in price.time.time.breakdown.items()}
    if price.cost is not None:
        breakdown.update(hours=price.cost.hours.to_json(), cost=price.cost.breakdown,
                         cost_usd=price.cost.usd.to_json())
    resources = {"estimated_peak_vram_gib": round(fit.memory.total, 3)}
    if hours is not None:
        resources["estimated_hours"] = hours.expected
    return Quote(backend=NAME, verdict=Verdict.DOES_NOT_FIT if reason else Verdict.OK, reason=reason or None,
                 cost_usd=price.cost.usd.expected if price.cost else None,
                 cost_high_usd=_usd(price.usd_per_hour * cap / 60) if cap is not None else None,
                 hours=hours.expected if hours else None, peak_vram_gib=fit.memory.total, hardware=price.hardware,
                 warnings=tuple(notes), breakdown=breakdown, resources=resources)


def attempt_cost(seconds: float, usd_per_hour: Decimal) -> Decimal:
    """What ``seconds`` of an instance cost: per-second billing with a 60 s minimum (Linux on-demand and spot;
    https://aws.amazon.com/ec2/pricing/on-demand/)."""
    return _usd(Decimal(str(max(60.0, seconds))) * usd_per_hour / 3600)
