"""Price sanity: what the loader doubts or leaves out of the instance rows because it contradicts itself."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ftbroker.pricing.catalog.schema import CloudInstance, GpuSpec


def _with_note(inst: CloudInstance, note: str, **changes: Any) -> CloudInstance:
    return dataclasses.replace(inst, note="; ".join(n for n in (inst.note, note) if n), **changes)


def _gpu_family(name: str) -> tuple[str, bool]:
    """(the name without its memory size, whether it had one): A100-SXM-40GB and A100-SXM-80GB are one family."""
    family = re.sub(r"-?\d+GB$", "", name)
    return family, family != name


def price_sanity(instances: Iterable[CloudInstance], gpus: Mapping[str, GpuSpec]) -> list[CloudInstance]:
    """The rows as upstream gave them, less what contradicts itself (SkyPilot's catalogs carry such artefacts):

    * a spot price above the same instance's on-demand price is left out (the row keeps its on-demand price);
    * an instance whose GPU is the larger-memory card of a family (A100-SXM-80GB beside A100-SXM-40GB) but costs
      less per GPU-hour on demand than the smaller card on the same cloud, at the same GPU count, is kept with
      ``price_doubt`` saying so: one of the two prices is wrong, and a plan must not recommend it as cheapest.
    """
    rows = []
    for inst in instances:
        od, spot = inst.on_demand_usd_per_hour, inst.spot_usd_per_hour
        if od is not None and spot is not None and spot > od:
            inst = _with_note(inst, f"spot price left out: {spot} $/h was above the on-demand {od} $/h in the source",
                              spot_usd_per_hour=None, spot_region="")
        rows.append(inst)
    cheapest: dict[tuple[str, int, str], dict[str, Decimal]] = {}  # (cloud, count, family) -> gpu -> $/GPU-hour
    for inst in rows:
        family, sized = _gpu_family(inst.gpu)
        if sized and inst.on_demand_usd_per_hour is not None:
            per_gpu = inst.on_demand_usd_per_hour / inst.gpu_count
            by_gpu = cheapest.setdefault((inst.cloud, inst.gpu_count, family), {})
            by_gpu[inst.gpu] = min(per_gpu, by_gpu.get(inst.gpu, per_gpu))
    out = []
    for inst in rows:
        family, sized = _gpu_family(inst.gpu)
        if sized and inst.on_demand_usd_per_hour is not None:
            per_gpu = inst.on_demand_usd_per_hour / inst.gpu_count
            smaller = [(gpu, price) for gpu, price in cheapest[(inst.cloud, inst.gpu_count, family)].items()
                       if gpus[gpu].memory_gib < gpus[inst.gpu].memory_gib and price > per_gpu]
            if smaller:
                gpu, price = max(smaller, key=lambda item: item[1])
                doubt = (f"{inst.gpu} at {per_gpu:.2f} $/GPU-hour costs less than the smaller {gpu} "
                         f"({price:.2f}) on {inst.cloud}: one of the two source prices is wrong")
                inst = _with_note(inst, doubt, price_doubt=doubt)
        out.append(inst)
    return out
