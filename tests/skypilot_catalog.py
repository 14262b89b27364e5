"""SkyPilot's catalog cache, seeded offline from ftbroker's own instance rows, for its task loader and optimizer.

SkyPilot reads ``$SKY_RUNTIME_DIR/.sky/catalogs/v8/<cloud>/vms.csv`` (``sky/catalog/common.py`` ``read_catalog``)
and downloads a file only when it is missing; a file without ``.meta/<file>.md5`` counts as edited by hand and is
never fetched again (https://github.com/skypilot-org/skypilot/issues/7106: "People can always add new catalog
files in the local folder"). So writing the files is enough to keep it offline.

The rows are ftbroker's ``pricing/data/instances.csv`` (which was read from SkyPilot's catalogs) in SkyPilot's
columns: one row per region the catalog names, on-demand price in ``region``, spot price in ``spot_region``. The
accelerator column is the catalog's GPU name: when a task names its instance type, SkyPilot takes the GPUs from
the row, whatever they are called. GCP is the exception: its catalog lists host VMs and GPUs apart and ties them
by SkyPilot's own table (``sky/catalog/gcp_catalog.py``), so its GPUs rows use SkyPilot's names (``GCP_GPUS``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ftbroker.pricing.catalog import CloudInstance

COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice",
           "Region", "AvailabilityZone", "GpuInfo")
GCP_GPUS = {"A100-SXM-40GB": "A100", "A100-SXM-80GB": "A100-80GB", "H100-SXM": "H100"}


def seed(runtime_dir: Path, instances: list[CloudInstance]) -> list[str]:
    """Write the catalog files of ``instances``' clouds under ``runtime_dir``; the clouds written."""
    rows: dict[str, list[dict[str, object]]] = {}
    for inst in instances:
        regions = {inst.region: (inst.on_demand_usd_per_hour, None)}
        if inst.spot_usd_per_hour is not None:
            spot_region = inst.spot_region or inst.region
            regions[spot_region] = (regions.get(spot_region, (None, None))[0], inst.spot_usd_per_hour)
        for region, (price, spot) in regions.items():
            zone = f"{region}-a" if inst.cloud == "gcp" else ""
            base = {"InstanceType": inst.instance_type, "vCPUs": inst.vcpus or 8, "MemoryGiB": inst.memory_gib or 64,
                    "Region": region, "AvailabilityZone": zone}
            if inst.cloud == "gcp":  # the host VM (priced at nothing) and its GPUs, apart
                rows.setdefault("gcp", []).append({**base, "Price": 0.0, "SpotPrice": 0.0 if spot else ""})
                rows["gcp"].append({"AcceleratorName": GCP_GPUS[inst.gpu], "AcceleratorCount": inst.gpu_count,
                                    "GpuInfo": GCP_GPUS[inst.gpu],
                                    "Price": price or "", "SpotPrice": spot or "", "Region": region,
                                    "AvailabilityZone": zone})
            else:
                rows.setdefault(inst.cloud, []).append({**base, "AcceleratorName": inst.gpu,
                                                        "AcceleratorCount": inst.gpu_count, "Price": price or "",
                                                        "SpotPrice": spot or ""})
    for cloud, found in rows.items():
        # a column SkyPilot finds empty drops every row (get_region_zones drops NaN sort keys): only those used
        columns = [c for c in COLUMNS if any(r.get(c) not in ("", None) for r in found)]
        folder = runtime_dir / ".sky" / "catalogs" / "v8" / cloud
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "vms.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(found)
    return sorted(rows)
