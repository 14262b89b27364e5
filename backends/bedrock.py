"""Amazon Bedrock model customization (fine-tuning) through ``boto3``, with data and results on S3.

Facts behind this module: research/apis/NOTES.md section 3 (operations, parameters, the per-model
hyperparameter tables of the AWS user guide, statuses, metrics files, data formats, moto's
behaviour), carried here with their sources in comments.

Models covered (the text models Bedrock fine-tunes today; Claude 3 Haiku reached end of life on
2026-09-10 and is refused by the catalog's availability window):

| family | base model ids | training line | hyperparameters (AWS user guide) |
|---|---|---|---|
| Llama 3.1 8B/70B | ``meta.llama3-1-*`` | ``{"prompt","completion"}`` (non-conversational, preparing-text-data) | cm-hp-meta-llama31 |
| Llama 3.2 1B/3B/11B/90B | ``meta.llama3-2-*`` | ``{"system"?, "messages":[{role, content}]}`` chat line (NOTES 3.5 shape) | cm-hp-meta-llama32 |
| Nova Micro/Lite/Pro | ``amazon.nova-{micro,lite,pro}-*`` | ``bedrock-conversation-2024`` (NOTES 3.5) | cm-hp-nova-mm |

This part is pure translation (no SDK, no I/O): the status table (refined by ``statusDetails``),
the metrics CSVs Bedrock writes next to the output, the create request with ``hyperParameters`` as
strings, and the per-family dataset conversion with the documented rules checked.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ftbroker.jobs import JobStatus, MetricPoint

from ._managed import Converter, Rejected, check_range, hp_string, map_status, text_of

NAME = "bedrock"

# research/apis NOTES section 6
STATUS: Mapping[str, JobStatus] = {
    "InProgress": JobStatus.RUNNING,
    "Completed": JobStatus.SUCCEEDED,
    "Failed": JobStatus.FAILED,
    "Stopping": JobStatus.RUNNING,
    "Stopped": JobStatus.CANCELLED,
}

TRAINING_METRICS = "training_artifacts/step_wise_training_metrics.csv"  # docs: model-customization-analyze
VALIDATION_METRICS = "validation_artifacts/post_fine_tuning_validation/validation_metrics.csv"

# Nova fine-tuning data guide (docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding):
# a user or system prompt must not start with these reserved keywords.
NOVA_RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")


def normalize_status(job: Mapping[str, Any]) -> JobStatus:
    """A job's status; ``InProgress`` refined by ``statusDetails`` where Bedrock returns them."""
    status = map_status(job.get("status"), STATUS)
    details = job.get("statusDetails") or {}
    if status is JobStatus.RUNNING and job.get("status") == "InProgress" and details:
        stages = [(details.get(k) or {}).get("status") for k in
                  ("validationDetails", "dataProcessingDetails", "trainingDetails")]
        if stages[0] == "InProgress":
            return JobStatus.VALIDATING
        if all(s in (None, "NotStarted") for s in stages):
            return JobStatus.QUEUED
    return status


def failure_message(job: Mapping[str, Any]) -> str | None:
    """Only a Failed job's message counts (moto puts "Failure Message" on every job)."""
    return job.get("failureMessage") if job.get("status") == "Failed" else None


def metrics_from_csv(content: bytes, *, validation: bool = False) -> list[MetricPoint]:
    """Points from ``step_wise_training_metrics.csv`` (step_number, epoch_number, training_loss,
    perplexity) or, with ``validation``, the post-fine-tuning ``validation_metrics.csv``."""
    column, name = ("validation_loss", "eval_loss") if validation else ("training_loss", "train_loss")
    points = []
    for row in csv.DictReader(io.StringIO(content.decode("utf-8-sig", errors="replace"))):
        try:
            points.append(MetricPoint(step=int(float(row["step_number"])), name=name, value=float(row[column]),
                                      epoch=float(row["epoch_number"]) if row.get("epoch_number") else None))
        except (KeyError, TypeError, ValueError):
            continue
    return points


# -- families: hyperparameters and data format ---------------------------------------------------------
@dataclass(frozen=True)
class Hyper:
    key: str  # Bedrock's hyperParameters key
    low: float
    high: float
    integer: bool


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    epochs: Hyper
    learning_rate: Hyper
    batch_size: Hyper | None
    warmup_steps: Hyper | None
    source: str
    fmt: str  # "prompt_completion" | "chat" | "converse"

    def converter(self) -> Converter:
        return {"prompt_completion": _llama_prompt_completion, "chat": _llama_chat, "converse": _nova}[self.fmt]


_LLAMA_HP = dict(epochs=Hyper("epochCount", 1, 10, True), learning_rate=Hyper("learningRate", 5e-6, 0.1, False),
                 batch_size=Hyper("batchSize", 1, 1, True), warmup_steps=None)
FAMILIES: tuple[Family, ...] = (
    Family("Llama 3.1", ("meta.llama3-1-",), **_LLAMA_HP, source="AWS user guide cm-hp-meta-llama31",
           fmt="prompt_completion"),
    Family("Llama 3.2", ("meta.llama3-2-",), **_LLAMA_HP, source="AWS user guide cm-hp-meta-llama32", fmt="chat"),
    Family("Nova", ("amazon.nova-micro-", "amazon.nova-lite-", "amazon.nova-pro-"),
           epochs=Hyper("epochCount", 1, 5, True), learning_rate=Hyper("learningRate", 1e-6, 1e-4, False),
           batch_size=None, warmup_steps=Hyper("learningRateWarmupSteps", 0, 100, True),
           source="AWS user guide cm-hp-nova-mm", fmt="converse"),
)


def family_of(base_model: str) -> Family | None:
    return next((f for f in FAMILIES if base_model.startswith(f.prefixes)), None)


def hyperparameters(family: Family, *, epochs: int | None, learning_rate: float | None, batch_size: int | None,
                    warmup_steps: int | None) -> tuple[dict[str, str], list[str]]:
    """Bedrock ``hyperParameters`` (string -> string) for ``family``, and every out-of-range problem.
    Unset values are left out: Bedrock then applies its documented defaults."""
    problems: list[str] = []
    out: dict[str, str] = {}
    for label, hyper, value in (("epochs", family.epochs, epochs), ("learning rate", family.learning_rate, learning_rate),
                                ("batch size", family.batch_size, batch_size),
                                ("warmup steps", family.warmup_steps, warmup_steps)):
        if value is None:
            continue
        if hyper is None:
            problems.append(f"{label}: {family.name} on Bedrock has no such hyperparameter ({family.source})")
            continue
        check_range(problems, label, value, hyper.low, hyper.high, source=f"{family.name}, {family.source}")
        out[hyper.key] = hp_string(int(value) if hyper.integer else float(value))
    return out, problems


def create_request(*, job_name: str, custom_model_name: str, role_arn: str, base_model: str, training_uri: str,
                   validation_uri: str | None, output_uri: str, hyper: Mapping[str, str], token: str,
                   tags: Mapping[str, str]) -> dict[str, Any]:
    """Arguments of ``create_model_customization_job`` (NOTES 3.2)."""
    request: dict[str, Any] = {
        "jobName": job_name, "customModelName": custom_model_name, "roleArn": role_arn,
        "baseModelIdentifier": base_model, "customizationType": "FINE_TUNING",
        "trainingDataConfig": {"s3Uri": training_uri}, "outputDataConfig": {"s3Uri": output_uri},
        "hyperParameters": dict(hyper), "clientRequestToken": token,
        "jobTags": [{"key": k, "value": v} for k, v in tags.items()],
    }
    if validation_uri:
        request["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
    return request


# -- dataset conversion ------------------------------------------------------------------------------
def _turns(example: Mapping[str, Any], fmt: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt, [(role, text), ...]) of a chat or prompt/completion example, with the rules
    every Bedrock chat format shares: user first, roles alternate, assistant last, text only."""
    if fmt == "prompt_completion":
        return None, [("user", text_of(example.get("prompt"), "prompt")),
                      ("assistant", text_of(example.get("completion"), "completion"))]
    if fmt != "chat":
        raise Rejected(f"Bedrock fine-tuning takes chat or prompt/completion examples, not {fmt}")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Rejected("'messages' must be a non-empty list")
    system, turns = None, []
    for i, message in enumerate(messages, 1):
        where = f"message {i}"
        if not isinstance(message, Mapping):
            raise Rejected(f"{where}: must be an object")
        role = message.get("role")
        if role == "system" and i == 1:
            system = text_of(message.get("content"), where)
            continue
        if role not in ("user", "assistant"):
            raise Rejected(f"{where}: role {role!r} is not supported (Bedrock: an optional first system "
                           "message, then user and assistant)")
        if message.get("weight", 1) != 1:
            raise Rejected(f"{where}: 'weight' {message.get('weight')!r} is not supported: Bedrock trains on every "
                           "assistant turn")
        expected = "user" if not turns or turns[-1][0] == "assistant" else "assistant"
        if role != expected:
            raise Rejected(f"{where}: expected a {expected} message (the first turn is user, then roles alternate)")
        turns.append((role, text_of(message.get("content"), where)))
    if not turns or turns[-1][0] != "assistant":
        raise Rejected("the last message must be the assistant's reply")
    return system, turns


def _llama_prompt_completion(example: Mapping[str, Any], fmt: str, notes: list[str]) -> dict[str, Any]:
    system, turns = _turns(example, fmt)
    if len(turns) != 2:
        raise Rejected(f"Llama 3.1 on Bedrock takes one prompt and one completion per line; this conversation has "
                       f"{len(turns)} turns (split it, or use a Llama 3.2 or Nova model)")
    prompt = turns[0][1]
    if system:
        prompt = f"{system}\n\n{prompt}"
        notes.append("system prompt put in front of the prompt (the prompt/completion format has no system field)")
    return {"prompt": prompt, "completion": turns[1][1]}


def _llama_chat(example: Mapping[str, Any], fmt: str, notes: list[str]) -> dict[str, Any]:
    system, turns = _turns(example, fmt)
    line: dict[str, Any] = {"system": system} if system else {}
    line["messages"] = [{"role": role, "content": text} for role, text in turns]
    return line


def _nova(example: Mapping[str, Any], fmt: str, notes: list[str]) -> dict[str, Any]:
    system, turns = _turns(example, fmt)
    for where, text in [("system prompt", system or "")] + [(f"{r} turn", t) for r, t in turns if r == "user"]:
        keyword = next((k for k in NOVA_RESERVED if text.lstrip().startswith(k)), None)
        if keyword:
            raise Rejected(f"{where} starts with {keyword!r}, a keyword Nova fine-tuning reserves")
    line: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024"}
    if system:
        line["system"] = [{"text": system}]
    line["messages"] = [{"role": role, "content": [{"text": text}]} for role, text in turns]
    return line
