"""A managed job is priced as `ftbroker plan` prices its route: the same real token counts (tiktoken/quicktok
o200k_base for OpenAI, the llama3-family estimate for a Together open model), the same catalog row, the same
billing rule. The ledger keeps that estimate; a `--max-cost` below it refuses the job (exit 3) before anything
is recorded or sent; a route the catalog has no price for (Bedrock) is refused with that reason."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from fakes.harnesses import PROVIDERS, priced
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the frozen catalog, on a day its OpenAI routes are open


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def plan_route(data, valid, model: str, route_id: str, *settings) -> dict:
    # one evaluation of the validation file: what the Together backend asks for when there is one
    result = ftb("plan", data, "--model", model, "--method", "lora", "--validation-file", valid, "--n-evals", 1,
                 *settings, "--json")
    assert result.exit_code == 0, result.output
    return next(r for r in json.loads(result.stdout)["routes"] if r["id"] == route_id)


@pytest.mark.parametrize("name", priced())
def test_the_estimate_is_the_plans_and_the_budget_refuses_over_it(name, tmp_path, monkeypatch):
    provider = PROVIDERS[name]
    data = write_chat(tmp_path / "data.jsonl", n=300)
    valid = write_chat(tmp_path / "valid.jsonl", n=20, start=1000)
    route = plan_route(data, valid, provider.plan_model, provider.route_id, *provider.plan_settings)
    assert route["feasible"] and route["price_known"] and route["cost_usd"] > 0
    assert route["breakdown"]["exact_tokens"] is (name == "openai")  # o200k_base counted exactly, offline

    with provider.fake(advance_on_poll=True) as fake:
        provider.credentials(fake, provider.key_prefix + name, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **provider.options(fake)}.items()]
        run = ["run", data, "--backend", name, "--model", provider.model, "--validation", valid, "--yes", "--detach",
               "--epochs", route["epochs"], *options]  # the plan's epochs, as its route's job runs it
        refused = ftb(*run, "--max-cost", route["cost_usd"] / 2)
        assert refused.exit_code == 3, refused.output
        assert f"estimated cost ${Decimal(str(route['cost_usd'])):.4f} is over --max-cost" in refused.stderr
        assert fake.requests == []

        started = ftb(*run, "--max-cost", route["cost_usd"])
        assert started.exit_code == 0, started.output
        assert len(fake.calls("jobs.create")) == 1

    with Broker() as broker:  # FTBROKER_HOME, as the CLI used it
        (job,) = broker.jobs()
    assert job.estimated_cost_usd == Decimal(str(route["cost_usd"]))
    if name == "openai":  # OpenAI bills trained tokens at the quoted price: the price is kept to price them
        assert job.resources["quoted_usd_per_m_tokens"] == route["breakdown"]["usd_per_m_tokens"]


def test_a_together_model_is_priced_by_its_size_tier(tmp_path, monkeypatch):
    together = PROVIDERS["together"]
    data = write_chat(tmp_path / "data.jsonl", n=50)
    with together.fake() as fake, Broker(tmp_path / "home") as broker:
        together.credentials(fake, together.key_prefix + "size-tier", monkeypatch, tmp_path)
        spec = {"dataset": str(data), "model": together.model, "backend": "together",
                "backend_options": {**FAST, **together.options(fake)}}
        quote = broker.prepare(JobSpec(**spec)).quote
        assert quote.cost_usd is not None and quote.cost_usd > 0
        assert quote.breakdown["usd_per_m_tokens"] == Decimal("0.48")  # the frozen "up to 16B" LoRA SFT price
        assert any("up to 16B size tier (8B)" in w for w in quote.warnings)
        full = broker.prepare(JobSpec(**{**spec, "method": "full"})).quote
        assert full.breakdown["usd_per_m_tokens"] == Decimal("0.54")
        assert fake.requests == []


@pytest.mark.parametrize("model", [PROVIDERS["bedrock"].model, "amazon.nova-micro-v1:0:128k"])
def test_a_bedrock_route_without_a_price_is_refused_under_a_budget(model, tmp_path):
    data = write_chat(tmp_path / "data.jsonl", n=20)
    bedrock = PROVIDERS["bedrock"]
    with bedrock.fake() as aws:
        options = {**FAST, **bedrock.options(aws)}
        run = ["run", data, "--backend", "bedrock", "--model", model, "--yes", "--detach",
               *(f"--option={k}={v}" for k, v in options.items())]
        refused = ftb(*run, "--max-cost", 100)
        assert refused.exit_code == 3, refused.output
        assert (f"cannot be estimated (price unknown: the catalog has no bedrock training price for {model}), so it "
                "cannot be held to --max-cost $100") in refused.stderr
        assert aws.jobs() == {}
        assert ftb(*run).exit_code == 0 and len(aws.jobs()) == 1  # without a budget it runs, its cost unknown


def test_a_vertex_route_without_a_price_is_refused_under_a_budget_and_a_closed_one_with_its_date(tmp_path,
                                                                                                monkeypatch):
    data = write_chat(tmp_path / "data.jsonl", n=20)
    vertex = PROVIDERS["vertex"]
    with vertex.fake(advance_on_poll=True) as fake:
        vertex.credentials(fake, fake.access_token, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **vertex.options(fake)}.items()]
        run = ["run", data, "--backend", "vertex", "--epochs", 1, "--yes", "--detach", *options]
        refused = ftb(*run, "--model", vertex.model, "--max-cost", 100)
        assert refused.exit_code == 3, refused.output
        assert "price unknown: the catalog has no vertex training price for gemini-3.5-flash" in refused.stderr
        closed = ftb(*run, "--model", "gemini-2.5-flash")
        assert closed.exit_code == 3 and "closed: the model reached end of life on 2026-10-16" in closed.stderr
        unknown = ftb(*run, "--model", "gemini-4-argon")
        assert unknown.exit_code == 2 and "the catalog lists no Vertex tuning of 'gemini-4-argon'" in unknown.stderr
        assert fake.jobs == {} and fake.objects == {}
        assert ftb(*run, "--model", vertex.model).exit_code == 0 and len(fake.jobs) == 1
