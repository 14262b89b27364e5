"""``ftbroker catalog update``: cloud GPU prices refreshed from SkyPilot's published catalogs.

SkyPilot keeps one ``vms.csv`` per cloud in github.com/skypilot-org/skypilot-catalog (``catalogs/<schema>/<cloud>/``):
an instance type, its accelerators and its price in every region. An update reads each cloud's file at its newest
commit (GitHub's commits API gives the commit and its date), keeps the cheapest region of each GPU instance type,
on demand and spot (GCP lists host VMs and GPUs apart: an instance is the host plus its GPUs, priced where both
are), and writes the rows to ``user_catalog_dir()/instances-<cloud>.csv``, where ``load_catalog`` reads them over
the shipped ones: each row with that commit as its source, the commit's date as ``as_of`` and the update's day as
``verified``. Rows the upstream file no longer lists stay as they were, and go stale 90 days after their own check.

This module is the pure part: the upstream file into catalog rows, and what they change. Fetching and writing are
``ftbroker.catalog_update``'s (the only network I/O of ftbroker's core, on the user's command only).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from ftbroker.errors import UnknownNameError
from ftbroker.pricing.catalog import Catalog, CloudInstance

REPO = "skypilot-org/skypilot-catalog"
SCHEMA = "v9"  # the current catalog schema (skypilot-catalog PR #185, 2026-07-09: v8 + MaximumEfaInterfaces)
CLOUDS = ("aws", "gcp", "lambda", "nebius", "vast", "fluidstack", "cudo")  # the clouds with a v9 vms.csv
FIELDS = ("cloud", "instance_type", "gpu", "gpu_count", "on_demand_usd_per_hour", "spot_usd_per_hour", "region",
          "spot_region", "vcpus", "memory_gib", "source", "as_of", "note", "verified")
# SkyPilot accelerator names the catalog's GPU lookup (names, aliases) does not resolve by itself
ACCELERATORS = {"H100-MEGA": "H100-SXM"}
# GCP host VM families and the GPU their machine types carry (a2-highgpu-4g: 4 x A100 40 GB)
GCP_HOSTS = {"a2-highgpu": "A100", "a2-megagpu": "A100", "a2-ultragpu": "A100-80GB", "a3-highgpu": "H100",
             "a3-edgegpu": "H100", "a3-megagpu": "H100-MEGA", "a3-ultragpu": "H200", "a4-highgpu": "B200"}


@dataclass(frozen=True)
class Fetched:
    cloud: str
    commit: str
    day: date     # the commit's date: when these prices were published
    path: str     # catalogs/<schema>/<cloud>/vms.csv
    text: str


def _money(text: str | None) -> Decimal | None:
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value > 0 else None


@dataclass
class _Cheapest:
    """The cheapest on-demand and spot price of one instance type over the regions read."""

    gpu: str
    count: int
    vcpus: str
    memory: str
    on_demand: Decimal | None = None
    region: str = ""
    spot: Decimal | None = None
    spot_region: str = ""

    def offer(self, on_demand: Decimal | None, spot: Decimal | None, region: str) -> None:
        if on_demand is not None and (self.on_demand is None or on_demand < self.on_demand):
            self.on_demand, self.region = on_demand, region
        if spot is not None and (self.spot is None or spot < self.spot):
            self.spot, self.spot_region = spot, region


def _count(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _gcp_prices(rows: Sequence[Mapping[str, str]]) -> dict[str, _Cheapest]:
    """GCP instances: host VM + its GPUs, priced only in a region where both the host and the GPUs are listed."""
    gpus: dict[tuple[str, int, str], tuple[Decimal | None, Decimal | None]] = {}
    for r in rows:
        if not r.get("InstanceType") and r.get("AcceleratorName"):
            count = int(_count(r.get("AcceleratorCount", "")))
            prices = (_money(r.get("Price")), _money(r.get("SpotPrice")))
            gpus[(r["AcceleratorName"], count, r.get("Region", ""))] = prices
    out: dict[str, _Cheapest] = {}
    for r in rows:
        name = r.get("InstanceType", "")
        match = re.fullmatch(r"(a\d-\w+gpu)-(\d+)g", name)
        if not match or match.group(1) not in GCP_HOSTS or r.get("AcceleratorName"):
            continue
        accelerator, count, region = GCP_HOSTS[match.group(1)], int(match.group(2)), r.get("Region", "")
        gpu_price, gpu_spot = gpus.get((accelerator, count, region), (None, None))
        host, host_spot = _money(r.get("Price")), _money(r.get("SpotPrice"))
        cheapest = out.setdefault(name, _Cheapest(accelerator, count, r.get("vCPUs", ""), r.get("MemoryGiB", "")))
        cheapest.offer(host + gpu_price if host and gpu_price else None,
                       host_spot + gpu_spot if host_spot and gpu_spot else None, region)
    return out


def parse_vms(fetched: Fetched, catalog: Catalog, today: date) -> tuple[list[dict[str, str]], Counter[str]]:
    """``fetched``'s GPU instance types as catalog rows (``FIELDS``), and a count of what was left out and why."""
    rows = list(csv.DictReader(io.StringIO(fetched.text)))
    skipped: Counter[str] = Counter()
    if fetched.cloud == "gcp":
        prices = _gcp_prices(rows)
    else:
        prices = {}
        for r in rows:
            name, accelerator = r.get("InstanceType", ""), r.get("AcceleratorName", "")
            count = _count(r.get("AcceleratorCount", ""))
            if not name or not accelerator:
                continue
            if count < 1 or count != int(count):
                skipped["a fraction of a GPU"] += 1
                continue
            cheapest = prices.setdefault(name, _Cheapest(accelerator, int(count), r.get("vCPUs", ""),
                                                         r.get("MemoryGiB", "")))
            cheapest.offer(_money(r.get("Price")), _money(r.get("SpotPrice")), r.get("Region", ""))
    source = f"{REPO}@{fetched.commit[:8]} {fetched.path}"
    out = []
    for name, p in sorted(prices.items()):
        try:
            gpu = catalog.gpu(ACCELERATORS.get(p.gpu, p.gpu)).name
        except UnknownNameError:
            skipped[f"GPU not in the catalog: {p.gpu}"] += 1
            continue
        if p.on_demand is None and p.spot is None:
            skipped["no price"] += 1
            continue
        per_gpu = [price / p.count for price in (p.on_demand, p.spot) if price is not None]
        if not all(Decimal("0.01") <= price <= 30 for price in per_gpu):
            skipped["a price outside 0.01..30 $/GPU-hour"] += 1
            continue
        memory = _count(p.memory)
        out.append({"cloud": fetched.cloud, "instance_type": name, "gpu": gpu, "gpu_count": str(p.count),
                    "on_demand_usd_per_hour": str(p.on_demand or ""), "spot_usd_per_hour": str(p.spot or ""),
                    "region": p.region, "spot_region": p.spot_region if p.spot_region != p.region else "",
                    "vcpus": str(int(_count(p.vcpus))) if _count(p.vcpus) >= 1 else "",
                    "memory_gib": f"{memory:g}" if memory >= 1 else "", "source": source,
                    "as_of": fetched.day.isoformat(),
                    "note": "host VM + GPUs (the catalog lists them apart)" if fetched.cloud == "gcp" else "",
                    "verified": today.isoformat()})
    return out, skipped


@dataclass(frozen=True)
class Change:
    cloud: str
    instance_type: str
    gpus: str
    what: str                       # "new" | "price" | "unchanged" | "gone" (not in the upstream file any more)
    on_demand: tuple[Decimal | None, Decimal | None] = (None, None)  # before, after
    spot: tuple[Decimal | None, Decimal | None] = (None, None)

    def to_json(self) -> dict[str, Any]:
        def pair(values: tuple[Decimal | None, Decimal | None]) -> list[float | None]:
            return [None if v is None else float(v) for v in values]

        return {"cloud": self.cloud, "instance_type": self.instance_type, "gpus": self.gpus, "change": self.what,
                "on_demand_usd_per_hour": pair(self.on_demand), "spot_usd_per_hour": pair(self.spot)}


@dataclass(frozen=True)
class Update:
    """One cloud read from upstream: its rows, what was left out and why, and what changed."""

    fetched: Fetched
    rows: list[dict[str, str]]
    skipped: Counter[str]
    changes: list[Change]

    def counts(self) -> Counter[str]:
        return Counter(c.what for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        f = self.fetched
        return {"cloud": f.cloud, "source": f"{REPO}@{f.commit} {f.path}", "as_of": f.day.isoformat(),
                "instance_types": len(self.rows), "counts": dict(self.counts()), "left_out": dict(self.skipped),
                "changes": [c.to_json() for c in self.changes if c.what != "unchanged"]}


def changes(cloud: str, before: Iterable[CloudInstance], rows: Iterable[Mapping[str, str]]) -> list[Change]:
    """What the update changes for ``cloud``, against the rows in force before it."""
    old = {i.instance_type: i for i in before if i.cloud == cloud}
    out = []
    for r in rows:
        gpus = f"{r['gpu_count']}x{r['gpu']}"
        new = (_money(r["on_demand_usd_per_hour"]), _money(r["spot_usd_per_hour"]))
        was = old.pop(r["instance_type"], None)
        if was is None:
            out.append(Change(cloud, r["instance_type"], gpus, "new", (None, new[0]), (None, new[1])))
            continue
        prior = (was.on_demand_usd_per_hour, was.spot_usd_per_hour)
        what = "unchanged" if all(_same(a, b) for a, b in zip(prior, new)) else "price"
        out.append(Change(cloud, r["instance_type"], gpus, what, (prior[0], new[0]), (prior[1], new[1])))
    out += [Change(cloud, i.instance_type, f"{i.gpu_count}x{i.gpu}", "gone",
                   (i.on_demand_usd_per_hour, None), (i.spot_usd_per_hour, None)) for i in old.values()]
    return out


def _same(a: Decimal | None, b: Decimal | None) -> bool:
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))
