"""The evaluation flow: prepare (read, resolve, quote: no side effect) -> guard -> confirm -> run (lock, deploy,
generate, score, judge, tear down) -> record.

Everything that can refuse runs before anything is spent or written: the job must have succeeded, the held-out
data must read as ``ftbroker validate`` reads it, the judge must be a known model, the quote must fit
``--max-cost`` (a cost that cannot be estimated is refused under a budget), and the user must confirm a paid run.
A run that fails after it started spending is recorded as a failed evaluation with what it cost; the answers and
verdicts it paid for stay in the cache, so the rerun does not pay for them again.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftbroker import clock
from ftbroker.backends.provider_calls import Backoff
from ftbroker.errors import BackendError, BudgetExceededError, FtBrokerError, InputError, NotConfirmedError
from ftbroker.evaluation import cache as cache_module
from ftbroker.evaluation import judge as judge_module
from ftbroker.evaluation import prices as price_module
from ftbroker.evaluation import routes, store
from ftbroker.evaluation.deployments import Timing
from ftbroker.evaluation.examples import HeldOut, capability_set, held_out
from ftbroker.evaluation.lock import job_lock
from ftbroker.evaluation.records import Answer, Evaluation, Example, Verdict
from ftbroker.evaluation.remote import JUDGE_CLIENTS, JUDGE_SDKS, Connection, sdk, with_retries
from ftbroker.jobs import Job, JobStatus
from ftbroker.ledger import Ledger, default_home

ROUTE_KEYS = ("region", "profile", "endpoint_url", "runtime_endpoint_url", "project_id", "config")
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


class EvalOptions(BaseModel):
    """Timings and limits of an evaluation (``--option KEY=VALUE``); tests shrink the waits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_timeout_s: float = Field(60.0, gt=0, description="timeout of every API call")
    max_retries: int = Field(2, ge=0, le=10, description="the SDK's own retries of a call")
    attempts: int = Field(4, ge=1, le=50, description="ftbroker's tries of a call through transient errors")
    retry_initial_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    judge_retries: int = Field(1, ge=0, le=5, description="asks again after an unparseable verdict")
    judge_max_tokens: int = Field(1024, ge=64, le=32768)
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = Field("low", description="Anthropic judge")
    max_new_tokens: int | None = Field(None, ge=1, le=32768, description="default: twice the longest reference")
    capability_max_tokens: int = Field(192, ge=8, le=4096)
    deployment_hours: float = Field(1.0, gt=0, description="the most hours a paid deployment may run (quoted)")
    deploy_poll_s: float = Field(30.0, gt=0)
    deploy_ready_timeout_s: float = Field(3600.0, gt=0)
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = Field(None, description="Bedrock control plane (Provisioned Throughput)")
    runtime_endpoint_url: str | None = Field(None, description="bedrock-runtime (Converse)")
    project_id: str | None = Field(None, description="Together project of the dedicated endpoints")
    config: str | None = Field(None, description="Together deployment config (hardware) revision")

    def route_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ROUTE_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Request:
    """What to evaluate and how (the SDK's and the CLI's arguments)."""

    job_id: str
    test: str | None = None
    judge: str | None = None
    limit: int | None = None
    max_cost: Decimal | None = None
    schema: str | None = None
    rubric: str | None = None
    capability: bool = True
    capability_file: str | None = None
    regression_threshold: float = 0.10
    seed: int = 0
    chart: str | None = None
    options: EvalOptions = field(default_factory=EvalOptions)


@dataclass
class Prepared:
    """A checked and quoted evaluation, not yet started: what the confirmation shows."""

    request: Request
    job: Job
    held: HeldOut
    capability: tuple[Example, ...]
    route: Any
    judge: tuple[str, str] | None
    judge_price: price_module.ModelPrice | None
    schema_check: Callable[[Any], bool] | None
    max_tokens: int
    quote: price_module.Quote
    cached: int
    notes: list[str]

    @property
    def paid(self) -> bool:
        """Whether the run may cost anything (a quote of exactly $0 runs without asking)."""
        return self.quote.high is None or self.quote.high > 0


@dataclass
class _Spend:
    """What this run has used so far (answers and verdicts read from the cache cost nothing now)."""

    tokens: dict[str, list[int]] = field(default_factory=lambda: {"base": [0, 0], "tuned": [0, 0]})
    calls: int = 0
    cached: int = 0
    judge: judge_module.Judge | None = None  # its usage: the judge's calls and tokens


class Evaluator:
    def __init__(self, home: Path | None = None, *, ledger: Ledger | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.home = Path(home) if home is not None else default_home()
        self.ledger = ledger if ledger is not None else Ledger(self.home / "ledger.sqlite3")
        self.cache = cache_module.Cache(self.home)
        self.sleep = sleep
        self.prices = price_module.load_prices(self.home)

    def close(self) -> None:
        self.cache.close()
        self.ledger.close()

    # --- prepare: read, resolve and quote; nothing spent, nothing written ---

    def prepare(self, request: Request) -> Prepared:
        job = self.ledger.get(request.job_id)
        if job.status is not JobStatus.SUCCEEDED:
            wait = "" if job.status.terminal else f" (`ftbroker logs {job.id} --follow` waits for it)"
            raise InputError(f"job {job.id} is {job.status.value}; only a succeeded job can be evaluated{wait}")
        judge = judge_module.resolve(request.judge, self.prices.judges()) if request.judge else None
        schema_check = _schema_check(request.schema) if request.schema else None
        rubric = judge_module.rubric_text(request.rubric) if request.rubric else None
        held = held_out(job, self.home / "runs", test=request.test, limit=request.limit)
        route = routes.build(job, self.ledger, self.home / "runs", self.prices, request.options, self._timing(request),
                             self._retrying(request.options))
        held = HeldOut(tuple(replace(e, reference=route.reference(e)) for e in held.examples), held.source)
        items = capability_set(request.capability_file) if request.capability else ()
        max_tokens = request.options.max_new_tokens or _answer_cap(held.examples)
        if judge is not None:  # its SDK, before anything is spent
            sdk(*JUDGE_SDKS[judge[0]], f"the judge {request.judge}")
        prepared = Prepared(request, job, held, items, route, judge,
                            self.prices.model(*judge) if judge else None, schema_check, max_tokens,
                            price_module.Quote(), 0, [])
        if rubric is not None:
            prepared.notes.append(f"rubric: {request.rubric}")
        return self._quoted(prepared)

    def _timing(self, request: Request) -> Timing:
        o = request.options
        return Timing(o.deploy_poll_s, o.deploy_ready_timeout_s, o.attempts, self._backoff(o), self.sleep)

    def _backoff(self, options: EvalOptions) -> Backoff:
        return Backoff(options.retry_initial_s, options.retry_max_s, sleep=self.sleep)

    def _retrying(self, options: EvalOptions) -> Callable[[Callable[[], Any]], Any]:
        backoff = self._backoff(options)
        return lambda fn: with_retries(fn, attempts=options.attempts, backoff=backoff)

    def _plan(self, prepared: Prepared) -> list[tuple[str, Sequence[Example], int]]:
        """(label, examples, answer cap) of each batch of answers each side gives."""
        plan = [("task", prepared.held.examples, prepared.max_tokens)]
        if prepared.capability:
            plan.append(("capability", prepared.capability, prepared.request.options.capability_max_tokens))
        return plan

    def _uncached(self, prepared: Prepared, side: routes.Side) -> list[tuple[Example, int]]:
        missing = []
        for _, examples, cap in self._plan(prepared):
            settings = prepared.route.settings(cap)
            missing += [(e, cap) for e in examples
                        if self.cache.get(_answer_key(side, e, settings)) is None]
        return missing

    def _quoted(self, prepared: Prepared) -> Prepared:
        from ftbroker.evaluation.quote import quote

        missing = {role: self._uncached(prepared, side) for role, side in prepared.route.sides.items()}
        total = sum(len(examples) for _, examples, _ in self._plan(prepared)) * 2
        prepared.cached = total - sum(len(m) for m in missing.values())
        prepared.quote = quote(prepared, missing)
        return prepared

    # --- guard ---

    @staticmethod
    def guard(prepared: Prepared) -> None:
        budget = prepared.request.max_cost
        if budget is None:
            return
        high = prepared.quote.high
        if high is None:
            raise BudgetExceededError(
                f"the cost of this evaluation cannot be estimated ({'; '.join(prepared.quote.unknown)}), so it cannot "
                f"be held to --max-cost ${budget}; price it in $FTBROKER_HOME/{price_module.OVERRIDE_NAME}, or run "
                "without --max-cost to accept an unbounded cost")
        if high > budget:
            raise BudgetExceededError(f"this evaluation may cost up to ${high:.4f} (expected "
                                      f"${prepared.quote.expected:.4f}), over --max-cost ${budget}")

    # --- run ---

    def evaluate(self, request: Request, *, confirm: Callable[[Prepared], bool] | None = None) -> Evaluation:
        prepared = self.prepare(request)
        self.guard(prepared)
        if prepared.paid and confirm is not None and not confirm(prepared):
            raise NotConfirmedError("not started: the confirmation was declined")
        return self.run(prepared)

    def run(self, prepared: Prepared) -> Evaluation:
        from ftbroker.evaluation.assemble import assemble, failed

        spend, outcome, error = _Spend(), None, None
        with job_lock(self.home, prepared.job.id, f"ftbroker eval of {prepared.job.id}"):
            deployments = getattr(prepared.route, "deployments", None)
            try:
                outcome = self._generate_and_judge(prepared, spend)
            except BaseException as exc:  # Ctrl-C too: whatever happens, the deployments go
                error = exc
                raise
            finally:
                problems = deployments.teardown() if deployments is not None else []
                prepared.route.close()
                if error is not None and (spend.calls or spend.judge or deployments is not None and deployments.used):
                    with contextlib.suppress(FtBrokerError):  # the error that stopped the run is the one to see
                        store.save_evaluation(self.ledger, failed(prepared, spend, error, problems))
            evaluation = assemble(prepared, spend, outcome, problems)
            store.save_evaluation(self.ledger, evaluation)
        if problems:
            raise BackendError("the evaluation is recorded, but these deployments could not be deleted and still "
                               f"bill: {'; '.join(problems)}. Delete them with ftbroker.evaluation.delete_deployment "
                               "(or `ftbroker gc`)", backend=prepared.job.backend)
        return evaluation

    def _generate_and_judge(self, prepared: Prepared, spend: _Spend) -> dict[str, Any]:
        answers: dict[str, dict[str, list[Answer]]] = {"task": {}, "capability": {}}
        for label, examples, cap in self._plan(prepared):
            for role, side in prepared.route.sides.items():
                answers[label][role] = self._answers(prepared, spend, side, examples, cap)
        verdicts: list[Verdict] = []
        if prepared.judge:
            spend.judge = self._judge(prepared)
            for example, base, tuned in zip(prepared.held.examples, answers["task"]["base"], answers["task"]["tuned"],
                                            strict=True):
                verdicts.append(spend.judge.verdict(example, base, tuned))
                self._check_budget(prepared, spend)
        return {"answers": answers, "verdicts": verdicts}

    def _judge(self, prepared: Prepared) -> judge_module.Judge:
        provider, model = prepared.judge
        options = prepared.request.options
        client = JUDGE_CLIENTS[provider](provider, Connection(options.route_settings(), options.request_timeout_s,
                                                              options.max_retries), options.effort)
        return judge_module.Judge(provider, model, client, self.cache,
                                  rubric=judge_module.rubric_text(prepared.request.rubric), seed=prepared.request.seed,
                                  retries=options.judge_retries, max_tokens=options.judge_max_tokens,
                                  effort=options.effort, call=self._retrying(options))

    def _answers(self, prepared: Prepared, spend: _Spend, side: routes.Side, examples: Sequence[Example],
                 cap: int) -> list[Answer]:
        settings = prepared.route.settings(cap)
        keys = [_answer_key(side, e, settings) for e in examples]
        found: dict[int, Answer] = {}
        for index, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is not None:
                found[index] = replace(Answer.from_json(hit), cached=True)
        spend.cached += len(found)
        missing = [i for i in range(len(examples)) if i not in found]
        generated = prepared.route.generate(side, [examples[i] for i in missing], cap) if missing else iter(())
        for index, answer in zip(missing, generated, strict=False):
            self.cache.put(keys[index], "answer", answer.to_json())
            found[index] = answer
            spend.calls += 1
            spend.tokens[side.role][0] += answer.input_tokens
            spend.tokens[side.role][1] += answer.output_tokens
            self._check_budget(prepared, spend)
        return [found[i] for i in range(len(examples))]

    def _check_budget(self, prepared: Prepared, spend: _Spend) -> None:
        """Stop as soon as what is known to be spent passes ``--max-cost`` (the quote's high end should hold)."""
        budget = prepared.request.max_cost
        if budget is None:
            return
        from ftbroker.evaluation.assemble import spent

        so_far = spent(prepared, spend)
        if so_far is not None and so_far > budget:
            raise BudgetExceededError(f"stopped: ${so_far:.4f} spent, past --max-cost ${budget}")


def _answer_key(side: routes.Side, example: Example, settings: Mapping[str, Any]) -> str:
    prompt = {"messages": list(example.messages), "tools": list(example.tools), "text": example.prompt_text}
    return cache_module.key("answer", side.identity, prompt, settings)


def _answer_cap(examples: Sequence[Example]) -> int:
    """Room for twice the longest reference answer (3 characters a token is generous), 32 to 1,024 tokens."""
    longest = max((len(e.reference.text) + sum(len(c["arguments"]) + len(c["name"]) for c in e.reference.tool_calls)
                   for e in examples), default=0)
    return max(32, min(1024, 2 * (longest // 3 + 1) + 16))


def _schema_check(path: str) -> Callable[[Any], bool]:
    import json

    from ftbroker.evaluation.remote import sdk

    jsonschema = sdk("jsonschema", "eval", "--schema checks")
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
        validator = jsonschema.validators.validator_for(schema)(schema)
        validator.check_schema(schema)
    except (OSError, ValueError, jsonschema.exceptions.SchemaError) as exc:
        raise InputError(f"--schema {path}: not a usable JSON schema: {str(exc).splitlines()[0]}") from exc
    return validator.is_valid


def new_id() -> str:
    return "ev-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def now() -> Any:
    return clock.now()
