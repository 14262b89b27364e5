"""The local backend's pre-flight: will this job fit the GPU, how long will it take, what will the power cost.

PURE (no I/O, no clock, no torch): the trainer's own config (``TrainConfig``, what will really run), the model's
shape, the GPUs planned for and the dataset's token counts in; a ``Quote`` out. The estimator
(``ftbroker.estimate``) is told what the trainer does: its precision per method (``config.GPU_PRECISION``), the
micro-batch, sequence length, gradient checkpointing, accumulation, packing and LoRA shape of the config, AdamW
(the trainer's optimizer), and the longest batch the data will form.

When the job does not fit, the reason names concrete changes with the numbers the estimator says fit (a method,
gradient checkpointing, the largest micro-batch, the longest sequence), each with its estimated peak.
With no GPU the trainer runs on the CPU: nothing to compare, no time or power estimate, and the quote says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ftbroker.backends.base import Quote, Verdict
from ftbroker.backends.local.config import GPU_PRECISION, TrainConfig
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate import Estimate, TrainingSetup, default_sharding, summarize
from ftbroker.estimate.compute import Overheads, padded_tokens, training_time
from ftbroker.estimate.cost import local_cost
from ftbroker.estimate.memory import max_micro_batch
from ftbroker.pricing.catalog import GpuSpec, ModelArch

BACKEND = "local"
# backend_options.distributed -> the estimator's sharding
SHARDING = {"auto": None, "ddp": "ddp", "fsdp": "fsdp", "deepspeed": "zero3"}

CPU_NOTE = ("no GPU found: the trainer runs on the CPU in fp32, which suits only small models; there is no time or "
            "electricity estimate for CPU training (so --max-cost cannot be checked). To plan for a GPU this "
            "machine does not show, declare it: --gpu NAME[:COUNT] or FTBROKER_GPU")


def training_setup(config: TrainConfig, *, n_gpus: int, seq_len: int, distributed: str = "auto") -> TrainingSetup:
    """``config`` on ``n_gpus`` GPUs as the estimator sees it, with the multi-GPU strategy the backend launches."""
    # one GPU: the trainer runs without accelerate, whatever strategy several GPUs would get
    sharding = (SHARDING[distributed] or default_sharding(config.method, n_gpus)) if n_gpus > 1 else "none"
    return config.training_setup("bf16", seq_len=seq_len, n_gpus=n_gpus, sharding=sharding)


def peak_seq_len(config: TrainConfig, stats: Any | None) -> int:
    """The longest row a micro-batch will hold: max_seq_length when packing, else the longest example (cut)."""
    if config.packing or stats is None:
        return config.max_seq_length
    return max(1, min(config.max_seq_length, math.ceil(stats.per_example.max)))


def local_quote(config: TrainConfig, arch: ModelArch | None, gpus: Sequence[GpuSpec], stats: Any | None = None,
                *, distributed: str = "auto", notes: Sequence[str] = ()) -> Quote:
    """The quote of training ``config`` on ``gpus`` (empty: the CPU). ``stats`` is the dataset's
    ``ftbroker.data.TokenStats`` counted with the model's tokenizer (None: lengths unknown, the worst case
    max_seq_length is assumed and no time is estimated); ``arch`` None: the model's shape is unknown."""
    notes = list(notes)
    if stats is not None and stats.over_limit:
        notes.append(f"{stats.over_limit} examples are longer than max_seq_len {config.max_seq_length} tokens "
                     "and will be cut at the end")
    if not gpus:
        return Quote(backend=BACKEND, hardware="CPU", warnings=(*notes, CPU_NOTE), breakdown={"device": "cpu"})
    gpu = min(gpus, key=lambda g: g.memory_gib)
    hardware = f"{len(gpus)}x {gpu.name}"
    if arch is None:
        return Quote(backend=BACKEND, hardware=hardware, warnings=tuple(notes))
    try:
        setup = training_setup(config, n_gpus=len(gpus), seq_len=peak_seq_len(config, stats),
                               distributed=distributed)
    except UnknownNameError as exc:  # e.g. LoRA targets of an architecture the estimator does not model
        return Quote(backend=BACKEND, hardware=hardware, warnings=(*notes, f"no memory estimate: {exc}"))
    est = summarize(arch, setup, gpu)
    verdict, reason = (Verdict.OK, None) if est.fits else (Verdict.DOES_NOT_FIT, not_fit_reason(est, config))
    breakdown: dict[str, Any] = {"estimate": est.to_json()}
    resources = {"estimated_peak_vram_gib": round(est.memory.total, 3),
                 "estimated_allocated_gib": round(est.memory.allocated, 3)}
    hours = cost = cost_high = None
    timing = _time(config, arch, gpu, setup, stats, notes)
    if timing is not None:
        time_est, real_share = timing
        hours = time_est.hours.expected
        resources["estimated_hours"] = hours
        tokens_per_s = est.throughput.tokens_per_s.expected if est.throughput and est.throughput.tokens_per_s else None
        if tokens_per_s:  # the trainer measures non-padding tokens/s: estimate the same
            resources["estimated_tokens_per_s"] = round(tokens_per_s * real_share, 1)
        breakdown["time_s"] = {name: part.to_json(0) for name, part in time_est.breakdown.items()}
        try:
            power = local_cost(time_est.hours, gpu, len(gpus))
        except InputError as exc:
            notes.append(f"no electricity estimate: {exc}")
        else:
            cost, cost_high = power.usd.expected, power.usd.high
            breakdown["electricity"] = {**power.breakdown, "usd": power.usd.to_json()}
    return Quote(backend=BACKEND, verdict=verdict, reason=reason, cost_usd=cost, cost_high_usd=cost_high,
                 hours=hours, peak_vram_gib=est.memory.total, hardware=hardware, warnings=tuple(notes),
                 breakdown=breakdown, resources=resources)


def _time(config: TrainConfig, arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, stats: Any | None,
          notes: list[str]):
    """(time estimate, share of processed tokens that are real) of the whole run; None when it cannot be made."""
    if stats is None:
        notes.append("no time estimate: the dataset's token lengths are unknown")
        return None
    # The held-out share (eval_fraction of the examples, when no validation file is given) is not trained on.
    train_share = 1.0 if config.validation_dataset else 1.0 - config.eval_fraction
    batching = "packed" if config.packing or config.padding_free else "random"
    padding = padded_tokens(stats.length_counts, config.micro_batch_size, config.max_seq_length, batching=batching)
    if not padding.processed_tokens:
        return None
    eval_share = config.eval_fraction / train_share if config.has_eval and not config.validation_dataset else 0.0
    estimate = training_time(
        arch, gpu, setup, real_tokens=round(padding.real_tokens * train_share),
        processed_tokens=padding.processed_tokens * train_share, epochs=config.epochs,
        context=None if batching == "packed" else padding.mean_batch_len,
        overheads=Overheads(checkpoints=math.ceil(config.epochs), eval_fraction=eval_share), padding=padding)
    if estimate is None:
        notes.append(f"no time or electricity estimate: the catalog has no TFLOPS figure for {gpu.name}")
        return None
    return estimate, padding.real_tokens / padding.processed_tokens


CHEAPER = {"full": ("lora", "qlora"), "lora": ("qlora",), "qlora": ()}


def not_fit_reason(est: Estimate, config: TrainConfig) -> str:
    """Why ``est`` does not fit its GPU, and what would fit, each with its estimated peak: one change at a time
    (a cheaper method, gradient checkpointing, the largest micro-batch, the longest sequence); if none is enough,
    the first method, from the one asked for down to QLoRA, that fits with gradient checkpointing and the largest
    micro-batch that fits. A smaller micro-batch keeps the effective batch through gradient accumulation."""
    setup, gpu = est.setup, est.gpu
    tips = []

    def peak(setup_: TrainingSetup) -> float:
        return summarize(est.arch, setup_).memory.total

    def with_method(method: str) -> TrainingSetup:  # the trainer's precision follows the method
        return setup.with_(method=method, precision=GPU_PRECISION[method])

    def batch_flags(setup_: TrainingSetup) -> str:
        return f"--micro-batch {setup_.micro_batch} --grad-accum {setup_.grad_accumulation}"

    for method in CHEAPER[setup.method]:
        if (gib := peak(with_method(method))) <= gpu.memory_gib:
            tips.append(f"--method {method} ({gib:.1f} GiB)")
            break
    if not setup.grad_checkpointing and (gib := peak(setup.with_(grad_checkpointing=True))) <= gpu.memory_gib:
        tips.append(f"--grad-checkpointing ({gib:.1f} GiB)")
    if (smaller := _smaller_batch(est, setup)) is not None:
        tips.append(f"{batch_flags(smaller)} (the same effective batch; {peak(smaller):.1f} GiB)")
    if 0 < (est.max_seq_len or 0) < setup.seq_len:
        gib = peak(setup.with_(seq_len=est.max_seq_len))
        tips.append(f"--max-seq-len {est.max_seq_len} (now {setup.seq_len}; longer examples are cut; {gib:.1f} GiB)")
    if not tips:
        for method in (setup.method, *CHEAPER[setup.method]):
            candidate = with_method(method).with_(grad_checkpointing=True)
            fitting = candidate if peak(candidate) <= gpu.memory_gib else _smaller_batch(est, candidate)
            if fitting is not None:
                flags = ([f"--method {method}"] if method != setup.method else []) + \
                    (["--grad-checkpointing"] if not setup.grad_checkpointing else []) + \
                    ([batch_flags(fitting)] if fitting.micro_batch != setup.micro_batch else [])
                tips.append(f"{' '.join(flags)} together ({peak(fitting):.1f} GiB)")
                break
        else:
            smallest = candidate.with_(micro_batch=1)
            tips.append(f"a GPU with more memory or more GPUs (even QLoRA with gradient checkpointing at micro-batch "
                        f"1 needs {peak(smallest):.1f} GiB)")
    on = f"{setup.n_gpus}x {gpu.name}" if setup.n_gpus > 1 else gpu.name
    return (f"needs about {est.memory.total:.1f} GiB per GPU ({est.memory.phase} peak), {on} has "
            f"{gpu.memory_gib:.1f} GiB; try {'; or '.join(tips)}; or --force to run anyway")


def _smaller_batch(est: Estimate, setup: TrainingSetup) -> TrainingSetup | None:
    """``setup`` with the largest smaller micro-batch that fits, its gradient accumulation raised to keep the
    effective batch (accumulating keeps the gradients alive through the backward pass: checked with it)."""
    batch = setup.micro_batch * setup.grad_accumulation
    top = min(max_micro_batch(est.arch, est.gpu, setup, limit=setup.micro_batch), setup.micro_batch - 1)
    for micro_batch in range(top, 0, -1):
        smaller = setup.with_(micro_batch=micro_batch, grad_accumulation=math.ceil(batch / micro_batch))
        if summarize(est.arch, smaller).memory.total <= est.gpu.memory_gib:
            return smaller
    return None
