"""The local trainer's runs, estimated: the pre-flight of ``ftbroker run --backend local`` and every GPU route of
a plan (``ftbroker.backends.gpu_routes``: your GPU, and a rented one running the same trainer) take one path,
``gpu_run``, so the same job gets the same peak VRAM, hours and cost from both.

PURE (no I/O, no clock, no torch). In: the trainer's own config (``TrainConfig``, what will really run; a plan
builds it from its flags with the same ``train_config`` as ``run``), the model's shape, the GPUs (``local_gpus``:
declared or found, resolved to catalog rows) and the dataset's token counts. The steps:

* ``TrainConfig.training_setup``: the one mapping from the trainer's settings to the estimator's ``TrainingSetup``;
* ``trainer_data``: the dataset as the trainer reads it (examples cut at max_seq_len, the held-out share, the
  evaluation passes, one checkpoint per epoch, the padding of its batches), whatever the GPU;
* ``gpu_run``: on one GPU type and count, the setup that runs (a plan lowers a micro-batch that does not fit,
  ``ftbroker.estimate.run.fit_setup``, the effective batch kept; the pre-flight takes the user's and, when it does
  not fit, suggests what does), its peak memory and its wall-clock (``TrainerData.time``, ``dataset_time``);
* ``electricity`` (``local_cost``): the power a local run draws.

With no GPU the trainer runs on the CPU: nothing to compare, no time or power estimate, and the quote says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from ftbroker.backends.base import Gpu, Quote, Verdict
from ftbroker.backends.local.config import TrainConfig
from ftbroker.errors import UnknownNameError
from ftbroker.estimate import Estimate, parse_gpu_count, summarize
from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.compute import Overheads, Padding, TimeEstimate, padded_tokens
from ftbroker.estimate.cost import CostEstimate, local_cost
from ftbroker.estimate.measured import APPLIED_MEMORY, APPLIED_TIME, GPU_KEY, STACK_KEY, Corrections
from ftbroker.estimate.memory import MemoryBreakdown, estimate_memory
from ftbroker.estimate.run import DatasetTime, Fit, capped_tokens, dataset_time, fit_setup
from ftbroker.estimate.setup import TrainingSetup
from ftbroker.estimate.stacks import FTBROKER, Stack
from ftbroker.pricing.catalog import GpuSpec, ModelArch

BACKEND = "local"

CPU_NOTE = ("no GPU found: the trainer runs on the CPU in fp32, which suits only small models; there is no time or "
            "electricity estimate for CPU training (so --max-cost cannot be checked). To plan for a GPU this "
            "machine does not show, declare it: --gpu NAME[:COUNT] or FTBROKER_GPU")


# --- which GPUs -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalGpus:
    """The GPUs a local run is planned for."""

    gpu: GpuSpec  # the catalog's row; for GPUs found, with the real memory of the smallest card
    count: int
    source: str  # who named them: "--gpu", "FTBROKER_GPU" or "detected"
    note: str = ""  # e.g. a card the catalog does not know

    @property
    def hardware(self) -> str:
        return f"{self.count}x {self.gpu.name}"


def local_gpus(catalog: Any, found: Sequence[Gpu], declared: str | None = None, *, declared_by: str = "--gpu",
               use: int | None = None, today: date) -> LocalGpus | None:
    """The GPUs to plan for, for ``ftbroker plan`` and ``ftbroker run`` alike: ``declared`` (``NAME[:COUNT]``, a
    catalog GPU: UnknownNameError otherwise), else those ``found`` (nvidia-smi), planned as the smallest of them
    with its real memory (a card the catalog does not know: with its memory alone, so no time or cost). ``use``
    caps the count (the local backend's ``gpus`` option); None: no GPU, the CPU trains."""
    if declared:
        name, count = parse_gpu_count(declared)
        row, source, note = catalog.gpu(name), declared_by, ""
    else:
        if not found:
            return None
        count, smallest = len(found), min(found, key=lambda g: g.memory_gib)
        source, note = "detected", ""
        try:
            row = catalog.gpu(smallest.name)
        except UnknownNameError:
            row = GpuSpec(name=smallest.name, memory_gib=smallest.memory_gib, bf16_tflops=None, fp16_tflops=None,
                          bandwidth_gbps=0.0, tdp_w=None, supports_bf16=True,
                          source="nvidia-smi on this machine (not in the catalog)", as_of=today)
            note = (f"{smallest.name} ({smallest.memory_gib:g} GiB) is not in the catalog: planned with its memory "
                    "alone (no time or cost); name a catalog GPU with --gpu NAME[:COUNT], or add it to the catalog")
        row = replace(row, memory_gib=smallest.memory_gib)  # what this card really has
    count = count if use is None else min(count, use)
    return LocalGpus(row, count, source, note) if count else None


# --- the dataset as the trainer reads it -----------------------------------------------------------------------

@dataclass(frozen=True)
class TrainerData:
    """A dataset as the trainer reads it under one config, whatever the GPU and the method."""

    stats: Any  # ftbroker.data.report.TokenStats, counted with the model's tokenizer
    max_len: int  # max_seq_len: longer examples are cut to it (and packed rows are this long)
    seq_len: int  # the longest row a micro-batch holds: max_len when packing, else the longest example (cut)
    batching: str  # "packed" (packing or padding-free) | "random" (each micro-batch padded to its longest)
    real_tokens: float  # trained per epoch: examples cut, the held-out share removed
    eval_tokens: float  # read per evaluation pass, before padding
    eval_passes: int
    epochs: float
    checkpoints: int
    cut: int  # examples longer than max_len
    longest: int
    evaluation: str  # what is evaluated, for the assumptions
    _paddings: dict[int, Padding] = field(default_factory=dict, compare=False, repr=False)

    def padding(self, micro_batch: int) -> Padding:
        """One epoch of the whole file in micro-batches of ``micro_batch`` (per GPU)."""
        if micro_batch not in self._paddings:
            self._paddings[micro_batch] = padded_tokens(self.stats.length_counts, micro_batch, self.max_len,
                                                        batching=self.batching)
        return self._paddings[micro_batch]

    def time(self, arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, overheads: Overheads = Overheads(),
             calibration: Calibration | None = None) -> DatasetTime:
        return dataset_time(arch, gpu, setup, self.padding(setup.micro_batch), real_tokens=self.real_tokens,
                            epochs=self.epochs, eval_tokens=self.eval_tokens, eval_passes=self.eval_passes,
                            overheads=replace(overheads, checkpoints=self.checkpoints), calibration=calibration)

    def cut_note(self, rule: str) -> str:
        return (f"{self.cut:,} example(s) longer than {self.max_len:,} tokens are cut to it ({rule}); "
                f"longest {self.longest:,}")

    def context_reason(self, arch: ModelArch) -> str:
        """Why ``arch`` cannot train on these rows: examples (as cut) longer than its context; "" if none."""
        over = sum(n for length, n in self.stats.length_counts.items()
                   if min(length, self.max_len) > arch.max_position_embeddings)
        return (f"{over:,} example(s) exceed the {arch.max_position_embeddings:,}-token context of {arch.name} "
                f"(longest {self.longest:,}): cut them with --max-seq-len" if over else "")


def trainer_data(config: TrainConfig, stats: Any, validation: Any | None = None) -> TrainerData:
    """``stats`` (the training file's ``TokenStats``; ``validation``: the validation file's, if any) as the trainer
    under ``config`` reads them: evaluated on the validation file, else on ``eval_fraction`` of the examples held
    out (counted as that share of the tokens); once before the first step (``eval_at_start``) and after every
    epoch; one checkpoint per epoch (``save_steps`` 0: no JobSpec sets it)."""
    max_len = config.max_seq_len
    longest = math.ceil(stats.per_example.max)
    packed = config.packing or config.padding_free
    trained, cut, _ = capped_tokens(stats, max_len)
    if config.validation_dataset:
        real = float(trained)
        evaluated = float(capped_tokens(validation, max_len)[0]) if validation is not None else 0.0
        evaluation = ("evaluation on the validation file" if validation is not None else
                      "the validation file's length is unknown: its evaluation is not timed")
    else:
        share = config.eval_fraction
        real, evaluated = trained * (1 - share), trained * share
        evaluation = (f"{share:.0%} of the examples held out for evaluation (the local trainer's eval_fraction)"
                      if share else "no evaluation (eval_fraction 0)")
    passes = math.ceil(config.epochs) + (1 if config.eval_at_start else 0) if config.has_eval else 0
    return TrainerData(stats, max_len, max_len if packed else max(1, min(max_len, longest)),
                       "packed" if packed else "random", real, evaluated, passes, config.epochs,
                       math.ceil(config.epochs), cut, longest, evaluation)


# --- one run on one GPU type ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuRun:
    """A job on ``count`` GPUs of one type: the setup it runs with, its peak memory, and its wall-clock."""

    gpu: GpuSpec
    count: int
    fit: Fit  # the setup that runs and its peak memory per GPU
    time: DatasetTime | None  # None: a lowered run that does not fit even at micro-batch 1, or no lengths known
    calibration: Calibration  # the estimator's constants it was estimated with (the user's runs included)


def gpu_run(arch: ModelArch, config: TrainConfig, data: TrainerData | None, gpu: GpuSpec, count: int,
            overheads: Overheads = Overheads(), *, fit_batch: bool = True, distributed: str = "auto",
            calibration: Calibration | None = None, stack: Stack = FTBROKER) -> GpuRun:
    """``config`` trained on ``data`` with ``count`` x ``gpu``. ``fit_batch``: a micro-batch the GPU cannot hold
    is lowered, the effective batch kept (a plan's route says what to run with); else the config's own setup is
    estimated as it is, and timed even when it does not fit (``--force`` runs it). ``data`` None: the lengths are
    unknown, max_seq_len is assumed and nothing is timed. ``stack``: the trainer that runs ``config``."""
    setup = config.training_setup(seq_len=data.seq_len if data else config.max_seq_len, n_gpus=count,
                                  distributed=distributed, stack=stack)
    calibration = calibration or default_calibration()
    if fit_batch:
        fit = fit_setup(arch, gpu, setup, calibration=calibration)
    else:
        memory = estimate_memory(arch, setup, calibration)
        fit = Fit(setup, memory, memory.total <= gpu.memory_gib)
    timed = data is not None and (fit.fits or not fit_batch)
    return GpuRun(gpu, count, fit, data.time(arch, gpu, fit.setup, overheads, calibration) if timed else None,
                  calibration)


# --- what fits, and what to change when it does not -------------------------------------------------------------

def shortfall(memory: MemoryBreakdown, gpu: GpuSpec, n_gpus: int) -> str:
    on = f"{n_gpus}x {gpu.name}" if n_gpus > 1 else gpu.name
    return f"needs about {memory.total:.1f} GiB per GPU ({memory.phase} peak), {on} has {gpu.memory_gib:g} GiB"


def no_fit_reason(fit: Fit, gpu: GpuSpec) -> str:
    """Why a run is out at its micro-batch and every smaller one (``fit_setup`` found nothing): its own peak, and the
    longest sequence that would fit at micro-batch 1."""
    s = fit.setup
    smaller = " or any smaller" if s.micro_batch > 1 else ""
    longest = (f"the longest sequence that fits at micro-batch 1 is {fit.longest_seq:,} tokens" if fit.longest_seq
               else "the weights, gradients and optimizer states alone do not fit")
    return (f"does not fit at micro-batch {s.micro_batch}{smaller} with{'' if s.grad_checkpointing else 'out'} "
            f"checkpointing and {s.seq_len:,} tokens: {shortfall(fit.memory, gpu, s.n_gpus)}; {longest}")


def batch_flags(setup: TrainingSetup) -> str:
    return f"--micro-batch {setup.micro_batch} --grad-accum {setup.grad_accumulation}"


CHEAPER = {"full": ("lora", "qlora"), "lora": ("qlora",), "qlora": ()}


def not_fit_reason(est: Estimate, config: TrainConfig, distributed: str = "auto") -> str:
    """Why ``est`` (of ``config``) does not fit its GPU, and what would fit, each with its estimated peak: one
    change at a time (a cheaper method, gradient checkpointing, the largest micro-batch, the longest sequence);
    if none is enough, the first method, from the one asked for down to QLoRA, that fits with gradient
    checkpointing and the largest micro-batch that fits. A smaller micro-batch keeps the effective batch through
    gradient accumulation."""
    setup, gpu = est.setup, est.gpu
    tips = []

    def with_(**changes) -> TrainingSetup:  # a changed config, through the one mapping
        return config.model_copy(update=changes).training_setup(seq_len=setup.seq_len, n_gpus=setup.n_gpus,
                                                                distributed=distributed)

    def peak(setup_: TrainingSetup) -> float:
        return summarize(est.arch, setup_).memory.total

    for method in CHEAPER[setup.method]:
        if (gib := peak(with_(method=method))) <= gpu.memory_gib:
            tips.append(f"--method {method} ({gib:.1f} GiB)")
            break
    if not setup.grad_checkpointing and (gib := peak(with_(gradient_checkpointing=True))) <= gpu.memory_gib:
        tips.append(f"--grad-checkpointing ({gib:.1f} GiB)")
    if (smaller := fit_setup(est.arch, gpu, setup)).fits:
        tips.append(f"{batch_flags(smaller.setup)} (the same effective batch; {smaller.memory.total:.1f} GiB)")
    if 0 < (est.max_seq_len or 0) < setup.seq_len:
        gib = peak(setup.with_(seq_len=est.max_seq_len))
        tips.append(f"--max-seq-len {est.max_seq_len} (now {setup.seq_len}; longer examples are cut; {gib:.1f} GiB)")
    if not tips:
        for method in (setup.method, *CHEAPER[setup.method]):
            fit = fit_setup(est.arch, gpu, with_(method=method, gradient_checkpointing=True))
            if fit.fits:
                flags = ([f"--method {method}"] if method != setup.method else []) + \
                    (["--grad-checkpointing"] if not setup.grad_checkpointing else []) + \
                    ([batch_flags(fit.setup)] if fit.setup.micro_batch != setup.micro_batch else [])
                tips.append(f"{' '.join(flags)} together ({fit.memory.total:.1f} GiB)")
                break
        else:
            tips.append(f"a GPU with more memory or more GPUs (even QLoRA with gradient checkpointing at micro-batch "
                        f"1 needs {fit.memory.total:.1f} GiB)")
    return f"{shortfall(est.memory, gpu, setup.n_gpus)}; try {'; or '.join(tips)}; or --force to run anyway"


def lowered_batch_note(config: TrainConfig, fit: Fit) -> str:
    """What to pass ``ftbroker run`` when the config's micro-batch does not fit and ``fit`` took a smaller one."""
    if fit.setup.micro_batch == config.micro_batch_size:
        return ""
    return (f"micro-batch {config.micro_batch_size} does not fit: run with {batch_flags(fit.setup)} "
            "(the same effective batch)")


def untimed_note(gpu: GpuSpec) -> str:
    return f"time and cost unknown: the catalog has no TFLOPS figure for {gpu.name}"


def electricity(time: TimeEstimate, gpu: GpuSpec, n_gpus: int) -> tuple[CostEstimate | None, str]:
    """The GPUs' power over the run's hours, or why it cannot be priced."""
    if not gpu.tdp_w:
        return None, f"electricity cost unknown: the catalog has no TDP for {gpu.name}"
    return local_cost(time.hours, gpu, n_gpus), ""


def estimate_keys(gpu: str, count: int, stack: str, calibration: Calibration) -> dict[str, float | str]:
    """What a job's ledger ``resources`` keep beside the estimate so that its measurement can correct the estimates
    of the same GPU, method and stack later (``ftbroker.estimate.measured``): the GPU, the stack, and the
    corrections already in the estimate (divided out again, so corrections never compound)."""
    keys: dict[str, float | str] = {GPU_KEY: gpu, "estimated_gpu_count": count, STACK_KEY: stack}
    if calibration.your_runs:
        keys.update({APPLIED_MEMORY: calibration.your_memory, APPLIED_TIME: calibration.your_time})
    return keys


# --- the pre-flight quote --------------------------------------------------------------------------------------

def local_quote(config: TrainConfig, arch: ModelArch | None, gpus: LocalGpus | None, stats: Any | None = None,
                validation: Any | None = None, *, distributed: str = "auto", notes: Sequence[str] = (),
                corrections: Corrections = Corrections(), stack: str = FTBROKER.name) -> Quote:
    """The quote of training ``config`` on ``gpus`` (None: the CPU). ``stats`` / ``validation`` are the training and
    validation files' ``ftbroker.data.report.TokenStats`` counted with the model's tokenizer (``stats`` None: lengths
    unknown, the worst case max_seq_len is assumed and no time is estimated); ``arch`` None: the model's shape
    is unknown. ``corrections``: the user's measured runs (a plan of the same job applies the same); ``stack``: the
    trainer that will run it, recorded with the estimate so that its measurement corrects that stack alone."""
    notes = list(notes)
    data = trainer_data(config, stats, validation) if stats is not None and stats.length_counts else None
    if data is not None and data.cut:
        notes.append(data.cut_note(f"max_seq_len {config.max_seq_len}; --max-seq-len"))
    if gpus is None:
        return Quote(backend=BACKEND, hardware="CPU", warnings=(*notes, CPU_NOTE), breakdown={"device": "cpu"})
    notes += [gpus.note] if gpus.note else []
    if arch is None:
        return Quote(backend=BACKEND, hardware=gpus.hardware, warnings=tuple(notes))
    gpu = gpus.gpu
    calibration = corrections.calibration(default_calibration(), gpu.name, config.method, stack)
    try:
        run = gpu_run(arch, config, data, gpu, gpus.count, fit_batch=False, distributed=distributed,
                      calibration=calibration)
    except UnknownNameError as exc:  # e.g. LoRA targets of an architecture the estimator does not model
        return Quote(backend=BACKEND, hardware=gpus.hardware, warnings=(*notes, f"no memory estimate: {exc}"))
    est = summarize(arch, run.fit.setup, gpu, calibration)  # the same memory, with the figures shown beside it
    notes += [calibration.your_runs] if calibration.your_runs else []
    reasons = [data.context_reason(arch) if data else "",
               "" if run.fit.fits else not_fit_reason(est, config, distributed)]
    reason = "; ".join(r for r in reasons if r) or None
    breakdown: dict[str, Any] = {"estimate": est.to_json()}
    resources = {"estimated_peak_vram_gib": round(run.fit.memory.total, 3),
                 "estimated_allocated_gib": round(run.fit.memory.allocated, 3),
                 **estimate_keys(gpu.name, gpus.count, stack, calibration)}
    hours = cost = cost_high = None
    if run.time is None:
        notes.append("no time estimate: the dataset's token lengths are unknown")
    elif run.time.time is None:
        notes.append(untimed_note(gpu))
    else:
        timed = run.time
        hours = resources["estimated_hours"] = timed.time.hours.expected
        breakdown["time_s"] = {name: part.to_json(0) for name, part in timed.time.breakdown.items()}
        tokens_per_s = est.throughput.tokens_per_s if est.throughput else None
        if tokens_per_s:  # the trainer measures non-padding tokens/s: estimate the same
            resources["estimated_tokens_per_s"] = round(tokens_per_s.expected * (1 - timed.padding.waste), 1)
        power, why_not = electricity(timed.time, gpu, gpus.count)
        if power is None:
            notes.append(why_not)
        else:
            cost, cost_high = power.usd.expected, power.usd.high
            breakdown["electricity"] = {**power.breakdown, "usd": power.usd.to_json()}
    return Quote(backend=BACKEND, verdict=Verdict.DOES_NOT_FIT if reason else Verdict.OK, reason=reason,
                 cost_usd=cost, cost_high_usd=cost_high, hours=hours, peak_vram_gib=run.fit.memory.total,
                 hardware=gpus.hardware, warnings=tuple(notes), breakdown=breakdown, resources=resources)
