"""Every managed route a plan prices can be run: no feasible managed route of a plan over the shipped catalog lacks
a backend, and a Fireworks and a Vertex AI route of a saved plan run (`ftbroker run --from-plan PLAN --route N`)
against their fakes with the plan's quote."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from fakes.harnesses import PROVIDERS
from fakes.support import FAST, write_chat

from ftbroker.broker import Broker
from ftbroker.ledger import Ledger

from ftbroker.cli import cli

pytestmark = pytest.mark.usefixtures("catalog_day")  # the managed routes are open on it


@pytest.fixture(autouse=True)
def no_gpu_here(no_gpu):
    """Plans here see no GPU, whatever machine runs them."""


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def plan(tmp_path, *args) -> tuple[dict, str]:
    done = ftb("plan", *args, "--json")
    assert done.exit_code == 0, done.output
    saved = tmp_path / "plan.json"
    saved.write_text(done.stdout)
    return json.loads(done.stdout), str(saved)


@pytest.mark.parametrize("name, rows", [("chat", 300), ("preference", 40)])
def test_no_feasible_managed_route_over_the_shipped_catalog_lacks_a_backend(name, rows, tmp_path):
    data = tmp_path / "data.jsonl"
    with data.open("w") as fh:
        for i in range(rows):
            ask = [{"role": "user", "content": f"What is {i} + {i}?"}]
            line = {"messages": [*ask, {"role": "assistant", "content": str(2 * i)}]} if name == "chat" else {
                "input": {"messages": ask}, "preferred_output": [{"role": "assistant", "content": str(2 * i)}],
                "non_preferred_output": [{"role": "assistant", "content": "no idea"}]}
            fh.write(json.dumps(line) + "\n")
    doc, _ = plan(tmp_path, data, "--all")
    managed = [r for r in doc["routes"] if r["kind"] == "managed"]
    assert {r["provider"] for r in managed} >= {"openai", "together", "fireworks", "bedrock", "vertex"} - (
        {"openai", "bedrock", "vertex"} if name == "preference" else set())
    unrunnable = [(r["id"], r["not_runnable"]) for r in managed if r["feasible"] and not r["runnable"]]
    assert unrunnable == []
    assert all(r["backend"] == r["provider"] and r["job"]["backend"] == r["provider"] for r in managed
               if r["feasible"])


def test_a_fireworks_route_of_a_saved_plan_runs_as_priced(tmp_path, monkeypatch):
    fireworks = PROVIDERS["fireworks"]
    data = write_chat(tmp_path / "data.jsonl", n=300)
    doc, saved = plan(tmp_path, data, "--model", fireworks.plan_model, *fireworks.plan_settings)
    route = next(r for r in doc["routes"] if r["provider"] == "fireworks" and r["feasible"])
    assert route["runnable"] and route["method"] == "lora" and route["cost_usd"] > 0
    with fireworks.fake(advance_on_poll=True) as fake:
        fireworks.credentials(fake, "fw-test-key-0123456789", monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **fireworks.options(fake)}.items()]
        # the plan names the model by its repo; Fireworks calls it by an id of its own, given here
        ran = ftb("run", "--from-plan", saved, "--route", route["number"], "--model", fireworks.model,
                  "--max-cost", route["cost_usd"], "--yes", *options)
        assert ran.exit_code == 0, ran.output
        (created,) = fake.calls("jobs.create")
    assert created.json()["epochs"] == 2
    with Broker() as broker:
        (job,) = broker.jobs()
    assert job.status.value == "succeeded" and job.estimated_cost_usd == Decimal(str(route["cost_usd"]))
    assert job.output_model == f"accounts/{fake.account}/models/{job.remote['job_id']}"


def test_a_vertex_route_of_a_saved_plan_runs_with_its_bucket(tmp_path, monkeypatch):
    data = write_chat(tmp_path / "data.jsonl", n=300)
    doc, saved = plan(tmp_path, data, "--model", "gemini-3.5-flash", "--epochs", 1)
    route = next(r for r in doc["routes"] if r["provider"] == "vertex")
    assert route["runnable"] and route["job"] == {"backend": "vertex", "model": "gemini-3.5-flash",
                                                  "hyperparameters": {"epochs": 1}}
    vertex = PROVIDERS["vertex"]
    with vertex.fake(advance_on_poll=True) as fake:
        vertex.credentials(fake, fake.access_token, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **vertex.options(fake)}.items()]
        without_bucket = ftb("run", "--from-plan", saved, "--route", route["number"], "--yes",
                             *(o for o in options if "gcs_uri" not in o))
        assert without_bucket.exit_code == 2 and "backend_options.gcs_uri" in without_bucket.stderr
        assert Ledger().list() == []
        ran = ftb("run", "--from-plan", saved, "--route", route["number"], "--yes", *options)
        assert ran.exit_code == 0, ran.output
        (created,) = fake.calls("jobs.create")
    assert created.json()["baseModel"] == "gemini-3.5-flash"
    with Broker() as broker:
        (job,) = broker.jobs()
    assert job.status.value == "succeeded" and job.output_model.startswith("projects/fake-project/")
