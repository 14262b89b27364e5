"""One block of a dataset's lines, scanned: every line checked, every valid example counted by every counter.

``scan`` validates a block of whole lines (``ftbroker.data.rules``, then each provider's ``LineRules``) and ``count``
runs the token counters over its valid examples; what they find is a ``Partial``, and the partials of
consecutive blocks merge in file order, so a block may be scanned in a worker process.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ftbroker.data.issues import Issues
from ftbroker.data.providers import ChatExample, LineRules
from ftbroker.data.reader import unparsable
from ftbroker.data.rules import Checker, format_of, jtype
from ftbroker.errors import InputError
from ftbroker.tokens.counters import CounterGroup, TokenCounter

EXACT_LENGTHS = 8192  # lengths above are rounded up to a multiple of 64 so the histogram stays bounded


class TokenTally:
    """One counter's running totals and length histogram."""

    __slots__ = ("lengths", "max", "min", "n", "over", "total", "trained")

    def __init__(self) -> None:
        self.n = self.total = self.trained = self.over = 0
        self.min, self.max = float("inf"), 0
        self.lengths: Counter[int] = Counter()

    def add_many(self, counts: Sequence[tuple[int, int]]) -> None:
        """Adds (total, trained) of some examples."""
        if not counts:
            return
        totals = [total for total, _ in counts]
        self.n += len(totals)
        self.total += sum(totals)
        self.trained += sum(trained for _, trained in counts)
        self.min = min(self.min, min(totals))
        self.max = max(self.max, max(totals))
        self.lengths.update(t if t <= EXACT_LENGTHS else -(-t // 64) * 64 for t in totals)

    def merge(self, other: TokenTally) -> None:
        self.n += other.n
        self.total += other.total
        self.trained += other.trained
        self.over += other.over
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.lengths.update(other.lengths)


@dataclass
class Partial:
    """What scanning some lines found; partials of consecutive blocks merge in file order."""

    examples: int = 0
    non_blank: int = 0
    messages: Counter = field(default_factory=Counter)
    tokens: dict[str, TokenTally] = field(default_factory=dict)
    issues: Issues = field(default_factory=Issues)
    # (line, 8-byte digest) of each valid example
    hashes: list[tuple[int, bytes]] = field(default_factory=list)

    def merge(self, other: Partial) -> None:
        self.examples += other.examples
        self.non_blank += other.non_blank
        self.messages.update(other.messages)
        for key, acc in other.tokens.items():
            self.tokens.setdefault(key, TokenTally()).merge(acc)
        self.issues.merge(other.issues)


@dataclass(frozen=True)
class Context:
    """What every block of one file is scanned with."""

    fmt: str
    fmt_line: int
    counters: Sequence[TokenCounter]
    limits: Mapping[str, int]
    group: CounterGroup  # the counters that share their work (ftbroker.tokens.counters.CounterGroup)
    rules: Sequence[LineRules]  # every provider's


def scan(block: bytes, line_no: int, offset: int, ctx: Context) -> tuple[Partial, list[dict], list[int]]:
    """Validates a block of whole lines; returns what it found and the valid examples with their lines."""
    part = Partial(tokens={c.key: TokenTally() for c in ctx.counters})
    check = Checker(part.issues)
    batch: list[dict] = []
    batch_lines: list[int] = []
    chat_rules = [(r.provider, r.chat) for r in ctx.rules]
    preference_rules = [(r.provider, r.preference) for r in ctx.rules]
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    unterminated = line_no + len(lines) - 1 if not block.endswith(b"\n") else 0  # only a file's last line
    for n, line in enumerate(lines, line_no):
        start, offset = offset, offset + len(line) + 1
        if not line or line.isspace():
            part.issues.tally("warning", "blank", n, "blank lines are skipped")
            continue
        part.non_blank += 1
        check.line = n
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            check.err(unparsable(line.rstrip(b"\r"), start, str(exc), n == unterminated))
            continue
        if type(obj) is not dict:
            check.err(f"expected a JSON object, got {jtype(obj)}")
            continue
        fmt, problem = format_of(obj)
        if problem:
            check.err(problem)
            continue
        if fmt != ctx.fmt:
            part.issues.tally(
                "error",
                "mixed",
                n,
                f"a {fmt} example in a {ctx.fmt} file (line {ctx.fmt_line} set "
                "the format): one file holds one format",
            )
            continue
        errors_before = len(part.issues.errors) + part.issues.dropped
        messages = check.example(obj, fmt)
        if len(part.issues.errors) + part.issues.dropped != errors_before:
            continue
        part.examples += 1
        if messages:
            chat = ChatExample(messages)
            check.remarks(obj, messages, chat.roles)
            _provider_remarks(part.issues, n, chat_rules, chat)
            part.messages[len(messages)] += 1
        elif fmt == "preference":
            _provider_remarks(part.issues, n, preference_rules, obj)
            part.messages[len(obj["input"]["messages"]) + 1] += 1
        part.hashes.append((n, hashlib.blake2b(line.strip(), digest_size=8).digest()))
        batch.append(obj)
        batch_lines.append(n)
    return part, batch, batch_lines


def _provider_remarks(issues: Issues, line: int, rules: Sequence[tuple[str, Callable]], example: Any) -> None:
    """Tallies what each provider's rule (provider, rule) says of a valid example, under that provider."""
    for provider, rule in rules:
        for kind, message in rule(example):
            issues.tally(provider, kind, line, message)


def _count_one(counter: TokenCounter, example: dict, fmt: str, line: int, issues: Issues) -> tuple | None:
    try:
        return counter.count(example, fmt)
    except InputError as exc:
        issues.error(line, str(exc))
        return None


def count(part: Partial, batch: list[dict], lines: list[int], ctx: Context) -> Partial:
    """Runs every counter over a block's valid examples."""
    shared = ctx.group.count_many(batch, ctx.fmt)
    for counter in ctx.counters:
        acc, limit = part.tokens[counter.key], ctx.limits.get(counter.key)
        counts = shared.get(counter.key)
        if counts is None:
            try:
                many = getattr(counter, "count_many", None)
                counts = many(batch, ctx.fmt) if many else [counter.count(ex, ctx.fmt) for ex in batch]
            except InputError:  # a chat template that refuses an example: find which, say where
                counts = [_count_one(counter, ex, ctx.fmt, n, part.issues) for ex, n in zip(batch, lines)]
        counted_lines = lines
        if None in counts:  # the examples a chat template refused (reported above) are not counted
            counted_lines = [n for n, c in zip(lines, counts) if c is not None]
            counts = [c for c in counts if c is not None]
        acc.add_many(counts)
        if limit is None or not counts or max(total for total, _ in counts) <= limit:
            continue
        for n, (total, _) in zip(counted_lines, counts):
            if total > limit:
                acc.over += 1
                part.issues.tally(
                    "warning",
                    f"over:{counter.key}",
                    n,
                    f"{total:,} tokens by {counter.name}, over the {limit:,}-token limit: the example "
                    "will be truncated",
                )
    return part

