"""Together AI fine-tuning through the official ``together`` SDK (3.x).

Facts behind this module: research/apis/NOTES.md section 2 (the 3-step upload, what
``fine_tuning.create`` sends, job, event and metrics shapes, statuses, data formats and the legacy
SDK's full local checks), carried here with their sources in comments.

This part is pure translation (no SDK, no I/O): the status table, events and metrics, the
``fine_tuning.create`` arguments and their check against the model's limits, and the conversion of
a dataset into Together's formats with Together's documented rules checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ftbroker.jobs import Event, JobStatus, MetricPoint

from ._managed import Rejected, check_range, map_status, text_of

NAME = "together"

# research/apis NOTES section 6; user_error only in the SDK's lib enum
STATUS: Mapping[str, JobStatus] = {
    "pending": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "compressing": JobStatus.RUNNING,
    "uploading": JobStatus.RUNNING,
    "cancel_requested": JobStatus.RUNNING,
    "cancelled": JobStatus.CANCELLED,
    "error": JobStatus.FAILED,
    "user_error": JobStatus.FAILED,
    "completed": JobStatus.SUCCEEDED,
}

SUFFIX_MAX = 40  # together 3.1.1 fine_tuning.create docstring: "Up to 40 character suffix"
NANODOLLARS = Decimal(1_000_000_000)  # total_price unit: together/lib/utils/tools.py finetune_price_to_dollars
MAX_IMAGES = 10  # legacy together-python utils/files.py: at most 10 images per example
RULES = "Together data rules"

_EVENT_KINDS = {"job_error": "error", "warning": "warning", "billing_limit": "warning", "refund": "warning",
                "checkpoint_save": "checkpoint", "early_stopped": "warning"}


def normalize_status(raw: str | None) -> JobStatus:
    return map_status(raw, STATUS)


def price_usd(total_price: int | float | None) -> Decimal | None:
    """A job's ``total_price`` (nanodollars) in dollars."""
    return None if total_price is None else Decimal(int(total_price)) / NANODOLLARS


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(by_alias=True) if hasattr(obj, "model_dump") else dict(obj)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# -- events and metrics ------------------------------------------------------------------------------
def normalize_events(raw_events: Iterable[Any]) -> list[Event]:
    """Together fine-tune events as normalized Events, oldest first. They carry no losses (NOTES 2.5)."""
    events = []
    for raw in (_dump(e) for e in raw_events):
        level = raw.get("level") or "info"
        level = "warning" if "warn" in level else "error" if "error" in level else "info"
        kind = _EVENT_KINDS.get(raw.get("type") or "", {"error": "error", "warning": "warning"}.get(level, "log"))
        data = {k: raw[k] for k in ("type", "step", "total_steps", "checkpoint_path", "model_path", "wandb_url")
                if raw.get(k) not in (None, "")}
        events.append(Event(time=_parse_time(raw["created_at"]), kind=kind, message=raw.get("message") or "",
                            level=level, data=data))
    return sorted(events, key=lambda e: e.time)


def normalize_metrics(rows: Iterable[Mapping[str, float]]) -> list[MetricPoint]:
    """``/fine-tunes/{id}/metrics`` rows (flat ``train/loss``-style keys, NOTES 2.1) as points.

    The spec documents ``train/loss``, ``train/learning_rate`` and ``train/global_step``; an
    ``eval/``, ``valid/`` or ``validation/`` prefix is read as evaluation.
    """
    points = []
    for row in rows:
        step = next((row[k] for k in ("train/global_step", "eval/global_step", "global_step") if k in row), None)
        if step is None:
            continue
        for key, value in row.items():
            if "/" not in key or key.endswith("global_step") or value is None:
                continue
            prefix, name = key.split("/", 1)
            prefix = "eval" if prefix in ("eval", "valid", "validation") else prefix
            points.append(MetricPoint(step=int(step), name=f"{prefix}_{name.replace('/', '_')}", value=float(value)))
    return sorted(points, key=lambda p: (p.step, p.name))


# -- the create call ---------------------------------------------------------------------------------
def create_arguments(*, model: str, training_file: str, validation_file: str | None, tag: str, method: str,
                     dpo: bool, epochs: int | None, batch_size: int | None, learning_rate: float | None,
                     lora_r: int | None, lora_alpha: int | None, lora_dropout: float | None,
                     lora_targets: str | None, max_seq_len: int | None, seed: int | None,
                     options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``client.fine_tuning.create`` (the SDK turns them into the REST body:
    ``training_type`` {Lora, r, alpha, ...} or {Full}, ``training_method`` {sft|dpo}, NOTES 2.2)."""
    kwargs: dict[str, Any] = {"model": model, "training_file": training_file, "suffix": tag,
                              "lora": method != "full", "training_method": "dpo" if dpo else "sft"}
    if not dpo:
        kwargs["train_on_inputs"] = options.get("train_on_inputs", "auto")
    optional = {"validation_file": validation_file, "n_epochs": epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "max_seq_length": max_seq_len, "random_seed": seed}
    if method != "full":
        optional |= {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                     "lora_trainable_modules": lora_targets}
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    if validation_file:
        kwargs["n_evals"] = int(options.get("n_evals", 1))
    for key in ("n_checkpoints", "warmup_ratio", "weight_decay", "packing", "dpo_beta"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    return kwargs


def check_against_limits(limits: Mapping[str, Any], *, method: str, dpo: bool, epochs: int | None,
                         batch_size: int | None, learning_rate: float | None, lora_r: int | None,
                         max_seq_len: int | None) -> list[str]:
    """Every value outside the model's limits (``/fine-tunes/models/limits``, NOTES 2.7)."""
    problems: list[str] = []
    src = f"limits of {limits.get('model_name', 'the model')}"
    if method == "full" and not limits.get("supports_full_training"):
        problems.append(f"method: full fine-tuning is not offered for {limits.get('model_name')}; use lora")
    block = limits.get("full_training" if method == "full" else "lora_training") or {}
    if block:
        top = block.get("max_batch_size_dpo" if dpo else "max_batch_size")
        check_range(problems, "batch size", batch_size, block.get("min_batch_size", 1), top or float("inf"), source=src)
    if method != "full" and limits.get("lora_training"):
        check_range(problems, "lora r", lora_r, 1, limits["lora_training"]["max_rank"], source=src)
    check_range(problems, "epochs", epochs, 1, limits.get("max_num_epochs") or float("inf"), source=src)
    check_range(problems, "learning rate", learning_rate, limits.get("min_learning_rate") or 0,
                limits.get("max_learning_rate") or float("inf"), source=src)
    top_len = limits.get("max_seq_length_dpo" if dpo else "max_seq_length_sft")
    check_range(problems, "max sequence length", max_seq_len, limits.get("min_max_seq_length") or 1,
                top_len or float("inf"), source=src)
    return problems


# -- dataset conversion ------------------------------------------------------------------------------
def convert(example: Mapping[str, Any], fmt: str, notes: list[str]) -> dict[str, Any]:
    """One example in Together's format for its kind (NOTES 2.9, rules of 2.10)."""
    if fmt == "chat":
        return _conversation(example, notes)
    if fmt == "prompt_completion":
        return {"prompt": text_of(example.get("prompt"), "prompt"),
                "completion": text_of(example.get("completion"), "completion")}
    if fmt == "preference":
        return _preference(example)
    if fmt == "text":
        return {"text": text_of(example.get("text"), "text")}
    raise Rejected(f"Together cannot fine-tune on {fmt} examples")


def _conversation(example: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Rejected("'messages' must be a non-empty list")
    out, images, previous, assistants = [], 0, None, 0
    for i, message in enumerate(messages, 1):
        where = f"message {i}"
        if not isinstance(message, Mapping):
            raise Rejected(f"{where}: must be an object")
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise Rejected(f"{where}: role {role!r} is not one of system, user, assistant, tool")
        if role == "system" and i != 1:
            raise Rejected(f"{where}: a system message must come first")
        if previous is None and role not in ("system", "user"):
            raise Rejected(f"{where}: a conversation must start with a system or user message")
        if role == previous:
            raise Rejected(f"{where}: two {role} messages in a row (roles must alternate)")
        weight = message.get("weight")
        if weight is not None and (weight not in (0, 1) or isinstance(weight, bool)):
            raise Rejected(f"{where}: 'weight' must be 0 or 1, not {weight!r}")
        content = message.get("content")
        if isinstance(content, list):
            parts = [p for p in content if isinstance(p, Mapping)]
            images += sum(1 for p in parts if p.get("type") == "image_url")
            if any(p.get("type") not in ("text", "image_url") for p in parts) or len(parts) != len(content):
                raise Rejected(f"{where}: content parts must be text or image_url")
            if weight and any(p.get("type") == "image_url" for p in parts):
                raise Rejected(f"{where}: a message with images cannot carry a non-zero weight")
        elif not isinstance(content, str) and not message.get("tool_calls"):
            raise Rejected(f"{where}: content must be a string or a list of parts")
        assistants += role == "assistant"
        kept = {k: message[k] for k in ("role", "content", "weight", "tool_calls", "tool_call_id", "name")
                if k in message}
        out.append(kept)
        previous = role
    if images > MAX_IMAGES:
        raise Rejected(f"{images} images; at most {MAX_IMAGES} per example")
    if not assistants:
        raise Rejected("no assistant message")
    dropped = sorted(set(example) - {"messages", "tools"})
    if dropped:
        notes.append(f"keys not sent to Together: {', '.join(dropped)}")
    line: dict[str, Any] = {"messages": out}
    if "tools" in example:
        line["tools"] = example["tools"]
    return line


def _preference(example: Mapping[str, Any]) -> dict[str, Any]:
    source = example.get("input")
    messages = source.get("messages") if isinstance(source, Mapping) else None
    if not isinstance(messages, list) or not messages:
        raise Rejected("'input.messages' must be a non-empty list")
    if isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
        raise Rejected("'input.messages' must not end with an assistant message")
    out: dict[str, Any] = {"input": {"messages": messages}}
    for key in ("preferred_output", "non_preferred_output"):
        value = example.get(key)
        if (not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], Mapping)
                or value[0].get("role") != "assistant"):
            raise Rejected(f"'{key}' must be a list of exactly one assistant message")
        text_of(value[0].get("content"), key)
        out[key] = value
    return out
