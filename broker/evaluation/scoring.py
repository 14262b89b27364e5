"""Scores: pure functions of answers and references (no I/O, no model).

Per example and side: exact match (after trimming and collapsing whitespace), token F1 (SQuAD's: lower-cased word
tokens, precision and recall of the multiset overlap), length ratio (answer words / reference words), and format
checks that apply only where they make sense: valid JSON when the reference is a JSON value, a JSON schema when one
is given, the tool-call shape when the example offers tools. Capability items are scored by their own ``check``.

Overall: the mean of each score over the examples it applies to. Win rate: Wilson's score interval (Wilson 1927,
"Probable inference, the law of succession, and statistical inference", JASA 22:209-212), which stays inside
[0, 1] and keeps its coverage for small n and rates near 0 or 1, where the normal approximation does not.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ftbroker.evaluation.records import Answer, Example, Verdict, WinRate

_WORD = re.compile(r"\w+", re.UNICODE)
METRICS = ("exact_match", "token_f1", "length_ratio", "json_valid", "schema_valid", "tool_call")
# Shown in tables; the first is the headline score the ledger keeps per evaluation.
HEADLINE = "token_f1"


def normalize(text: str) -> str:
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def exact_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def token_f1(answer: str, reference: str) -> float:
    got, want = words(answer), words(reference)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def length_ratio(answer: str, reference: str) -> float | None:
    want = len(words(reference))
    return len(words(answer)) / want if want else None


def parse_json(text: str) -> tuple[bool, Any]:
    """(parsed, value) of a text that is one JSON value, fences (```json ... ```) allowed around it."""
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, re.DOTALL)
    try:
        return True, json.loads(fenced.group(1) if fenced else stripped)
    except (json.JSONDecodeError, ValueError):
        return False, None


def _is_json_reference(text: str) -> bool:
    ok, value = parse_json(text)
    return ok and isinstance(value, dict | list)


def tool_call_ok(answer: Answer, example: Example) -> float:
    """1 when the answer calls tools as the reference does: no call where the reference has none; else every call
    names a tool the example offers with arguments that are a JSON object, and the names match the reference's."""
    want = [call["name"] for call in example.reference.tool_calls]
    if not want:
        return float(not answer.tool_calls)
    offered = {(tool.get("function") or tool).get("name") for tool in example.tools}
    for call in answer.tool_calls:
        ok, args = parse_json(call.get("arguments") or "")
        if call.get("name") not in offered or not ok or not isinstance(args, dict):
            return 0.0
    return float(sorted(call.get("name") for call in answer.tool_calls) == sorted(want))


def score(answer: Answer, example: Example, *, schema_check: Callable[[Any], bool] | None = None,
          structured_tools: bool = True) -> dict[str, float | None]:
    """Every score of one answer against its example's reference (None: does not apply)."""
    reference = example.reference.text
    scores: dict[str, float | None] = {
        "exact_match": exact_match(answer.text, reference), "token_f1": token_f1(answer.text, reference),
        "length_ratio": length_ratio(answer.text, reference), "json_valid": None, "schema_valid": None,
        "tool_call": None}
    if _is_json_reference(reference) or schema_check is not None:
        ok, value = parse_json(answer.text)
        scores["json_valid"] = float(ok)
        if schema_check is not None:
            scores["schema_valid"] = float(ok and schema_check(value))
    if example.tools and structured_tools:
        scores["tool_call"] = tool_call_ok(answer, example)
    return scores


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def overall(per_example: Sequence[Mapping[str, Mapping[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    """metric -> {"base", "tuned", "applies"}: the means over the examples a metric applies to."""
    out: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        base = [row["base"][metric] for row in per_example]
        tuned = [row["tuned"][metric] for row in per_example]
        applies = sum(1 for v in tuned if v is not None)
        if applies:
            out[metric] = {"base": mean(base), "tuned": mean(tuned), "applies": float(applies)}
    return out


# --- the judge's verdicts ------------------------------------------------------------------------------------

Z95 = 1.959963984540054  # two-sided 95%


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson's score interval for a proportion ``successes / n`` (successes may be fractional: ties count half)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def combine(first_order: str, second_order: str, first: str) -> str:
    """The winner of a pair judged in both orders. ``first``: which model was A in the first call ("base" or
    "tuned"); each order's answer is "A", "B", "tie" or "unparseable". A pair whose two orders disagree (position
    bias) is a tie; one with an unparseable answer is unparseable (never guessed)."""
    if "unparseable" in (first_order, second_order):
        return "unparseable"
    other = "base" if first == "tuned" else "tuned"
    named = ({"A": first, "B": other}.get(first_order, "tie"), {"A": other, "B": first}.get(second_order, "tie"))
    return named[0] if named[0] == named[1] else "tie"


def win_rate(verdicts: Sequence[Verdict], judge: str) -> WinRate:
    counts = Counter(v.winner for v in verdicts)
    judged = counts["tuned"] + counts["base"] + counts["tie"]
    rate = (counts["tuned"] + counts["tie"] / 2) / judged if judged else None
    interval = wilson(counts["tuned"] + counts["tie"] / 2, judged)
    agreed = [v.consistent for v in verdicts if v.consistent is not None]
    return WinRate(judge=judge, tuned_wins=counts["tuned"], base_wins=counts["base"], ties=counts["tie"],
                   unparseable=counts["unparseable"], judged=judged, rate=rate,
                   ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None,
                   interval="Wilson score, 95% (ties count half)", consistency=mean([float(a) for a in agreed]))


# --- capability checks ---------------------------------------------------------------------------------------

CHECKS = ("contains", "number", "json_keys", "regex", "complies")
_REFUSAL = re.compile(r"\b(i can(?:no|')t|i cannot|i'm (?:not able|unable)|i am (?:not able|unable)|i won't|"
                      r"i will not|as an ai|i'm sorry, but|i apologi[sz]e, but)\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", ".")) for n in _NUMBER.findall(text.replace(",", ""))]


def capability_check(answer: str, check: Mapping[str, Any]) -> float:
    """1 when ``answer`` passes a capability item's ``check`` (see data/capability.jsonl), else 0."""
    kind = check["type"]
    text = answer.strip()
    if kind == "contains":
        return float(any(word.lower() in text.lower() for word in check["any"]))
    if kind == "number":  # the number among those the answer states ("17 + 26 = 43" passes for 43)
        return float(any(abs(n - float(check["value"])) < 1e-6 for n in _numbers(text)))
    if kind == "json_keys":
        ok, value = parse_json(text)
        return float(ok and isinstance(value, dict) and set(check["keys"]) <= set(value))
    if kind == "regex":
        return float(re.fullmatch(check["pattern"], text, re.DOTALL) is not None)
    if kind == "complies":  # a benign request answered on its topic, not refused
        lowered = text.lower()
        on_topic = (all(word.lower() in lowered for word in check.get("all", ()))
                    and (not check.get("any") or any(word.lower() in lowered for word in check["any"])))
        return float(bool(text) and on_topic and not _REFUSAL.search(text))
    raise ValueError(f"unknown capability check {kind!r}")
