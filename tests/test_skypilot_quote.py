"""The SkyPilot backend's quote is the plan's route, to the cent (one pricing path, backends/local/cloud.py), and
the price of several nodes adds their communication."""

from __future__ import annotations

import dataclasses

import pytest

from ftbroker.backends.local.backend import LocalOptions, train_config
from ftbroker.backends.local.cloud import Placement, cloud_quote
from ftbroker.backends.skypilot import backend
from ftbroker.broker import Broker
from ftbroker.planning import plan
from ftbroker.pricing.catalog import load_catalog
from ftbroker.spec import JobSpec

DATA = "examples/data/support_chats.jsonl"
ROUTES = [  # (cloud, instance type, market, method)
    ("lambda", "gpu_1x_h100_sxm5", "on-demand", "lora"),
    ("gcp", "a2-highgpu-8g", "spot", "full"),
    ("azure", "Standard_NC4as_T4_v3", "spot", "qlora"),
    ("nebius", "gpu-h100-sxm_8gpu-128vcpu-1600gb", "spot", "lora"),
    ("azure", "Standard_NC4as_T4_v3", "on-demand", "full"),  # does not fit: both say why
]


@pytest.fixture(scope="module")
def routes():
    found = plan(DATA, models=["Llama-3.1-8B"], all_instances=True).routes
    return {(r.backend, r.instance, r.pricing, r.method): r for r in found if r.kind == "cloud"}


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.setattr(backend.SkyPilotBackend, "capabilities",  # quoting needs no SkyPilot SDK
                        dataclasses.replace(backend.SkyPilotBackend.capabilities, requires={}))
    with Broker(tmp_path / "home") as b:
        yield b


@pytest.mark.parametrize("route_key", ROUTES, ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}-{k[3]}")
def test_the_quote_is_the_plans_route(routes, broker, route_key):
    cloud, instance, market, method = route_key
    route = routes[route_key]
    spec = JobSpec(dataset=DATA, model="Llama-3.1-8B", method=method, backend="skypilot",
                   backend_options={"cloud": cloud, "instance_type": instance, "spot": market == "spot",
                                    "bucket": "s3://b/p", "max_hours": 5})
    quote = broker.prepare(spec).quote
    assert quote.cost_usd == route.cost_usd
    assert (round(quote.hours, 3) if quote.hours is not None else None) == route.hours
    assert round(quote.peak_vram_gib, 2) == route.vram_gib
    assert (quote.verdict.value == "ok") is route.feasible
    assert quote.breakdown.get("region", route.breakdown["region"]) == route.breakdown["region"]


def _quote(nodes: int, gbps: float = 100.0):
    catalog = load_catalog()
    report = plan(DATA, models=["Llama-3.1-70B"]).dataset
    stats = next(iter(report.tokens.values()))
    config = train_config(JobSpec(dataset=DATA, model="Llama-3.1-70B", method="full"), LocalOptions())
    instance = next(i for i in catalog.instances if i.instance_type == "gpu_8x_h100_sxm5")
    return cloud_quote(config, catalog.model("Llama-3.1-70B"), Placement(instance, nodes=nodes, interconnect_gbps=gbps),
                       catalog, backend="skypilot", stats=stats)


def test_full_fine_tuning_of_70b_needs_two_nodes_of_8_h100_and_pays_their_communication():
    one, two, fast = _quote(1), _quote(2), _quote(2, gbps=3200)
    assert one.verdict.value == "does_not_fit" and "per GPU" in one.reason
    assert two.verdict.value == "ok" and two.peak_vram_gib < 80
    assert two.breakdown["setup"]["n_gpus"] == 16 and two.breakdown["setup"]["sharding"] == "fsdp"
    comm = two.breakdown["hours_by_part"]["communication"]
    assert comm > 0 and fast.breakdown["hours_by_part"]["communication"] == pytest.approx(comm / 32, abs=1e-4)
    assert two.hours == pytest.approx(sum(two.breakdown["hours_by_part"].values()), abs=1e-3)
    assert float(two.cost_usd) == pytest.approx(float(two.breakdown["usd_per_hour"]) * 2 * two.hours, abs=0.01)
