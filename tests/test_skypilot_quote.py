"""The SkyPilot backend in a plan: the routes it contributes (its clouds' instances), each quoted by the backend as
the plan priced it (one path: gpu_routes.instance_quote); several nodes add their communication; and a plan's
route run with ``ftbroker run --from-plan PLAN --route N`` is in test_skypilot_task.py, where SkyPilot's loader
takes its task."""

from __future__ import annotations

import dataclasses

import pytest

from ftbroker.backends.gpu_routes import instance_quote
from ftbroker.backends.local.backend import LocalOptions
from ftbroker.backends.local.prepare import train_config
from ftbroker.backends.skypilot import backend
from ftbroker.broker import Broker
from ftbroker.plan_io import plan
from ftbroker.pricing.catalog import load_catalog
from ftbroker.routes import ModelRequest
from ftbroker.spec import JobSpec

DATA = "examples/data/support_chats.jsonl"
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # the routes below, their regions and markets are its rows'
ROUTES = [  # (cloud, instance type, market, method)
    ("lambda", "gpu_1x_h100_sxm5", "on-demand", "lora"),
    ("gcp", "a2-highgpu-8g", "spot", "full"),
    ("azure", "Standard_NC4as_T4_v3", "spot", "qlora"),
    ("nebius", "gpu-h100-sxm_8gpu-128vcpu-1600gb", "spot", "lora"),
]


@pytest.fixture(autouse=True)
def no_sdk_needed(monkeypatch):
    """Quoting and the fake need no SkyPilot SDK."""
    monkeypatch.setattr(backend.SkyPilotBackend, "capabilities",
                        dataclasses.replace(backend.SkyPilotBackend.capabilities, requires={}))


@pytest.fixture(scope="module")
def routes(frozen_catalog):
    found = plan(DATA, models=["Llama-3.1-8B"], all_instances=True).routes
    return [r for r in found if r.kind == "cloud"]


def test_skypilot_runs_the_routes_of_its_clouds(routes):
    runner = {r.cloud: r.backend for r in routes}
    assert {cloud for cloud, name in runner.items() if name == "skypilot"} == set(backend.CLOUDS)
    assert runner["runpod"] is None and runner["vast"] is None  # SkyPilot mounts no bucket there
    assert runner["aws"] != "skypilot"  # the ec2 backend's
    gcp = next(r for r in routes if r.backend == "skypilot" and r.instance_type == "a2-highgpu-8g"
               and r.market == "spot")
    assert gcp.job["backend_options"] == {"instance_type": "a2-highgpu-8g", "cloud": "gcp",
                                          "region": "europe-west4", "spot": True}


@pytest.mark.parametrize("route_key", ROUTES, ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}-{k[3]}")
def test_the_quote_is_the_plans_route(routes, tmp_path, route_key):
    route = next(r for r in routes if (r.cloud, r.instance_type, r.market, r.method) == route_key)
    job = route.job
    spec = JobSpec(**{**job, "dataset": DATA, "backend_options": {**job["backend_options"], "bucket": "s3://b/p"}})
    with Broker(tmp_path / "home") as broker:
        quote = broker.prepare(spec).quote
    assert quote.cost_usd == route.cost_usd
    assert quote.hours == route.hours and quote.peak_vram_gib == route.vram_gib
    assert (quote.verdict.value == "ok") is route.feasible


def _quote(nodes: int, gbps: float = 100.0):
    catalog = load_catalog()
    report = plan(DATA, models=["Llama-3.1-70B"]).dataset
    stats = next(iter(report.tokens.values()))
    config = train_config(JobSpec(dataset=DATA, model="Llama-3.1-70B", method="full",
                                  hyperparameters={"micro_batch_size": 1}),
                          LocalOptions())
    instance = next(i for i in catalog.instances if i.instance_type == "gpu-h100-sxm_8gpu-128vcpu-1600gb")
    return instance_quote(config, ModelRequest("Llama-3.1-70B", catalog.model("Llama-3.1-70B")), stats, None,
                          instance, "on-demand", catalog.gpus[instance.gpu], backend="skypilot",
                          today=catalog.as_of_range()[1], nodes=nodes, interconnect_gbps=gbps)


def test_full_fine_tuning_of_70b_needs_two_nodes_of_8_h100_and_pays_their_communication():
    one, two, fast = _quote(1), _quote(2), _quote(2, gbps=3200)
    assert one.verdict.value == "does_not_fit" and "per GPU" in one.reason
    assert two.verdict.value == "ok" and two.peak_vram_gib < 80
    assert two.breakdown["setup"]["n_gpus"] == 16 and two.breakdown["setup"]["sharding"] == "fsdp"
    comm = two.breakdown["hours_by_part"]["communication"]
    assert comm > 0 and fast.breakdown["hours_by_part"]["communication"] == pytest.approx(comm / 32, abs=1e-4)
    assert two.hours == pytest.approx(sum(two.breakdown["hours_by_part"].values()), abs=1e-3)
    per_hour = 2 * next(i for i in load_catalog().instances  # two instances at the catalog's price
                        if i.instance_type == "gpu-h100-sxm_8gpu-128vcpu-1600gb").on_demand_usd_per_hour
    assert two.breakdown["usd_per_hour"] == per_hour
    assert float(two.cost_usd) == pytest.approx(float(per_hour) * two.hours, abs=0.03)  # hours rounded to 0.001
