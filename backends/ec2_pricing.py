"""Pricing an EC2 job, PURE (no I/O, no clock, no boto3).

There is one pricing of a job on an AWS instance: ``gpu_routes.instance_quote``, the figures of that instance's route
in a plan (the local trainer's estimate on the instance's GPUs with a rented machine's boot and model download,
times the catalog's on-demand or spot price, spot with its expected reclaims), so ``ftbroker run --backend ec2`` and
the plan's AWS routes agree to the cent. ``ec2_quote`` adds what only the backend needs on top: the instance chosen
when none is named (the cheapest that fits), the runtime cap the instance sets on itself (``runtime_cap_minutes``),
the budget guard's figure (price x cap, the most the instance can bill), and for a job that does not fit the changes
that would and the AWS instances that do. ``attempt_cost`` is what an attempt cost as AWS bills it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from ftbroker.backends.base import Quote, Verdict
from ftbroker.backends.gpu_routes import instance_quote
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import not_fit_reason, untimed_note
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate import summarize
from ftbroker.estimate.measured import Corrections
from ftbroker.pricing.catalog import Catalog, CloudInstance, is_stale
from ftbroker.routes import ModelRequest

NAME = "ec2"
CLOUD = "aws"
Market = Literal["on-demand", "spot"]
FORCE = "; or --force to run anyway"


@dataclass(frozen=True)
class Ec2Quote:
    """The backend's quote of one job, and what it launches: the instance, market, region, price and runtime cap
    (minutes; None when the run cannot be timed)."""

    quote: Quote
    instance: CloudInstance
    market: Market
    region: str
    usd_per_hour: Decimal
    cap_minutes: int | None


def aws_instances(catalog: Catalog) -> list[CloudInstance]:
    return [i for i in catalog.instances if i.cloud == CLOUD]


def aws_instance(catalog: Catalog, instance_type: str) -> CloudInstance:
    """The catalog's row of an AWS instance type (UnknownNameError, with the closest names, when it has none)."""
    rows = {i.instance_type: i for i in aws_instances(catalog)}
    if instance_type not in rows:
        raise UnknownNameError("AWS instance type", instance_type, rows,
                               hint="`ftbroker catalog show --kind instances` lists them")
    return rows[instance_type]


def market_price(inst: CloudInstance, market: Market) -> Decimal | None:
    return inst.spot_usd_per_hour if market == "spot" else inst.on_demand_usd_per_hour


def runtime_cap_minutes(breakdown: Mapping[str, Any], options: Any) -> int | None:
    """The hard cap the instance sets on itself: ``max_hours``, else the billed hours' estimate (a route's
    ``breakdown``: with a spot route's reclaims) x ``safety_factor``, never under its high end; None when neither is
    known."""
    if options.max_hours is not None:
        return math.ceil(options.max_hours * 60)
    hours = breakdown.get("hours_with_reclaims") or breakdown.get("hours")
    if not hours:
        return None
    return math.ceil(max(hours["expected"] * options.safety_factor, hours["high"]) * 60)


def _usd(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def ec2_quote(config: TrainConfig, request: ModelRequest, stats: Any, validation: Any, catalog: Catalog,
              options: Any, today: date, corrections: Corrections = Corrections()) -> Ec2Quote:
    """The job (``config``, the trainer's; ``stats`` / ``validation``: the files' TokenStats counted with the
    model's tokenizer) on the instance ``options`` (the backend's Ec2Options) name, or the cheapest AWS instance
    that fits, in their market: the route's quote (with the user's measured runs, ``corrections``, as the plan's)
    with the runtime cap and the budget held to price x cap."""
    market: Market = "spot" if options.spot else "on-demand"

    def quote_on(inst: CloudInstance) -> Quote:
        return instance_quote(config, request, stats, validation, inst, market, catalog.gpus[inst.gpu],
                              backend=NAME, today=today, corrections=corrections)

    if options.instance_type:
        inst = aws_instance(catalog, options.instance_type)
        if market_price(inst, market) is None:
            raise InputError(f"ec2: the catalog has no {market} price for {inst.instance_type}"
                             + (f" ({inst.note})" if inst.note else "") + "; try the other market (spot=...)")
        quote = quote_on(inst)
        others = None
    else:
        others = _by_cost([(i, quote_on(i)) for i in aws_instances(catalog) if market_price(i, market) is not None])
        inst, quote = next(((i, q) for i, q in others if q.verdict is Verdict.OK and q.cost_usd is not None),
                           others[0])
    region = quote.breakdown["region"]
    if options.region is not None and options.region != region:
        raise InputError(
            f"ec2: the catalog prices {inst.instance_type} {market} in {region} only (the cheapest region read); to "
            f"run in {options.region}, give its price there in your catalog file ([[instance]] cloud = \"aws\", "
            f"instance_type = \"{inst.instance_type}\", region = \"{options.region}\", the price, source and as_of; "
            "`ftbroker catalog show` says where it lives), or leave out region")
    if quote.verdict is Verdict.DOES_NOT_FIT:
        if others is None:
            others = _by_cost([(i, quote_on(i)) for i in aws_instances(catalog)
                               if market_price(i, market) is not None])
        quote = replace(quote, reason=_what_fits(quote, config, request, inst, market, catalog, others))
    cap = runtime_cap_minutes(quote.breakdown, options)
    if quote.verdict is Verdict.OK and cap is None:
        raise InputError(f"ec2: the run on {inst.instance_type} cannot be timed ({untimed_note(catalog.gpus[inst.gpu])}"
                         "), so its runtime cap is unknown: give one with --max-hours (or --option max_hours=H)")
    price = Decimal(str(quote.breakdown["usd_per_hour"]))
    return Ec2Quote(_capped(quote, inst, market, region, price, cap, options.safety_factor, today), inst, market,
                    region, price, cap)


def _by_cost(quotes: Sequence[tuple[CloudInstance, Quote]]) -> list[tuple[CloudInstance, Quote]]:
    """Those that fit and are priced first, cheapest first; then by price per hour."""
    return sorted(quotes, key=lambda iq: (iq[1].verdict is not Verdict.OK, iq[1].cost_usd is None,
                                          iq[1].cost_usd or 0, Decimal(str(iq[1].breakdown["usd_per_hour"]))))


def _what_fits(quote: Quote, config: TrainConfig, request: ModelRequest, inst: CloudInstance, market: Market,
               catalog: Catalog, others: Sequence[tuple[CloudInstance, Quote]]) -> str:
    """Why the job does not fit ``inst``, with the changes that would (out of GPU memory) and the AWS instances it
    fits."""
    reason = quote.reason or ""
    gpu = catalog.gpus[inst.gpu]
    setup = config.training_setup(seq_len=quote.breakdown["setup"]["seq_len"], n_gpus=inst.gpu_count)
    estimate = summarize(request.arch, setup, gpu)
    if estimate.memory.total > gpu.memory_gib:
        reason = not_fit_reason(estimate, config)
    fits = [(i, q) for i, q in others if q.verdict is Verdict.OK][:3]
    where = "AWS instances that fit: " + "; ".join(
        f"{i.instance_type} ({i.gpu_count}x {i.gpu} {catalog.gpus[i.gpu].memory_gib:g} GiB, "
        f"${q.breakdown['usd_per_hour']}/h {market}" +
        (f", about ${q.cost_usd:.2f}" if q.cost_usd is not None else "") + ")" for i, q in fits) \
        if fits else "no AWS instance of the catalog fits it"
    return f"{reason.removesuffix(FORCE)}; {where}{FORCE}"


def _capped(quote: Quote, inst: CloudInstance, market: Market, region: str, price: Decimal, cap: int | None,
            safety_factor: float, today: date) -> Quote:
    """The route's quote with the runtime cap: noted, in the breakdown, and the budget's figure (price x cap)."""
    notes = list(quote.warnings)
    if is_stale(inst, today):
        notes.append(f"the catalog's {inst.instance_type} price was last checked on {inst.verified or inst.as_of}, "
                     "over 90 days ago")
    if cap is not None:
        notes.append(f"runtime cap {cap // 60}h{cap % 60:02d}m, set on the instance itself: it powers off (and "
                     "terminates) then, whatever happens to this machine")
    breakdown = {**quote.breakdown, "instance_type": inst.instance_type, "market": market,
                 "price_source": inst.source, "price_as_of": inst.as_of.isoformat(), "runtime_cap_minutes": cap,
                 "safety_factor": safety_factor}
    return replace(quote, cost_high_usd=_usd(price * cap / 60) if cap is not None else None,
                   hardware=f"{quote.hardware} ({inst.instance_type} {market}, {region})", warnings=tuple(notes),
                   breakdown=breakdown)


def attempt_cost(seconds: float, usd_per_hour: Decimal) -> Decimal:
    """What ``seconds`` of an instance cost: per-second billing with a 60 s minimum (Linux on-demand and spot;
    https://aws.amazon.com/ec2/pricing/on-demand/)."""
    return _usd(Decimal(str(max(60.0, seconds))) * usd_per_hour / 3600)
