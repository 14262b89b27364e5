"""Cost of GPU routes (Decimal money, ranges, spot restarts) and the shipped calibration."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from estimate_fixtures import UNTIMED, RTX4090
from ftbroker.errors import CatalogError, InputError
from ftbroker.estimate.calibration import GPU_CLASSES, default_calibration, parse_calibration
from ftbroker.estimate.compute import Range
from ftbroker.estimate.cost import (
    DEFAULT_INTERRUPTIONS_PER_HOUR,
    checkpoint_interval,
    cloud_cost,
    local_cost,
)
from ftbroker.vocabulary import METHODS


def test_local_electricity_is_hand_checkable_decimal():
    est = local_cost(Range(10, 10, 10), RTX4090, 2, usd_per_kwh=Decimal("0.20"), power_w=400)
    assert est.usd.expected == Decimal("1.60")  # 2 GPUs x 0.4 kW x 10 h x 0.20 $/kWh
    assert all(isinstance(v, Decimal) for v in (est.usd.low, est.usd.expected, est.usd.high))
    default = local_cost(Range(1, 2, 3), RTX4090)
    assert default.usd.low < default.usd.expected < default.usd.high  # TDP x utilisation range
    assert "EIA" in default.breakdown["price"]
    with pytest.raises(InputError, match="no TDP"):
        local_cost(Range(1, 1, 1), UNTIMED)


def test_on_demand_cloud_is_price_times_hours():
    est = cloud_cost(Range(2, 3, 4), Decimal("2.49"))
    assert (est.usd.low, est.usd.expected, est.usd.high) == (Decimal("4.98"), Decimal("7.47"), Decimal("9.96"))
    assert est.checkpoint_interval_hours is None


def test_spot_allowance_for_preemption_restarts():
    hours = Range(10, 10, 10)
    lam = Range(0.01, 0.01, 0.01)
    est = cloud_cost(hours, Decimal("1.00"), spot=True, restart_hours=Range(0.25, 0.25, 0.25),
                     checkpoint_hours=0.05, interruptions_per_hour=lam)
    tau = math.sqrt(2 * 0.05 / 0.01)  # Young: sqrt(2 C MTBF)
    assert est.checkpoint_interval_hours == pytest.approx(tau)
    expected = 10 + 0.01 * 10 * (0.25 + tau / 2) + 10 / tau * 0.05
    assert est.hours.expected == pytest.approx(expected)
    assert est.usd.expected == Decimal(str(expected)).quantize(Decimal("0.0001"))
    assert checkpoint_interval(0.05, 0) is None
    rate = DEFAULT_INTERRUPTIONS_PER_HOUR
    assert rate.low < rate.expected < rate.high


def test_shipped_calibration_is_complete_and_dated():
    cal = default_calibration()
    assert cal.fitted_on and cal.points
    for method in METHODS:
        for klass in GPU_CLASSES:
            assert 0.05 < cal.efficiency(method, klass) < 1.0
    assert cal.eager_slowdown >= 1 and cal.dequant_bytes_per_param > 0 and 0 < cal.spread < 1


def test_broken_calibration_is_a_catalog_error():
    with pytest.raises(CatalogError, match="invalid estimator calibration"):
        parse_calibration("[memory]\nactivation_scale = 'x'\n", "test.toml")
