"""What the trainer leaves in the run folder: events.jsonl, metrics.jsonl, loss.png, result.json.

Light to import (no torch): the local backend reads these files with the same names.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ftbroker import clock
from ftbroker.jobs import Artifact, JobStatus, MetricPoint, Result

EVENTS_NAME = "events.jsonl"
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
RESULT_NAME = "result.json"
CHECKPOINTS_DIR = "checkpoints"
OUTPUT_DIR = "output"

EVENT_FIELDS = ("time", "kind", "step", "total_steps", "epoch", "loss", "eval_loss", "tokens_per_s", "eta_s",
                "message", "tracker")  # tracker: {name: where the run is kept}, on "tracker" events
# Terminal kinds: the last line of a finished run is one of these.
FINAL_KINDS = {"done": JobStatus.SUCCEEDED, "error": JobStatus.FAILED, "cancelled": JobStatus.CANCELLED}
# Set (to anything but "") to also print each event on stdout after EVENT_LINE_PREFIX: a run on a machine whose
# folder this one cannot read (a SkyPilot cluster) reports its events through the logs it streams back.
EVENTS_TO_STDOUT = "FTBROKER_EVENTS_TO_STDOUT"
EVENT_LINE_PREFIX = "ftbroker-event "

# log_history key -> MetricPoint name
_METRIC_NAMES = {"loss": "train_loss", "eval_loss": "eval_loss", "eval_mean_token_accuracy": "eval_token_accuracy"}


def now() -> datetime:
    return clock.now()


class EventLog:
    """Appends one JSON object per line to events.jsonl; every line has every field in EVENT_FIELDS."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def emit(self, kind: str, message: str = "", **fields: Any) -> None:
        if not self.enabled:
            return
        unknown = set(fields) - set(EVENT_FIELDS)
        if unknown:
            raise ValueError(f"unknown event fields {sorted(unknown)}")
        line = {name: None for name in EVENT_FIELDS} | fields | {"time": now().isoformat(), "kind": kind,
                                                                  "message": message}
        text = json.dumps(line)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        if os.environ.get(EVENTS_TO_STDOUT):
            print(EVENT_LINE_PREFIX + text, flush=True)

    def first_time(self) -> datetime | None:
        """When this run first started (the first line), so a resumed run keeps its start time."""
        try:
            with self.path.open(encoding="utf-8") as handle:
                return datetime.fromisoformat(json.loads(handle.readline())["time"])
        except (OSError, ValueError, KeyError):
            return None


def metric_points(log_history: Iterable[Mapping[str, Any]]) -> list[MetricPoint]:
    """The train/eval curves from a Trainer's ``state.log_history``."""
    points = []
    for entry in log_history:
        for key, name in _METRIC_NAMES.items():
            if key in entry:
                points.append(MetricPoint(step=entry["step"], name=name, value=float(entry[key]),
                                          epoch=entry.get("epoch"), tokens_seen=entry.get("num_input_tokens_seen")))
    return points


def write_metrics(run_dir: Path, points: Sequence[MetricPoint]) -> None:
    lines = "".join(point.model_dump_json() + "\n" for point in points)
    write_atomic(run_dir / METRICS_NAME, lines)


def plot_loss(run_dir: Path, points: Sequence[MetricPoint]) -> Path | None:
    """loss.png: train and eval loss by step (None when there is nothing to draw)."""
    series = {name: [(p.step, p.value) for p in points if p.name == name] for name in ("train_loss", "eval_loss")}
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    for name, values in series.items():
        if values:
            steps, losses = zip(*values, strict=True)
            axes.plot(steps, losses, marker="o" if name == "eval_loss" else None, label=name.replace("_", " "))
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    axes.grid(alpha=0.3)
    path = run_dir / PLOT_NAME
    figure.savefig(path, dpi=100, bbox_inches="tight")
    pyplot.close(figure)
    return path


def write_result(run_dir: Path, *, job_id: str, status: JobStatus, model: str, started_at: datetime | None,
                 output_model: str | None = None, metrics: Sequence[MetricPoint] = (),
                 trained_tokens: int | None = None, artifacts: Sequence[Artifact] = (), error: str | None = None,
                 raw: Mapping[str, Any] | None = None) -> Result:
    result = Result(id=job_id, backend="local", status=status, model=model, output_model=output_model,
                    metrics=list(metrics), trained_tokens=trained_tokens, started_at=started_at,
                    finished_at=now(), artifacts=list(artifacts), error=error, raw=dict(raw or {}))
    write_atomic(run_dir / RESULT_NAME, result.model_dump_json(indent=2) + "\n")
    return result


def write_atomic(path: Path, text: str) -> None:
    """A reader (the CLI following the run) never sees half a file; the file is private (0600, mkstemp's)."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file of the run folder; None when it is missing, not JSON or not an object."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None
