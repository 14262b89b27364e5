"""The planner, PURE: routes contributed by route sources -> a ranked, numbered, explained ``Plan``.

No I/O, no clock (``today`` is an input), no SDK, no torch, and no backend: the routes come from route sources
(``ftbroker.routes.RouteSource``: each backend contributes the routes it can run; the shell, ``ftbroker.plan_io``,
adds a stand-in for catalog rows no backend claims yet). The planner asks the sources which token counters they
need (``token_needs``), then, given the dataset counted with them (``RouteContext``), composes their routes, ranks
them and numbers them (``build_plan``). A route's number is its place in the plan: the tables show it whatever the
view, and ``ftbroker run --route N`` takes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ftbroker.routes import (
    AS_ASKED,
    PlanOptions,
    Route,
    RouteContext,
    RouteSource,
    TokenizerSpec,
    TokenNeed,
    plan_epochs,
    route_order,
)

if TYPE_CHECKING:  # the dataset report's type and the catalog; the planner only reads their fields
    from ftbroker.data.report import DatasetReport
    from ftbroker.pricing.catalog import Catalog

# The plan's sections, in the order they are numbered and shown: (kind, market).
SECTIONS = (("managed", ""), ("local", ""), ("cloud", "on-demand"), ("cloud", "spot"))
# Hours closer than this share are within the estimator's own error (its goal for the median time error, 20%;
# measured 14% held out, p90 44%: bench/results/estimator_accuracy.txt), so a dearer route is a best route only
# when it is at least this much quicker: 0.10 h for $2.45 is no faster than 0.11 h for under a cent.
TIME_TOLERANCE = 0.2
MAX_KNEES = 2  # best routes between the cheapest and the fastest
KNEE_MIN_BEND = 0.05  # how far (on the front's log-log scale, 0-1) a knee must stand from the straight trade-off


@dataclass(frozen=True)
class CatalogInfo:
    version: str
    oldest: date
    newest: date
    files: tuple[str, ...]
    stale_rows: int

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "as_of": {"oldest": self.oldest.isoformat(),
                                                   "newest": self.newest.isoformat()},
                "files": list(self.files), "stale_rows": self.stale_rows}


@dataclass(frozen=True)
class DataFile:
    """A file the plan read, as it was then: ``ftbroker run --route`` refuses it once it has changed."""

    role: str  # "dataset" | "validation"
    path: str  # absolute
    size_bytes: int
    mtime_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Best:
    """A best route: the cheapest, the fastest, or a knee between, and what it trades against its neighbour."""

    label: str  # "cheapest" | "fastest" | "cheapest, fastest" | "balanced"
    route: Route
    trade: str  # e.g. "2.1x the cost of #6 for 40% less time"
    versus: Route | None = None  # the route the trade names

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "number": self.route.number, "id": self.route.id, "trade": self.trade,
                "versus": self.versus.number if self.versus else None}


@dataclass(frozen=True)
class Plan:
    """Every route for one dataset, numbered in the order of the plan's sections (``SECTIONS``: managed, local,
    cloud on-demand, cloud spot); in each, the available by cost, then those without a price, then those out."""

    dataset: DatasetReport
    validation: DatasetReport | None
    routes: tuple[Route, ...]
    catalog: CatalogInfo
    today: date
    options: PlanOptions
    notes: tuple[str, ...] = ()  # about the plan as a whole (which models, which GPU, what was assumed)
    files: tuple[DataFile, ...] = ()  # the files read, set by the shell (the pure planner reads none)

    @cached_property
    def best(self) -> tuple[Best, ...]:
        """The best routes (``best_routes``): from the cheapest to the fastest the plan trusts."""
        return best_routes(self.routes, self.options)

    @cached_property
    def passed_over(self) -> tuple[Route, ...]:
        """Routes that would be best routes but for a price the plan doubts (``Route.doubt``)."""
        doubted = [r for r in self.routes if r.doubt and _eligible(replace(r, stale=False, price_doubt="",
                                                                          price_known=True), self.options)]
        front = _front([*doubted, *(b.route for b in self.best)])
        return tuple(r for r in front if r.doubt)

    @property
    def cheapest(self) -> Route | None:
        return self.best[0].route if self.best else None

    @property
    def fastest(self) -> Route | None:
        return self.best[-1].route if self.best else None

    def route(self, number: int) -> Route | None:
        return self.routes[number - 1] if 0 < number <= len(self.routes) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_json(),
            "validation": self.validation.to_json() if self.validation else None,
            "routes": [r.to_json() for r in self.routes],
            "best": [b.to_json() for b in self.best],
            "passed_over": [r.number for r in self.passed_over],
            "cheapest": self.cheapest.id if self.cheapest else None,
            "fastest": self.fastest.id if self.fastest else None,
            "catalog": self.catalog.to_json(),
            "today": self.today.isoformat(),
            "options": self.options.to_json(),
            "notes": list(self.notes),
            "files": {f.role: f.to_json() for f in self.files},
        }


def token_needs(sources: Iterable[RouteSource], catalog: Catalog, options: PlanOptions) -> list[TokenNeed]:
    """Every counter the sources' routes need, once each in the order first asked, with the tightest limit."""
    limits: dict[TokenizerSpec, int | None] = {}
    for source in sources:
        for need in source.token_needs(catalog, options):
            known = limits.get(need.spec)
            limits[need.spec] = need.limit if known is None else min(known, need.limit or known)
    return [TokenNeed(spec, limit) for spec, limit in limits.items()]


def build_plan(context: RouteContext, sources: Sequence[RouteSource], notes: Sequence[str] = ()) -> Plan:
    """The sources' routes ranked and numbered, and their notes (each once) after ``notes``. Every route trains
    the plan's number of epochs: ``--epochs``, else ``routes.plan_epochs`` for this dataset."""
    context = with_plan_epochs(context)
    routes = numbered(_limits(r, context.options) for source in sources for r in source.routes(context))
    said = dict.fromkeys([*notes, *(n for source in sources for n in source.plan_notes(context))])
    catalog = context.catalog
    oldest, newest = catalog.as_of_range()
    info = CatalogInfo(version=catalog.version, oldest=oldest, newest=newest, files=catalog.files,
                       stale_rows=len(catalog.stale_rows(context.today)))
    return Plan(dataset=context.report, validation=context.validation,
                routes=routes, catalog=info,
                today=context.today, options=context.options, notes=tuple(said))


def with_plan_epochs(context: RouteContext) -> RouteContext:
    """``context`` with the plan's epochs set: the ones asked for, else those the plan recommends for its size."""
    options = context.options
    if options.epochs is not None:
        return context if options.epochs_rule else replace(context, options=replace(options, epochs_rule=AS_ASKED))
    epochs, rule = plan_epochs(context.report.examples)
    return replace(context, options=replace(options, epochs=epochs, epochs_rule=rule))


def _limits(route: Route, options: PlanOptions) -> Route:
    """``route`` with a note when it is over the user's budget or past their deadline (it stays in the plan)."""
    over = []
    if options.max_cost is not None and route.cost_usd is not None and route.cost_usd > options.max_cost:
        over.append(f"over your --max-cost ${options.max_cost:,.2f}")
    if options.deadline_hours is not None and route.hours is not None and route.hours > options.deadline_hours:
        over.append(f"past your --deadline of {options.deadline_hours:g} h")
    return replace(route, notes=(*route.notes, "; ".join(over))) if over else route


def _eligible(r: Route, options: PlanOptions) -> bool:
    """Whether ``r`` may be a best route: available, priced, a price the plan trusts, within budget and deadline
    (a route whose time nobody publishes cannot be held to a deadline)."""
    return (r.feasible and r.cost_usd is not None and not r.doubt
            and (options.max_cost is None or r.cost_usd <= options.max_cost)
            and (options.deadline_hours is None or (r.hours is not None and r.hours <= options.deadline_hours)))


def _cost(r: Route) -> Decimal:
    """The price of a route that may be a best route (``_eligible`` keeps only priced ones)."""
    if r.cost_usd is None:
        raise ValueError(f"route {r.id} has no price: it cannot be a best route")
    return r.cost_usd


def _hours(r: Route) -> float:
    return r.hours if r.hours is not None else math.inf  # unknown: not known to be quick


def _front(routes: Iterable[Route]) -> list[Route]:
    """The cost-time Pareto front, cheapest first: each next route at least TIME_TOLERANCE quicker."""
    front: list[Route] = []
    for r in sorted(routes, key=lambda r: (r.cost_usd, _hours(r), route_order(r))):
        if not front or (r.hours is not None and r.hours <= _hours(front[-1]) * (1 - TIME_TOLERANCE)):
            front.append(r)
    return front


def best_routes(routes: Iterable[Route], options: PlanOptions) -> tuple[Best, ...]:
    """The best routes the plan trusts (``_eligible``): the cheapest, the fastest (meaningfully: ``TIME_TOLERANCE``),
    and up to MAX_KNEES knees of the front between them, each with what it trades against the one before."""
    eligible = [r for r in routes if _eligible(r, options)]
    front = _front(eligible)
    if not front:
        return ()
    picked = {id(r): r for r in (front[0], *_knees([r for r in front if r.hours is not None]), front[-1])}
    chosen = sorted(picked.values(), key=lambda r: (r.cost_usd, _hours(r)))  # routes hold dicts: keyed by id
    best = []
    if len(chosen) == 1:
        r, quickest = chosen[0], _quickest(chosen[0], eligible)
        label = "cheapest, fastest" if r.hours is not None else "cheapest"
        return (Best(label, r, _not_quicker(quickest), quickest),)
    for i, r in enumerate(chosen):
        label = "cheapest" if i == 0 else "fastest" if i == len(chosen) - 1 else "balanced"
        versus = chosen[i + 1] if i == 0 else chosen[i - 1]
        best.append(Best(label, r, _trade(r, versus), versus))
    return tuple(best)


def _quickest(best: Route, eligible: Sequence[Route]) -> Route | None:
    """For a route both cheapest and fastest: the quickest route, which is not quicker by enough to count."""
    quickest = min((r for r in eligible if r.hours is not None), key=lambda r: (r.hours, r.cost_usd), default=None)
    return None if best.hours is None or quickest is None or _hours(quickest) >= best.hours else quickest


def _not_quicker(quickest: Route | None) -> str:
    return "" if quickest is None else (f"#{quickest.number} takes {quickest.hours:.2f} h for "
                                        f"${quickest.cost_usd:,.2f}: not {TIME_TOLERANCE:.0%} quicker")


def _knees(front: Sequence[Route]) -> list[Route]:
    """Up to MAX_KNEES routes of a timed front where its trade-off bends most: on log cost and log hours scaled to
    0-1, the one farthest from the line between the chosen routes around it, as long as it stands KNEE_MIN_BEND
    off it (Douglas-Peucker's choice of the points that shape a curve)."""
    if len(front) < 3 or any(_cost(r) <= 0 for r in front):
        return []
    xs = [math.log(float(_cost(r))) for r in front]
    ys = [math.log(max(_hours(r), 1e-6)) for r in front]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    points = [((x - min(xs)) / span_x, (y - min(ys)) / span_y) for x, y in zip(xs, ys, strict=True)]
    kept = [0, len(front) - 1]
    for _ in range(MAX_KNEES):
        bends = [(_off_line(points[k], points[a], points[b]), k)
                 for a, b in zip(kept, kept[1:], strict=False) for k in range(a + 1, b)]
        bend, k = max(bends, default=(0.0, -1))
        if bend < KNEE_MIN_BEND:
            break
        kept = sorted([*kept, k])
    return [front[k] for k in kept[1:-1]]


def _off_line(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    length = math.hypot(bx - ax, by - ay)
    return abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / length if length else math.hypot(px - ax, py - ay)


def _trade(r: Route, other: Route) -> str:
    """What ``r`` trades against ``other``, its neighbour on the front: "2.1x the cost of #6 for 40% less time"."""
    cost, other_cost = _cost(r), _cost(other)
    if cost <= other_cost:  # the cheaper: ``other`` is quicker, so its hours are known
        saving = 1 - float(cost / other_cost) if other_cost else 0.0
        money = f"{saving:.0%} less than #{other.number}"
        return f"{money}; its time is not published" if r.hours is None else \
            f"{money} for {r.hours / _hours(other):.1f}x the time"
    money = (f"{float(cost / other_cost):.1f}x the cost of #{other.number}" if other_cost
             else f"${cost:.2f} more than #{other.number}")
    # the dearer: ``r`` is quicker, so its hours are known
    return f"{money}, whose time is not published" if other.hours is None else \
        f"{money} for {1 - _hours(r) / other.hours:.0%} less time"


def numbered(routes: Iterable[Route]) -> tuple[Route, ...]:
    """``routes`` in the plan's order (``Plan``), each with its number: 1, 2, ... in that order."""
    return tuple(replace(r, number=n) for n, r in enumerate(sorted(routes, key=_plan_order), 1))


def _plan_order(r: Route) -> tuple[Any, ...]:
    section = (r.kind, r.market if r.kind == "cloud" else "")
    return (SECTIONS.index(section) if section in SECTIONS else len(SECTIONS), *route_order(r))
