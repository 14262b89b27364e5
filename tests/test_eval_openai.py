"""``ftbroker eval`` of an OpenAI fine-tune, against the loopback fakes through the real SDKs: the job trained on the
OpenAI fake, its models called by chat completions, Claude judging through the real ``anthropic`` SDK on the
Anthropic fake. The judge misbehaves in every way a judge can (garbage, a 429 storm, 529, a spend limit, a timeout):
the evaluation completes or stops with a clear error, never with a guessed verdict, and its costs add up."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from evalsupport import judge_by_reference, tuned_knows, write_sums
from fakes import FakeAnthropic, FakeOpenAI, Fault
from fakes._jobs import count_tokens
from fakes.support import FAST

from ftbroker.broker import Broker
from ftbroker.errors import BackendError, BackendRateLimitError, BackendUnavailableError, BudgetExceededError
from ftbroker.evaluation import evaluate
from ftbroker.evaluation.prices import OVERRIDE_NAME
from ftbroker.evaluation.store import evaluations, latest_evaluation
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI route is open on it

MODEL = "gpt-4o-mini-2024-07-18"
EVAL_FAST = {"request_timeout_s": 5.0, "max_retries": 0, "attempts": 3, "retry_initial_s": 0.001,
             "retry_max_s": 0.01}
# Invented prices (USD per 1M input, output tokens), written as the evaluation's own table over the shipped one
# (FTBROKER_HOME/eval_prices.toml, row for row): the costs checked are these, whatever a refresh ships.
PRICED = {"base": ("openai", "gpt-4o-mini"), "tuned": ("openai", "ft:gpt-4o-mini"),
          "judge": ("anthropic", "claude-haiku-5-5")}
PRICES = {"base": (Decimal("0.20"), Decimal("0.80")), "tuned": (Decimal("0.40"), Decimal("1.60")),
          "judge": (Decimal("0.25"), Decimal("1.25"))}


@pytest.fixture
def fakes(monkeypatch):
    with FakeOpenAI(advance_on_poll=True) as openai, FakeAnthropic() as anthropic:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-eval-openai")
        monkeypatch.setenv("OPENAI_BASE_URL", openai.base_url)  # the SDK's own setting: the job looks like OpenAI's
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-eval-anthropic")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        openai.responder = tuned_knows(lambda model: model.startswith("ft:"))
        anthropic.responder = judge_by_reference
        yield openai, anthropic


@pytest.fixture
def job(fakes, tmp_path):
    """An OpenAI fine-tune, trained on the fake through the Broker, with a validation file (its held-out set)."""
    home = tmp_path / "home"
    spec = JobSpec(dataset=str(write_sums(tmp_path / "train.jsonl", 12)), model=MODEL, backend="openai",
                   validation=str(write_sums(tmp_path / "valid.jsonl", 6, start=50)),
                   backend_options=FAST)
    with Broker(home, sleep=lambda s: None) as broker:
        job_id = broker.submit(spec).id
        broker.follow(job_id)
    (home / OVERRIDE_NAME).write_text("".join(
        f'[[model]]\nprovider = "{provider}"\nmodel = "{model}"\ninput = {PRICES[role][0]}\n'
        f'output = {PRICES[role][1]}\njudge = {str(role == "judge").lower()}\nsource = "test fixture"\n\n'
        for role, (provider, model) in PRICED.items()))
    return home, job_id


def run(job, **kwargs):
    home, job_id = job
    kwargs.setdefault("options", EVAL_FAST)
    return evaluate(job_id, home=home, sleep=lambda s: None, capability=kwargs.pop("capability", False), **kwargs)


def _cost(tokens_in: int, tokens_out: int, price) -> Decimal:
    return (price[0] * tokens_in + price[1] * tokens_out) / Decimal(1_000_000)


def paid(openai, anthropic) -> dict[str, Decimal]:
    """What the fakes billed, recounted from the requests they saw (the fakes count words as tokens)."""
    out = {"base": Decimal(0), "tuned": Decimal(0), "judge": Decimal(0)}
    responder = openai.responder
    for request in openai.calls("chat.create"):
        body = request.json()
        role = "tuned" if body["model"].startswith("ft:") else "base"
        answer = responder(body["model"], body)
        out[role] += _cost(count_tokens(json.dumps(body["messages"]).encode()), count_tokens(answer.encode()),
                           PRICES[role])
    for request in anthropic.calls("messages.create"):
        if request.fault is None:
            body = request.json()
            out["judge"] += _cost(count_tokens(json.dumps(body).encode()),
                                  count_tokens(anthropic.responder(body["model"], body).encode()), PRICES["judge"])
    return out


def test_fine_tune_beats_its_base_and_the_costs_add_up(fakes, job):
    openai, anthropic = fakes
    evaluation = run(job, judge="claude-haiku-5-5", max_cost=1)
    assert evaluation.status == "completed" and evaluation.examples == 6
    assert evaluation.held_out.startswith("the job's validation file")
    assert evaluation.overall["exact_match"] == {"base": 0.0, "tuned": 1.0, "applies": 6.0}
    assert evaluation.tuned_model.startswith(f"ft:{MODEL}:") and evaluation.base_model == MODEL
    win = evaluation.win_rate
    assert (win.tuned_wins, win.base_wins, win.ties, win.unparseable, win.judged) == (6, 0, 0, 0, 6)
    assert win.rate == 1.0 and 0.5 < win.ci_low < 0.7 and win.ci_high == pytest.approx(1.0) and win.consistency == 1.0
    # the served settings, and the judge as the 2026-10-21 API takes it: no sampling parameter, a JSON schema
    chat = [r.json() for r in openai.calls("chat.create")]
    assert len(chat) == 12 and all(b["temperature"] == 0 and b["seed"] == 0 for b in chat)
    judged = [r.json() for r in anthropic.calls("messages.create")]
    assert len(judged) == 12  # both orders of 6 pairs
    assert all("temperature" not in b and b["output_config"]["format"]["type"] == "json_schema" for b in judged)
    assert all(MODEL not in b["messages"][0]["content"] and "ft:" not in b["messages"][0]["content"] for b in judged)
    # costs: recounted from what the fakes saw, priced from the table
    billed = paid(openai, anthropic)
    costs = evaluation.costs
    assert costs.inference_usd == pytest.approx(float(billed["base"] + billed["tuned"]), rel=1e-9)
    assert costs.judge_usd == pytest.approx(float(billed["judge"]), rel=1e-9)
    assert costs.total_usd == pytest.approx(costs.inference_usd + costs.judge_usd + costs.deployment_usd)
    assert 0 < costs.total_usd <= evaluation.quote_usd <= 1
    with Ledger(job[0] / "ledger.sqlite3") as ledger:
        assert latest_evaluation(ledger, job[1]) == evaluation


def test_a_rerun_pays_for_nothing_it_already_has(fakes, job):
    openai, anthropic = fakes
    first = run(job, judge="claude-haiku-5-5")
    calls = len(openai.requests) + len(anthropic.requests)
    again = run(job, judge="claude-haiku-5-5")
    assert len(openai.requests) + len(anthropic.requests) == calls  # every answer and verdict from the cache
    assert again.costs.total_usd == 0 and again.costs.cached_calls == 12 + 12
    assert again.overall == first.overall and again.win_rate == first.win_rate
    with Ledger(job[0] / "ledger.sqlite3") as ledger:
        assert [e.id for e in evaluations(ledger, job[1])] == [first.id, again.id]


def test_a_judge_that_answers_garbage_is_counted_never_guessed(fakes, job, summary_line):
    _, anthropic = fakes
    replies = iter(["The first answer is better, A.", judge_by_reference] * 3 + ["{\"winner\": \"A\"}"] * 100)

    def flaky(model, body):  # per pair: garbage then a verdict (parsed after one retry), later nothing parseable
        reply = next(replies)
        return reply(model, body) if callable(reply) else reply

    anthropic.responder = flaky
    evaluation = run(job, judge="claude-haiku-5-5", options={**EVAL_FAST, "judge_retries": 1})
    win = evaluation.win_rate
    per_pair = [row["verdict"] for row in evaluation.per_example]
    assert win.tuned_wins + win.unparseable == 6 and win.base_wins == 0 and win.unparseable >= 4
    assert all(v["winner"] in ("tuned", "unparseable") for v in per_pair)
    assert all("no verdict after 2 replies" in reason for v in per_pair if v["winner"] == "unparseable"
               for reason in v["reasons"] if reason.startswith("no verdict"))
    calls = len(anthropic.calls("messages.create"))
    assert evaluation.costs.judge_usd > 0 and calls == 24  # 12 verdicts asked, each answered twice
    summary_line(f"judge garbage [anthropic fake]: 6 pairs x 2 orders, 1 retry each -> {calls} judge calls, "
                 f"{win.tuned_wins} pairs judged (all for the fine-tune), {win.unparseable} unparseable, "
                 f"0 guessed; judge cost ${evaluation.costs.judge_usd:.6f}")


def test_a_429_storm_stops_the_evaluation_with_a_clear_error(fakes, job, summary_line):
    _, anthropic = fakes
    anthropic.faults.on("messages.create", Fault.rate_limited(retry_after=0.001), times=1000)
    with pytest.raises(BackendRateLimitError, match="asking the judge claude-haiku-5-5 failed"):
        run(job, judge="claude-haiku-5-5", max_cost=1)
    with Ledger(job[0] / "ledger.sqlite3") as ledger:
        [failed] = evaluations(ledger, job[1])
    assert failed.status == "failed" and "Rate limit" in failed.error and failed.win_rate is None
    assert failed.costs.inference_usd > 0 and failed.costs.judge_usd == 0  # the answers were paid for, and recorded
    storm = len(anthropic.calls("messages.create"))
    assert storm == EVAL_FAST["attempts"]  # the first verdict, tried `attempts` times, then a stop
    anthropic.faults.clear()
    anthropic.faults.on("messages.create", Fault.rate_limited(retry_after=0.001), times=2)  # a shorter storm
    recovered = run(job, judge="claude-haiku-5-5")
    assert recovered.win_rate.tuned_wins == 6 and recovered.costs.cached_calls == 12  # answers not bought again
    summary_line(f"judge 429 storm [anthropic fake]: {storm} calls answered 429 -> stopped with "
                 f"BackendRateLimitError, failed evaluation recorded (${failed.costs.total_usd:.6f} of answers); "
                 f"a 2-call storm -> retried, completed 6/6 with 12 cached answers")


def test_overloaded_is_retried_and_a_spend_limit_is_not(fakes, job, summary_line):
    _, anthropic = fakes
    anthropic.fail_next(529, times=2)
    evaluation = run(job, judge="claude-haiku-5-5")
    assert evaluation.win_rate.tuned_wins == 6
    before = len(anthropic.requests)
    anthropic.fail_next(429, error_code="enforced_spend_limit_reached", times=5)
    with pytest.raises(BackendError, match="spend limit is reached") as stopped:
        run(job, judge="claude-sonnet-5-5")
    assert not isinstance(stopped.value, BackendRateLimitError)  # final: never retried
    assert len(anthropic.requests) == before + 1
    summary_line("judge 529 x2 [anthropic fake]: retried, completed; spend-limit 429: 1 call, stopped, not retried")


def test_a_judge_that_never_answers_times_out_and_stops(fakes, job, summary_line):
    _, anthropic = fakes
    # the fake holds each answer, and the client gives up on it (no clock: see tests/fakes/_server.py)
    anthropic.faults.on("messages.create", Fault.timed_out(commit=False), times=10)
    options = {**EVAL_FAST, "attempts": 2}
    with pytest.raises(BackendUnavailableError, match="asking the judge"):
        run(job, judge="claude-haiku-5-5", options=options)
    assert len(anthropic.calls("messages.create")) == 2
    summary_line("judge timeout [anthropic fake]: 2 held calls, 2 client timeouts -> stopped with "
                 "BackendUnavailableError, no verdict recorded")


def test_the_budget_is_held_before_anything_is_spent(fakes, job):
    openai, anthropic = fakes
    with pytest.raises(BudgetExceededError, match="over --max-cost"):
        run(job, judge="claude-opus-5-5", max_cost=0.001)
    assert not openai.calls("chat.create") and not anthropic.requests


def test_claude_on_bedrock_judges_through_the_mantle_client(fakes, job, monkeypatch):
    _, anthropic = fakes
    monkeypatch.setenv("ANTHROPIC_BEDROCK_MANTLE_BASE_URL", anthropic.mantle_url)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "test-bedrock-api-key")
    anthropic.thinking = True  # an adaptive-thinking model opens with a thinking block
    evaluation = run(job, judge="anthropic.claude-haiku-5-5", options={**EVAL_FAST, "region": "us-west-2"})
    assert evaluation.win_rate.tuned_wins == 6 and anthropic.calls("mantle.create")
    assert evaluation.costs.total_usd is None and evaluation.costs.unknown == ["judge tokens"]  # no public price
