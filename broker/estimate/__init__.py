"""Pure estimation core: memory (VRAM), compute (FLOPs, throughput, time) and cost. No I/O, no clock.

``ftbroker.estimate`` is both this package and the SDK call::

    import ftbroker
    e = ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="RTX 4090", seq_len=2048, micro_batch=4)
    e = ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="RTX 4090", stack="unsloth")  # another trainer
    e.memory.total, e.fits, e.throughput.tokens_per_s, e.to_json(), e.explain()

The package is made callable (its module class is swapped for a callable one) because ``import
ftbroker.estimate.memory`` rebinds the attribute ``ftbroker.estimate`` to this package: a plain function of
that name in ``ftbroker/__init__.py`` would be shadowed.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

from ftbroker import bounds
from ftbroker.errors import InputError
from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.measured import Corrections
from ftbroker.estimate.setup import LOCAL_TRAINER, Implementation, TrainingSetup
from ftbroker.estimate.stacks import STACKS, Stack, default_sharding, resolve_stack
from ftbroker.estimate.summary import Estimate, summarize
from ftbroker.pricing.catalog import Catalog, GpuSpec, ModelArch

__all__ = ["LOCAL_TRAINER", "STACKS", "Estimate", "Implementation", "Stack", "TrainingSetup", "default_sharding",
           "estimate", "parse_gpu_count", "summarize"]


def parse_gpu_count(text: str) -> tuple[str, int]:
    """``NAME[:COUNT]`` -> (name, count); the one parser of the ``--gpu`` flags (estimate, plan)."""
    name, sep, count = text.strip().rpartition(":")
    if not sep:
        return text.strip(), 1
    if not count.strip().isdigit() or int(count) < 1:
        raise InputError(f"GPU {text!r}: COUNT must be a positive integer (NAME[:COUNT])")
    why = bounds.problem("gpus", int(count))
    if why is not None:
        raise InputError(f"GPU {text!r}: {why}")
    return name.strip(), int(count)


def estimate(model: str | ModelArch, *, method: str, gpu: str | GpuSpec | None = None, n_gpus: int | None = None,
             stack: str | Stack = "ftbroker", seq_len: int | None = None, micro_batch: int | None = None,
             grad_accumulation: int = 1, lora_r: int | None = None, targets: Sequence[str] | None = None,
             lora_dropout: float | None = None, grad_checkpointing: bool | None = None, optimizer: str | None = None,
             precision: str | None = None, sharding: str | None = None, packing: bool | None = None,
             impl: Implementation | None = None, catalog: Catalog | None = None, calibration: Calibration | None = None,
             corrections: Corrections | None = None) -> Estimate:
    """Estimate one setup. ``model``/``gpu`` are catalog names (``gpu`` may be ``NAME:COUNT``), a local model
    folder or config.json for ``model``, or catalog rows. ``stack`` is the trainer that runs it (``STACKS``): every
    setting left None is that trainer's default, so the defaults are those ``ftbroker run`` gives its trainer.
    ``catalog`` defaults to ``load_catalog()``. ``corrections``: the user's measured runs
    (``ftbroker.your_runs.corrections()``), applied to this GPU, method and stack."""
    count = 1
    if isinstance(gpu, str):
        gpu, count = parse_gpu_count(gpu)
    count = n_gpus or count
    if isinstance(model, str) or isinstance(gpu, str):
        if catalog is None:
            from ftbroker.pricing.catalog import load_catalog

            catalog = load_catalog()
        arch = catalog.model(model) if isinstance(model, str) else model
        spec = catalog.gpu(gpu) if isinstance(gpu, str) else gpu
    else:
        arch, spec = model, gpu
    trainer = resolve_stack(stack) if isinstance(stack, str) else stack
    setup = trainer.setup(method, micro_batch=micro_batch, seq_len=seq_len, lora_r=lora_r,
                          targets=None if targets is None else tuple(targets), lora_dropout=lora_dropout,
                          grad_checkpointing=grad_checkpointing, optimizer=optimizer, precision=precision,
                          n_gpus=count, sharding=sharding, grad_accumulation=grad_accumulation, packing=packing,
                          impl=impl)
    if corrections is not None and spec is not None:
        calibration = corrections.calibration(calibration or default_calibration(), spec.name, method, trainer.name)
    return summarize(arch, setup, spec, calibration)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Estimate:
        return estimate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
