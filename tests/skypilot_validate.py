"""Run by the tests in a process of its own (SkyPilot reads its runtime folder and catalogs once, at import):
load each task with SkyPilot's own loader and pass it through its optimizer, offline.

    SKY_RUNTIME_DIR=... HOME=... python skypilot_validate.py TASKS.json CLOUD,CLOUD,...

TASKS.json is a list of ``{"task": TASK, "autodown": BOOL}`` (TASK: SkyPilot's YAML as a dict; autodown: launched
as a cluster with ``down=True``, rather than as a managed job). Prints one JSON object per task: the resources SkyPilot
chose (``ok``: cloud, region, instance type, GPUs, spot, nodes; and the GPUs ftbroker's adapter reads for the
task) or its error (``error``). ``sky.check`` is not run
(it needs credentials): the enabled clouds are the ones given, as SkyPilot's own unit tests set them
(skypilot-org/skypilot tests/common_test_fixtures.py patches ``get_cached_enabled_clouds_or_refresh``). Any
download the catalog code tries is an error, so nothing is fetched. The API server is never needed (the
optimizer runs in this process); ``sky.api_stop()`` at the end makes sure none is left running.
"""

import copy
import json
import sys

import requests


def _no_network(*args, **kwargs):
    raise AssertionError(f"SkyPilot tried to download {args[:1] or kwargs.get('url')}")


requests.get = _no_network  # the catalog's only way out (sky/catalog/common.py)

import sky  # after the network is cut
from sky import check as sky_check
from sky import optimizer
from sky.clouds import CloudImplementationFeatures
from sky.utils import dag_utils
from sky.utils.registry import CLOUD_REGISTRY

from ftbroker.backends.skypilot.adapter import SkyAdapter


def check(config: dict, autodown: bool) -> dict:
    """The task loaded and optimized, and the features its launch asks of the cloud checked, as ``sky.launch``
    does (sky/execution.py: the task's multi-node and storage mounting, and autodown for a cluster)."""
    before = json.dumps(config, sort_keys=True)
    try:
        task = sky.Task.from_yaml_config(copy.deepcopy(config))  # the loader pops what it reads
        dag = optimizer.Optimizer.optimize(dag_utils.convert_entrypoint_to_dag(task), quiet=True)
        best = dag.tasks[0].best_resources
        features = task.get_required_cloud_features() | ({CloudImplementationFeatures.AUTODOWN} if autodown else set())
        best.cloud.check_features_are_supported(best, features)
    except Exception as exc:  # noqa: BLE001 (SkyPilot's verdict, whatever it raises, is the answer)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"ok": {"cloud": str(best.cloud).lower(), "region": best.region, "instance_type": best.instance_type,
                   "accelerators": best.accelerators, "use_spot": best.use_spot, "num_nodes": dag.tasks[0].num_nodes,
                   "storage_mounts": sorted(dag.tasks[0].storage_mounts), "run": dag.tasks[0].run,
                   "adapter_gpus": SkyAdapter().gpus(config),  # what the backend checks before it launches
                   "task_unchanged": json.dumps(config, sort_keys=True) == before}}


def main() -> None:
    with open(sys.argv[1]) as fh:
        launches = json.load(fh)
    enabled = [CLOUD_REGISTRY.from_str(name) for name in sys.argv[2].split(",")]
    sky_check.get_cached_enabled_clouds_or_refresh = lambda *a, **k: enabled
    try:
        for launch in launches:
            print(json.dumps(check(launch["task"], launch["autodown"])), flush=True)
    finally:
        sky.api_stop()


if __name__ == "__main__":
    main()
