"""A training run of a real dataset on one GPU type: the setup that fits, and the wall-clock. Pure.

The local backend's pre-flight and the planner's GPU routes (``ftbroker.backends.local.preflight``) price a run
with these two steps:

* ``fit_setup``: the setup asked for when it fits; else the largest smaller micro-batch that does, its gradient
  accumulation raised to keep the effective batch; else the run does not fit: its peak is the setup asked for,
  and ``longest_seq`` says how long a sequence would fit at micro-batch 1.
* ``dataset_time``: ``training_time`` over the dataset's real tokens, with the padding its real length
  distribution causes at that micro-batch (``padded_tokens``), and the evaluation passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ftbroker.estimate.calibration import Calibration
from ftbroker.estimate.compute import Overheads, Padding, TimeEstimate, training_time
from ftbroker.estimate.memory import MemoryBreakdown, estimate_memory, max_micro_batch, max_seq_len
from ftbroker.estimate.setup import TrainingSetup
from ftbroker.pricing.catalog import GpuSpec, ModelArch


@dataclass(frozen=True)
class Fit:
    setup: TrainingSetup        # the one that fits; when none does, the one asked for
    memory: MemoryBreakdown     # peak per GPU at that setup (the larger of its two phases)
    fits: bool
    longest_seq: int | None = None  # out: the longest sequence that fits at micro-batch 1 (0: none)


def fit_setup(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, *,
              calibration: Calibration | None = None) -> Fit:
    """``setup`` if it fits ``gpu``; else the largest smaller micro-batch that fits, its gradient accumulation
    raised to keep the effective batch (accumulating keeps the gradients alive through the backward pass, so each
    candidate is checked with it); else ``setup`` itself, which does not fit, with its own peak (the figure
    ``ftbroker run`` and ``ftbroker estimate`` give for the same settings) and the longest sequence that would fit
    at micro-batch 1."""
    batch = setup.micro_batch * setup.grad_accumulation
    top = max_micro_batch(arch, gpu, setup, limit=setup.micro_batch, calibration=calibration)
    for micro_batch in range(top, 0, -1):
        candidate = setup.with_(micro_batch=micro_batch, grad_accumulation=math.ceil(batch / micro_batch))
        memory = estimate_memory(arch, candidate, calibration)
        if memory.total <= gpu.memory_gib:
            return Fit(candidate, memory, True)
    smallest = setup.with_(micro_batch=1, grad_accumulation=batch)
    return Fit(setup, estimate_memory(arch, setup, calibration), False,
               max_seq_len(arch, gpu, smallest, calibration=calibration))


def capped_tokens(stats: Any, limit: int | None) -> tuple[int, int, int]:
    """(tokens with every example cut to ``limit``, examples over it, longest example) of a dataset's
    ``TokenStats``, from its length histogram.

    The cut is subtracted from the exact total, so examples under the limit count exactly even where the
    histogram rounds long lengths.
    """
    longest = max(stats.length_counts, default=0)
    if not limit:
        return stats.total, 0, longest
    over = {length: n for length, n in stats.length_counts.items() if length > limit}
    cut = sum((length - limit) * n for length, n in over.items())
    return stats.total - cut, sum(over.values()), longest


@dataclass(frozen=True)
class DatasetTime:
    padding: Padding            # one epoch of the whole file at the chosen micro-batch and sequence cap
    real_tokens: float          # trained per epoch (the held-out share removed), before padding
    processed_tokens: float     # the same, padding included
    eval_tokens: float          # evaluated per evaluation pass, padding included
    time: TimeEstimate | None   # None when the GPU's throughput is unknown


def dataset_time(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, padding: Padding, *, real_tokens: float,
                 epochs: float, eval_tokens: float, eval_passes: int, overheads: Overheads,
                 calibration: Calibration | None = None) -> DatasetTime:
    """Wall-clock of ``epochs`` over a dataset whose batches pad as ``padding`` says (``padded_tokens`` of its
    length distribution at ``setup.micro_batch`` and ``setup.seq_len``).

    ``real_tokens`` are trained per epoch (examples cut to ``setup.seq_len``; the held-out share removed) and
    ``eval_tokens`` read per evaluation pass; both are padded in the same proportion.
    """
    padded_per_real = padding.processed_tokens / padding.real_tokens if padding.real_tokens else 1.0
    processed = real_tokens * padded_per_real
    evaluated = eval_tokens * padded_per_real
    if processed and eval_passes:
        overheads = replace(overheads, eval_fraction=evaluated * eval_passes / (processed * epochs))
    time = training_time(arch, gpu, setup, real_tokens=round(real_tokens), processed_tokens=processed,
                         epochs=epochs, context=padding.mean_batch_len or None, overheads=overheads,
                         calibration=calibration, padding=padding)
    return DatasetTime(padding, real_tokens, processed, evaluated, time)
