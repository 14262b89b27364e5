"""Pure estimation core: memory (VRAM), compute (FLOPs, throughput, time) and cost. No I/O, no clock.

``ftbroker.estimate`` is both this package and the SDK call::

    import ftbroker
    e = ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="RTX 4090", seq_len=2048, micro_batch=4)
    e.memory.total, e.fits, e.throughput.tokens_per_s, e.to_json(), e.explain()

The package is made callable (its module class is swapped for a callable one) because ``import
ftbroker.estimate.memory`` rebinds the attribute ``ftbroker.estimate`` to this package: a plain function of
that name in ``ftbroker/__init__.py`` would be shadowed.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

from ftbroker import bounds
from ftbroker.errors import InputError
from ftbroker.estimate.calibration import Calibration
from ftbroker.estimate.setup import LOCAL_TRAINER, Implementation, TrainingSetup
from ftbroker.estimate.summary import Estimate, summarize
from ftbroker.pricing.catalog import GpuSpec, ModelArch

__all__ = ["Estimate", "Implementation", "TrainingSetup", "estimate", "parse_gpu_count", "summarize"]


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


def default_sharding(method: str, n_gpus: int) -> str:
    """What the local backend launches on several GPUs: DDP for adapters, FSDP for full fine-tuning."""
    if n_gpus == 1:
        return "none"
    return "fsdp" if method == "full" else "ddp"


def estimate(model: str | ModelArch, *, method: str, gpu: str | GpuSpec | None = None, n_gpus: int | None = None,
             seq_len: int = 2048, micro_batch: int = 1, lora_r: int = 16,
             targets: Sequence[str] = ("all-linear",), grad_checkpointing: bool = True, optimizer: str = "adamw",
             precision: str = "bf16", sharding: str | None = None, impl: Implementation = LOCAL_TRAINER,
             catalog=None, calibration: Calibration | None = None) -> Estimate:
    """Estimate one setup. ``model``/``gpu`` are catalog names (``gpu`` may be ``NAME:COUNT``), a local model
    folder or config.json for ``model``, or catalog rows. ``catalog`` defaults to ``load_catalog()``."""
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
    setup = TrainingSetup(method=method, micro_batch=micro_batch, seq_len=seq_len, lora_r=lora_r,
                          targets=tuple(targets), grad_checkpointing=grad_checkpointing, optimizer=optimizer,
                          precision=precision, n_gpus=count,
                          sharding=sharding or default_sharding(method, count), impl=impl)
    return summarize(arch, setup, spec, calibration)


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Estimate:
        return estimate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
