"""The best routes of a plan (``planner.best_routes``): the cost-time front of the routes whose price the plan trusts,
each dearer one at least TIME_TOLERANCE quicker, with its knees and what each trades; budget and deadline. Pure, on
hand-made routes (the figures are the test's, not the catalog's)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from plan_reports import report, stats

from ftbroker import planner
from ftbroker.planner import MAX_KNEES, TIME_TOLERANCE, best_routes
from ftbroker.routes import Hardware, PlanOptions, Route, RouteContext


def gpu(name: str, cost: str, hours: float | None, *, kind: str = "cloud", **fields) -> Route:
    return Route(kind=kind, backend=None, model="M", method="lora", hardware=Hardware("L40S"), hours=hours,
                 cost_usd=Decimal(cost), cloud="aws" if kind == "cloud" else "", instance_type=name,
                 market="on-demand" if kind == "cloud" else "", **fields)


def names(best) -> list[tuple[str, str]]:
    return [(b.label, b.route.instance_type or b.route.kind) for b in best]


def test_a_dearer_route_must_be_meaningfully_quicker():
    local = gpu("", "0.004", 0.11, kind="local", stale=True)  # the user's electricity: its age is no doubt
    b200 = gpu("8xB200", "2.45", 0.10)
    (alone,) = best_routes(planner.numbered([local, b200]), PlanOptions())
    assert (alone.label, alone.route.kind) == ("cheapest, fastest", "local")
    assert alone.trade == "#2 takes 0.10 h for $2.45: not 20% quicker" and alone.versus.instance_type == "8xB200"
    quicker = gpu("8xH100", "1.10", 0.11 * (1 - TIME_TOLERANCE) - 0.001)
    best = best_routes(planner.numbered([local, b200, quicker]), PlanOptions())
    assert names(best) == [("cheapest", "local"), ("fastest", "8xH100")]
    assert best[1].trade == f"275.0x the cost of #{best[0].route.number} for 21% less time"


@pytest.mark.parametrize("doubt", [{"stale": True}, {"price_doubt": "spot above on-demand"}, {"price_known": False}])
def test_a_price_the_plan_doubts_is_never_a_best_route_but_is_named(doubt):
    cheap = gpu("doubted", "0.01", 1.0, **doubt)
    fine = gpu("fine", "0.50", 1.0)
    plan = planner.Plan(dataset=report({"k": stats({10: 1})}), validation=None, routes=planner.numbered([cheap, fine]),
                        catalog=planner.CatalogInfo("v", date(2026, 1, 1), date(2026, 1, 1), (), 0),
                        today=date(2026, 11, 28), options=PlanOptions())
    assert names(plan.best) == [("cheapest, fastest", "fine")]
    assert [r.instance_type for r in plan.passed_over] == ["doubted"] and cheap.doubt


def test_knees_are_where_the_front_bends_and_there_are_few():
    front = [gpu(f"i{n}", cost, hours) for n, (cost, hours) in enumerate(
        [("1", 10.0), ("1.2", 2.0), ("1.5", 1.5), ("2", 1.1), ("20", 0.8), ("40", 0.5)])]
    best = best_routes(planner.numbered(front), PlanOptions())
    assert names(best)[0] == ("cheapest", "i0") and names(best)[-1] == ("fastest", "i5")
    assert names(best)[1] == ("balanced", "i3")  # 9x quicker for 2x the cost, then 20x the cost for 27% less
    assert len(best) <= 2 + MAX_KNEES
    straight = [gpu(f"s{n}", str(2 ** n), 1 / 2 ** n) for n in range(5)]  # the same trade all along: no knee
    assert names(best_routes(planner.numbered(straight), PlanOptions())) == [("cheapest", "s0"), ("fastest", "s4")]


def test_a_route_without_a_time_is_best_only_as_the_cheapest():
    api = Route(kind="managed", backend="together", provider="together", model="M", method="lora",
                cost_usd=Decimal("0.20"))
    cloud = gpu("g6e", "0.30", 0.2)
    best = best_routes(planner.numbered([api, cloud]), PlanOptions())
    assert names(best) == [("cheapest", "managed"), ("fastest", "g6e")]
    assert best[0].trade == "33% less than #2; its time is not published"
    assert best[1].trade == "1.5x the cost of #1, whose time is not published"
    dearer = Route(kind="managed", backend="together", provider="together", model="M", method="full",
                   cost_usd=Decimal("0.90"))
    assert names(best_routes(planner.numbered([dearer, cloud]), PlanOptions())) == [("cheapest, fastest", "g6e")]


def test_budget_and_deadline_mark_routes_and_keep_them_off_the_best():
    routes = [gpu("cheap-slow", "0.10", 5.0), gpu("mid", "0.80", 1.0), gpu("dear-quick", "6.00", 0.2)]
    options = PlanOptions(max_cost=Decimal("1"), deadline_hours=2.0, epochs=3, epochs_rule="--epochs")

    class Source:
        def token_needs(self, catalog, options):
            return []

        def routes(self, context):
            return routes

        def plan_notes(self, context):
            return []

    context = RouteContext(report({"k": stats({10: 1})}), None, _Catalog(), options, {}, date(2026, 11, 28))
    plan = planner.build_plan(context, [Source()])
    by = {r.instance_type: r for r in plan.routes}
    assert "past your --deadline of 2 h" in by["cheap-slow"].notes
    assert "over your --max-cost $1.00" in by["dear-quick"].notes
    assert names(plan.best) == [("cheapest, fastest", "mid")]
    assert plan.to_json()["options"]["max_cost"] == 1.0 and plan.to_json()["options"]["deadline_hours"] == 2.0


class _Catalog:
    version = "v"
    files = ()

    def as_of_range(self):
        return date(2026, 1, 1), date(2026, 1, 1)

    def stale_rows(self, today):
        return []
