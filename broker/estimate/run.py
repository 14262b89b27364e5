"""A training run of a real dataset on one GPU type: the setup that fits, and the wall-clock. Pure.

The planner prices every GPU route with these two steps:

* ``fit_setup``: the micro-batch and checkpointing the run would use. The largest micro-batch up to the
  trainer's default that fits without gradient checkpointing (fastest: no recompute); else the largest with
  checkpointing; else the run does not fit, and ``longest_seq`` says how long a sequence would.
* ``dataset_time``: ``training_time`` over the dataset's real tokens, with the padding its real length
  distribution causes at that micro-batch (``padded_tokens``: random batches, each padded to its longest
  example), and the evaluation passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftbroker.estimate.calibration import Calibration
from ftbroker.estimate.compute import Overheads, Padding, TimeEstimate, training_time
from ftbroker.estimate.memory import MemoryBreakdown, estimate_memory, max_micro_batch, max_seq_len
from ftbroker.estimate.setup import TrainingSetup
from ftbroker.pricing.catalog import GpuSpec, ModelArch


@dataclass(frozen=True)
class Fit:
    setup: TrainingSetup        # with the micro-batch and checkpointing chosen (micro-batch 1 + checkpointing if out)
    memory: MemoryBreakdown     # peak per GPU at that setup
    fits: bool
    longest_seq: int | None = None  # out: the longest sequence that fits at micro-batch 1 with checkpointing


def fit_setup(arch: ModelArch, gpu: GpuSpec, base: TrainingSetup, *, max_batch: int,
              calibration: Calibration) -> Fit:
    """The setup a run of ``base`` (its seq_len: the longest sequence it will see) would use on ``gpu``."""
    for checkpointing in (False, True):
        setup = base.with_(grad_checkpointing=checkpointing)
        batch = max_micro_batch(arch, gpu, setup, limit=max_batch, calibration=calibration)
        if batch:
            setup = setup.with_(micro_batch=batch)
            return Fit(setup, estimate_memory(arch, setup, calibration), True)
    setup = base.with_(grad_checkpointing=True, micro_batch=1)
    return Fit(setup, estimate_memory(arch, setup, calibration), False,
               max_seq_len(arch, gpu, setup, calibration=calibration))


@dataclass(frozen=True)
class DatasetTime:
    padding: Padding            # one epoch of the whole file at the chosen micro-batch and sequence cap
    real_tokens: float          # trained per epoch (the held-out share removed), before padding
    processed_tokens: float     # the same, padding included
    eval_tokens: float          # evaluated per evaluation pass, padding included
    time: TimeEstimate | None   # None when the GPU's throughput is unknown


def dataset_time(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, padding: Padding, *, real_tokens: float,
                 epochs: int, eval_tokens: float, eval_passes: int, overheads: Overheads,
                 calibration: Calibration) -> DatasetTime:
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
