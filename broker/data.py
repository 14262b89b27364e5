"""Streaming reader and validator of fine-tuning datasets (JSON Lines).

``analyze(path, counters=..., limits=...)`` reads a file ONCE, in blocks, in constant memory whatever its size
(length distributions are bounded histograms, duplicates a fixed-size hash table), runs every token counter on
the way, and returns a ``DatasetReport``; it never raises for what is in the file: problems go into ``errors``
(``FILE:LINE: message``), ``warnings``, and ``provider_issues`` (a rule of one provider only, so the planner
can rule that provider out without failing the plan). ``report.raise_for_errors()`` turns errors into a
``DatasetError``. ``advise(report, lora_r=..., epochs=..., has_validation=...)`` gives advice lines.

Formats, detected per line from its keys; a file mixing formats is an error at the first line that breaks it:

* ``chat``: ``{"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"? (deprecated)}``; roles
  system, developer, user, assistant, tool, function; assistant ``tool_calls`` and ``weight`` 0/1; content a
  string or a list of parts (text; images in user turns); Bedrock's top-level ``system`` string is accepted.
* ``preference``: ``{"input": {"messages", "tools"?}, "preferred_output": [msg], "non_preferred_output":
  [msg]}``.
* ``prompt_completion``: ``{"prompt", "completion"}``.
* ``text``: ``{"text"}``.

Rules and their sources (research/apis/NOTES.md of the project, carried here): OpenAI: the training-line
schemas of openai-openapi (2025-04-29: FineTuneChatRequestInput, FineTunePreferenceRequestInput,
FineTuneCompletionRequestInput; ChatCompletionMessageToolCall: id, type "function", function name and JSON
arguments; FunctionObject names ``[a-zA-Z0-9_-]{1,64}``; weight 0|1 on assistant messages); at least 10
examples, 50-100 recommended; at most 10 images per example (fine-tuning guide). Together: one format per
file, roles system/user/assistant/tool, start with system or user then alternate, at least one assistant
message, weight an integer 0/1, content parts text or image_url, at most 10 images per example and none on a
message of weight 1; preference input must not end with an assistant message (together-python
utils/files.py, docs.together.ai data-preparation). Bedrock: conversations start with user, end with
assistant and strictly alternate, no tool turns; no preference or plain-text fine-tuning data (AWS Bedrock
user guide, preparing-text-data; Claude-on-Bedrock cookbook); text only (ftbroker's Bedrock formats carry no
images). Fireworks: the OpenAI chat format ("existing OpenAI SFT datasets work with no conversion",
docs.fireworks.ai/fine-tuning/managed-finetuning-intro), the system message optional and first; chat data only
(docs.fireworks.ai/fine-tuning/fine-tuning-models); text only here (vision is a separate method). Vertex AI (Gemini supervised tuning): ``contents`` of alternating user and model turns ending with the
model, an optional ``systemInstruction``, no per-turn weights; chat data only
(docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning-about); text only here (images
would be Cloud Storage files).

These are the rules of a provider as a whole, for what ftbroker sends it: the backends send only the keys of
the format (Together refuses others; an unknown key is a warning here, as it is dropped), and a top-level
``system`` prompt as the first message. What differs by model (the formats a model takes, minimum and
maximum example counts, the per-example token limit) is a catalog row's (``pricing/data/managed.toml``), which
the planner checks; a model's own line format (e.g. Llama 3.1 on Bedrock: one prompt and one completion) is
checked by that backend's converter.
"""

from __future__ import annotations

import errno
import functools
import gc
import hashlib
import json
import mmap
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import eq
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from ftbroker import progress
from ftbroker.errors import DataIssue, DatasetError, InputError
from ftbroker.tokens import CounterGroup, TokenCounter

FORMATS = ("chat", "prompt_completion", "preference", "text")
PROVIDERS = ("openai", "together", "bedrock", "fireworks", "vertex")


# ---------------------------------------------------------------------------------------------------- results
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
class Advice:
    """Never an error: a common mistake this dataset or set-up is open to."""

    message: str
    reason: str
    suggestion: str


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
    # "openai" | "together" | "bedrock" -> the rules of that provider only that the file breaks (none: absent)
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


# -------------------------------------------------------------------------------------------- accumulation
_BLOCK_BYTES = 1 << 20
# One line (example) is read whole into memory, and parsing takes about 5 times its size: a longer line is refused
# unread. The largest example a provider takes: 10 images of up to 10 MB each, in base64 (OpenAI's fine-tuning
# guide, vision; Together's data-preparation page), about 134 MB. Must stay above _BLOCK_BYTES (see _spans).
MAX_LINE_BYTES = 256 << 20
_LARGEST_EXAMPLE_MB = 134
_MAX_ERRORS = 1000  # kept in memory; the rest are counted
_EXACT_LENGTHS = 8192  # lengths above are rounded up to a multiple of 64 so the histogram stays bounded


class _Issues:
    """Errors line by line (up to _MAX_ERRORS), and tallies: one entry per kind of remark with its first line
    and how many lines share it, in buckets "error", "warning" or a provider name."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, str]] = []
        self.dropped = 0
        self.tallies: dict[tuple[str, str], list] = {}  # (bucket, kind) -> [first line, message, count]
        self._last: dict[tuple[str, str], int] = {}  # (bucket, kind) -> the last line counted

    def error(self, line: int, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append((line, message))
        else:
            self.dropped += 1

    def tally(self, bucket: str, kind: str, line: int, message: str, count: int = 1) -> None:
        """Counts ``line`` under a kind of remark once, however many times the line makes it."""
        key = (bucket, kind)
        entry = self.tallies.get(key)
        if entry is None:
            self.tallies[key] = [line, message, count]
        elif self._last[key] != line:
            entry[2] += count
        self._last[key] = line

    def merge(self, other: _Issues) -> None:
        """Adds the issues of the lines after ours."""
        for line, message in other.errors:
            self.error(line, message)
        self.dropped += other.dropped
        for (bucket, kind), (line, message, count) in other.tallies.items():
            self.tally(bucket, kind, line, message, count)
            self._last[(bucket, kind)] = other._last[(bucket, kind)]


class _Tokens:
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
        self.lengths.update(t if t <= _EXACT_LENGTHS else -(-t // 64) * 64 for t in totals)

    def merge(self, other: _Tokens) -> None:
        self.n += other.n
        self.total += other.total
        self.trained += other.trained
        self.over += other.over
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.lengths.update(other.lengths)


@dataclass
class _Partial:
    """What scanning some lines found; partials of consecutive blocks merge in file order."""

    examples: int = 0
    non_blank: int = 0
    messages: Counter = field(default_factory=Counter)
    tokens: dict[str, _Tokens] = field(default_factory=dict)
    issues: _Issues = field(default_factory=_Issues)
    # (line, 8-byte digest) of each valid example
    hashes: list[tuple[int, bytes]] = field(default_factory=list)

    def merge(self, other: _Partial) -> None:
        self.examples += other.examples
        self.non_blank += other.non_blank
        self.messages.update(other.messages)
        for key, acc in other.tokens.items():
            self.tokens.setdefault(key, _Tokens()).merge(acc)
        self.issues.merge(other.issues)


class _Seen:
    """Fixed-size open-addressing set: 8-byte example digest -> first line (16 MiB whatever the file size)."""

    SLOTS = 1 << 20

    def __init__(self) -> None:
        # anonymous maps: zero pages that take memory only once written (and only here, not in forked workers)
        self._keys = memoryview(mmap.mmap(-1, 8 * self.SLOTS)).cast("Q")
        self._lines = memoryview(mmap.mmap(-1, 8 * self.SLOTS)).cast("Q")
        self.size = 0
        self.full = False

    def duplicates(self, hashes: Sequence[tuple[int, bytes]]) -> list[tuple[int, int]]:
        """(line, the line first seen with the same digest) of each (line, digest) seen before; the others are
        remembered, while there is room. One call per block: the probing runs on local names."""
        keys, lines, mask, room = self._keys, self._lines, self.SLOTS - 1, self.SLOTS * 3 // 4
        found = []
        for line, digest in hashes:
            key = int.from_bytes(digest, "little") | 1  # 0 marks an empty slot
            slot = key & mask
            while (at := keys[slot]) and at != key:
                slot = (slot + 1) & mask
            if at:
                found.append((line, lines[slot]))
            elif self.size < room:
                keys[slot], lines[slot] = key, line
                self.size += 1
            else:
                self.full = True
        return found


def _summary(values: Mapping[int, int], n: int, mean: float, lo: float, hi: float) -> Summary:
    """Summary of a histogram; percentiles by nearest rank."""

    def rank(q: float) -> float:
        target, seen = max(1, -(-q * n // 1)), 0
        for value in sorted(values):
            seen += values[value]
            if seen >= target:
                return float(min(value, hi))
        return float(hi)

    return Summary(float(lo), round(mean, 2), rank(0.5), rank(0.95), float(hi))


# ---------------------------------------------------------------------------------------------- validation
_MSG_KEYS = {
    "system": frozenset({"role", "content", "name", "weight"}),
    "developer": frozenset({"role", "content", "name", "weight"}),
    "user": frozenset({"role", "content", "name", "weight"}),
    "assistant": frozenset({"role", "content", "name", "weight", "tool_calls", "function_call", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name", "weight"}),
    "function": frozenset({"role", "content", "name", "weight"}),
}
_ROLE_LIST = ", ".join(_MSG_KEYS)
_TOP_KEYS = {
    "chat": frozenset({"messages", "tools", "parallel_tool_calls", "functions", "system"}),
    "preference": frozenset(
        {
            "input",
            "preferred_output",
            "non_preferred_output",
            "preferred_completion",
            "non_preferred_completion",
        }
    ),
    "prompt_completion": frozenset({"prompt", "completion"}),
    "text": frozenset({"text"}),
}
_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MAX_IMAGES = 10  # per example, OpenAI and Together (module docstring)
_PART_TYPES = {
    "text": ("system", "developer", "user", "assistant", "tool"),
    "refusal": ("assistant",),
    "image_url": ("user",),
}


def _parts(content: Any, kind: str) -> int:
    """How many parts of type ``kind`` a message's content has."""
    if not isinstance(content, list):
        return 0
    return sum(isinstance(p, dict) and p.get("type") == kind for p in content)


def _jtype(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeio' else 'a'} {word}"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_of(obj: dict) -> tuple[str | None, str | None]:
    """(format, None) for a line of one known format, else (None, what is wrong)."""
    found = []
    if "messages" in obj:
        found.append("chat")
    if isinstance(obj.get("input"), dict) or "preferred_output" in obj or "non_preferred_output" in obj:
        found.append("preference")
    if "prompt" in obj or "completion" in obj:
        found.append("prompt_completion")
    if "text" in obj:
        found.append("text")
    if len(found) == 1:
        return found[0], None
    if found:
        return None, f"the line mixes the keys of several formats ({', '.join(found)}); keep the keys of one"
    if "preferred_completion" in obj or "non_preferred_completion" in obj:
        return None, (
            "'preferred_completion' is the key of an old OpenAI spec: name the keys 'preferred_output' "
            "and 'non_preferred_output'"
        )
    keys = ", ".join(repr(k) for k in list(obj)[:6]) or "none"
    return None, (
        "no known format: a line needs 'messages' (chat), 'prompt' and 'completion', 'input' with "
        f"'preferred_output' and 'non_preferred_output' (preference), or 'text'; its keys: {keys}"
    )


class _Checker:
    """Validates one parsed line at a time into an _Issues."""

    def __init__(self, issues: _Issues):
        self.issues = issues
        self.line = 0

    def err(self, message: str) -> None:
        self.issues.error(self.line, message)

    def warn(self, kind: str, message: str) -> None:
        self.issues.tally("warning", kind, self.line, message)

    def provider(self, provider: str, kind: str, message: str) -> None:
        self.issues.tally(provider, kind, self.line, message)

    def example(self, obj: dict, fmt: str) -> Sequence | None:
        """Checks an example of format ``fmt``; returns its messages (chat), else an empty tuple."""
        if not obj.keys() <= _TOP_KEYS[fmt]:
            for key in sorted(obj.keys() - _TOP_KEYS[fmt]):
                self.warn(f"key:{key}", f"unknown key {key!r} (ignored)")
        return getattr(self, fmt)(obj)

    # -- chat
    def chat(self, obj: dict) -> Sequence:
        tool_names = self.tools(obj["tools"], "'tools'") if "tools" in obj else None
        if "functions" in obj:
            self.warn("functions", "'functions' is deprecated: OpenAI now takes 'tools'")
            functions = obj["functions"]
            if not isinstance(functions, list) or not 1 <= len(functions) <= 128:
                self.err("'functions' must be a list of 1 to 128 function definitions")
            else:
                names = self.tools([{"type": "function", "function": f} for f in functions], "'functions'")
                tool_names = (tool_names or set()) | (names or set())
        if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
            self.err(f"'parallel_tool_calls' must be true or false, got {_show(obj['parallel_tool_calls'])}")
        if "system" in obj and not isinstance(obj["system"], str):
            self.err(f"'system' must be a string, got {_jtype(obj['system'])}")
        messages = obj["messages"]
        roles = self.messages(messages, "", tool_names)
        if roles is not None and "assistant" not in roles:
            self.err("no assistant message: the example has nothing to train on")
        return messages if roles is not None else ()

    def remarks(self, obj: dict, messages: Sequence) -> None:
        """Warnings and provider rules of a chat example that passed validation."""
        if not any([m.get("weight", 1) for m in messages if m["role"] == "assistant"]):  # weights are 0 or 1
            self.warn("all-weight-0", "every assistant message has weight 0: the example trains nothing")
        roles = [m["role"] for m in messages]
        if "system" not in roles and "developer" not in roles and "system" not in obj:
            self.warn("no-system", "no system message (the same system prompt in training and use helps)")
        self._provider_roles(roles, messages)
        if list in map(type, [m.get("content") for m in messages]):  # content parts: rare, and checked
            self._provider_parts(messages)

    def _provider_parts(self, messages: Sequence) -> None:
        """The providers' rules on the content parts of a chat example (images, refusals)."""
        if any(_parts(m.get("content"), "refusal") for m in messages):
            self.provider("together", "refusal", "a refusal part: Together takes text and image_url parts")
        per_message = [_parts(m.get("content"), "image_url") for m in messages]
        total = sum(per_message)
        if not total:
            return
        self.provider("bedrock", "images", "image parts: ftbroker's Bedrock formats carry text only")
        self.provider("fireworks", "images", "image parts: ftbroker runs Fireworks' text fine-tuning (vision is a "
                                             "separate Fireworks method)")
        self.provider("vertex", "images", "image parts: Vertex takes images as Cloud Storage files; ftbroker's "
                                          "Vertex format carries text only")
        if total > _MAX_IMAGES:
            for provider, name in (("openai", "OpenAI"), ("together", "Together")):
                self.provider(
                    provider, "images", f"{total} images in one example: {name} takes at most {_MAX_IMAGES}"
                )
        for i, (m, images) in enumerate(zip(messages, per_message), 1):
            if images and m.get("weight") == 1:
                self.provider(
                    "together", "image-weight", f"message {i}: a message with images cannot have weight 1 "
                    "(Together)"
                )

    def _provider_roles(self, roles: list, messages: Sequence) -> None:
        """Together's and Bedrock's rules on roles and turns (OpenAI takes any order of its roles)."""
        start = 1 if roles[0] == "system" else 0
        body = roles[start:]
        if "developer" in roles or "function" in roles:
            self.provider(
                "together",
                "roles",
                "a developer or function message: Together takes the roles system, user, assistant and tool",
            )
        if "system" in body:
            self.provider("together", "system-late", "a system message after the first message (Together)")
            self.provider("fireworks", "system-late", "a system message after the first message (Fireworks)")
        # a tool round (assistant tool calls, then tool answers) sits inside the assistant's turn
        turns = [r for r, m in zip(body, messages[start:]) if r != "tool" and "tool_calls" not in m]
        if turns and turns[0] != "user" or any(map(eq, turns, turns[1:])):  # two turns of one role in a row
            self.provider(
                "together",
                "alternation",
                "after the system message, turns must start with user and "
                "alternate user/assistant (Together)",
            )
        for provider, name in (("bedrock", "Bedrock"), ("vertex", "Vertex")):  # the same turn rules
            if set(roles) - {"system", "user", "assistant"} or any(
                "tool_calls" in m or "function_call" in m for m in messages
            ):
                self.provider(
                    provider,
                    "roles",
                    f"tool calls, tool or developer messages: {name} fine-tuning data "
                    "has user and assistant turns (and a system prompt) only",
                )
            elif (
                not body
                or body[0] != "user"
                or body[-1] != "assistant"
                or "system" in body
                or any(map(eq, body, body[1:]))
            ):
                self.provider(
                    provider,
                    "alternation",
                    f"turns must go user, assistant, user, ... and end with an assistant turn ({name})",
                )
            if 0 in [m.get("weight") for m in messages]:
                self.provider(provider, "weight", f"'weight: 0' turns cannot be expressed in {name}'s format")

    def messages(self, messages: Any, prefix: str, tool_names: set | None) -> list | None:
        """Checks a message list; returns each message's role (None where it is broken), or None."""
        if not isinstance(messages, list):
            self.err(f"{prefix}'messages' must be a list of messages, got {_jtype(messages)}")
            return None
        if not messages:
            self.err(f"{prefix}'messages' is empty")
            return None
        roles: list[str | None] = []
        pending: dict[str, int] = {}  # tool call id -> the message that made it, until a tool message answers
        used: set[str] = set()
        for i, m in enumerate(messages, 1):
            where = f"{prefix}message {i}"
            if not isinstance(m, dict):
                self.err(f"{where}: expected an object, got {_jtype(m)}")
                roles.append(None)
                continue
            role = m.get("role")
            if not isinstance(role, str) or role not in _MSG_KEYS:
                self.err(
                    f"{where}: no 'role'"
                    if role is None
                    else f"{where}: unknown role {_show(role)} (expected {_ROLE_LIST})"
                )
                roles.append(None)
                continue
            roles.append(role)
            for key in sorted(m.keys() - _MSG_KEYS[role]) if not m.keys() <= _MSG_KEYS[role] else ():
                self.warn(
                    f"msgkey:{role}:{key}", f"{where}: unknown key {key!r} in {_a(role)} message (ignored)"
                )
            if "weight" in m:
                weight = m["weight"]
                if type(weight) is not int or weight not in (0, 1):
                    self.err(f"{where}: 'weight' must be 0 or 1, got {_show(weight)}")
                elif role != "assistant":
                    self.provider(
                        "openai",
                        "weight-role",
                        f"{where}: 'weight' on {_a(role)} message: OpenAI takes "
                        "it on assistant messages only",
                    )
            if "name" in m and not isinstance(m["name"], str):
                self.err(f"{where}: 'name' must be a string, got {_jtype(m['name'])}")
            if pending and role != "tool":
                call_id, at = next(iter(pending.items()))
                self.warn(
                    "unanswered",
                    f"tool call {call_id!r} of message {at} gets no tool message before message {i}",
                )
                pending.clear()
            content = m.get("content")
            if role == "assistant":
                calls, legacy = m.get("tool_calls"), m.get("function_call")
                if calls is not None:
                    self._tool_calls(calls, where, i, tool_names, pending, used)
                if legacy is not None:
                    self._function(legacy, f"{where}: 'function_call'")
                if content is None and calls is None and legacy is None:
                    self.err(f"{where}: an assistant message needs 'content' or 'tool_calls'")
                elif content is not None:
                    self._content(content, where, role, empty_ok=calls is not None or legacy is not None)
            elif role == "tool":
                call_id = m.get("tool_call_id")
                if not isinstance(call_id, str) or not call_id:
                    self.err(f"{where}: a tool message needs a 'tool_call_id' string")
                elif call_id in pending:
                    del pending[call_id]
                else:
                    self.err(
                        f"{where}: tool_call_id {_show(call_id)} answers no "
                        f"{'open' if call_id in used else 'earlier'} tool call of this example"
                    )
                self._content(content, where, role, empty_ok=True)
            elif role == "function":
                if not isinstance(m.get("name"), str):
                    self.err(f"{where}: a function message needs a 'name'")
                if content is not None and not isinstance(content, str):
                    self.err(f"{where}: 'content' must be a string, got {_jtype(content)}")
            else:
                self._content(content, where, role, empty_ok=False)
        return roles

    def _objects(self, items: list, label: str) -> Iterator[tuple[str, dict]]:
        """Each item that is a JSON object, with where it is ("LABEL N"); reports the others."""
        for j, item in enumerate(items, 1):
            if isinstance(item, dict):
                yield f"{label} {j}", item
            else:
                self.err(f"{label} {j}: expected an object, got {_jtype(item)}")

    def _content(self, content: Any, where: str, role: str, empty_ok: bool) -> None:
        if isinstance(content, str):
            if not empty_ok and (not content or content.isspace()):  # no copy, unlike strip()
                self.err(f"{where}: empty content")
            return
        if content is None:
            self.err(
                f"{where}: no 'content'" if not empty_ok or role == "tool" else f"{where}: 'content' is null"
            )
            return
        if not isinstance(content, list):
            self.err(f"{where}: 'content' must be a string or a list of content parts, got {_jtype(content)}")
            return
        if not content:
            self.err(f"{where}: 'content' is an empty list")
            return
        filled = False
        errors = len(self.issues.errors)
        for at, part in self._objects(content, f"{where}, content part"):
            kind = part.get("type")
            if not isinstance(kind, str) or kind not in _PART_TYPES:
                self.err(f"{at}: no 'type'" if kind is None else f"{at}: unknown part type {_show(kind)}")
            elif role not in _PART_TYPES[kind]:
                self.err(f"{at}: {_a(kind)} part is not allowed in {_a(role)} message")
            elif kind == "image_url":
                image = part.get("image_url")
                if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                    self.err(f'{at}: an image_url part needs {{"image_url": {{"url": ...}}}}')
                else:
                    filled = True
                    self.warn("images", "images are not counted in the token totals")
            elif not isinstance(part.get(kind), str):
                self.err(f"{at}: a {kind} part needs a {kind!r} string")
            else:
                filled = filled or bool(part[kind].strip())
        if not filled and not empty_ok and len(self.issues.errors) == errors:
            self.err(f"{where}: empty content")

    def _tool_calls(
        self, calls: Any, where: str, at: int, tool_names: set | None, pending: dict, used: set
    ) -> None:
        if not isinstance(calls, list) or not calls:
            self.err(f"{where}: 'tool_calls' must be a non-empty list")
            return
        for w, call in self._objects(calls, f"{where}, tool call"):
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                self.err(f"{w}: no 'id' string")
            elif call_id in used:
                self.err(f"{w}: id {_show(call_id)} is used twice in this example")
            else:
                used.add(call_id)
                pending[call_id] = at
            if call.get("type") != "function":
                self.err(f"{w}: 'type' must be \"function\", got {_show(call.get('type'))}")
            name = self._function(call.get("function"), w)
            if name and tool_names is not None and name not in tool_names:
                self.warn("undeclared", f"{w} calls {name!r}, which is not among the example's tools")

    def _function(self, fn: Any, where: str) -> str | None:
        """Checks a called function {name, arguments}; returns its name if valid."""
        if not isinstance(fn, dict):
            self.err(f"{where}: no 'function' object")
            return None
        name = fn.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
            self.err(f"{where}: function name {_show(name)} must be 1-64 letters, digits, '_' or '-'")
            name = None
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                orjson.loads(args)
            except orjson.JSONDecodeError:
                self.err(f"{where}: 'arguments' is not valid JSON: {_show(args)}")
        elif args is None:
            self.err(f"{where}: no 'arguments' (a JSON-encoded string)")
        else:
            self.err(f"{where}: 'arguments' must be a JSON-encoded string, got {_jtype(args)}")
        return name

    def tools(self, tools: Any, what: str) -> set | None:
        """Checks tool definitions; returns the function names."""
        if not isinstance(tools, list):
            self.err(f"{what} must be a list of tool definitions, got {_jtype(tools)}")
            return None
        names: set[str] = set()
        for w, tool in self._objects(tools, f"{what} item"):
            if tool.get("type") != "function":
                self.err(f"{w}: 'type' must be \"function\", got {_show(tool.get('type'))}")
            fn = tool.get("function")
            if not isinstance(fn, dict):
                self.err(f"{w}: no 'function' object")
                continue
            name = fn.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
                self.err(f"{w}: function name {_show(name)} must be 1-64 letters, digits, '_' or '-'")
            elif name in names:
                self.err(f"{w}: function {name!r} is defined twice")
            else:
                names.add(name)
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                self.err(f"{w}: 'parameters' must be a JSON Schema object, got {_jtype(fn['parameters'])}")
            if "description" in fn and not isinstance(fn["description"], str):
                self.err(f"{w}: 'description' must be a string, got {_jtype(fn['description'])}")
        return names

    # -- the other formats
    def preference(self, obj: dict) -> Sequence:
        inp = obj.get("input")
        if not isinstance(inp, dict):
            self.err(f"'input' must be an object with 'messages', got {_jtype(inp)}")
        else:
            for key in sorted(inp.keys() - _INPUT_KEYS):
                self.warn(f"inkey:{key}", f"unknown key {key!r} in 'input' (ignored)")
            tool_names = self.tools(inp["tools"], "'input.tools'") if "tools" in inp else None
            roles = self.messages(inp.get("messages"), "input ", tool_names)
            if roles and roles[-1] == "assistant":
                self.provider(
                    "together",
                    "pref-last",
                    "the input ends with an assistant message (Together wants "
                    "the last input message from the user)",
                )
        texts = []
        for key in ("preferred_output", "non_preferred_output"):
            out = obj.get(key)
            old = key.replace("output", "completion")
            if out is None and old in obj:
                self.err(f"name the key {key!r}, not {old!r} (the name in an old OpenAI spec)")
            elif out is None:
                self.err(f"no {key!r}")
            elif not isinstance(out, list) or len(out) != 1 or not isinstance(out[0], dict):
                self.err(f"{key!r} must be a list of exactly one assistant message")
            elif out[0].get("role") != "assistant":
                self.err(f'{key!r}: the message\'s role must be "assistant", got {_show(out[0].get("role"))}')
            else:
                self._content(out[0].get("content"), repr(key), "assistant", empty_ok=False)
                texts.append(out[0].get("content"))
        if len(texts) == 2 and texts[0] == texts[1]:
            self.warn(
                "same-pair", "the preferred and non-preferred outputs are identical: the pair teaches nothing"
            )
        return ()

    def prompt_completion(self, obj: dict) -> Sequence:
        for key in ("prompt", "completion"):
            value = obj.get(key)
            if value is None:
                self.err(f"no {key!r}")
            elif not isinstance(value, str):
                self.err(f"{key!r} must be a string, got {_jtype(value)}")
            elif key == "completion" and not value.strip():
                self.err("empty completion: the example has nothing to train on")
        return ()

    def text(self, obj: dict) -> Sequence:
        value = obj["text"]
        if not isinstance(value, str):
            self.err(f"'text' must be a string, got {_jtype(value)}")
        elif not value.strip():
            self.err("empty text")
        return ()


# -------------------------------------------------------------------------------------------- reading
_MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file: decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive: extract the .jsonl file from it first"),
    (b"(\xb5/\xfd", "a zstd-compressed file: decompress it first (zstd -d)"),
    (b"BZh", "a bzip2-compressed file: decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file: decompress it first (unxz)"),
    (b"PAR1", "a Parquet file: ftbroker reads JSON Lines (one JSON object per line)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text: save it as UTF-8"),
    (b"\xff\xfe\x00\x00", "UTF-32 text: save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)
_BOM = b"\xef\xbb\xbf"
_SPREAD = (
    "the line ends inside a JSON value: is an example spread over several lines (pretty-printed JSON)? JSONL "
    "needs one example per line (convert it with: jq -c . FILE)"
)


def name_problem(path: str | os.PathLike) -> str | None:
    """Why a file's name cannot be kept in the job ledger or a JSON report (both UTF-8 text), if it cannot."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return f"{shown}: the file name is not valid UTF-8 (the ledger and JSON reports hold UTF-8 text): rename it"
    return None


def _file_problem(path: Path) -> str | None:
    """What makes the whole file unreadable as JSONL, if anything."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return "is a directory, not a JSONL file: name the .jsonl file in it"
        if not stat.S_ISREG(mode):
            return "is not a regular file"
        with path.open("rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links, not a file"
        return f"cannot read the file: {exc.strerror or exc}"
    if not head:
        return "the file is empty"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"this is {what}"
    sample = head[:1024]
    if len(sample) >= 4 and (
        sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4
    ):
        return "this looks like UTF-16 text (every other byte is NUL): save it as UTF-8"
    if head.removeprefix(_BOM).lstrip()[:1] == b"[":
        return (
            "the file is a JSON array; JSONL needs one JSON object per line (convert it with: "
            "jq -c '.[]' FILE > FILE.jsonl)"
        )
    return None


class _Span(NamedTuple):
    """Whole lines of a file: ``size`` bytes from byte ``offset``, the first being line ``line_no``.
    ``too_long``: one line over MAX_LINE_BYTES (``size``: its length without the newline), never read into memory,
    only reported."""

    offset: int
    size: int
    line_no: int
    too_long: bool = False


def _spans(path: Path) -> Iterator[_Span]:
    """Blocks of whole lines, about _BLOCK_BYTES each (longer where a line is, up to MAX_LINE_BYTES), and each line
    over MAX_LINE_BYTES on its own, measured in bounded reads. A UTF-8 byte-order mark before the first line is
    left out. Only a block's first line can be long: the others start and end inside one window."""
    limit = MAX_LINE_BYTES
    with path.open("rb") as fh:
        start = len(_BOM) if fh.read(len(_BOM)) == _BOM else 0
        fh.seek(start)
        window = bytearray(_BLOCK_BYTES)
        line_no, read = 1, start
        while True:
            n = fh.readinto(window)
            if not n:
                if read > start:  # the last line, without a newline
                    yield _Span(start, read - start, line_no)
                return
            read += n
            first = window.find(b"\n", 0, n)  # the first line's end, if it is in this window
            if first < 0 and read - start <= limit:  # a line longer than a block: read on
                continue
            if first < 0 or read - n + first - start > limit:  # the first line is over the limit: measure it
                length = _line_length(fh, window, read - start) if first < 0 else read - n + first - start
                yield _Span(start, length, line_no, True)
                end = fh.tell() if first < 0 else start + length + 1
                line_no += 1
            else:
                cut = window.rfind(b"\n", 0, n) + 1
                end = read - n + cut
                yield _Span(start, end - start, line_no)
                line_no += window.count(b"\n", 0, cut)  # earlier windows of this block had none
            start = read = end
            fh.seek(end)


def _line_length(fh, window: bytearray, length: int) -> int:
    """The length of the line being read, ``length`` bytes of it read so far, reading on one window at a time;
    the file is left after its newline."""
    while True:
        n = fh.readinto(window)
        newline = window.find(b"\n", 0, n)
        if newline >= 0:
            fh.seek(newline + 1 - n, os.SEEK_CUR)
            return length + newline
        if not n:
            return length
        length += n


def _long_line(size: int) -> str:
    return (f"the line is {size:,} bytes, over the limit of {MAX_LINE_BYTES:,} bytes for one example "
            f"({MAX_LINE_BYTES >> 20} MiB; the largest a provider takes is about {_LARGEST_EXAMPLE_MB} MB: 10 "
            "images of 10 MB in base64): it was not read")


def _lines(path: Path) -> Iterator[tuple[bytes | None, _Span]]:
    """Blocks of whole lines with their span; the block is None for a line over MAX_LINE_BYTES (``analyze``
    reports it)."""
    with path.open("rb") as fh:
        for span in _spans(path):
            if span.too_long:
                yield None, span
                continue
            fh.seek(span.offset)
            yield fh.read(span.size), span


def read_examples(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, example) for every JSON object line of a dataset, streaming, in file order.

    For converting a file that ``analyze`` has already checked: lines that are not JSON objects (which
    ``analyze`` reports) are skipped here, not reported again.
    """
    for block, span in _lines(Path(path)):
        if block is None:
            continue
        for number, line in enumerate(block.split(b"\n"), span.line_no):
            if not line.strip():
                continue
            try:
                example = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(example, dict):
                yield number, example


def file_format(path: str | os.PathLike) -> str | None:
    """The format ``analyze`` takes a file to be in (that of its first example of a known format), read from
    the head of the file only; None when no line has a known format."""
    return _first_format(Path(path))[0]


def _unparsable(line: bytes, offset: int, orjson_message: str, last: bool = False) -> str:
    """A precise message for a line orjson refused (``last``: the file's final line, without a newline)."""
    nul = line.find(b"\x00")
    if nul >= 0:
        return f"NUL byte at byte offset {offset + nul}: binary data, or UTF-16 text (save the file as UTF-8)"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"invalid UTF-8 at byte offset {offset + exc.start} (byte 0x{line[exc.start]:02x}): save the "
            "file "
            "as UTF-8 (is it Latin-1 or Windows-1252?)"
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if last and (exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")):
            return "the file ends inside a JSON value: its last line is cut short (an incomplete copy?)"
        if exc.pos >= len(text.rstrip()) and text.lstrip()[:1] in ("{", "["):
            return _SPREAD
        return f"invalid JSON at column {exc.colno}: {exc.msg}"
    except RecursionError:
        pass
    if "surrogate" in orjson_message:
        return (
            "a \\ud800-\\udfff escape without its pair (a lone UTF-16 surrogate) is not a character: "
            f"{orjson_message}"
        )
    return f"unreadable JSON: {orjson_message}"


def _first_format(path: Path) -> tuple[str | None, int, str | None]:
    """(the file's format, the line that set it, a fatal message) from the first line with a known format.
    Fatal: the first line of the file is the start of a JSON object that goes on over the next lines."""
    first = True
    for block, span in _lines(path):
        if block is None:
            first = False
            continue
        line_no, offset = span.line_no, span.offset
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped:
                try:
                    obj = orjson.loads(stripped)
                except orjson.JSONDecodeError as exc:
                    last = i == len(lines) - 1 and not block.endswith(b"\n")
                    if first and _unparsable(stripped, offset, str(exc), last) == _SPREAD:
                        return None, line_no, _SPREAD
                    obj = None
                first = False
                if isinstance(obj, dict):
                    fmt, _ = _format_of(obj)
                    if fmt:
                        return fmt, line_no, None
            line_no += 1
            offset += len(line) + 1
    return None, 0, None


@dataclass(frozen=True)
class _Context:
    fmt: str
    fmt_line: int
    counters: Sequence[TokenCounter]
    limits: Mapping[str, int]
    group: CounterGroup  # the counters that share their work (tokens.CounterGroup)


def _scan(block: bytes, line_no: int, offset: int, ctx: _Context) -> tuple[_Partial, list[dict], list[int]]:
    """Validates a block of whole lines; returns what it found and the valid examples with their lines."""
    part = _Partial(tokens={c.key: _Tokens() for c in ctx.counters})
    check = _Checker(part.issues)
    batch: list[dict] = []
    batch_lines: list[int] = []
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
            check.err(_unparsable(line.rstrip(b"\r"), start, str(exc), n == unterminated))
            continue
        if type(obj) is not dict:
            check.err(f"expected a JSON object, got {_jtype(obj)}")
            continue
        fmt, problem = _format_of(obj)
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
            check.remarks(obj, messages)
            part.messages[len(messages)] += 1
        elif fmt == "preference":
            part.messages[len(obj["input"]["messages"]) + 1] += 1
        part.hashes.append((n, hashlib.blake2b(line.strip(), digest_size=8).digest()))
        batch.append(obj)
        batch_lines.append(n)
    return part, batch, batch_lines


def _count_one(counter: TokenCounter, example: dict, fmt: str, line: int, issues: _Issues) -> tuple | None:
    try:
        return counter.count(example, fmt)
    except InputError as exc:
        issues.error(line, str(exc))
        return None


def _count(part: _Partial, batch: list[dict], lines: list[int], ctx: _Context) -> _Partial:
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


# ------------------------------------------------------------------------------------------------ analysis
_PARALLEL_BYTES = 32 << 20  # from this size on, blocks are scanned by worker processes


def _work(offset: int, size: int, line_no: int) -> _Partial:
    """A worker's block, read here from the file the worker inherited (not pickled through a pipe)."""
    ctx, fd = _WORKER_STATE
    return _count(*_scan(os.pread(fd, size, offset), line_no, offset, ctx), ctx)


_WORKER_STATE: tuple[_Context, int]  # the counters and the open file: set before the fork, inherited


def _refused(span: _Span, ctx: _Context) -> _Partial:
    """The partial result of a line over MAX_LINE_BYTES: its error."""
    part = _Partial(tokens={c.key: _Tokens() for c in ctx.counters}, non_blank=1)
    part.issues.error(span.line_no, _long_line(span.size))
    return part


def _done(part: _Partial):
    """``part`` as a finished future, to keep its place among the workers' results."""
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(part)
    return future


def _partials(path: Path, ctx: _Context) -> Iterator[tuple[_Partial, int]]:
    """The partial result of every block, in file order, with the offset the block ends at: in this process for
    small files, else in forked worker processes (parsing and validation are Python, so threads would not share
    out)."""
    workers = min(os.cpu_count() or 1, 8)
    # only counters that say they work in a forked child (HF tokenizers' own threads do not)
    forkable = all(getattr(c, "forkable", False) for c in ctx.counters)
    if workers < 2 or not forkable or path.stat().st_size < _PARALLEL_BYTES or os.name != "posix":
        for block, span in _lines(path):
            yield (_refused(span, ctx) if block is None else _count(*_scan(block, span.line_no, span.offset, ctx), ctx),
                   span.offset + span.size)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    global _WORKER_STATE
    fd = os.open(path, os.O_RDONLY)
    _WORKER_STATE = (ctx, fd)
    gc.freeze()  # the workers' collector then leaves the inherited objects alone: their pages stay shared
    # a worker's objects are a block's trees (no cycles) that live until the block is done: rarer collections
    start = functools.partial(gc.set_threshold, 50_000, 10, 10)
    try:
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=fork, initializer=start) as pool:
            window: deque = deque()
            for span in _spans(path):
                window.append((_done(_refused(span, ctx)) if span.too_long
                               else pool.submit(_work, span.offset, span.size, span.line_no), span.offset + span.size))
                if len(window) > workers + 1:  # bounded read-ahead: memory stays flat
                    future, end = window.popleft()
                    yield future.result(), end
            while window:
                future, end = window.popleft()
                yield future.result(), end
    finally:
        gc.unfreeze()
        os.close(fd)


def analyze(
    path: str | os.PathLike, *, counters: Sequence[TokenCounter] = (), limits: Mapping[str, int] = {}
) -> DatasetReport:
    """Reads the dataset once, in constant memory, validating every line and running every counter.

    Never raises for what is in the file: see ``DatasetReport.errors``, ``warnings`` and ``provider_issues``.
    ``limits`` maps a counter key to the per-example token limit to check (over it: a truncation warning).
    """
    label, p = str(path), Path(path)
    total = _Partial(tokens={c.key: _Tokens() for c in counters})
    problem = _file_problem(p)
    if problem:
        return _report(label, p, "chat", total, [DataIssue(label, 0, problem)], counters, limits, False)
    seen = _Seen()
    try:
        fmt, fmt_line, fatal = _first_format(p)
        if fatal:
            return _report(
                label, p, "chat", total, [DataIssue(label, fmt_line, fatal)], counters, limits, False
            )
        group = CounterGroup(counters, json_examples=True)
        ctx = _Context(fmt or "chat", fmt_line, tuple(counters), dict(limits), group)
        with progress.task(f"reading {p.name}", total=p.stat().st_size) as reading:
            for part, end in _partials(p, ctx):
                for n, first in seen.duplicates(part.hashes):
                    part.issues.tally("warning", "duplicate", n, f"duplicate of line {first}")
                total.merge(part)
                reading.update(completed=end, examples=total.examples)
    except OSError as exc:  # the file vanished or the disk failed while it was read
        problem = f"cannot read the file: {exc.strerror or exc}"
        return _report(label, p, "chat", _Partial(), [DataIssue(label, 0, problem)], counters, limits, False)
    return _report(label, p, ctx.fmt, total, [], counters, limits, seen.full)


_FORMAT_RULES = {  # provider rules about a whole file's format (sources: the module docstring)
    "text": (
        ("openai", "OpenAI fine-tuning takes chat, preference or prompt/completion data, not plain text"),
        ("bedrock", "plain text is continued pre-training on Bedrock, not fine-tuning"),
        ("fireworks", "Fireworks fine-tuning takes chat data, not plain text"),
        ("vertex", "Vertex supervised tuning takes chat data, not plain text"),
    ),
    "preference": (
        ("bedrock", "Bedrock fine-tuning takes no preference (DPO) data"),
        ("vertex", "ftbroker runs Vertex supervised tuning, which takes chat data; preference tuning is not driven"),
    ),
}


def _file_remarks(issues: _Issues, fmt: str, n: int, seen_full: bool) -> None:
    """Remarks about the file as a whole (line 0)."""
    if seen_full:
        limit = f"{_Seen.SLOTS * 3 // 4:,}"
        issues.tally(
            "warning", "dup-cap", 0, f"the duplicate check covered the first {limit} distinct examples only"
        )
    if 0 < n < 50:
        plural = "s" if n != 1 else ""
        issues.tally(
            "warning",
            "few",
            0,
            f"only {n} example{plural}: OpenAI recommends starting with 50 to 100 (its minimum is 10)",
        )
    for provider, message in _FORMAT_RULES.get(fmt, ()):
        issues.tally(provider, "format", 0, message)


def _rendered(issues: _Issues, label: str, bucket: str) -> list[DataIssue]:
    """The tallies of one bucket as issues, in line order: the first line, and how many more share it."""
    out = []
    for (b, kind), (line, message, count) in issues.tallies.items():
        if b == bucket:
            more, unit = count - 1, "example" if kind == "duplicate" else "line"
            if more > 0 and line:
                message += f" (and {more:,} more {unit}{'s' if more != 1 else ''})"
            out.append(DataIssue(label, line, message))
    return sorted(out)


def _stats(counter: TokenCounter, acc: _Tokens, limit: int | None) -> TokenStats:
    per = (
        _summary(acc.lengths, acc.n, acc.total / acc.n, acc.min, acc.max) if acc.n else Summary(0, 0, 0, 0, 0)
    )
    return TokenStats(
        counter.name, counter.exact, acc.total, acc.trained, per, dict(acc.lengths), limit, acc.over
    )


def _report(
    label: str,
    path: Path,
    fmt: str,
    part: _Partial,
    fatal: list[DataIssue],
    counters: Sequence[TokenCounter],
    limits: Mapping[str, int],
    seen_full: bool,
) -> DatasetReport:
    issues = part.issues
    if not fatal and part.non_blank == 0:
        fatal = [DataIssue(label, 0, "the file has no examples: it holds only blank lines")]
    if not fatal:
        _file_remarks(issues, fmt, part.examples, seen_full)
    errors = fatal + sorted(
        [DataIssue(label, line, m) for line, m in issues.errors] + _rendered(issues, label, "error")
    )
    if issues.dropped:
        errors.append(DataIssue(label, 0, f"{issues.dropped:,} more errors are not listed", count=issues.dropped))
    msgs = part.messages
    per_msgs = None
    if fmt in ("chat", "preference") and msgs:
        count = sum(msgs.values())
        per_msgs = _summary(msgs, count, sum(k * v for k, v in msgs.items()) / count, min(msgs), max(msgs))
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    providers = {p: _rendered(issues, label, p) for p in PROVIDERS}
    report = DatasetReport(
        path=label,
        format=fmt,
        examples=part.examples,
        size_bytes=size,
        messages_per_example=per_msgs,
        tokens={c.key: _stats(c, part.tokens.get(c.key) or _Tokens(), limits.get(c.key)) for c in counters},
        errors=errors,
        warnings=_rendered(issues, label, "warning"),
        advice=(),
        provider_issues={p: v for p, v in providers.items() if v},
    )
    return replace(report, advice=tuple(advise(report)))


# ------------------------------------------------------------------------------------------------ advice
def advise(
    report: DatasetReport,
    *,
    lora_r: int | None = None,
    epochs: float | None = None,
    has_validation: bool | None = None,
) -> list[Advice]:
    """Advice lines for a dataset and the training set-up (None: not known, no advice on it). Pure."""
    n = report.examples
    out = []
    if 0 < n < 200:
        out.append(
            Advice(
                f"{n} example{'s' if n != 1 else ''} is a small set",
                "under ~200 examples a model tends to memorise the examples rather than learn the pattern",
                "collect a few hundred varied examples; meanwhile train 1-3 epochs with a low LoRA rank",
            )
        )
    if lora_r is not None and lora_r >= 64 and 0 < n < 10_000:
        out.append(
            Advice(
                f"LoRA rank {lora_r} on {n:,} examples",
                "a rank of 64 or more has far more capacity than under 10K examples need, and overfits",
                "use r=8 to 16 (alpha 2r)",
            )
        )
    if epochs is not None and 0 < n and (epochs > 5 or (epochs > 3 and n < 1_000)):
        out.append(
            Advice(
                f"{epochs:g} epochs on {n:,} examples",
                "every example is seen many times: the training loss keeps falling while the model overfits",
                "train 2-3 epochs with a validation split and stop when the validation loss stops falling",
            )
        )
    if has_validation is False:
        out.append(
            Advice(
                "no validation split",
                "without held-out examples overfitting goes unseen",
                "hold out 5-10% of the examples (at least 20) as a validation file",
            )
        )
    return out
