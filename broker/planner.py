"""The planner, PURE: routes contributed by route sources -> a ranked, numbered, explained ``Plan``.

No I/O, no clock (``today`` is an input), no SDK, no torch, and no backend: the routes come from route sources
(``ftbroker.routes.RouteSource``: each backend contributes the routes it can run; the shell, ``ftbroker.planning``,
adds a stand-in for catalog rows no backend claims yet). The planner asks the sources which token counters they
need (``token_needs``), then, given the dataset counted with them (``RouteContext``), composes their routes, ranks
them and numbers them (``build_plan``). A route's number is its place in the plan: the tables show it whatever the
view, and ``ftbroker run --route N`` takes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from ftbroker.routes import PlanOptions, Route, RouteContext, RouteSource, TokenizerSpec, TokenNeed, route_order

if TYPE_CHECKING:  # the dataset report's type and the catalog; the planner only reads their fields
    from ftbroker.data import DatasetReport
    from ftbroker.pricing.catalog import Catalog

# The plan's sections, in the order they are numbered and shown: (kind, market).
SECTIONS = (("managed", ""), ("local", ""), ("cloud", "on-demand"), ("cloud", "spot"))


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

    @property
    def cheapest(self) -> Route | None:
        priced = [r for r in self.routes if r.feasible and r.cost_usd is not None]
        return min(priced, key=route_order) if priced else None

    @property
    def fastest(self) -> Route | None:
        timed = [r for r in self.routes if r.feasible and r.hours is not None]
        return min(timed, key=lambda r: (r.hours, route_order(r))) if timed else None  # at equal hours, cheaper

    def route(self, number: int) -> Route | None:
        return self.routes[number - 1] if 0 < number <= len(self.routes) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_json(),
            "validation": self.validation.to_json() if self.validation else None,
            "routes": [r.to_json() for r in self.routes],
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
    """The sources' routes ranked and numbered, and their notes (each once) after ``notes``."""
    routes = numbered(r for source in sources for r in source.routes(context))
    said = dict.fromkeys([*notes, *(n for source in sources for n in source.plan_notes(context))])
    catalog = context.catalog
    oldest, newest = catalog.as_of_range()
    info = CatalogInfo(version=catalog.version, oldest=oldest, newest=newest, files=catalog.files,
                       stale_rows=len(catalog.stale_rows(context.today)))
    return Plan(dataset=context.report, validation=context.validation,
                routes=routes, catalog=info,
                today=context.today, options=context.options, notes=tuple(said))


def numbered(routes: Iterable[Route]) -> tuple[Route, ...]:
    """``routes`` in the plan's order (``Plan``), each with its number: 1, 2, ... in that order."""
    return tuple(replace(r, number=n) for n, r in enumerate(sorted(routes, key=_plan_order), 1))


def _plan_order(r: Route) -> tuple:
    section = (r.kind, r.market if r.kind == "cloud" else "")
    return (SECTIONS.index(section) if section in SECTIONS else len(SECTIONS), *route_order(r))
