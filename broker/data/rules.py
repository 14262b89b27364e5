"""The core checks of a dataset line: which format it is in, and whether it is a valid example of it.

Formats, detected per line from its keys; a file mixing formats is an error at the first line that breaks it:

* ``chat``: ``{"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"? (deprecated)}``; roles
  system, developer, user, assistant, tool, function; assistant ``tool_calls`` and ``weight`` 0/1; content a
  string or a list of parts (text; images in user turns); Bedrock's top-level ``system`` string is accepted.
* ``preference``: ``{"input": {"messages", "tools"?}, "preferred_output": [msg], "non_preferred_output":
  [msg]}``.
* ``prompt_completion``: ``{"prompt", "completion"}``.
* ``text``: ``{"text"}``.

The schemas are OpenAI's training-line schemas, the widest of the providers' (openai/openai-openapi, openapi.yaml
of 2025-04-29, the last to carry them: FineTuneChatRequestInput, FineTunePreferenceRequestInput,
FineTuneCompletionRequestInput; ChatCompletionMessageToolCall: id, type "function", function name and JSON
arguments; FunctionObject names ``[a-zA-Z0-9_-]{1,64}``; weight 0|1 on assistant messages). What one provider
takes less of is its backend's ``LineRules`` (``ftbroker.data.providers``). The backends send only the keys of the
format (Together refuses others), so an unknown key is a warning here, as it is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from ftbroker.data.issues import Issues

FORMATS = ("chat", "prompt_completion", "preference", "text")

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
_PART_TYPES = {
    "text": ("system", "developer", "user", "assistant", "tool"),
    "refusal": ("assistant",),
    "image_url": ("user",),
}


def jtype(value: Any) -> str:
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


def format_of(obj: dict) -> tuple[str | None, str | None]:
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


class Checker:
    """Validates one parsed line at a time into an Issues."""

    def __init__(self, issues: Issues):
        self.issues = issues
        self.line = 0

    def err(self, message: str) -> None:
        self.issues.error(self.line, message)

    def warn(self, kind: str, message: str) -> None:
        self.issues.tally("warning", kind, self.line, message)

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
            self.err(f"'system' must be a string, got {jtype(obj['system'])}")
        messages = obj["messages"]
        roles = self.messages(messages, "", tool_names)
        if roles is not None and "assistant" not in roles:
            self.err("no assistant message: the example has nothing to train on")
        return messages if roles is not None else ()

    def remarks(self, obj: dict, messages: Sequence, roles: Sequence[str]) -> None:
        """Warnings on a chat example that passed validation (``roles``: its messages')."""
        if not any([m.get("weight", 1) for m in messages if m["role"] == "assistant"]):  # weights are 0 or 1
            self.warn("all-weight-0", "every assistant message has weight 0: the example trains nothing")
        if "system" not in roles and "developer" not in roles and "system" not in obj:
            self.warn("no-system", "no system message (the same system prompt in training and use helps)")

    def messages(self, messages: Any, prefix: str, tool_names: set | None) -> list | None:
        """Checks a message list; returns each message's role (None where it is broken), or None."""
        if not isinstance(messages, list):
            self.err(f"{prefix}'messages' must be a list of messages, got {jtype(messages)}")
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
                self.err(f"{where}: expected an object, got {jtype(m)}")
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
            if "name" in m and not isinstance(m["name"], str):
                self.err(f"{where}: 'name' must be a string, got {jtype(m['name'])}")
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
                    self.err(f"{where}: 'content' must be a string, got {jtype(content)}")
            else:
                self._content(content, where, role, empty_ok=False)
        return roles

    def _objects(self, items: list, label: str) -> Iterator[tuple[str, dict]]:
        """Each item that is a JSON object, with where it is ("LABEL N"); reports the others."""
        for j, item in enumerate(items, 1):
            if isinstance(item, dict):
                yield f"{label} {j}", item
            else:
                self.err(f"{label} {j}: expected an object, got {jtype(item)}")

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
            self.err(f"{where}: 'content' must be a string or a list of content parts, got {jtype(content)}")
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
            self.err(f"{where}: 'arguments' must be a JSON-encoded string, got {jtype(args)}")
        return name

    def tools(self, tools: Any, what: str) -> set | None:
        """Checks tool definitions; returns the function names."""
        if not isinstance(tools, list):
            self.err(f"{what} must be a list of tool definitions, got {jtype(tools)}")
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
                self.err(f"{w}: 'parameters' must be a JSON Schema object, got {jtype(fn['parameters'])}")
            if "description" in fn and not isinstance(fn["description"], str):
                self.err(f"{w}: 'description' must be a string, got {jtype(fn['description'])}")
        return names

    # -- the other formats
    def preference(self, obj: dict) -> Sequence:
        inp = obj.get("input")
        if not isinstance(inp, dict):
            self.err(f"'input' must be an object with 'messages', got {jtype(inp)}")
        else:
            for key in sorted(inp.keys() - _INPUT_KEYS):
                self.warn(f"inkey:{key}", f"unknown key {key!r} in 'input' (ignored)")
            tool_names = self.tools(inp["tools"], "'input.tools'") if "tools" in inp else None
            self.messages(inp.get("messages"), "input ", tool_names)
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
                self.err(f"{key!r} must be a string, got {jtype(value)}")
            elif key == "completion" and not value.strip():
                self.err("empty completion: the example has nothing to train on")
        return ()

    def text(self, obj: dict) -> Sequence:
        value = obj["text"]
        if not isinstance(value, str):
            self.err(f"'text' must be a string, got {jtype(value)}")
        elif not value.strip():
            self.err("empty text")
        return ()

