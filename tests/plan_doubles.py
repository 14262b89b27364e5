"""Test helpers for the planner: dataset reports built by hand, and stand-in ``data``/``tokens`` modules.

The report types come from ``ftbroker.data`` when that module is on this branch; until the data area's work is
merged, minimal doubles with the contract's fields (BRIEF.md, "Dataset report") stand in. The stand-in modules
let the CLI tests run ``ftbroker plan`` with token counts fixed by the test, whatever the real counters say.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftbroker.errors import DataIssue, DatasetError

try:
    from ftbroker.data import Advice, DatasetReport, Summary, TokenStats
except ImportError:  # the data area's module has not landed on this branch yet

    @dataclass(frozen=True)
    class Summary:  # type: ignore[no-redef]
        min: float
        mean: float
        p50: float
        p95: float
        max: float

        def to_json(self) -> dict:
            return {k: getattr(self, k) for k in ("min", "mean", "p50", "p95", "max")}

    @dataclass(frozen=True)
    class TokenStats:  # type: ignore[no-redef]
        tokenizer: str
        exact: bool
        total: int
        trained: int
        per_example: Summary
        length_counts: Mapping[int, int]
        limit: int | None
        over_limit: int

    @dataclass(frozen=True)
    class Advice:  # type: ignore[no-redef]
        message: str
        reason: str
        suggestion: str

    @dataclass(frozen=True)
    class DatasetReport:  # type: ignore[no-redef]
        path: str
        format: str
        examples: int
        size_bytes: int
        messages_per_example: Summary | None
        tokens: Mapping[str, TokenStats]
        errors: Sequence[DataIssue]
        warnings: Sequence[DataIssue]
        advice: Sequence[Advice]
        provider_issues: Mapping[str, Sequence[DataIssue]]

        def raise_for_errors(self) -> None:
            if self.errors:
                raise DatasetError(self.errors)

        def to_json(self) -> dict:
            main = next(iter(self.tokens.values()), None)
            return {"path": self.path, "format": self.format, "examples": self.examples,
                    "tokenizer": {"name": main.tokenizer, "exact": main.exact} if main else None,
                    "tokens": {"total": main.total, "trained": main.trained,
                               "per_example": main.per_example.to_json()} if main else None,
                    "errors": [{"line": i.line, "message": i.message} for i in self.errors],
                    "warnings": [{"line": i.line, "message": i.message} for i in self.warnings]}


def stats(lengths: Mapping[int, int], tokenizer: str = "o200k_base", exact: bool = True) -> TokenStats:
    """TokenStats for a histogram {example length: examples}; trained = a third of each example."""
    n = sum(lengths.values())
    total = sum(length * count for length, count in lengths.items())
    ordered = sorted(lengths)
    per = Summary(min(ordered), total / n, ordered[len(ordered) // 2], ordered[-1], max(ordered))
    return TokenStats(tokenizer, exact, total, total // 3, per, dict(lengths), None, 0)


def report(tokens: Mapping[str, TokenStats], *, fmt: str = "chat", path: str = "data.jsonl",
           size_bytes: int = 1000, errors: Sequence[DataIssue] = (),
           provider_issues: Mapping[str, Sequence[DataIssue]] | None = None) -> DatasetReport:
    examples = sum(next(iter(tokens.values())).length_counts.values()) if tokens else 0
    return DatasetReport(path, fmt, examples, size_bytes, None, dict(tokens), list(errors), [], [],
                         dict(provider_issues or {}))


# ---------------------------------------------------------------------------------- stand-in data/tokens modules

@dataclass(frozen=True)
class FakeCounter:
    key: str
    name: str
    exact: bool
    tokens_per_example: int = 100

    def count(self, example: Mapping, fmt: str) -> tuple[int, int]:
        return self.tokens_per_example, self.tokens_per_example // 2


@dataclass
class FakeAnalysis:
    """What the stand-ins saw: the counters handed to analyze (one call per file) and the resolve calls."""

    resolved: list[tuple] = field(default_factory=list)
    analyzed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def fake_modules(tokens_per_example: int = 100) -> tuple[types.ModuleType, types.ModuleType, FakeAnalysis]:
    """``data`` and ``tokens`` stand-ins: every non-blank line is one example of ``tokens_per_example`` tokens,
    exact for tiktoken-style names; a line that is not a JSON object is an error at that line."""
    seen = FakeAnalysis()
    tokens_mod = types.ModuleType("ftbroker.tokens")
    data_mod = types.ModuleType("ftbroker.data")

    def resolve(tokenizer=None, *, hf_repo=None, family=None):
        seen.resolved.append((tokenizer, hf_repo, family))
        name = tokenizer or hf_repo or family
        exact = tokenizer is not None
        return FakeCounter(f"fake:{name}", name if exact else f"estimate ({family})", exact, tokens_per_example)

    def analyze(path, *, counters=(), limits={}):  # noqa: B006
        seen.analyzed.append((str(path), tuple(c.key for c in counters)))
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        errors, n = [], 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            if ok:
                n += 1
            else:
                errors.append(DataIssue(str(path), number, "not a JSON object"))
        counted = {c.key: stats({c.tokens_per_example: n}, c.name, c.exact) for c in counters} if n else {}
        return DatasetReport(str(path), "chat", n, Path(path).stat().st_size, None, counted, errors, [], [], {})

    def advise(report, *, lora_r=None, epochs=None, has_validation=None):
        return [Advice("a remark", "because", "do this")] if lora_r else []

    tokens_mod.resolve = resolve
    data_mod.analyze = analyze
    data_mod.advise = advise
    return data_mod, tokens_mod, seen
