"""The LLM judge: blind pairwise comparison of the base and the fine-tuned answer to each held-out prompt.

What keeps the verdicts honest (pitfalls measured in Zheng et al. 2023, arXiv:2306.05685, and Wang et al. 2023,
arXiv:2305.17926):

- blind: the judge sees "Answer A" and "Answer B", never which model wrote which;
- both orders: each pair is judged twice with the answers swapped, the first order drawn at random (seeded per
  example, so a rerun asks the same questions and hits the cache); a pair whose two verdicts disagree is a tie,
  and the share of pairs whose orders agreed is reported (position bias shows there);
- reference-guided: the reference answer is shown when the data has one;
- strict parsing: a reply must be exactly the JSON object of ``VERDICT_SCHEMA``; anything else is asked again
  (``retries`` times), then counted as unparseable. A verdict is never guessed from free text;
- no sampling knob: a fixed effort (Anthropic) or temperature 0 (OpenAI), recorded in the evaluation's settings.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ftbroker.errors import InputError, UnknownNameError
from ftbroker.evaluation import cache as cache_module
from ftbroker.evaluation.records import Answer, Example, Verdict
from ftbroker.evaluation.scoring import combine

VERDICT_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
    "required": ["winner", "reason"],
    "additionalProperties": False,
}
SYSTEM = ("You are an impartial judge of answers written by two AI assistants. You do not know which assistant "
          "wrote which answer, and their order is random: judge the content only, not the position or the length.")
RUBRIC = ("Decide which answer better fulfils the user's request in the conversation: correct, complete, in the "
          "format the user or the system prompt asked for, and no longer than needed. When a reference answer is "
          "given, it shows what a correct answer looks like; an answer need not copy its wording. Say tie when "
          "neither is better.")
INSTRUCTION = 'Reply with only this JSON object: {"winner": "A" or "B" or "tie", "reason": "<one sentence>"}.'


def resolve(name: str, judges: Mapping[str, str]) -> tuple[str, str]:
    """(provider, model) of a ``--judge`` value: a judge model of the price table (``claude-haiku-5-5``,
    ``gpt-4.1``, ``anthropic.claude-sonnet-5-5`` on Bedrock), optionally written ``provider:model``."""
    provider, sep, model = name.partition(":")
    if sep and provider in set(judges.values()) and judges.get(model) == provider:
        return provider, model
    if name in judges:
        return judges[name], name
    raise UnknownNameError("judge model", name, judges, hint=f"judges: {', '.join(sorted(judges))}; another model "
                           "can be added with its price in $FTBROKER_HOME/eval_prices.toml (judge = true)")


def rubric_text(path: str | None) -> str:
    if not path:
        return RUBRIC
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--rubric {path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    if not text:
        raise InputError(f"--rubric {path}: the file is empty")
    return text


def parse(text: str | None) -> tuple[str, str] | None:
    """(winner, reason) of a reply that is exactly a verdict object; None for anything else."""
    if text is None:
        return None
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(value, dict) or set(value) != {"winner", "reason"}:
        return None
    if value["winner"] not in ("A", "B", "tie") or not isinstance(value["reason"], str):
        return None
    return value["winner"], value["reason"]


def _conversation(example: Example) -> str:
    lines = []
    for message in example.messages:
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        lines.append(f"{str(message.get('role', '')).upper()}: {text or ''}")
    return "\n".join(lines)


def _shown(answer: Answer) -> str:
    calls = [f"[tool call] {c['name']}({c['arguments']})" for c in answer.tool_calls]
    return "\n".join([answer.text, *calls]).strip() or "(empty answer)"


def prompt(example: Example, a: Answer, b: Answer, rubric: str) -> str:
    parts = [rubric, "", "[Conversation]", _conversation(example)]
    if example.reference.text or example.reference.tool_calls:
        parts += ["", "[Reference answer]", _shown(example.reference)]
    parts += ["", "[Answer A]", _shown(a), "", "[Answer B]", _shown(b), "", INSTRUCTION]
    return "\n".join(parts)


@dataclass
class Usage:
    """What the judge used in this run (cached verdicts cost nothing now)."""

    calls: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Judge:
    def __init__(self, provider: str, model: str, client: Any, cache: cache_module.Cache, *, rubric: str, seed: int,
                 retries: int, max_tokens: int, effort: str | None, call: Any):
        self.provider, self.model, self.client, self.cache = provider, model, client, cache
        self.rubric, self.seed, self.retries, self.max_tokens, self.effort = rubric, seed, retries, max_tokens, effort
        self._call = call  # with_retries around one API call (transient errors)
        self.usage = Usage()

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def settings(self) -> dict[str, Any]:
        return {"judge": self.name, "effort": self.effort if self.provider != "openai" else None,
                "temperature": 0 if self.provider == "openai" else None, "max_tokens": self.max_tokens,
                "orders": "both, first drawn per example", "seed": self.seed, "retries": self.retries}

    def verdict(self, example: Example, base: Answer, tuned: Answer) -> Verdict:
        first = random.Random(f"{self.seed}:{example.id}").choice(["base", "tuned"])
        answers = {"base": base, "tuned": tuned}
        second = "base" if first == "tuned" else "tuned"
        said, reasons = [], []
        for a_side, b_side in ((first, second), (second, first)):
            winner, reason = self._one(prompt(example, answers[a_side], answers[b_side], self.rubric))
            said.append(winner)
            reasons.append(reason)
        return Verdict(combine(said[0], said[1], first), first, tuple(said), tuple(reasons))

    def _one(self, user: str) -> tuple[str, str]:
        """One order's verdict: the cached one, else asked (again on an unparseable reply, ``retries`` times)."""
        key = cache_module.key("verdict", self.name, {"system": SYSTEM, "user": user}, self.settings())
        cached = self.cache.get(key)
        if cached is not None:
            self.usage.cached += 1
            return cached["winner"], cached["reason"]
        for _ in range(1 + self.retries):
            reply = self._call(lambda: self.client.ask(self.model, SYSTEM, user, VERDICT_SCHEMA, self.max_tokens))
            self.usage.calls += 1
            self.usage.input_tokens += reply.input_tokens
            self.usage.output_tokens += reply.output_tokens
            parsed = parse(reply.text)
            if parsed is not None:
                self.cache.put(key, "verdict", {"winner": parsed[0], "reason": parsed[1]})
                return parsed
        return "unparseable", f"no verdict after {1 + self.retries} replies (last: {_preview(reply.text)})"


def _preview(text: str | None, width: int = 80) -> str:
    if text is None:
        return "no text"
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[:width] + "...")


def judge_tokens(example: Example, base_chars: int, rubric: str) -> int:
    """An upper estimate of one judge call's input tokens (4 characters a token is generous for English)."""
    chars = len(SYSTEM) + len(rubric) + len(INSTRUCTION) + len(_conversation(example)) + len(_shown(example.reference))
    return (chars + 2 * base_chars) // 3 + 64


def judge_cost(price: Any, usage: Usage) -> Decimal | None:
    if usage.calls == 0:
        return Decimal(0)
    return price.cost(usage.input_tokens, usage.output_tokens) if price is not None else None
