"""Turn dataset lines into ``input_ids`` + ``labels`` with the loss on the trained part only.

Chat lines train on assistant turns only, skipping turns marked ``"weight": 0``. The assistant spans are
found by rendering the conversation prefix by prefix with the tokenizer's own chat template and taking
the characters each assistant turn adds; those character spans are mapped onto tokens through the fast
tokenizer's offsets. This needs no ``{% generation %}`` markers in the template (most instruct models ship
without them, and TRL's ``assistant_only_loss`` refuses such templates), and it is exact because the text
that is tokenized is the full rendering itself.

Prompt/completion lines train on the completion (plus EOS); text lines train on everything (plus EOS).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100

Span = tuple[int, int]


class TemplateError(ValueError):
    """The chat template cannot be used to locate assistant turns (the message says why)."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss is taken on (a causal LM never predicts position 0)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as HF chat templates expect them: no ``weight`` key, ``content`` never None, and
    tool-call arguments as objects (OpenAI's format carries them as a JSON string)."""
    normalized = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "weight"}
        if message.get("content") is None:
            message["content"] = ""
        if message.get("tool_calls"):
            message["tool_calls"] = [_normalize_tool_call(call) for call in message["tool_calls"]]
        normalized.append(message)
    return normalized


def _normalize_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # not JSON: the template gets the string as written
    call["function"] = function
    return call


def chat_spans(tokenizer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping] | None = None
               ) -> tuple[str, list[Span]]:
    """Render a conversation; return the text and the character spans of its trained assistant turns.

    A span runs from the end of the assistant header (what ``add_generation_prompt`` adds) to the end of
    the turn, trailing whitespace excluded, so it covers the reply and its end-of-turn token.
    """
    rendered = normalize_messages(messages)

    def render(upto: int, generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(
            rendered[:upto], tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    full = render(len(rendered))
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        start_text = render(index, generation_prompt=True) if index else _empty_prompt(render)
        end_text = render(index + 1)
        if not end_text.startswith(start_text) or not full.startswith(end_text):
            raise TemplateError(
                f"the chat template renders message {index + 1} differently once later messages follow "
                "(it is not prefix-preserving, e.g. it rewrites earlier assistant turns), so the assistant "
                "tokens cannot be located; give a training template with the config's chat_template field"
            )
        end = len(end_text.rstrip())
        if end > len(start_text):
            spans.append((len(start_text), end))
    return full, spans


def _empty_prompt(render) -> str:
    try:
        return render(0, generation_prompt=True)
    except Exception:  # noqa: BLE001 - many templates cannot render an empty conversation
        return ""


def example_text_spans(tokenizer, example: Mapping[str, Any]) -> tuple[str, list[Span], bool]:
    """(text, trained character spans, whether the tokenizer should add its special tokens) for one line."""
    if "messages" in example:
        if not tokenizer.chat_template:
            raise TemplateError("the tokenizer has no chat template; set chat_template in the config")
        text, spans = chat_spans(tokenizer, example["messages"], example.get("tools"))
        return text, spans, False  # a chat template writes BOS itself
    eos = tokenizer.eos_token or ""
    if "prompt" in example and "completion" in example:
        prompt, completion = str(example["prompt"]), str(example["completion"]) + eos
        return prompt + completion, [(len(prompt), len(prompt) + len(completion))], True
    if "text" in example:
        text = str(example["text"]) + eos
        return text, [(0, len(text))], True
    raise TemplateError("a line needs 'messages', 'prompt' and 'completion', or 'text'")


def tokenize_example(tokenizer, example: Mapping[str, Any], max_length: int | None = None
                     ) -> TokenizedExample:
    """Token ids and labels (``-100`` outside the trained spans), cut to ``max_length`` from the start."""
    text, spans, add_special = example_text_spans(tokenizer, example)
    encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [token if _overlaps(offset, spans) else IGNORE_INDEX
              for token, offset in zip(input_ids, encoded["offset_mapping"], strict=True)]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedExample(input_ids, labels)


def _overlaps(offset: Sequence[int], spans: Iterable[Span]) -> bool:
    start, end = offset
    return any(start < span_end and end > span_start for span_start, span_end in spans)
