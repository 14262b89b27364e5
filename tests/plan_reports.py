"""Dataset reports built by hand, with the real ``ftbroker.data`` types, for the pure planner's tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ftbroker.data.report import DatasetReport, Summary, TokenStats
from ftbroker.errors import DataIssue


def stats(lengths: Mapping[int, int], tokenizer: str = "o200k_base", exact: bool = True, **counter: str | None
          ) -> TokenStats:
    """TokenStats for a histogram {example length: examples}; trained = a third of each example; ``counter``: what
    the counter says of its counts (family, accuracy, why)."""
    n = sum(lengths.values())
    total = sum(length * count for length, count in lengths.items())
    ordered = sorted(lengths)
    per = Summary(min(ordered), total / n, ordered[len(ordered) // 2], ordered[-1], max(ordered))
    return TokenStats(tokenizer, exact, total, total // 3, per, dict(lengths), None, 0, **counter)


def report(tokens: Mapping[str, TokenStats], *, fmt: str = "chat", path: str = "data.jsonl",
           size_bytes: int = 1000, errors: Sequence[DataIssue] = (),
           provider_issues: Mapping[str, Sequence[DataIssue]] | None = None) -> DatasetReport:
    examples = sum(next(iter(tokens.values())).length_counts.values()) if tokens else 0
    return DatasetReport(path, fmt, examples, size_bytes, None, dict(tokens), list(errors), [], [],
                         dict(provider_issues or {}))
