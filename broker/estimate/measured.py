"""Corrections from the user's own runs: what their finished jobs measured against what was estimated for them,
per (GPU, method, stack), turned into factors on the estimator's peak memory and step time. PURE: the shell
(``ftbroker.yourruns``) reads the ledger and passes the runs in; ``Corrections.calibration`` hands the factors to
every estimate of that GPU, method and stack (``Calibration.your_memory`` / ``your_time``).

A run counts when the trainer measured it on the GPU it was estimated for (a CUDA peak and tokens/s; a run on the
CPU, or on another card than the one planned for, says nothing about the estimate). Per figure:

    ratio_i   = measured_i / estimated_i            memory: allocated peak; time: estimated / measured tokens/s
    factor    = exp(w * ln(median ratio)),  w = n / (n + PRIOR_RUNS),  bounded to [1/MAX_FACTOR, MAX_FACTOR]

The median, so one odd run (a busy machine, a crash near the end) cannot drag the figure; shrunk toward 1 as if
PRIOR_RUNS more runs had matched the estimate exactly, so one run moves it a third of the way and ten runs five
sixths; bounded, so a broken measurement can at most halve or double a figure. The estimate a run recorded is the
raw one: a correction already applied to its quote is divided out first, so corrections never compound.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ftbroker.estimate.calibration import Calibration

PRIOR_RUNS = 2
MAX_FACTOR = 2.0

# The keys a job's ledger ``resources`` hold for this (besides the estimated_* and measured_* figures).
GPU_KEY = "estimated_gpu"  # the catalog GPU the estimate was for
STACK_KEY = "stack"  # the trainer the estimate was for (``ftbroker.estimate.stacks``)
APPLIED_MEMORY = "applied_memory_factor"  # a correction the quote already carried
APPLIED_TIME = "applied_time_factor"


@dataclass(frozen=True)
class MeasuredRun:
    """One finished job's estimate beside its measurement, as ratios measured / estimated (None: not measured)."""

    job_id: str
    gpu: str
    method: str
    stack: str
    memory_ratio: float | None
    time_ratio: float | None


def measured_run(job_id: str, method: str, resources: Mapping[str, Any], measured_on: str | None) -> MeasuredRun | None:
    """The run a job's ``resources`` describe, or None when it says nothing about its estimate: no GPU estimate, no
    CUDA measurement (it ran on the CPU), or measured on another GPU (``measured_on``: the catalog name of the card
    the trainer saw, None when unknown) than the one estimated for."""
    gpu, stack = resources.get(GPU_KEY), resources.get(STACK_KEY)
    if not isinstance(gpu, str) or not isinstance(stack, str) or "measured_peak_vram_allocated_gib" not in resources:
        return None
    if measured_on is not None and measured_on != gpu:
        return None
    memory = _ratio(resources.get("measured_peak_vram_allocated_gib"),
                    _number(resources.get("estimated_allocated_gib")) / _number(resources.get(APPLIED_MEMORY), 1.0))
    time = _ratio(_number(resources.get("estimated_tokens_per_s")) * _number(resources.get(APPLIED_TIME), 1.0),
                  resources.get("measured_tokens_per_s"))
    if memory is None and time is None:
        return None
    return MeasuredRun(job_id, gpu, method, stack, memory, time)


def _number(value: Any, default: float = math.nan) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _ratio(top: Any, bottom: Any) -> float | None:
    top, bottom = _number(top), _number(bottom)
    return top / bottom if top > 0 and bottom > 0 else None  # NaN compares False: a missing figure gives None


def factor(ratios: Iterable[float]) -> float:
    """The correction for these ratios (measured / estimated): see the module docstring."""
    ratios = list(ratios)
    if not ratios:
        return 1.0
    weight = len(ratios) / (len(ratios) + PRIOR_RUNS)
    shrunk = math.exp(weight * math.log(statistics.median(ratios)))
    return min(MAX_FACTOR, max(1 / MAX_FACTOR, shrunk))


@dataclass(frozen=True)
class Correction:
    """What the user's runs of one GPU, method and stack say: a factor on peak memory and on time."""

    gpu: str
    method: str
    stack: str
    memory: float = 1.0
    memory_runs: int = 0
    time: float = 1.0
    time_runs: int = 0

    @property
    def runs(self) -> int:
        return max(self.memory_runs, self.time_runs)

    def describe(self) -> str:
        """"calibrated on 3 of your runs: +6% memory, -18% time"."""
        parts = [f"{(f - 1) * 100:+.0f}% {what}" for f, n, what in ((self.memory, self.memory_runs, "memory"),
                                                                   (self.time, self.time_runs, "time")) if n]
        return f"calibrated on {self.runs} of your run{'s' if self.runs != 1 else ''}: {', '.join(parts)}"

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "method": self.method, "stack": self.stack, "runs": self.runs,
                "memory_factor": round(self.memory, 4), "memory_runs": self.memory_runs,
                "time_factor": round(self.time, 4), "time_runs": self.time_runs, "said": self.describe()}


@dataclass(frozen=True)
class Corrections:
    """Every (GPU, method, stack) the user has measured runs of; empty: the estimator as shipped."""

    table: Mapping[tuple[str, str, str], Correction] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: Iterable[MeasuredRun]) -> Corrections:
        grouped: dict[tuple[str, str, str], list[MeasuredRun]] = {}
        for run in runs:
            grouped.setdefault((run.gpu, run.method, run.stack), []).append(run)
        table = {}
        for key, group in grouped.items():
            memory = [r.memory_ratio for r in group if r.memory_ratio is not None]
            time = [r.time_ratio for r in group if r.time_ratio is not None]
            table[key] = Correction(*key, memory=factor(memory), memory_runs=len(memory), time=factor(time),
                                    time_runs=len(time))
        return cls(table)

    def get(self, gpu: str, method: str, stack: str) -> Correction | None:
        return self.table.get((gpu, method, stack))

    def calibration(self, base: Calibration, gpu: str, method: str, stack: str) -> Calibration:
        """``base`` with the user's correction for this GPU, method and stack (``base`` itself when there is none)."""
        found = self.get(gpu, method, stack)
        if found is None:
            return base
        return replace(base, your_memory=found.memory, your_time=found.time, your_runs=found.describe())

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.table.values()]
