"""How a chat rule sees an example: the texts to count and the parts it prices beyond them, found in one walk.

A route wraps a chat example in tokens beyond its texts (``ChatRule``: role markers, a reply priming, a template's
default system prompt, tool definitions). ``Walk`` goes once over a batch of examples for every rule at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class ChatRule:
    """How a route wraps a chat example in tokens, beyond the text itself."""

    per_message: int  # role markers around each message
    per_name: int
    priming: int  # once per example: OpenAI's reply priming, or a template's begin-of-text
    end_of_turn: int  # trained tokens after an assistant turn's text (the stop token)
    default_system: int  # tokens a template injects when the example has no system message
    tools_preamble: int  # tokens a template adds once when tools are given
    encode_role: bool  # OpenAI's rule encodes the role text; templates count it in per_message
    openai_tools: int | None  # per-function constant of the cookbook rule (7 o200k, 10 cl100k); None: JSON




# Which rules count a text (its tag): every rule; those that encode an unknown role's name (OpenAI's); those
# that price tool definitions by the cookbook (OpenAI's); those that print them as JSON (chat templates).
_EVERY, _ROLE_TEXT, _COOKBOOK_TOOLS, _JSON_TOOLS = range(4)
# The parts of an example a chat rule prices beyond its texts, counted once per example by the walk: (the
# example is a chat, messages, no system message, tools given, functions, the cookbook's per-property
# constants, names, tool calls), then how many messages of each role of ROLES.
_CHAT, _MESSAGES, _NO_SYSTEM, _TOOLS, _FUNCTIONS, _COOKBOOK_EXTRA, _NAMES, _CALLS = range(8)
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLE_INDEX = {role: 8 + k for k, role in enumerate(ROLES)}


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text (and refusal) parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") or p.get("refusal") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    return ""


def list_of(value: Any) -> list:
    return value if isinstance(value, list) else []


def chat_of(example: Mapping, fmt: str) -> tuple[list, list, list]:
    """(messages, tools, outputs) of a chat or preference example; outputs are the preference completions."""
    if fmt == "preference":
        inp = example.get("input") if isinstance(example.get("input"), dict) else {}
        outs = [
            o
            for key in ("preferred_output", "non_preferred_output")
            for o in list_of(example.get(key))
            if isinstance(o, dict)
        ]
        return list_of(inp.get("messages")), list_of(inp.get("tools")) + list_of(inp.get("functions")), outs
    return list_of(example.get("messages")), list_of(example.get("tools")) + list_of(example.get("functions")), []


class Walk:
    """One pass over a batch of examples for any number of chat rules: the texts to count, each with its
    example, tag and whether the loss is taken on it; the repeated texts the memo already knows, with their
    values; and per example how many of each part (``_CHAT`` ...) a rule prices. Hot path: plain locals, few
    calls per message. ``needs``: the tags some rule counts (texts of other tags are not even made).
    ``tool_pieces``: a cache of the texts and parts of tool lists, by their JSON (None: none)."""

    __slots__ = ("_cookbook", "_json_tools", "_memo", "_tool_pieces", "hits", "items", "parts", "trained_parts")

    def __init__(self, examples: Sequence[Mapping], fmt: str, memo: Mapping[str, tuple], needs: frozenset,
                 tool_pieces: dict[bytes, tuple] | None = None):
        self.items: list[tuple[str, int, int, bool, bool]] = []  # (text, example, tag, trained, cacheable)
        self.hits: list[tuple[int, int, bool, tuple]] = []  # (example, tag, trained, values by member)
        self.parts: list[list[int]] = []
        self.trained_parts: list[tuple[int, int]] = []  # per example: (trained tool calls, trained turns)
        self._memo, self._tool_pieces = memo, tool_pieces
        self._json_tools, self._cookbook = _JSON_TOOLS in needs, _COOKBOOK_TOOLS in needs
        chat = fmt in ("chat", "preference")
        for i, ex in enumerate(examples):
            row = [0] * (8 + len(ROLES))
            self.parts.append(row)
            self.trained_parts.append(self._chat(i, ex, fmt, row) if chat else self._plain(i, ex, fmt))

    def _add(self, text: str, i: int, tag: int, trained: bool, cacheable: bool) -> None:
        if not text:
            return
        if cacheable:
            known = self._memo.get(text)
            if known is not None:
                self.hits.append((i, tag, trained, known))
                return
        self.items.append((text, i, tag, trained, cacheable))

    def _plain(self, i: int, ex: Mapping, fmt: str) -> tuple[int, int]:
        if fmt == "prompt_completion":
            prompt, completion = ex.get("prompt"), ex.get("completion")
            self._add(prompt if isinstance(prompt, str) else "", i, _EVERY, False, False)
            self._add(completion if isinstance(completion, str) else "", i, _EVERY, True, False)
        else:
            self._add(ex.get("text") if isinstance(ex.get("text"), str) else "", i, _EVERY, True, False)
        return 0, 0

    def _chat(self, i: int, ex: Mapping, fmt: str, row: list[int]) -> tuple[int, int]:
        """The example's system prompt, tools and messages; returns (trained tool calls, trained turns)."""
        add = self._add
        row[_CHAT] = 1
        messages, tools, outputs = chat_of(ex, fmt)
        system = ex.get("system")  # Bedrock's top-level system prompt
        if isinstance(system, str):
            row[_MESSAGES] += 1
            add(system, i, _EVERY, False, True)
        elif not any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
            row[_NO_SYSTEM] = 1
        if tools:
            row[_TOOLS] = 1
            texts, functions, cookbook_extra = _cached_tool_pieces(tools, self._tool_pieces, self._json_tools,
                                                                   self._cookbook)
            row[_FUNCTIONS] += functions
            row[_COOKBOOK_EXTRA] += cookbook_extra
            for text, tag in texts:
                add(text, i, tag, False, True)
        is_chat, n_input, items = fmt == "chat", len(messages), self.items
        calls_trained = turns_trained = n_messages = 0
        for k, m in enumerate(messages + outputs if outputs else messages):
            if not isinstance(m, dict):
                continue
            n_messages += 1
            role = m.get("role")
            if isinstance(role, str):
                slot = _ROLE_INDEX.get(role)
                if slot is None:
                    add(role, i, _ROLE_TEXT, False, True)
                else:
                    row[slot] += 1
            content = m.get("content")
            text = content if type(content) is str else content_text(content)
            trained = k >= n_input or (is_chat and role == "assistant" and m.get("weight", 1) != 0)
            if role == "system" or role == "developer":  # repeats across examples: the memo may know it
                add(text, i, _EVERY, trained, True)
            elif text:
                items.append((text, i, _EVERY, trained, False))
            if "name" in m and isinstance(m["name"], str):
                row[_NAMES] += 1
                add(m["name"], i, _EVERY, False, True)
            if "tool_calls" in m or "function_call" in m:
                calls_trained += self._calls(i, m, trained, row) * trained
            turns_trained += trained  # its stop token: inside per_message already, and trained too
        row[_MESSAGES] += n_messages
        return calls_trained, turns_trained

    def _calls(self, i: int, m: dict, trained: bool, row: list[int]) -> int:
        """The texts of one message's tool calls; returns how many calls it makes."""
        function_call = m.get("function_call")
        made = 0
        for call in list_of(m.get("tool_calls")) + ([function_call] if isinstance(function_call, dict) else []):
            fn = call.get("function", call) if isinstance(call, dict) else None
            if isinstance(fn, dict):
                made += 1
                for part in (fn.get("name"), fn.get("arguments")):
                    part = part if isinstance(part, str) else json.dumps(part, ensure_ascii=False)
                    self._add(part if part != "null" else "", i, _EVERY, trained, False)
        row[_CALLS] += made
        return made


_TOOL_LISTS = 1024  # distinct tool lists whose pieces are kept (then forgotten, and made again)


def _cached_tool_pieces(tools: list, cache: dict[bytes, tuple] | None, json_tools: bool,
                        cookbook: bool) -> tuple[tuple, int, int]:
    """``_tool_pieces`` of a tool list, made once per distinct list while ``cache`` (None: no cache) holds it."""
    key = _json_key(tools) if cache is not None else None
    pieces = cache.get(key) if cache is not None and key is not None else None
    if pieces is None:
        pieces = _tool_pieces(tools, json_tools, cookbook)
        if cache is not None and key is not None:
            if len(cache) >= _TOOL_LISTS:
                cache.clear()
            cache[key] = pieces
    return pieces


def _json_key(tools: list) -> bytes | None:
    """A parsed JSON value's serialized form, which identifies it (None if it will not serialize)."""
    try:
        return orjson.dumps(tools)
    except TypeError:  # orjson.JSONEncodeError: a value JSON does not have
        return None


def _tool_pieces(tools: list, json_tools: bool, cookbook: bool) -> tuple[tuple, int, int]:
    """Tool definitions as rules count them: (texts with their tags, functions, the cookbook's constants): the
    JSON text of each tool (chat templates), and the pieces and per-property constants of OpenAI's cookbook
    rule."""
    texts: list[tuple[str, int]] = []
    functions = extra = 0
    for t in tools:
        if json_tools:
            texts.append((json.dumps(t, ensure_ascii=False), _JSON_TOOLS))
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict):
            continue
        functions += 1
        if not cookbook:
            continue
        desc = fn.get("description") if isinstance(fn.get("description"), str) else ""
        texts.append((f"{fn.get('name', '')}:{desc.removesuffix('.')}", _COOKBOOK_TOOLS))
        params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
        props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
        if props:
            extra += 3  # prop_init
        for name, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            extra += 3  # prop_key
            enum = list_of(prop.get("enum"))
            if enum:
                extra += -3 + 3 * len(enum)
                texts += [(str(item), _COOKBOOK_TOOLS) for item in enum]
            pdesc = prop.get("description") if isinstance(prop.get("description"), str) else ""
            texts.append((f"{name}:{prop.get('type', '')}:{pdesc.removesuffix('.')}", _COOKBOOK_TOOLS))
            nested = {k: v for k, v in prop.items() if k in ("properties", "items")}
            if nested:
                texts.append((json.dumps(nested, ensure_ascii=False), _COOKBOOK_TOOLS))
    return tuple(texts), functions, extra
