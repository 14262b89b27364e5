"""How long the catalog takes to import and load (it is on the `ftbroker plan` path). Prints its figures.

    python bench/catalog_load.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def main(rounds: int) -> None:
    code = ("import time; t = time.perf_counter(); import ftbroker.pricing.catalog as c; "
            "print(time.perf_counter() - t)")
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(5)]
    from ftbroker.pricing.catalog import load_catalog

    loads = []
    for _ in range(rounds):
        start = time.perf_counter()
        catalog = load_catalog()
        loads.append(time.perf_counter() - start)
    rows = sum(1 for _ in catalog.rows())
    print(f"catalog import (fresh process, median of 5): {statistics.median(imports) * 1e3:.1f} ms")
    print(f"load_catalog() over {rounds} rounds: median {statistics.median(loads) * 1e3:.1f} ms, "
          f"min {min(loads) * 1e3:.1f} ms ({rows} rows: {len(catalog.gpus)} GPUs, {len(catalog.instances)} instances, "
          f"{len(catalog.managed)} managed offers, {len(catalog.models)} models)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
