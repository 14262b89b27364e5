"""Dollar cost of a GPU route: local electricity, cloud on-demand, cloud spot with preemption restarts.

Pure: no I/O, no clock. Money is Decimal; hours and rates are ranges. Every estimate carries a ``breakdown``
of the figures and assumptions it used, for the plan's JSON and the CLI's --explain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from ftbroker.errors import InputError
from ftbroker.estimate.compute import Range
from ftbroker.pricing.catalog import GpuSpec

MONEY_STEP = Decimal("0.0001")  # a hundredth of a cent: a short local run costs less than a cent

# U.S. average residential price, January 2024: 15.45 cents/kWh (EIA Electricity Monthly Update, "End Use",
# https://www.eia.gov/electricity/monthly/update/end-use.php); state averages for 2023 range from 10.98
# (Washington) to 42.39 (Hawaii) cents/kWh (EIA Electric Power Annual 2023, secrev-map).
DEFAULT_USD_PER_KWH = Decimal("0.1545")
DEFAULT_USD_PER_KWH_SOURCE = "EIA Electricity Monthly Update, U.S. average residential price, January 2024"
DEFAULT_USD_PER_KWH_AS_OF = date(2024, 1, 31)
# Sustained board power while training, as a share of TDP (assumption: training keeps tensor cores busy;
# memory-bound phases draw less).
DEFAULT_UTILISATION = Range(0.6, 0.85, 1.0)
# Spot reclaim rate. The AWS Spot Instance Advisor publishes the trailing-month "frequency of interruption" in
# bands (<5%, 5-10%, 10-15%, 15-20%, >20%); GPU families sit at 5-20% (A100 5-10%, H100 10-20%, per the
# advisor as read by thundercompute.com, 2025-05 and 2026-02). Read as the chance that an instance is reclaimed
# within a day of running (the practitioners' reading: "above 10% expect a cut-off during a day-long run"):
# 5% / 10% / 20% per day -> hourly hazards below.
DEFAULT_INTERRUPTIONS_PER_HOUR = Range(-math.log(0.95) / 24, -math.log(0.90) / 24, -math.log(0.80) / 24)


@dataclass(frozen=True)
class MoneyRange:
    low: Decimal
    expected: Decimal
    high: Decimal

    def to_json(self) -> dict[str, float]:
        return {"low": float(self.low), "expected": float(self.expected), "high": float(self.high)}


def _usd(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(MONEY_STEP, rounding=ROUND_HALF_UP)


def _money(quantity: Range, unit_price: Decimal) -> MoneyRange:
    """A range of hours (or kWh) times a Decimal unit price."""
    return MoneyRange(*(_usd(Decimal(str(q)) * unit_price) for q in (quantity.low, quantity.expected, quantity.high)))


@dataclass(frozen=True)
class CostEstimate:
    usd: MoneyRange
    hours: Range                               # billed (or powered) hours, restarts included
    breakdown: dict[str, str] = field(default_factory=dict)
    checkpoint_interval_hours: float | None = None


def local_cost(hours: Range, gpu: GpuSpec, n_gpus: int = 1, *, usd_per_kwh: Decimal = DEFAULT_USD_PER_KWH,
               power_w: float | None = None, utilisation: Range = DEFAULT_UTILISATION) -> CostEstimate:
    """Electricity for the GPUs only (host power excluded). ``power_w`` per GPU overrides TDP x utilisation."""
    if usd_per_kwh < 0:
        raise InputError(f"electricity price must not be negative, got {usd_per_kwh} $/kWh")
    if power_w is not None:
        watts = Range.exact(power_w)
        source = f"{power_w:g} W per GPU (given)"
    elif gpu.tdp_w:
        watts = utilisation.scaled(gpu.tdp_w)
        source = (f"{gpu.tdp_w:g} W TDP x {utilisation.low:.0%}/{utilisation.expected:.0%}/{utilisation.high:.0%}"
                  " utilisation (assumption)")
    else:
        raise InputError(f"{gpu.name} has no TDP in the catalog: pass the power draw (--power-w)")
    kw = watts.scaled(n_gpus / 1000)
    kwh = Range(hours.low * kw.low, hours.expected * kw.expected, hours.high * kw.high)
    return CostEstimate(_money(kwh, usd_per_kwh), hours, {
        "power": f"{n_gpus} x {source}",
        "energy_kwh": f"{kwh.low:.2f} / {kwh.expected:.2f} / {kwh.high:.2f}",
        "price": f"{usd_per_kwh} $/kWh" + (f" ({DEFAULT_USD_PER_KWH_SOURCE})"
                                           if usd_per_kwh == DEFAULT_USD_PER_KWH else " (given)"),
        "excludes": "host CPU, memory and cooling power; the GPU's purchase price",
    })


def checkpoint_interval(checkpoint_hours: float, interruptions_per_hour: float) -> float | None:
    """Young's first-order optimum tau = sqrt(2 * C * MTBF) (J. W. Young, CACM 17(9), 1974)."""
    if interruptions_per_hour <= 0 or checkpoint_hours <= 0:
        return None
    return math.sqrt(2 * checkpoint_hours / interruptions_per_hour)


NO_RESTART = Range(0, 0, 0)


def cloud_cost(hours: Range, usd_per_hour: Decimal, *, spot: bool = False, restart_hours: Range = NO_RESTART,
               checkpoint_hours: float = 0.0,
               interruptions_per_hour: Range = DEFAULT_INTERRUPTIONS_PER_HOUR) -> CostEstimate:
    """Instance price x billed hours (per-second billing assumed). Spot adds, for expected reclaims
    n = lambda x T, each restart (boot, reload, resume: ``restart_hours``) and the work lost since the last
    checkpoint (half an interval on average), plus the checkpoints themselves (T / tau x C)."""
    if usd_per_hour < 0:
        raise InputError(f"price must not be negative, got {usd_per_hour} $/h")
    breakdown = {"price": f"{usd_per_hour} $/h ({'spot' if spot else 'on-demand'})",
                 "billing": "per second (assumption; some clouds bill per minute or per hour)"}
    if not spot:
        return CostEstimate(_money(hours, usd_per_hour), hours, breakdown)
    billed = []
    tau_expected = checkpoint_interval(checkpoint_hours, interruptions_per_hour.expected)
    for t, lam, restart in ((hours.low, interruptions_per_hour.low, restart_hours.low),
                            (hours.expected, interruptions_per_hour.expected, restart_hours.expected),
                            (hours.high, interruptions_per_hour.high, restart_hours.high)):
        tau = checkpoint_interval(checkpoint_hours, lam)
        if tau is None:
            lost, saves = t / 2 if lam > 0 else 0.0, 0.0  # no checkpoints: a reclaim loses half the run
        else:
            lost, saves = tau / 2, (t / tau) * checkpoint_hours
        billed.append(t + lam * t * (restart + lost) + saves)
    h = Range(*billed)
    breakdown.update({
        "reclaims_per_hour": f"{interruptions_per_hour.low:.4f} / {interruptions_per_hour.expected:.4f} / "
                             f"{interruptions_per_hour.high:.4f} (AWS Spot Advisor bands 5/10/20% read per day)",
        "expected_reclaims": f"{interruptions_per_hour.expected * hours.expected:.2f}",
        "restart_hours": f"{restart_hours.expected:.2f} per reclaim (boot + model load + resume)",
        "checkpoint_interval_hours": f"{tau_expected:.2f} (Young's formula)" if tau_expected else "n/a",
        "allowance_hours": f"{h.expected - hours.expected:.2f} over {hours.expected:.2f} h of work",
    })
    return CostEstimate(_money(h, usd_per_hour), h, breakdown, tau_expected)
