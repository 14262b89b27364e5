"""The held-out examples an evaluation runs on, and the built-in general-capability set.

Where the examples come from, in order: ``--test FILE``; for a local job, the held-out part of its training data,
reproduced exactly as the trainer split it (``train_data.held_out_split`` on the run folder's config: the same seed,
fraction and file), or its validation file; for any other job, its validation file. Any format ``ftbroker
validate`` accepts that has a prompt and a reference answer: chat (the reference is the last assistant turn, the
prompt everything before it), prompt/completion, and preference data (the preferred output). Plain text has no
reference to compare with and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ftbroker.errors import InputError
from ftbroker.evaluation.records import Answer, Example
from ftbroker.jobs import Job

CAPABILITY_FILE = "capability.jsonl"


@dataclass(frozen=True)
class HeldOut:
    examples: tuple[Example, ...]
    source: str  # said in the report: where the examples came from


def held_out(job: Job, runs: Path, *, test: str | None = None, limit: int | None = None) -> HeldOut:
    """The examples to evaluate ``job`` on (the first ``limit`` of them). Bad files raise DatasetError (FILE:LINE);
    a job with no held-out data and no ``test`` an InputError that says what to give."""
    if test is not None:
        found = HeldOut(load_file(test), f"--test {test}")
    elif job.backend == "local" and (runs / job.id / "config.json").is_file():
        found = _local_split(job, runs / job.id)
    elif job.spec.validation:
        found = HeldOut(load_file(job.spec.validation), f"the job's validation file {job.spec.validation}")
    else:
        raise InputError(f"job {job.id} has no held-out examples (a {job.backend} job trained without a validation "
                         "file): give --test FILE (chat, prompt/completion or preference JSONL)")
    examples = found.examples[:limit] if limit is not None else found.examples
    if not examples:
        raise InputError(f"no example to evaluate on in {found.source}")
    return HeldOut(examples, found.source)


def _local_split(job: Job, run_dir: Path) -> HeldOut:
    """What the local trainer held out of the job's data: its validation file, else the same eval_fraction of the
    training lines, shuffled with the same seed (the trainer's own function, on the trainer's own config)."""
    from ftbroker.backends.local.config import load_config
    from ftbroker.backends.local.train_data import held_out_split

    config = load_config(run_dir / "config.json")
    if config.validation_dataset:
        return HeldOut(load_file(config.validation_dataset),
                       f"the job's validation file {config.validation_dataset}")
    if config.eval_fraction == 0:
        raise InputError(f"job {job.id} trained on all of its data (eval_fraction 0, no validation file): give "
                         "--test FILE")
    _, held = held_out_split(config)
    fmt = _format(config.dataset)
    return HeldOut(tuple(from_line(path, number, row, fmt) for path, number, row in held),
                   f"the {len(held)} examples the trainer held out of {config.dataset} "
                   f"(eval_fraction {config.eval_fraction:g}, seed {config.seed})")


def _format(path: str) -> str:
    """The file's format after the checks of ``ftbroker validate`` (DatasetError with FILE:LINE otherwise)."""
    from ftbroker.data.analysis import analyze

    report = analyze(path, rules=())  # the general checks: no provider takes the data
    report.raise_for_errors()
    if report.format == "text":
        raise InputError(f"{path}: plain text data has no prompt and reference answer to compare a model's answer "
                         "with; give chat, prompt/completion or preference data")
    return report.format


def load_file(path: str) -> tuple[Example, ...]:
    """Every example of a dataset file, checked as ``ftbroker validate`` checks it."""
    from ftbroker.data.reader import read_examples

    fmt = _format(path)
    return tuple(from_line(path, number, row, fmt) for number, row in read_examples(path))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or part.get("refusal") or "" for part in content if isinstance(part, Mapping))


def _calls(message: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls.append({"name": str(function.get("name")),
                      "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
    return tuple(calls)


def answer_of(message: Mapping[str, Any]) -> Answer:
    return Answer(text=_text(message.get("content")), tool_calls=_calls(message))


def from_line(path: str, number: int, row: Mapping[str, Any], fmt: str) -> Example:
    """One checked line as an Example."""
    ident = f"{path}:{number}"
    if fmt == "prompt_completion":
        prompt = str(row["prompt"])
        return Example(ident, fmt, ({"role": "user", "content": prompt},), Answer(str(row["completion"])),
                       prompt_text=prompt, line=row)
    if fmt == "preference":
        messages = tuple(row["input"]["messages"])
        return Example(ident, fmt, messages, answer_of(row["preferred_output"][0]),
                       tools=tuple(row["input"].get("tools") or ()), line=row)
    messages = list(row["messages"])
    if isinstance(row.get("system"), str):  # Bedrock's shape: a top-level system prompt
        messages.insert(0, {"role": "system", "content": row["system"]})
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return Example(ident, "chat", tuple(messages[:last]), answer_of(messages[last]),
                   tools=tuple(row.get("tools") or ()), line=row)


def capability_set(path: str | None = None) -> tuple[Example, ...]:
    """The built-in general-capability items (facts, arithmetic, following a format, not refusing a benign
    request), written for ftbroker; or a file of the same shape."""
    if path is None:
        text = resources.files("ftbroker.evaluation").joinpath("data", CAPABILITY_FILE).read_text(encoding="utf-8")
        return tuple(_capability_item(json.loads(line)) for line in text.splitlines() if line.strip())
    items = []
    try:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                items.append(_capability_item(json.loads(line)))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}:{number}: a capability item is a JSON object with id, category, messages and "
                         f"check ({exc})") from exc
    return tuple(items)


def _capability_item(item: Mapping[str, Any]) -> Example:
    from ftbroker.evaluation.scoring import CHECKS

    if item["check"]["type"] not in CHECKS:
        raise ValueError(f"unknown check type {item['check']['type']!r} (known: {', '.join(CHECKS)})")
    return Example(f"capability:{item['id']}", "capability", tuple(item["messages"]), Answer(""),
                   check=item["check"], category=item["category"])

