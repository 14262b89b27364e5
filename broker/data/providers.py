"""A provider's own rules on dataset lines, declared by its backend and run in ``analyze``'s one pass.

The core checks (``ftbroker.data.rules``) hold what every route needs of a line. A provider's fine-tuning takes
less: Bedrock no tool turns, Together no developer messages, OpenAI at most 10 images in an example. Its backend
declares them as ``LineRules`` (the ``line_rules`` of the backend class, beside the code that converts the data),
and ``registered()`` collects every registered backend's (through ``ftbroker.declared``: the core imports no
backend). ``analyze`` runs them on each valid example; what a file breaks goes to
``DatasetReport.provider_issues[provider]``, which rules that provider out, not the plan.

These are the rules of a provider as a whole, for what ftbroker sends it. What differs by model (the formats a
model takes, example counts, the per-example token limit) is a catalog row's, which the planner checks; a model's
own line format (e.g. Llama 3.1 on Bedrock: one prompt and one completion) is checked by that backend's converter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import eq
from typing import Any

from ftbroker import declared

Remark = tuple[str, str]  # (kind, message): each kind is counted once per line; the first line's message is shown


def _none(example: Any) -> Iterable[Remark]:
    return ()


@dataclass(frozen=True)
class LineRules:
    """What one provider refuses of lines that pass the core checks.

    ``chat`` and ``preference`` see each valid example of their format and give its remarks; ``formats`` maps a
    whole file's format that the provider does not fine-tune on to why (reported at line 0)."""

    provider: str
    chat: Callable[[ChatExample], Iterable[Remark]] = _none
    preference: Callable[[Mapping[str, Any]], Iterable[Remark]] = _none
    formats: Mapping[str, str] = field(default_factory=dict)


def registered() -> tuple[LineRules, ...]:
    """The line rules of every registered backend (built-ins, then plug-ins), collected once per process."""
    return declared.by_backends("line_rules")


class ChatExample:
    """A valid chat example, with what several providers' rules read computed once."""

    __slots__ = ("_images", "_plain", "body", "has_parts", "messages", "roles", "start")

    def __init__(self, messages: Sequence[Mapping[str, Any]]):
        self.messages = messages
        self.roles = roles = [m["role"] for m in messages]
        self.start = 1 if roles[0] == "system" else 0  # where the turns begin, after a first system message
        self.body = roles[self.start:]  # the roles after a first system message
        self.has_parts = list in map(type, [m.get("content") for m in messages])  # content parts: rare
        self._images: list[int] | None = None
        self._plain: tuple[str, ...] | None = None

    def parts(self, kind: str) -> int:
        """How many content parts of type ``kind`` (``image_url``, ``refusal``) the example has."""
        if not self.has_parts:
            return 0
        if kind == "image_url":
            return sum(self.images_per_message)
        return sum(_parts(m.get("content"), kind) for m in self.messages)

    @property
    def images_per_message(self) -> list[int]:
        if self._images is None:
            self._images = [_parts(m.get("content"), "image_url") for m in self.messages]
        return self._images

    @property
    def plain_turn_problems(self) -> tuple[str, ...]:
        """How the example breaks ``plain_turns`` (``roles``, ``alternation``, ``weight``), found once for every
        provider that has the rule."""
        if self._plain is None:
            roles, body = self.roles, self.body
            found = []
            if set(roles) - {"system", "user", "assistant"} or any("tool_calls" in m or "function_call" in m
                                                                    for m in self.messages):
                found.append("roles")
            elif (not body or body[0] != "user" or body[-1] != "assistant" or "system" in body
                  or any(map(eq, body, body[1:]))):
                found.append("alternation")
            if 0 in [m.get("weight") for m in self.messages]:
                found.append("weight")
            self._plain = tuple(found)
        return self._plain


def _parts(content: Any, kind: str) -> int:
    if not isinstance(content, list):
        return 0
    return sum(isinstance(p, dict) and p.get("type") == kind for p in content)


def plain_turns(example: ChatExample, name: str) -> list[Remark]:
    """The rules of a provider whose lines hold user and assistant turns only (and a system prompt): no tools,
    strict alternation from a user turn to a last assistant turn, no per-turn weights (Bedrock, Vertex AI)."""
    problems = example.plain_turn_problems
    if not problems:
        return []
    messages = {
        "roles": f"tool calls, tool or developer messages: {name} fine-tuning data has user and assistant turns (and "
                 "a system prompt) only",
        "alternation": f"turns must go user, assistant, user, ... and end with an assistant turn ({name})",
        "weight": f"'weight: 0' turns cannot be expressed in {name}'s format",
    }
    return [(kind, messages[kind]) for kind in problems]


def too_many_images(example: ChatExample, name: str, most: int) -> list[Remark]:
    """More image parts in one example than a provider takes."""
    total = example.parts("image_url")
    return [("images", f"{total} images in one example: {name} takes at most {most}")] if total > most else []
