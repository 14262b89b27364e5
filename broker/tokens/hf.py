"""A Hugging Face tokenizer, exact: a local folder, a ``tokenizer.json``, or a repo already in the local HF cache
(looked up in the cache's folders, never downloaded).

The ``tokenizers`` library plus a Jinja2 render of the model's own chat template, as transformers renders it
(sandboxed, trim_blocks/lstrip_blocks, ``tojson``, ``raise_exception``, ``strftime_now``), so ``plan`` never imports
transformers. Trained tokens of an assistant turn are the difference between the render up to and including it and
the render up to it with the generation prompt: the way trainers mask a template without generation markers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ftbroker import clock
from ftbroker.errors import InputError
from ftbroker.tokens.counters import BatchCounter
from ftbroker.tokens.walk import chat_of, content_text, list_of


class HFCounter(BatchCounter):
    """The model's own tokenizer (``tokenizers``) and chat template (Jinja2), loaded from a local folder."""

    exact, family, accuracy, why = True, None, "exact", ""

    def __init__(self, folder: Path, label: str):
        from tokenizers import Tokenizer

        self.key = f"hf:{folder}"
        self.name = f"{label} (local tokenizer)"
        try:
            self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the tokenizers library raises plain Exception subclasses
            raise InputError(f"cannot read the tokenizer in {folder}: {exc}") from exc
        config = read_json(folder / "tokenizer_config.json")
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
        original, tools, outputs = chat_of(ex, fmt)
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
            return "".join(content_text(m.get("content")) for m in messages)
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
    out["content"] = content_text(m.get("content"))
    calls = []
    for call in list_of(m.get("tool_calls")):
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


def read_json(path: Path) -> dict:
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


def hf_cached_folder(repo: str) -> Path | None:
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
