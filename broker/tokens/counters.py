"""The token counter interface, and the counters that share their work over a batch (``CounterGroup``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import mul
from typing import Any, Protocol, runtime_checkable

from ftbroker.tokens.scripts import numpy_module, script_counts
from ftbroker.tokens.walk import ROLES, ChatRule, Walk


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of parsed examples. Optional: ``count_many(examples, fmt)``, a batch form that
    ``analyze`` uses when a counter has it, ``forkable = True`` when the counter works in a forked worker process
    (then ``analyze`` spreads a large file over the cores), and what the report says of its counts: ``family``
    (the tokenizer family it counts for, when known: ``estimate.FAMILIES``), ``accuracy`` ("exact", or an
    estimate's typical error, "±0.3%, p90 5.9%", or what stands in, "as cl100k_base") and ``why`` it is an estimate
    ("" when it is not one for want of a tokenizer). Every counter here has them all."""

    key: str  # stable: ``tiktoken:o200k_base``, ``hf:/abs/folder``, ``estimate:llama3``
    name: str  # for people; it says when a count is an estimate
    exact: bool

    def count(self, example: Mapping, fmt: str) -> tuple[int, int]: ...


class TextCounter(Protocol):
    """Values of texts (token counts, or estimates). ``key`` names what it computes: sources with the same key
    give the same values, so a batch computes each once (``TextValues``)."""

    key: str

    def values(self, batch: TextValues) -> list[float]: ...

    def __call__(self, texts: list[str]) -> list[float]: ...


class TextValues:
    """The texts of one batch and what each source made of them, each computed once whoever asks."""

    __slots__ = ("_done", "texts")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self._done: dict[str, Any] = {}

    def of(self, source: TextCounter) -> list[float]:
        done = self._done.get(source.key)
        if done is None:
            done = self._done[source.key] = source.values(self)
        return done

    def scripts(self) -> Any:
        """Per text: its length, digits and the characters of each script of ``SCRIPTS`` and others (the
        estimate's features before scaling), as an array with numpy, else None (``features`` per text)."""
        if "scripts" not in self._done:
            self._done["scripts"] = script_counts(self.texts)
        return self._done["scripts"]


class BatchCounter:
    """A counter whose work is ``count_many``; ``count`` is one example of it."""

    key: str

    def __repr__(self) -> str:
        return f"<TokenCounter {self.key}>"

    def count(self, example: Mapping, fmt: str) -> tuple[int, int]:
        return self.count_many([example], fmt)[0]

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> list[tuple[int, int]]:
        raise NotImplementedError


class TemplateCounter(BatchCounter):
    """A counter that formats examples by a ``ChatRule`` and counts their texts with a text counter. Its work
    is done by a ``CounterGroup`` (of itself alone, or of all the counters of an analysis)."""

    forkable = True  # analyze() may run it in forked worker processes

    def __init__(self, key: str, name: str, rule: ChatRule, texts: TextCounter, *, exact: bool,
                 family: str | None, accuracy: str, why: str = ""):
        self.key, self.name, self.exact = key, name, exact
        self.family, self.accuracy, self.why = family, accuracy, why
        self.rule, self.texts = rule, texts
        cookbook = rule.openai_tools is not None
        role_cost = texts(list(ROLES)) if rule.encode_role else [0.0] * len(ROLES)
        # what each of an example's parts (_CHAT, ...) costs under this rule; then its trained parts
        self.weights = (rule.priming, rule.per_message, rule.default_system,
                        rule.tools_preamble + (12 if cookbook else 0), rule.openai_tools or 0,
                        1 if cookbook else 0, rule.per_name, 3, *role_cost)
        self.trained_weights = (3, rule.end_of_turn)
        self.tags = (True, rule.encode_role, cookbook, not cookbook)  # which tags of texts it counts
        self._group: CounterGroup | None = None

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> list[tuple[int, int]]:
        if self._group is None:
            self._group = CounterGroup([self])
        return self._group.count_many(examples, fmt)[self.key]


class CounterGroup:
    """Counters that run together over the same batches of examples, doing the work they share once: one walk
    of each example for every chat-rule counter (tiktoken's and the estimates), one count of each text by each
    encoding, and one scan of each text's scripts for all the estimates. Other counters (a local Hugging Face
    tokenizer) are left to their own ``count_many``.

    ``json_examples``: the examples are parsed JSON (dicts, lists, strings, numbers, booleans, null), as
    ``analyze`` reads them: a tool list's serialized form then identifies it, and its texts are made once."""

    _MEMO_CHARS = 2 << 20  # the memo of repeated texts is emptied when it holds more characters than this

    def __init__(self, counters: Sequence[TokenCounter], *, json_examples: bool = False):
        members = {c.key: c for c in counters if isinstance(c, TemplateCounter)}
        self._members = list(members.values())
        self._needs = frozenset(tag for c in self._members for tag, counted in enumerate(c.tags) if counted)
        self._memo: dict[str, tuple] = {}  # repeated text -> its value for each member
        self._memo_chars = 0
        self._tool_pieces: dict[bytes, tuple] | None = {} if json_examples else None
        if any(getattr(c.texts, "scans", False) for c in self._members):  # an estimate that reads the scripts
            numpy_module()  # imported before analyze() forks its workers, which then share it

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> dict[str, list[tuple[int, int]]]:
        """(total, trained) of every example, by member key."""
        if not self._members:
            return {}
        walk = Walk(examples, fmt, self._memo, self._needs, self._tool_pieces)
        texts, owners, tags, trained, cacheable = zip(*walk.items) if walk.items else ((),) * 5
        batch = TextValues(list(texts))
        values = [batch.of(c.texts) for c in self._members]
        out: dict[str, list[tuple[int, int]]] = {}
        done: dict[tuple, list[tuple[int, int]]] = {}  # counters of the same rule and text values count alike
        for j, c in enumerate(self._members):
            same = (c.texts.key, c.weights, c.trained_weights, c.tags)
            if same not in done:
                done[same] = _tally(walk, j, c, owners, tags, trained, values[j])
            out[c.key] = done[same]
        self._remember(texts, cacheable, values)
        return out

    def _remember(self, texts: Sequence[str], cacheable: Sequence[bool], values: list[list[float]]) -> None:
        memo = self._memo
        for k, (text, keep) in enumerate(zip(texts, cacheable)):
            if keep:
                self._memo_chars += len(text)
                if self._memo_chars > self._MEMO_CHARS:
                    memo.clear()
                    self._memo_chars = len(text)
                memo[text] = tuple(v[k] for v in values)


def _tally(walk: Walk, j: int, counter: TemplateCounter, owners: Sequence[int], tags: Sequence[int],
           trained: Sequence[bool], values: Sequence[float]) -> list[tuple[int, int]]:
    """One member's (total, trained) per example: the memo's values, the priced parts, then the counted
    texts (the order the sums were always made in, so estimates round the same)."""
    n = len(walk.parts)
    total, trained_total = [0.0] * n, [0.0] * n
    counts = counter.tags
    for i, tag, is_trained, known in walk.hits:
        if counts[tag]:
            total[i] += known[j]
            if is_trained:
                trained_total[i] += known[j]
    weights, (per_call, per_turn) = counter.weights, counter.trained_weights
    for i, (row, (calls, turns)) in enumerate(zip(walk.parts, walk.trained_parts)):
        total[i] += sum(map(mul, weights, row))
        trained_total[i] += per_call * calls + per_turn * turns
    for i, tag, is_trained, value in zip(owners, tags, trained, values):
        if counts[tag]:
            total[i] += value
            if is_trained:
                trained_total[i] += value
    return [(round(t), round(tr)) for t, tr in zip(total, trained_total)]
