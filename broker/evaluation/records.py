"""What an evaluation works on and produces: examples, answers, per-example scores, verdicts, the Evaluation.

Plain frozen dataclasses inside the flow; ``Evaluation`` (pydantic) is what the ledger keeps, ``--json`` prints and
the SDK returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Answer:
    """One model's reply: its text, its tool calls (``{"name", "arguments"}``, arguments as JSON text), and what the
    call used. ``cached``: read from the generation cache (paid for by an earlier run)."""

    text: str
    tool_calls: tuple[Mapping[str, str], ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    finish: str | None = None
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tool_calls"] = [dict(c) for c in self.tool_calls]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        return cls(text=data["text"], tool_calls=tuple(data.get("tool_calls") or ()),
                   input_tokens=data.get("input_tokens", 0), output_tokens=data.get("output_tokens", 0),
                   finish=data.get("finish"), cached=data.get("cached", False))


@dataclass(frozen=True)
class Example:
    """One held-out example: the prompt (chat messages; ``prompt_text`` too for prompt/completion lines, which a
    local model was trained on as raw text), the tools offered, and the reference answer."""

    id: str  # FILE:LINE, or capability:<id>
    fmt: str  # chat | prompt_completion | preference | capability
    messages: tuple[Mapping[str, Any], ...]
    reference: Answer
    tools: tuple[Mapping[str, Any], ...] = ()
    prompt_text: str | None = None
    line: Mapping[str, Any] = field(default_factory=dict)  # the whole line as read (None for capability items)
    check: Mapping[str, Any] = field(default_factory=dict)  # capability items: how the answer is checked
    category: str | None = None


Winner = Literal["tuned", "base", "tie", "unparseable"]


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one example, both orders combined. ``orders``: what each call said, in the order the
    calls were made, as "A" / "B" / "tie" / "unparseable"."""

    winner: Winner
    first: Literal["base", "tuned"]  # which model's answer was shown as A in the first call
    orders: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def consistent(self) -> bool | None:
        """Whether both orders named the same model (or both a tie); None when a call was unparseable."""
        if self.winner == "unparseable":
            return None
        return self.winner != "tie" or self.orders == ("tie", "tie")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WinRate(_Model):
    """Pairwise judge results. ``rate``: the fine-tuned model's wins plus half its ties over the judged pairs (pairs
    the judge answered in both orders); ``ci_low``/``ci_high``: a Wilson score interval on that rate."""

    judge: str
    tuned_wins: int
    base_wins: int
    ties: int
    unparseable: int
    judged: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str
    consistency: float | None  # share of judged pairs whose two orders agreed (position bias shows here)


class Capability(_Model):
    base: float
    tuned: float
    items: int
    by_category: dict[str, dict[str, float]]
    threshold: float
    regression: bool


class Costs(_Model):
    inference_usd: float
    judge_usd: float
    deployment_usd: float
    total_usd: float | None  # None: a part of it has no known price
    unknown: list[str] = Field(default_factory=list)  # what could not be priced
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Evaluation(_Model):
    """One evaluation of a job, as the ledger keeps it and ``ftbroker eval --json`` prints it."""

    id: str
    job_id: str
    created_at: datetime
    status: Literal["completed", "failed"]
    backend: str
    base_model: str
    tuned_model: str
    held_out: str  # where the examples came from
    examples: int
    settings: dict[str, Any]
    overall: dict[str, dict[str, float | None]]  # metric -> {"base", "tuned", "applies"}
    win_rate: WinRate | None = None
    capability: Capability | None = None
    costs: Costs
    quote_usd: float | None = None
    notes: list[str] = Field(default_factory=list)
    per_example: list[dict[str, Any]] = Field(default_factory=list)
    chart: str | None = None
    error: str | None = None

    def score(self, side: Literal["base", "tuned"], metric: str = "token_f1") -> float | None:
        return self.overall.get(metric, {}).get(side)

