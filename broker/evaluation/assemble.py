"""From answers and verdicts to the Evaluation: scores per example and overall, the win rate, the general
capability check, the costs, and the notes a reader needs to trust the numbers."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from ftbroker.evaluation import scoring
from ftbroker.evaluation.judge import judge_cost
from ftbroker.evaluation.prices import spent as spent_on
from ftbroker.evaluation.prices import total
from ftbroker.evaluation.records import Capability, Costs, Evaluation, Verdict


def _breakdown(prepared: Any, spend: Any) -> dict[str, Decimal | None]:
    """What each part of the run has cost so far (None: used, but no price is known)."""
    route, parts = prepared.route, {}
    if route.backend != "local":
        for role, side in route.sides.items():
            if not side.deploy:
                parts[f"{role} model answers"] = spent_on(side.price, *spend.tokens[role])
    deployments = getattr(route, "deployments", None)
    if deployments is not None and deployments.used:
        cost, known = deployments.cost()
        parts["deployment hours"] = cost if known else None
    if spend.judge is not None:
        parts["judge tokens"] = judge_cost(prepared.judge_price, spend.judge.usage)
    return parts


def spent(prepared: Any, spend: Any) -> Decimal | None:
    """What is known to be spent so far (None: some of it cannot be priced)."""
    return total(list(_breakdown(prepared, spend).values()))


def _costs(prepared: Any, spend: Any) -> Costs:
    parts = _breakdown(prepared, spend)
    usage = spend.judge.usage if spend.judge is not None else None
    judged = (usage.calls, usage.cached, usage.input_tokens, usage.output_tokens) if usage else (0, 0, 0, 0)

    def known(*names: str) -> float:
        return float(sum(v for k, v in parts.items() if k.endswith(names) and v is not None))

    grand = total(list(parts.values()))
    return Costs(inference_usd=known("answers"), judge_usd=known("judge tokens"),
                 deployment_usd=known("deployment hours"), total_usd=float(grand) if grand is not None else None,
                 unknown=[k for k, v in parts.items() if v is None], calls=spend.calls + judged[0],
                 cached_calls=spend.cached + judged[1],
                 input_tokens=sum(t[0] for t in spend.tokens.values()) + judged[2],
                 output_tokens=sum(t[1] for t in spend.tokens.values()) + judged[3])


def _per_example(prepared: Any, answers: dict, verdicts: list[Verdict]) -> tuple[list[dict], list[dict]]:
    rows, scored = [], []
    structured = prepared.route.structured_tools
    for index, example in enumerate(prepared.held.examples):
        row: dict[str, Any] = {"id": example.id, "kind": "task", "reference": example.reference.to_json()}
        scores = {}
        for role in ("base", "tuned"):
            answer = answers["task"][role][index]
            scores[role] = scoring.score(answer, example, schema_check=prepared.schema_check,
                                         structured_tools=structured)
            row[role] = {"answer": answer.to_json(), "scores": scores[role]}
        if verdicts:
            v = verdicts[index]
            row["verdict"] = {"winner": v.winner, "first": v.first, "orders": list(v.orders),
                              "reasons": list(v.reasons)}
        rows.append(row)
        scored.append(scores)
    return rows, scored


def _capability(prepared: Any, answers: dict) -> tuple[Capability | None, list[dict]]:
    items = prepared.capability
    if not items:
        return None, []
    rows, passed = [], {"base": [], "tuned": []}
    by_category: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"base": [], "tuned": []})
    for index, item in enumerate(items):
        row: dict[str, Any] = {"id": item.id, "kind": "capability", "category": item.category}
        for role in ("base", "tuned"):
            answer = answers["capability"][role][index]
            ok = scoring.capability_check(answer.text, item.check)
            passed[role].append(ok)
            by_category[item.category][role].append(ok)
            row[role] = {"answer": answer.to_json(), "passed": bool(ok)}
        rows.append(row)
    base, tuned = (sum(passed[r]) / len(items) for r in ("base", "tuned"))
    threshold = prepared.request.regression_threshold
    return Capability(base=base, tuned=tuned, items=len(items), threshold=threshold, regression=tuned < base - threshold,
                      by_category={c: {r: sum(v) / len(v) for r, v in sides.items()}
                                   for c, sides in sorted(by_category.items())}), rows


def _notes(prepared: Any, capability: Capability | None) -> list[str]:
    notes = list(prepared.notes)
    if prepared.judge and prepared.judge[0] == prepared.job.backend:
        notes.append(f"the judge is an {prepared.judge[0]} model judging an {prepared.job.backend} fine-tune: judges "
                     "favour their own family (Zheng et al. 2023); prefer another provider's judge")
    if capability is not None and capability.regression:
        notes.append(f"REGRESSION: general capability fell from {capability.base:.0%} to {capability.tuned:.0%} "
                     f"(more than the {capability.threshold:.0%} allowed)")
    if prepared.job.backend == "local" and prepared.job.spec.method == "qlora":
        notes.append("the QLoRA adapter was evaluated on the unquantized base model, as `ftbroker export` merges it")
    return notes


def assemble(prepared: Any, spend: Any, outcome: dict, problems: list[str]) -> Evaluation:
    from ftbroker.evaluation.flow import new_id, now

    answers, verdicts, judge = outcome["answers"], outcome["verdicts"], spend.judge
    rows, scored = _per_example(prepared, answers, verdicts)
    capability, capability_rows = _capability(prepared, answers)
    notes = _notes(prepared, capability) + [f"not deleted: {p}" for p in problems]
    settings = {"generation": prepared.route.settings(prepared.max_tokens), "seed": prepared.request.seed,
                **({"judge": judge.settings()} if judge else {})}
    quote_high = prepared.quote.high
    evaluation = Evaluation(
        id=new_id(), job_id=prepared.job.id, created_at=now(), status="completed", backend=prepared.job.backend,
        base_model=prepared.route.sides["base"].model, tuned_model=prepared.route.sides["tuned"].model,
        held_out=prepared.held.source, examples=len(prepared.held.examples), settings=settings,
        overall=scoring.overall(scored), win_rate=scoring.win_rate(verdicts, judge.name) if judge else None,
        capability=capability, costs=_costs(prepared, spend),
        quote_usd=float(quote_high) if quote_high is not None else None, notes=notes,
        per_example=rows + capability_rows)
    if prepared.request.chart:
        from ftbroker.evaluation.render import chart

        written, why = chart(evaluation, prepared.request.chart)
        evaluation = evaluation.model_copy(update={"chart": written, "notes": evaluation.notes + ([why] if why
                                                                                                  else [])})
    return evaluation


def failed(prepared: Any, spend: Any, error: BaseException, problems: list[str]) -> Evaluation:
    """The record of an evaluation that stopped after it began to spend: what it cost, and why it stopped."""
    from ftbroker.evaluation.flow import new_id, now

    return Evaluation(
        id=new_id(), job_id=prepared.job.id, created_at=now(), status="failed", backend=prepared.job.backend,
        base_model=prepared.route.sides["base"].model, tuned_model=prepared.route.sides["tuned"].model,
        held_out=prepared.held.source, examples=len(prepared.held.examples), settings={}, overall={},
        costs=_costs(prepared, spend), notes=[f"not deleted: {p}" for p in problems],
        error=f"{type(error).__name__}: {error}" if not str(error) else str(error))
