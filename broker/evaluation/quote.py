"""The quote of an evaluation, printed before anything is spent: tokens of both models (the answers not already
cached), paid deployment hours, and the judge's tokens. Pure arithmetic on the prepared evaluation.

Sizes: prompts counted with cl100k_base (exact for OpenAI's older models, within a few per cent of the others; +20%
kept for the tokenizers it does not match); an answer costs its cap at the high end and the reference's length as
expected; the judge reads the prompt, the reference and both answers at their caps, twice (both orders), and may
be asked again after an unparseable reply (the high end counts every allowed retry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ftbroker.evaluation import judge as judge_module
from ftbroker.evaluation.prices import Part, Quote, hours_part, token_part
from ftbroker.evaluation.records import Example

MARGIN = 1.2
EXPECTED_VERDICT_TOKENS = 150


def _prompt_tokens(examples: Sequence[Example]) -> int:
    from ftbroker.tokens.resolve import resolve

    counter = resolve("cl100k_base")
    total = 0
    for example in examples:
        line = {"messages": [dict(m) for m in example.messages]} | ({"tools": list(example.tools)} if example.tools
                                                                     else {})
        total += counter.count(line, "chat")[0]
    return round(total * MARGIN)


def _reference_tokens(example: Example, cap: int) -> int:
    return min(cap, len(example.reference.text) // 3 + 8) if example.reference.text else min(cap, 64)


def quote(prepared: Any, missing: Mapping[str, Sequence[tuple[Example, int]]]) -> Quote:
    parts: list[Part] = []
    notes = []
    route = prepared.route
    if route.backend == "local":
        parts.append(Part("both models on this machine (electricity not counted)", Decimal(0), Decimal(0)))
    for role, side in route.sides.items():
        if route.backend == "local" or not missing[role]:
            continue
        examples = [e for e, _ in missing[role]]
        label = f"{role} model {side.model}"
        if side.deploy:
            hourly = side.hourly
            why = (f"no public hourly price for a {route.backend} deployment; give it in eval_prices.toml "
                   "([[deployment]] provider, usd_per_hour)")
            parts.append(hours_part(f"{label}: paid deployment, up to", hourly,
                                    prepared.request.options.deployment_hours, why))
            continue
        parts.append(token_part(f"{label}: {len(examples)} answers", side.price, calls=len(examples),
                                input_tokens=_prompt_tokens(examples),
                                output_expected=sum(_reference_tokens(e, cap) for e, cap in missing[role]),
                                output_high=sum(cap for _, cap in missing[role])))
    if prepared.judge is not None:
        parts.append(_judge_part(prepared))
    if prepared.cached:
        notes.append(f"{prepared.cached} answers are already in the cache: not paid for again")
    return Quote(tuple(parts), tuple(notes))


def _judge_part(prepared: Any) -> Part:
    options = prepared.request.options
    rubric = judge_module.rubric_text(prepared.request.rubric)
    examples = prepared.held.examples
    calls = 2 * len(examples)
    per_call = [judge_module.judge_tokens(e, prepared.max_tokens * 4, rubric) for e in examples]
    input_tokens = 2 * sum(per_call)
    retries = options.judge_retries
    provider, model = prepared.judge
    return token_part(f"judge {provider}:{model}: {calls} verdicts (both orders)", prepared.judge_price, calls=calls,
                      input_tokens=input_tokens, output_expected=calls * EXPECTED_VERDICT_TOKENS,
                      output_high=calls * (1 + retries) * options.judge_max_tokens, extra_input=retries * input_tokens,
                      why_unknown=f"no public price for {model} here; give it in eval_prices.toml")
