"""The dataset report: what ``analyze`` found, and how the tallies of its one pass become it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ftbroker.data.advice import Advice, advise
from ftbroker.data.issues import Issues
from ftbroker.data.providers import LineRules
from ftbroker.data.scan import Partial, TokenTally
from ftbroker.errors import DataIssue, DatasetError
from ftbroker.tokens.counters import TokenCounter


@dataclass(frozen=True)
class Summary:
    """Of a distribution over examples."""

    min: float
    mean: float
    p50: float
    p95: float
    max: float

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("min", "mean", "p50", "p95", "max")}


@dataclass(frozen=True)
class TokenStats:
    """One tokenizer's count of the whole file."""

    tokenizer: str
    exact: bool
    total: int  # every token of every example, as the route formats it
    trained: int  # tokens the loss is taken on
    per_example: Summary  # of total tokens per example
    length_counts: Mapping[
        int, int
    ]  # example length -> examples; lengths over 8192 rounded up to a multiple of 64
    limit: int | None
    over_limit: int
    # what the counter says of its counts (TokenCounter): its tokenizer family, accuracy ("": it does not say) and
    # why it is an estimate
    family: str | None = None
    accuracy: str = ""
    why: str = ""

    def to_json(self) -> dict:
        return {
            "tokenizer": self.tokenizer,
            "exact": self.exact,
            "total": self.total,
            "trained": self.trained,
            "per_example": self.per_example.to_json(),
            "limit": self.limit,
            "over_limit": self.over_limit,
        }



@dataclass(frozen=True)
class DatasetReport:
    """What ``analyze`` found. Statistics and token counts cover the valid examples only."""

    path: str
    format: str  # one of FORMATS ("chat" for a file with no readable example)
    examples: int  # valid examples
    size_bytes: int
    messages_per_example: Summary | None  # chat and preference (input messages + 1 output)
    tokens: Mapping[str, TokenStats]  # by counter key, in the order the counters were given
    errors: Sequence[DataIssue]  # in line order; line 0: the file as a whole
    warnings: Sequence[DataIssue]  # one per kind of remark: its first line, "(and N more lines)"
    advice: Sequence[Advice]  # what the dataset alone tells; see advise() for the training set-up
    # provider -> the rules of that provider only (its backend's LineRules) that the file breaks (none: absent)
    provider_issues: Mapping[str, Sequence[DataIssue]]

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DatasetError(self.errors)

    def to_json(self) -> dict:
        """The ``dataset`` object of ``ftbroker plan --json`` (DESIGN.md); the first counter is the main."""
        main = next(iter(self.tokens.values()), None)

        def issues(items: Sequence[DataIssue]) -> list[dict]:
            return [{"line": i.line, "message": i.message} for i in items]

        return {
            "path": self.path,
            "format": self.format,
            "examples": self.examples,
            "size_bytes": self.size_bytes,
            "messages_per_example": self.messages_per_example.to_json()
            if self.messages_per_example
            else None,
            "tokenizer": {"name": main.tokenizer, "exact": main.exact} if main else None,
            "tokens": (
                {k: v for k, v in main.to_json().items() if k not in ("tokenizer", "exact")} if main else None
            ),
            "token_counts": {key: s.to_json() for key, s in self.tokens.items()},
            "errors": issues(self.errors),
            "warnings": issues(self.warnings),
            "advice": [
                {"message": a.message, "reason": a.reason, "suggestion": a.suggestion} for a in self.advice
            ],
            "provider_issues": {p: issues(v) for p, v in self.provider_issues.items()},
        }


def summary(values: Mapping[int, int], n: int, mean: float, lo: float, hi: float) -> Summary:
    """Summary of a histogram; percentiles by nearest rank."""

    def rank(q: float) -> float:
        target, seen = max(1, -(-q * n // 1)), 0
        for value in sorted(values):
            seen += values[value]
            if seen >= target:
                return float(min(value, hi))
        return float(hi)

    return Summary(float(lo), round(mean, 2), rank(0.5), rank(0.95), float(hi))


def _file_remarks(issues: Issues, fmt: str, n: int, rules: Sequence[LineRules], duplicates_covered: int | None) -> None:
    """Remarks about the file as a whole (line 0)."""
    if duplicates_covered is not None:
        issues.tally("warning", "dup-cap", 0,
                     f"the duplicate check covered the first {duplicates_covered:,} distinct examples only")
    if 0 < n < 50:
        plural = "s" if n != 1 else ""
        issues.tally(
            "warning",
            "few",
            0,
            f"only {n} example{plural}: OpenAI recommends starting with 50 to 100 (its minimum is 10)",
        )
    for rule in rules:
        if fmt in rule.formats:
            issues.tally(rule.provider, "format", 0, rule.formats[fmt])


def _rendered(issues: Issues, label: str, bucket: str) -> list[DataIssue]:
    """The tallies of one bucket as issues, in line order: the first line, and how many more share it."""
    out = []
    for (b, kind), (line, message, count) in issues.tallies.items():
        if b == bucket:
            more, unit = count - 1, "example" if kind == "duplicate" else "line"
            if more > 0 and line:
                message += f" (and {more:,} more {unit}{'s' if more != 1 else ''})"
            out.append(DataIssue(label, line, message))
    return sorted(out)


def _stats(counter: TokenCounter, acc: TokenTally, limit: int | None) -> TokenStats:
    per = (
        summary(acc.lengths, acc.n, acc.total / acc.n, acc.min, acc.max) if acc.n else Summary(0, 0, 0, 0, 0)
    )
    return TokenStats(counter.name, counter.exact, acc.total, acc.trained, per, dict(acc.lengths), limit, acc.over,
                      getattr(counter, "family", None), getattr(counter, "accuracy", ""), getattr(counter, "why", ""))


def build(label: str, path: Path, fmt: str, part: Partial, *, fatal: list[DataIssue],
          counters: Sequence[TokenCounter], limits: Mapping[str, int], rules: Sequence[LineRules],
          duplicates_covered: int | None = None) -> DatasetReport:
    """The report of a file read (or refused: ``fatal``) in format ``fmt``; ``duplicates_covered``: how many
    distinct examples the duplicate check covered when it could not cover them all."""
    issues = part.issues
    if not fatal and part.non_blank == 0:
        fatal = [DataIssue(label, 0, "the file has no examples: it holds only blank lines")]
    if not fatal:
        _file_remarks(issues, fmt, part.examples, rules, duplicates_covered)
    errors = fatal + sorted(
        [DataIssue(label, line, m) for line, m in issues.errors] + _rendered(issues, label, "error")
    )
    if issues.dropped:
        errors.append(DataIssue(label, 0, f"{issues.dropped:,} more errors are not listed", count=issues.dropped))
    msgs = part.messages
    per_msgs = None
    if fmt in ("chat", "preference") and msgs:
        count = sum(msgs.values())
        per_msgs = summary(msgs, count, sum(k * v for k, v in msgs.items()) / count, min(msgs), max(msgs))
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    providers = {r.provider: _rendered(issues, label, r.provider) for r in rules}
    report = DatasetReport(
        path=label,
        format=fmt,
        examples=part.examples,
        size_bytes=size,
        messages_per_example=per_msgs,
        tokens={c.key: _stats(c, part.tokens.get(c.key) or TokenTally(), limits.get(c.key)) for c in counters},
        errors=errors,
        warnings=_rendered(issues, label, "warning"),
        advice=(),
        provider_issues={p: v for p, v in providers.items() if v},
    )
    return replace(report, advice=tuple(advise(report)))

