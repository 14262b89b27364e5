"""`ftbroker run --route N` (the last plan) and `--from-plan PLAN.json --route N`: route N of the plan, dispatched
to the backend the route names, as the plan priced it; routes ftbroker cannot run, changed data and flags that
would pick another route refused with the reason, and nothing recorded."""

from __future__ import annotations

import json
import stat
from decimal import Decimal

import pytest
from click.testing import CliRunner
from fakes.harnesses import PROVIDERS, priced
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.ledger import Ledger, default_home
from ftbroker.route_jobs import load_plan, route_fields
from ftbroker.spec import load_spec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it


@pytest.fixture(autouse=True)
def no_gpu_here(no_gpu):
    """Plans here see no GPU, whatever machine runs them."""


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def plan(*args) -> dict:
    done = ftb("plan", *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def numbered(doc: dict, **match) -> dict:
    return next(r for r in doc["routes"] if all(r[k] == v for k, v in match.items()))


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl", n=300)


def test_the_last_plan_is_kept_as_printed(data):
    doc = plan(data, "--model", "Llama-3.2-1B", "--gpu", "L4")
    assert load_plan(None, default_home())[0] == doc
    assert stat.S_IMODE((default_home() / "last-plan.json").stat().st_mode) == 0o600  # it names the user's files
    assert doc["files"]["dataset"]["path"] == str(data) and doc["files"]["dataset"]["size_bytes"] == \
        data.stat().st_size
    assert [r["number"] for r in doc["routes"]] == list(range(1, len(doc["routes"]) + 1))


def test_a_local_route_runs_with_the_quote_the_plan_gave_it(data, tmp_path):
    doc = plan(data, "--model", "Llama-3.2-1B", "--gpu", "L4:2", "--method", "lora", "--epochs", "2")
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(doc))
    route = numbered(doc, kind="local")
    fields, _ = route_fields(doc, route["number"], "plan.json")
    spec = load_spec(None, fields)
    assert (spec.backend, spec.model, spec.method, spec.hyperparameters.epochs, spec.backend_options) == (
        "local", "Llama-3.2-1B", "lora", 2, {"gpu": "L4:2"})
    with Broker() as broker:
        quote = broker.prepare(spec).quote
    assert (round(quote.peak_vram_gib, 2), round(quote.hours, 3), float(quote.cost_usd)) == (
        route["vram_gib"], route["hours"], route["cost_usd"])
    # the same through the CLI, from the file and from the last plan; without a terminal, the quote alone
    for source in (("--from-plan", saved), ()):
        ran = ftb("run", *source, "--route", route["number"])
        assert ran.exit_code == 3 and "confirmation needs a terminal" in ran.stderr, ran.output
        assert f"route #{route['number']} of " in ran.stderr and "2x L4" in ran.stderr
        assert f"{route['vram_gib']:.1f} GiB per GPU" in ran.stderr
    assert Ledger().list() == []


@pytest.mark.parametrize("provider", priced())
def test_a_managed_route_is_submitted_at_the_plans_price(provider, data, tmp_path, monkeypatch):
    record = PROVIDERS[provider]
    valid = write_chat(tmp_path / "valid.jsonl", n=20, start=1000)
    doc = plan(data, "--validation-file", valid, "--model", record.plan_model, "--method", "lora", "--n-evals", 1,
               *record.plan_settings)
    route = numbered(doc, id=record.route_id)
    assert route["runnable"] and route["feasible"] and route["job"]["backend"] == provider
    with record.fake(advance_on_poll=True) as fake:
        record.credentials(fake, record.key_prefix + provider, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **record.options(fake)}.items()]
        # a route a size tier prices names the model by its repo; the provider calls it by an id of its own
        started = ftb("run", "--route", route["number"], "--model", record.model, *options,
                      "--max-cost", route["cost_usd"], "--yes", "--detach")
        assert started.exit_code == 0, started.output
        assert len(fake.calls("jobs.create")) == 1
    with Broker() as broker:
        (job,) = broker.jobs()
    assert job.estimated_cost_usd == Decimal(str(route["cost_usd"]))
    assert (job.spec.backend, job.spec.validation) == (provider, str(valid))
    if provider == "together":  # billed for one evaluation in the plan: the job asks for one
        assert job.spec.backend_options["n_evals"] == 1


def test_flags_beside_the_route_override_its_settings(data):
    doc = plan(data, "--model", "Llama-3.2-1B", "--gpu", "L4", "--method", "qlora")
    route = numbered(doc, kind="local")
    fields, _ = route_fields(doc, route["number"], "plan")
    with Broker() as broker:
        planned = broker.prepare(load_spec(None, fields)).quote
        one_epoch = broker.prepare(load_spec(None, {**fields, "hyperparameters.epochs": 1})).quote
    assert one_epoch.hours < planned.hours and planned.cost_usd == Decimal(str(route["cost_usd"]))
    ran = ftb("run", "--route", route["number"], "--epochs", "1", "--name", "short")
    assert ran.exit_code == 3 and f"{one_epoch.peak_vram_gib:.1f} GiB per GPU" in ran.stderr


@pytest.mark.parametrize("args, message", [
    (("DATA", "--route", 1), "DATA cannot be given with it"),
    (("--route", 1, "--backend", "openai", "--method", "full"), "--backend, --method cannot be given with it"),
    (("--route", 1, "--gpu", "H100"), "--gpu cannot be given with it"),
    (("--from-plan", "plan.json"), "--from-plan needs --route N"),
    (("--route", 999), "has no route #999"),
    (("--route", 1, "--from-plan", "nowhere.json"), "nowhere.json: no such plan file"),
])
def test_flags_that_would_pick_another_route_are_refused(data, args, message):
    plan(data, "--model", "gpt-4o-mini")
    ran = ftb("run", *(str(data) if a == "DATA" else a for a in args))
    assert ran.exit_code == 2 and message in ran.stderr, ran.output
    assert Ledger().list() == []


def test_without_a_plan_the_route_says_how_to_make_one():
    ran = ftb("run", "--route", 1)
    assert ran.exit_code == 2 and "`ftbroker plan DATA` keeps the plan it prints" in ran.stderr


def test_routes_ftbroker_cannot_run_are_refused_with_the_reason(data, monkeypatch):
    doc = plan(data, "--model", "Llama-3.1-8B", "--gpu", "RTX-4090")
    fireworks = numbered(doc, provider="fireworks", method="full")  # Fireworks' API trains LoRA adapters only
    ran = ftb("run", "--route", fireworks["number"])
    assert ran.exit_code == 2 and "is not available: Fireworks' fine-tuning API trains LoRA adapters" in ran.stderr
    cloud = numbered(doc, kind="cloud", cloud="vast")  # SkyPilot mounts no bucket there
    ran = ftb("run", "--route", cloud["number"])
    assert ran.exit_code == 2 and ("no ftbroker backend rents vast instances yet: on the instance, ftbroker's "
                                   "local backend runs it") in ran.stderr
    gcp = numbered(doc, kind="cloud", cloud="gcp")  # skypilot's: it runs, given a bucket
    ran = ftb("run", "--route", gcp["number"])
    assert ran.exit_code == 2 and "backend_options.bucket" in ran.stderr
    aws = numbered(doc, kind="cloud", cloud="aws")  # ec2's: it runs, given where to stage the job
    ran = ftb("run", "--route", aws["number"])
    assert ran.exit_code == 2 and "backend_options.s3_uri: required" in ran.stderr
    full = numbered(doc, kind="local", method="full")  # 8B full fine-tuning on 24 GiB
    ran = ftb("run", "--route", full["number"])
    assert ran.exit_code == 3 and "does not fit at micro-batch 4 or any smaller" in ran.stderr
    monkeypatch.setenv("FTBROKER_NOW", "2027-02-01")  # OpenAI fine-tuning has closed
    closed = numbered(plan(data, "--model", "gpt-4o-mini"), provider="openai")
    assert closed["closed"] and not closed["runnable"]
    ran = ftb("run", "--route", closed["number"])
    assert ran.exit_code == 3 and "closed: " in ran.stderr
    assert Ledger().list() == []


def test_a_dataset_changed_since_the_plan_is_refused(data):
    route = numbered(plan(data, "--model", "Llama-3.2-1B", "--gpu", "L4"), kind="local")
    with data.open("a") as fh:
        fh.write(data.read_text().splitlines()[0] + "\n")
    ran = ftb("run", "--route", route["number"])
    assert ran.exit_code == 2 and f"{data} has changed since the plan read it" in ran.stderr
    data.unlink()
    ran = ftb("run", "--route", route["number"])
    assert ran.exit_code == 2 and "the plan's dataset file cannot be read now" in ran.stderr
