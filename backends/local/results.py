"""What a local run folder says: the trainer's events as the job's events, metrics and progress, its result.json
as the job's Result, what it measured, why a trainer that vanished failed, and the job a folder holds
(``recover_job``, for ``ftbroker ledger rebuild``). ``ec2`` and ``skypilot`` read their downloaded run folders and
the trainer's event lines with the same functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ftbroker import clock
from ftbroker.backends.local import process
from ftbroker.backends.local.config import CONFIG_NAME
from ftbroker.backends.local.outputs import EVENT_FIELDS, FINAL_KINDS, RESULT_NAME, read_json
from ftbroker.errors import InputError
from ftbroker.jobs import TRACKER_PREFIX, Event, Job, MetricPoint, Progress, Result
from ftbroker.spec import JobSpec

_LOG_TAIL_LINES = 5


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of ``path`` from byte ``offset``, and the offset after the last complete one."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    events, used = event_lines(chunk)
    return events, offset + used


def event_lines(chunk: bytes) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of ``chunk`` (a piece of events.jsonl), and how many bytes they take.

    A line the trainer is still writing (no newline yet) is left for the next read; a line that is not a JSON
    object becomes a ``log`` event rather than being lost.
    """
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        events.append(obj if isinstance(obj, dict) else {"kind": "log", "message": line.decode(errors="replace")})
    return events, end


def run_result(run_dir: Path, job: Job, **raw: Any) -> Result:
    """The trainer's result.json in ``run_dir`` (itself a Result, its ``raw`` the trainer's own record: measured
    resources, steps, gradient checks), with the ledger's view where the trainer wrote none (killed, never
    started); ``raw`` adds the backend's own record."""
    data = read_json(run_dir / RESULT_NAME) or {}
    base = {"status": job.status, "model": job.model, "output_model": job.output_model,
            "started_at": job.started_at, "finished_at": job.finished_at, "error": job.error,
            "trained_tokens": job.trained_tokens}
    written = {k: v for k, v in data.items() if k in Result.model_fields and v is not None}
    if raw:
        written["raw"] = {**(written.get("raw") or {}), **raw}
    # The ledger's status, id and model name are the job's; the trainer knows the model as a resolved path.
    return Result.model_validate({**base, **written, "id": job.id, "backend": job.backend,
                                  "status": job.status, "model": job.model})


def tracker_records(events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Where the run's experiment trackers keep it, from the trainer's ``tracker`` events, as ``job.remote`` keys."""
    return {f"{TRACKER_PREFIX}{name}": str(where) for e in events if isinstance(e.get("tracker"), dict)
            for name, where in e["tracker"].items()}


def trainer_records(events: Sequence[Mapping[str, Any]], progress: Progress | None) -> dict[str, Any]:
    """The trainer's event lines as the job's events, metrics and progress (carried over from ``progress``)."""
    return {"events": [_event(e) for e in events], "metrics": [m for e in events for m in _metrics(e)],
            "progress": _progress(events, progress)}


def last_event(path: Path, fresh: list[dict[str, Any]]) -> dict[str, Any] | None:
    if fresh:
        return fresh[-1]
    events, _ = read_events(path, max(0, _size(path) - 65536))  # the tail is enough to find the last line
    return events[-1] if events else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return clock.now()


_EVENT_FIELDS = tuple(f for f in EVENT_FIELDS if f not in ("time", "kind", "message", "tracker"))  # the numbers


def _event(raw: Mapping[str, Any]) -> Event:
    kind = str(raw.get("kind") or "log")
    data = {k: v for k, v in raw.items() if k not in ("time", "kind", "message") and v is not None}
    message = raw.get("message") or ", ".join(
        f"{k} {data[k]:.4g}" if isinstance(data[k], float) else f"{k} {data[k]}"
        for k in _EVENT_FIELDS if k in data) or kind
    level = "error" if kind == "error" else "warning" if kind == "warning" else "info"
    return Event(time=_time(raw.get("time")), kind=kind, message=str(message), level=level, data=data)


def _metrics(raw: Mapping[str, Any]) -> list[MetricPoint]:
    step = raw.get("step")
    if not isinstance(step, int):
        return []
    epoch = raw.get("epoch") if isinstance(raw.get("epoch"), int | float) else None
    return [MetricPoint(step=step, name=name, value=float(raw[key]), epoch=epoch)
            for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss"))
            if isinstance(raw.get(key), int | float)]


_LIVE_FIELDS = ("tokens_per_s", "eta_s")  # how a running trainer goes: over when it ends


def _progress(events: Sequence[Mapping[str, Any]], previous: Progress | None) -> Progress | None:
    """The latest known value of each progress field, carried over from the previous poll. A final event ends the
    live ones: no ETA after the end, and the throughput is the run's own (the final event's, as result.json has it),
    not the last progress event's."""
    fields = previous.model_dump() if previous else {}
    for raw in events:
        if raw.get("kind") in FINAL_KINDS:
            fields.update(dict.fromkeys(_LIVE_FIELDS))
        fields.update({k: raw[k] for k in _EVENT_FIELDS if isinstance(raw.get(k), int | float)})
    return Progress.model_validate(fields) if fields else None


_GIB = 2**30


def measured_resources(result: Mapping[str, Any]) -> dict[str, float | str]:
    """What the trainer measured (result.json ``raw.measured``), named to sit beside the estimate in the ledger:
    on a GPU the peak allocated VRAM (what the estimator's ``allocated`` predicts) and reserved VRAM, on the CPU
    the peak resident memory; the non-padding tokens/s and the seconds of this process's training."""
    measured = (result.get("raw") or {}).get("measured")
    if not isinstance(measured, Mapping):
        return {}
    numbers = {k: float(v) for k, v in measured.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out: dict[str, float | str] = {}
    if "peak_memory_bytes" in numbers:
        kind = "peak_vram_allocated" if measured.get("device") == "cuda" else "peak_rss"
        out[f"measured_{kind}_gib"] = round(numbers["peak_memory_bytes"] / _GIB, 3)
    if "cuda_max_reserved_bytes" in numbers:
        out["measured_peak_vram_reserved_gib"] = round(numbers["cuda_max_reserved_bytes"] / _GIB, 3)
    for key in ("tokens_per_s", "train_seconds"):
        if key in numbers:
            out[f"measured_{key}"] = round(numbers[key], 3)
    if measured.get("device") == "cuda" and isinstance(measured.get("gpu"), str):
        out["measured_gpu"] = measured["gpu"]  # torch's name of the card, to check it is the one estimated for
    return out


def failure(run_dir: Path, last: Mapping[str, Any] | None) -> str:
    """Why a trainer that ended without a final event failed: its last event and the tail of its log."""
    described = f"last event: {last.get('kind')}: {_event(last).message}" if last else "no event was written"
    tail = _log_tail(run_dir / "trainer.log")
    return (f"the trainer process ended without finishing (killed, or out of memory?); {described}"
            + (f"; end of {run_dir / 'trainer.log'}:\n{tail}" if tail else ""))


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, _size(path) - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def recover_job(run_dir: Path) -> tuple[JobSpec, dict[str, str] | None]:
    """What a run folder tells of its job, for ``ftbroker ledger rebuild``: the spec, rebuilt from the trainer's
    config.json (its model is the one the trainer loads: a catalog name's repo), and the handles of its trainer
    (None: never launched). The status is then what ``poll`` reads from the folder, as for any job. A folder
    another backend keeps (``OWNER_NAME``) is refused (InputError), saying where that job's state lives."""
    from pydantic import ValidationError

    from ftbroker.backends.local.config import OWNER_NAME, load_config

    owner = read_json(run_dir / OWNER_NAME)
    if owner is not None:  # another backend's job: its state is not in this folder
        raise InputError(f"not a local job: the run folder of {owner.get('backend')} job {run_dir.name}, "
                         f"{owner.get('state') or 'whose state is elsewhere'}")
    config = load_config(run_dir / CONFIG_NAME)
    hyper = {"epochs": math.ceil(config.epochs), "learning_rate": config.learning_rate,
             "micro_batch_size": config.micro_batch_size,
             "gradient_accumulation_steps": config.gradient_accumulation_steps,
             "max_seq_len": config.max_seq_len, "packing": config.packing,
             "gradient_checkpointing": config.gradient_checkpointing, "seed": config.seed,
             "early_stopping_patience": config.early_stopping_patience}
    lora = {"r": config.lora.r, "alpha": math.ceil(config.lora.alpha), "dropout": config.lora.dropout,
            "target_modules": config.lora.target_modules}
    try:
        spec = JobSpec(dataset=config.dataset, validation=config.validation_dataset, model=config.model,
                       method=config.method, backend="local", hyperparameters=hyper, lora=lora,
                       backend_options={"merge": True} if config.merge else {})
    except ValidationError as exc:
        raise InputError(f"{run_dir / CONFIG_NAME} does not make a job spec: {exc}") from None
    return spec, process.trainer_noted(run_dir, ended_too=True)
