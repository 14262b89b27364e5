"""Managed routes as the planner composes them (the managed backends' routes and the stand-in for providers no
backend runs yet, ``ftbroker.backends.managed_routes``): billing rules pinned on hand-checked cases, availability
by date, model selection; and the pure planner: token needs, ranking, numbering, JSON. On the frozen catalog
(tests/fixtures/frozen_catalog): the prices and dates the cases are checked by are its rows', which no refresh
moves."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftbroker import planner
from ftbroker.backends.managed_routes import UnclaimedOffers
from ftbroker.errors import DataIssue
from ftbroker.plan_io import route_sources
from ftbroker.planner import build_plan
from ftbroker.routes import Hardware, ModelRequest, PlanOptions, Route, RouteContext, TokenizerSpec, TokenNeed
from plan_reports import report, stats

TODAY = date(2026, 11, 28)
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # the backends' own catalog reads too


@pytest.fixture(scope="module")
def cat(frozen_catalog):
    return frozen_catalog


def managed_sources(cat):
    """The route sources of managed offers: the managed backends, and the stand-in for providers none runs."""
    return [s for s in route_sources(cat)[0]
            if isinstance(s, UnclaimedOffers) or getattr(getattr(s, "capabilities", None), "managed", False)]


def token_needs(cat, options, sources=None):
    return [n.spec for n in planner.token_needs(managed_sources(cat) if sources is None else sources, cat, options)]


def make_plan(cat, lengths, *, options=PlanOptions(), fmt="chat", today=TODAY, validation_lengths=None,
              per_spec=None, provider_issues=None, size_bytes=1000, sources=None):
    """A plan whose every token counter saw ``lengths`` ({tokens: examples}), unless ``per_spec`` says otherwise.
    Managed routes only, unless ``sources`` says otherwise."""
    sources = managed_sources(cat) if sources is None else sources
    specs = token_needs(cat, options, sources)
    keys = {spec: f"k{i}" for i, spec in enumerate(specs)}

    def counted(hist):
        return {keys[s]: stats((per_spec or {}).get(s, hist), tokenizer=s.tokenizer or s.family or "x") for s in specs}

    train = report(counted(lengths), fmt=fmt, provider_issues=provider_issues, size_bytes=size_bytes)
    validation = report(counted(validation_lengths), fmt=fmt) if validation_lengths else None
    return build_plan(RouteContext(train, validation, cat, options, keys, today), sources)


def route(plan, model, method="sft", objective="sft", provider=None):
    found = [r for r in plan.routes if r.model == model and r.method == method and r.objective == objective
             and provider in (None, r.provider)]
    assert len(found) == 1, [(r.model, r.method, r.objective) for r in plan.routes]
    return found[0]


def ask(cat, *names, **kw):
    return PlanOptions(models=tuple(ModelRequest(n, cat.models.get(n)) for n in names), **kw)


# ---------------------------------------------------------------------------------------------- OpenAI

def test_openai_gpt4o_mini_auto_epochs_billed_tokens_and_cost(cat):
    plan = make_plan(cat, {500: 1000}, options=ask(cat, "gpt-4o-mini"))
    r = route(plan, "gpt-4o-mini-2024-07-18")
    assert r.epochs == 3
    assert r.billed_tokens == 1_500_000
    assert r.cost_usd == Decimal("4.50")
    assert r.feasible and r.kind == "managed" and r.provider == r.backend == "openai"
    assert r.breakdown["epochs_rule"].startswith("OpenAI's auto rule for 1,000 examples")  # the plan's own basis
    assert plan.options.epochs == 3 and plan.routes == (r,)  # only the model asked for
    assert not any("own default" in n for n in r.notes)  # OpenAI's own auto rule is the plan's: nothing to say


def test_every_managed_route_trains_the_plans_epochs_and_says_its_providers_own_default(cat):
    plan = make_plan(cat, {500: 1000}, options=ask(cat, "Llama-3.1-8B"))
    assert {r.epochs for r in plan.routes} == {3} and all(r.job is None or r.job["hyperparameters"]["epochs"] == 3
                                                          for r in plan.routes)
    together = route(plan, "Llama-3.1-8B", method="lora", provider="together")
    assert "together's own default is 1 epoch; priced and run at the plan's" in together.notes
    bedrock = route(plan, "meta.llama3-1-8b-instruct-v1:0:128k")
    assert "bedrock's own default is 5 epochs; priced and run at the plan's" in bedrock.notes
    fireworks = route(plan, "Llama-3.1-8B", method="lora", provider="fireworks")
    assert fireworks.cost_usd == Decimal("0.75")  # priced although Fireworks publishes no default: 1.5M x $0.50


def test_openai_auto_epochs_for_20_examples_is_5(cat):
    r = route(make_plan(cat, {500: 20}, options=ask(cat, "gpt-4o-mini")), "gpt-4o-mini-2024-07-18")
    assert r.epochs == 5 and r.billed_tokens == 50_000 and r.cost_usd == Decimal("0.15")


def test_openai_epochs_flag_wins(cat):
    r = route(make_plan(cat, {500: 20}, options=ask(cat, "gpt-4o-mini", epochs=2)), "gpt-4o-mini-2024-07-18")
    assert r.epochs == 2 and r.billed_tokens == 20_000


def test_openai_bills_long_examples_at_the_per_example_limit(cat):
    plan = make_plan(cat, {1000: 9, 70_000: 1}, options=ask(cat, "gpt-4o-mini", epochs=1))
    r = route(plan, "gpt-4o-mini-2024-07-18")
    assert r.billed_tokens == 9 * 1000 + 65_536
    assert r.feasible
    assert any("1 example(s) over the 65,536-token limit are truncated" in n for n in r.notes)


def test_openai_needs_ten_examples_and_chat_data(cat):
    r = route(make_plan(cat, {500: 5}, options=ask(cat, "gpt-4o-mini")), "gpt-4o-mini-2024-07-18")
    assert not r.feasible and r.reason == "needs at least 10 examples; the file has 5"
    plan = make_plan(cat, {500: 100}, options=ask(cat, "babbage-002", "gpt-4o-mini"))
    assert route(plan, "babbage-002").reason == "takes prompt_completion data; this file is chat"
    assert plan.routes[-1].model == "babbage-002"  # infeasible routes sort last


# ---------------------------------------------------------------------------------------------- availability

@pytest.mark.parametrize("today, feasible, text", [
    (date(2026, 11, 28), True, "closes to new jobs in 39 days (2027-01-06)"),
    (date(2027, 1, 5), True, "closes to new jobs in 1 day (2027-01-06)"),
    (date(2027, 1, 6), False, "closed: no new jobs since 2027-01-06"),
    (date(2027, 2, 1), False, "closed: the model reached end of life on 2027-01-14"),
])
def test_openai_window_closes_2027_01_06(cat, today, feasible, text):
    r = route(make_plan(cat, {500: 100}, options=ask(cat, "gpt-4o-mini"), today=today), "gpt-4o-mini-2024-07-18")
    assert r.feasible is feasible
    assert text in (r.notes[0] if feasible else r.reason)
    assert r.cost_usd is not None  # a closed route still says what it would have cost


def test_open_window_far_from_closing_has_no_warning(cat):
    r = route(make_plan(cat, {500: 100}, options=ask(cat, "gpt-4o-mini"), today=date(2026, 9, 1)),
              "gpt-4o-mini-2024-07-18")
    assert r.feasible and not any("closes" in n for n in r.notes)


@pytest.mark.parametrize("today, feasible", [(date(2026, 9, 9), True), (date(2026, 9, 10), False)])
def test_claude_haiku_on_bedrock_end_of_life_2026_09_10(cat, today, feasible):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Claude 3 Haiku"), today=today)
    r = route(plan, "anthropic.claude-3-haiku-20240307-v1:0:200k")
    assert r.feasible is feasible
    if not feasible:
        assert r.reason.startswith("closed: the model reached end of life on 2026-09-10")
    else:
        assert "closes to new jobs in 1 day (2026-09-10)" in r.notes[0]


def test_retired_openai_models_are_shown_closed_not_dropped(cat):
    plan = make_plan(cat, {500: 100})
    nano = route(plan, "gpt-4.1-nano-2025-04-14")
    assert not nano.feasible and "2026-10-23" in nano.reason
    assert route(plan, "o4-mini-2025-04-16", objective="rft").reason.startswith("closed")


# ---------------------------------------------------------------------------------------------- Together

def test_together_lora_bills_train_x_epochs_plus_validation_x_n_evals(cat):
    options = ask(cat, "Llama-3.1-8B", method="lora", epochs=2, n_evals=3)
    plan = make_plan(cat, {500: 1000}, options=options, validation_lengths={500: 100})
    r = route(plan, "Llama-3.1-8B", method="lora", provider="together")
    together = [x for x in plan.routes if x.provider == "together"]
    assert together == [r]
    assert r.billed_tokens == 500_000 * 2 + 50_000 * 3
    assert r.cost_usd == Decimal("0.552")  # 1,150,000 x $0.48 / 1M
    assert r.breakdown["validation_tokens"] == 50_000 and r.breakdown["n_evals"] == 3
    assert any("tier" in n for n in r.notes)


def test_together_default_n_evals_is_zero(cat):
    plan = make_plan(cat, {500: 1000}, options=ask(cat, "Llama-3.1-8B", method="full", epochs=1),
                     validation_lengths={500: 100})
    r = route(plan, "Llama-3.1-8B", method="full", provider="together")
    assert r.epochs == 1 and r.billed_tokens == 500_000 and r.cost_usd == Decimal("0.27")
    assert any("n_evals is 0" in n for n in r.notes)


def test_minimum_charge_applies(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "DeepSeek-V3", epochs=1))
    r = route(plan, "DeepSeek-V3", method="lora")
    assert r.billed_tokens == 50_000  # $0.50 at $10/1M
    assert r.cost_usd == Decimal("20") and r.breakdown["min_charge_applied"] == Decimal("20")


def test_provider_issues_rule_the_provider_out_each_said_once(cat):
    issues = {"together": [DataIssue("data.jsonl", 7, "two assistant turns in a row (and 4 more lines)"),
                           DataIssue("data.jsonl", 9, "two user turns in a row")]}
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B"), provider_issues=issues)
    for r in plan.routes:
        if r.provider == "together":
            assert not r.feasible and r.reason == ("data.jsonl:7: two assistant turns in a row (and 4 more lines); "
                                                   "line 9: two user turns in a row")
        else:
            assert r.feasible or r.provider == "bedrock" or (r.provider, r.method) == ("fireworks", "full")


# ---------------------------------------------------------------------------------------------- selection

def test_open_model_selects_its_offers_and_size_tiers(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B"))
    found = {(r.provider, r.model, r.method) for r in plan.routes}
    assert found == {("together", "Llama-3.1-8B", "lora"), ("together", "Llama-3.1-8B", "full"),
                     ("fireworks", "Llama-3.1-8B", "lora"), ("fireworks", "Llama-3.1-8B", "full"),
                     ("bedrock", "meta.llama3-1-8b-instruct-v1:0:128k", "sft")}


def test_per_model_offer_wins_over_the_size_tier(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Qwen3-235B-A22B"))
    together = [r for r in plan.routes if r.provider == "together"]
    assert [(r.method, r.cost_usd) for r in together] == [("lora", Decimal("0.90"))]  # 3 x 50k x $6/1M, no tier
    assert {r.provider for r in plan.routes} == {"together", "fireworks"}


def test_method_filter_keeps_provider_managed_offers(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B", method="qlora"))
    assert {r.provider for r in plan.routes} == {"bedrock"}


def test_no_model_shows_every_managed_offer_with_tiers_on_their_reference_model(cat):
    plan = make_plan(cat, {500: 100})
    sft_offers = [o for o in cat.managed if o.objective in ("sft", "rft")]
    assert len(plan.routes) == len(sft_offers)
    tier = route(plan, "Qwen2.5-32B", method="lora", provider="together")
    assert tier.cost_usd == Decimal("0.225") and "17B-69B tier shown for Qwen2.5-32B" in " ".join(tier.notes)


def test_preference_data_selects_dpo_offers(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B"), fmt="preference")
    assert {(r.provider, r.method, r.objective) for r in plan.routes if r.feasible} == {
        ("together", "lora", "dpo"), ("together", "full", "dpo")}
    fireworks = [r for r in plan.routes if r.provider == "fireworks"]  # priced, out: ftbroker runs its SFT jobs only
    assert {r.objective for r in fireworks} == {"dpo"} and all("DPO jobs" in r.reason for r in fireworks)
    assert route(plan, "Llama-3.1-8B", "lora", "dpo", "together").cost_usd == Decimal("0.18")  # 3 x 50k x $1.20


def test_unknown_price_is_shown_not_invented(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B"))
    r = route(plan, "meta.llama3-1-8b-instruct-v1:0:128k")
    assert r.feasible and r.cost_usd is None and not r.price_known
    assert r.epochs == 3 and r.billed_tokens == 150_000
    assert plan.cheapest.provider == "fireworks" and plan.routes.index(r) > plan.routes.index(plan.cheapest)
    assert r.doubt == "price unknown" and all(b.route is not r for b in plan.best)


def test_unpublished_default_epochs_are_priced_at_the_plans_and_the_flag_wins(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B", method="lora"))
    assert route(plan, "Llama-3.1-8B", "lora", provider="together").cost_usd is not None
    fireworks = route(plan, "Llama-3.1-8B", "lora", provider="fireworks")
    assert fireworks.cost_usd == Decimal("0.075") and fireworks.feasible  # 3 x 50k x $0.50
    assert not any("pass --epochs" in n for n in fireworks.notes)
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B", method="lora", epochs=2))
    assert route(plan, "Llama-3.1-8B", "lora", provider="fireworks").cost_usd == Decimal("0.05")  # 100k x $0.50


def test_bedrock_claude_rejects_examples_over_its_limit(cat):
    r = route(make_plan(cat, {500: 40, 40_000: 1}, options=ask(cat, "Claude 3 Haiku"), today=date(2026, 6, 1)),
              "anthropic.claude-3-haiku-20240307-v1:0:200k")
    assert r.reason == "1 example(s) exceed the 31,999-token limit (longest 40,000)"


def test_each_route_is_billed_with_its_own_counter(cat):
    options = ask(cat, "gpt-4o-mini", "Llama-3.1-8B", method="lora", epochs=1)
    llama = TokenizerSpec(hf_repo="meta-llama/Llama-3.1-8B", family="llama3")
    plan = make_plan(cat, {500: 100}, options=options, per_spec={llama: {600: 100}})
    assert route(plan, "gpt-4o-mini-2024-07-18").billed_tokens == 50_000
    assert route(plan, "Llama-3.1-8B", "lora", provider="together").billed_tokens == 60_000


def test_token_needs_and_the_tokenizer_flag(cat):
    specs = token_needs(cat, PlanOptions())
    assert TokenizerSpec(tokenizer="o200k_base") in specs and TokenizerSpec(tokenizer="cl100k_base") in specs
    assert TokenizerSpec(hf_repo="meta-llama/Llama-3.1-8B", family="llama3") in specs
    assert len(specs) == len(set(specs))
    forced = token_needs(cat, ask(cat, "gpt-4o-mini", "Llama-3.1-8B", tokenizer="/tok"))
    assert set(forced) == {TokenizerSpec(tokenizer="o200k_base"), TokenizerSpec(tokenizer="/tok")}


# ---------------------------------------------------------------------------------------------- the Plan

def test_plan_json_shape_and_order(cat):
    plan = make_plan(cat, {500: 1000})
    doc = json.loads(json.dumps(plan.to_json()))
    assert set(doc) >= {"dataset", "routes", "catalog", "cheapest", "fastest"}
    assert doc["catalog"]["version"] == cat.version and doc["catalog"]["as_of"]["oldest"] <= doc["today"]
    first = doc["routes"][0]
    for key in ("backend", "model", "method", "hardware", "feasible", "reason", "vram_gib", "hours", "cost_usd",
                "billed_tokens", "breakdown", "price_source", "price_as_of", "stale"):
        assert key in first
    assert isinstance(first["cost_usd"], float) and first["hardware"] is None and first["vram_gib"] is None
    feasible = [r["feasible"] for r in doc["routes"]]
    assert feasible == sorted(feasible, reverse=True)
    costs = [r["cost_usd"] for r in doc["routes"] if r["feasible"] and r["cost_usd"] is not None]
    assert costs == sorted(costs)
    trusted = [r for r in doc["routes"] if r["feasible"] and r["cost_usd"] is not None and not r["stale"]
               and r["price_known"] and not r["price_doubt"]]
    assert doc["cheapest"] == plan.cheapest.id == trusted[0]["id"]  # the cheapest whose price the plan trusts
    # managed APIs publish no training time: the cheapest is the whole front
    assert doc["fastest"] == doc["cheapest"] and [b["id"] for b in doc["best"]] == [doc["cheapest"]]
    assert doc["options"]["epochs"] == 3 and "OpenAI's auto rule" in doc["options"]["epochs_rule"]


def test_stale_prices_are_flagged(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "gpt-4o-mini", "Llama-3.1-8B", epochs=1))
    assert route(plan, "gpt-4o-mini-2024-07-18").stale  # mid-2025 price
    assert route(plan, "Llama-3.1-8B", "lora", provider="together").stale  # ~Feb 2026
    fireworks = [r for r in plan.routes if r.provider == "fireworks"]
    assert fireworks and not any(r.stale for r in fireworks)  # fetched 2026-10-08


def test_route_sources_are_pluggable(cat):
    class MyGpu:  # a route source: the three classmethods a backend has, here on an object
        def token_needs(self, catalog, options):
            return [TokenNeed(TokenizerSpec(tokenizer="o200k_base"), 1000)]

        def routes(self, context):
            return [Route(kind="local", backend="local", model="Llama-3.1-8B", method="qlora",
                          hardware=Hardware("RTX-4090"), hours=2.0, cost_usd=Decimal("0.30"))]

        def plan_notes(self, context):
            return ["my GPU: assumed"]

    sources = [*managed_sources(cat), MyGpu()]
    assert TokenNeed(TokenizerSpec(tokenizer="o200k_base"), 1000) in planner.token_needs(sources, cat, PlanOptions())
    plan = make_plan(cat, {500: 10}, sources=sources)
    assert plan.fastest.id == "local:Llama-3.1-8B:qlora:RTX-4090x1" and plan.notes == ("my GPU: assumed",)


def test_token_needs_keep_each_counter_once_with_its_tightest_limit(cat):
    o200k = TokenizerSpec(tokenizer="o200k_base")
    needs = planner.token_needs(managed_sources(cat), cat, ask(cat, "gpt-4o-mini", "gpt-4.1", "gpt-4o"))
    limits = [o.max_tokens_per_example for o in cat.managed if o.base_model in ("gpt-4o-mini", "gpt-4.1", "gpt-4o")
              and o.max_tokens_per_example]  # one of them may state none: the others' still holds
    assert needs == [TokenNeed(o200k, min(limits, default=None))]


# ---------------------------------------------------------------------------------------------- who runs a route

def test_each_route_names_the_backend_that_runs_it_and_the_job_that_does(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "gpt-4o-mini", "Llama-3.1-8B", method="lora", epochs=2))
    mini = route(plan, "gpt-4o-mini-2024-07-18")
    assert mini.runnable and mini.job == {"backend": "openai", "model": "gpt-4o-mini-2024-07-18",
                                          "hyperparameters": {"epochs": 2}}  # OpenAI chooses how: no method
    together = route(plan, "Llama-3.1-8B", "lora", provider="together")
    assert together.job == {"backend": "together", "model": "meta-llama/Llama-3.1-8B", "method": "lora",
                            "hyperparameters": {"epochs": 2}}  # priced by its size tier: the model's own repo
    fireworks = route(plan, "Llama-3.1-8B", "lora", provider="fireworks")
    assert fireworks.runnable and fireworks.job == {"backend": "fireworks", "model": "meta-llama/Llama-3.1-8B",
                                                    "method": "lora", "hyperparameters": {"epochs": 2}}
    assert all(r.backend == r.provider and not r.not_runnable for r in plan.routes)  # every provider has a backend


def test_together_routes_carry_the_evaluations_they_were_billed_for(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "Llama-3.1-8B", method="lora", n_evals=3),
                     validation_lengths={500: 10})
    assert route(plan, "Llama-3.1-8B", "lora", provider="together").job["backend_options"] == {"n_evals": 3}


def test_a_closed_route_says_so_in_a_field(cat):
    plan = make_plan(cat, {500: 100}, options=ask(cat, "gpt-4o-mini", "Llama-3.1-8B"), today=date(2027, 2, 1))
    mini = route(plan, "gpt-4o-mini-2024-07-18")
    assert mini.closed and not mini.feasible and not mini.runnable
    assert not any(r.closed for r in plan.routes if r.provider != "openai")


def test_routes_are_numbered_in_the_order_of_the_plans_sections(cat):
    gpu = Route(kind="local", backend="local", model="m", method="lora", hardware=Hardware("RTX-4090"),
                cost_usd=Decimal("0.01"), hours=1.0)
    spot = Route(kind="cloud", backend=None, model="m", method="lora", cloud="acme", instance_type="x",
                 market="spot", hardware=Hardware("H100"), cost_usd=Decimal("0.001"), hours=1.0)
    on_demand = Route(kind="cloud", backend=None, model="m", method="lora", cloud="acme", instance_type="x",
                      market="on-demand", hardware=Hardware("H100"), cost_usd=Decimal("0.002"), hours=1.0)

    class Gpus:
        def token_needs(self, catalog, options):
            return []

        def routes(self, context):
            return [spot, on_demand, gpu]

        def plan_notes(self, context):
            return []

    plan = make_plan(cat, {500: 1000}, options=ask(cat, "gpt-4o-mini", "Llama-3.1-8B", epochs=1),
                     sources=[*managed_sources(cat), Gpus()])
    kinds = [(r.kind, r.market) for r in plan.routes]
    assert kinds == sorted(kinds, key=planner.SECTIONS.index)  # managed, local, cloud on-demand, cloud spot
    assert [r.number for r in plan.routes] == list(range(1, len(plan.routes) + 1))
    assert all(plan.route(r.number) is r for r in plan.routes) and plan.route(0) is plan.route(99) is None
    managed = [r for r in plan.routes if r.kind == "managed"]
    assert [r.feasible for r in managed] == sorted((r.feasible for r in managed), reverse=True)
    assert plan.cheapest.id == spot.id and plan.routes[-1].id == spot.id
    assert [r["number"] for r in plan.to_json()["routes"]] == [r.number for r in plan.routes]


@settings(max_examples=25, deadline=None)
@given(epochs=st.integers(min_value=1, max_value=9), more=st.integers(min_value=1, max_value=5),
       examples=st.integers(min_value=10, max_value=5000), tokens=st.integers(min_value=20, max_value=3000))
def test_a_managed_routes_cost_never_falls_as_epochs_rise(cat, epochs, more, examples, tokens):
    """Property: more passes over the same data never cost less or bill fewer tokens, on any managed route (per
    token, per hour, with a minimum charge), and a route priced at some epochs stays priced at more."""
    def priced(n):
        plan = make_plan(cat, {tokens: examples}, options=ask(cat, "gpt-4o-mini", "Llama-3.1-8B", epochs=n))
        return {r.id: r for r in plan.routes}

    fewer, more_ = priced(epochs), priced(epochs + more)
    assert set(fewer) == set(more_) and any(r.cost_usd for r in fewer.values())
    for route_id, r in fewer.items():
        if r.cost_usd is not None:
            assert more_[route_id].cost_usd is not None and more_[route_id].cost_usd >= r.cost_usd, route_id
        if r.billed_tokens is not None:
            assert more_[route_id].billed_tokens >= r.billed_tokens, route_id
