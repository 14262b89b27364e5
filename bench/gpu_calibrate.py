"""The estimator against the local trainer on a real GPU: peak memory and tokens/s of full, LoRA and QLoRA
fine-tuning of randomly initialised models with real architectures, and the constants that pins.

    python bench/gpu_calibrate.py [--out DIR] [--budget 270]        # CUDA: GPU_PLAN below, ~4.5 min on one H200
    python bench/gpu_calibrate.py --cases validate                  # CUDA: VALIDATE_PLAN, new cases, ~2.5 min
    python bench/gpu_calibrate.py --tiny [--cases validate]         # CPU smoke test: a tiny Llama, seconds
    python bench/gpu_calibrate.py --fit RESULTS.json [--write]      # measured constants for calibration.toml
    python bench/gpu_calibrate.py --report RESULTS.json             # a results table, estimated anew

How it measures
  * No download: each architecture row (bench/data/models.csv) becomes a Hugging Face config, is initialised at
    random directly on the GPU in bf16 and saved once to a scratch folder with a small word-level ChatML
    tokenizer (the model keeps its real vocabulary size; the data use the first 1024 ids).
  * Every case runs through the local trainer's own code, ftbroker.backends.local.train and its modules:
    TrainConfig, train_data.prepare_data (chat template, assistant-only masking), build_trainer (from_pretrained in
    the method's dtype, NF4 + double quantization for QLoRA, PEFT LoRA on all linear layers, the SFTConfig of a real
    run) and trainer.train(), with the trainer's gradient guard. The chats are long enough that every example is cut
    to exactly max_seq_len: no padding, every position a real token. The one change to a real run: the "adamw_8bit"
    cases pass SFTConfig(optim="adamw_bnb_8bit"), which TrainConfig has no field for.
  * Each architecture runs in a fresh process (its own CUDA context). Inside it the cases run one after another;
    between them every reference is dropped, then gc + empty_cache + reset_peak_memory_stats. That returns the
    caching allocator's pool to the driver, so each case's reserved peak starts from an empty pool; what it
    leaves is the CUDA context, the kernels loaded so far and cuBLAS workspaces (in the allocator: recorded per
    case as ``baseline_allocated``).
  * Memory: ``max_memory_allocated`` / ``max_memory_reserved`` over trainer.train() (the peak the trainer itself
    records in result.json; the model is already loaded, so the weights are in it), ``loaded_allocated`` after
    the model and trainer are built (the static part: weights + adapter), and the CUDA context as the device
    memory in use (cudaMemGetInfo) minus what the allocator has reserved.
  * Speed: the GPU is synchronised at every step end; tokens/s is the steady state after ``warmup`` steps
    (micro-batch x max_seq_len tokens per step over the time between step ends, data loading included).
  * A case the estimator says will not fit the card is skipped, not run; an out-of-memory error is caught and
    recorded (with the peak reached) and the next case runs.

--fit reads the JSON and derives what the published runs could only guess (broker/estimate/calibration.py,
TrainerTiming): the allocator overhead by method (reserved / allocated - 1), the CUDA context, and the step-time
model of the trainer, step = (host^k + device^k)^(1/k), whose host milliseconds per decoder layer-pass (by
method) and device efficiency it fits by least squares on the log step times of every case; --write puts them
into broker/estimate/calibration.toml (its [trainer] part; estimator_accuracy.py --write keeps it).
estimator_accuracy.py reads the measured cases as reference points of their own, with held-out folds by model
size. Results: bench/results/ (see its README.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

from estimator_accuracy import CALIBRATION_TOML, RETRIEVED, calibration_toml, err, load_gpus, load_models, p90
from ftbroker.estimate.calibration import Calibration, TrainerTiming, default_calibration
from ftbroker.estimate.compute import (
    achieved_efficiency,
    flops_per_token,
    gpu_class,
    layer_passes,
    overlapped,
    peak_tflops,
    step_traffic_bytes,
    throughput,
)
from ftbroker.estimate.memory import GIB
from ftbroker.estimate.setup import LOCAL_TRAINER, TrainingSetup
from ftbroker.pricing.catalog import GpuSpec, ModelArch
from ftbroker.vocabulary import METHODS
from train_throughput import WORDS, words_tokenizer

# Every example here is cut to exactly max_seq_len, so a batch has no padding: transformers drops the all-ones
# attention mask and SDPA runs GQA without repeating k/v. The estimator's default (HF's rule for padded batches)
# would repeat them; the bench describes what it runs.
BENCH_IMPL = replace(LOCAL_TRAINER, repeat_kv=False)
# The step-time model's fixed constants (broker/estimate/calibration.py TrainerTiming): the overlap of host and
# device (k = 2: host and device times add in quadrature; the data put k between 2 and 4: a pure maximum misses
# the steps where both are comparable), and bitsandbytes' NF4 dequantization traffic, from its kernel: it reads
# the 4-bit codes (0.5 B per weight) and writes a 16-bit copy (2 B) each pass. The QLoRA/LoRA pairs check it.
OVERLAP = 2.0
DEQUANT_BYTES_PER_PARAM = 2.5
# SFTConfig optim for the estimator's optimizer names (None: the trainer's default, fused AdamW)
HF_OPTIMIZERS = {"adamw": None, "adamw_8bit": "adamw_bnb_8bit"}


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    seq_len: int
    micro_batch: int
    checkpointing: bool = False
    optimizer: str = "adamw"

    @property
    def id(self) -> str:
        extra = ("/ckpt" if self.checkpointing else "") + (f"/{self.optimizer}" if self.optimizer != "adamw" else "")
        return f"{self.model}/{self.method}/{self.seq_len}x{self.micro_batch}{extra}"


@dataclass(frozen=True)
class Plan:
    """What one run measures: the cases (run in this order, one process per model) and how many steps."""

    cases: tuple[Case, ...]
    steps: int
    warmup: int
    budget_s: float
    worker_min_s: float   # a model's process is not started with less time left
    case_margin_s: float  # nor a case


# About 4 minutes on one H200 (141 GB) with the model builds; each process pays ~10 s of imports.
GPU_PLAN = Plan(
    cases=(
        *(Case("Llama-3.2-1B", m, s, b) for m in METHODS for s in (512, 2048) for b in (1, 4)),
        Case("Llama-3.1-8B", "qlora", 2048, 1, checkpointing=True),
        Case("Llama-3.1-8B", "qlora", 2048, 4, checkpointing=True),
        Case("Llama-3.1-8B", "full", 2048, 1, checkpointing=True, optimizer="adamw_8bit"),
        # fp32 weights + AdamW: 16 bytes a parameter, about 120 GiB before activations: the estimator decides
        Case("Llama-3.1-8B", "full", 2048, 1, checkpointing=True),
        Case("Qwen2.5-7B", "lora", 2048, 1),
        Case("Qwen2.5-7B", "lora", 2048, 4),
        Case("Qwen2.5-7B", "qlora", 2048, 4),
        Case("Qwen2.5-7B", "lora", 2048, 4, checkpointing=True),
        Case("Qwen2.5-7B", "qlora", 2048, 4, checkpointing=True),
    ),
    steps=8, warmup=3, budget_s=270, worker_min_s=30, case_margin_s=15)

# Cases the calibration was NOT fitted on, to check the fitted constants (--cases validate): new sequence lengths,
# batches and checkpointing choices, LoRA on the 8B row (never measured before), QLoRA on it without
# checkpointing, and last (an out-of-memory error must not cost the others) full fine-tuning of it with fp32
# AdamW, which the fitted model puts at ~130 of the card's 139.8 GiB (the old one said 152 and skipped it): the
# fit decision at its edge. Two model builds (1B ~12 s, 8B ~35 s), ~10 s of imports per process: about 2.3 min.
VALIDATE_PLAN = Plan(
    cases=(
        Case("Llama-3.2-1B", "full", 1024, 2),
        Case("Llama-3.2-1B", "lora", 4096, 1, checkpointing=True),
        Case("Llama-3.2-1B", "qlora", 1024, 4, checkpointing=True),
        Case("Llama-3.1-8B", "lora", 1024, 2, checkpointing=True),
        Case("Llama-3.1-8B", "qlora", 1024, 8),
        Case("Llama-3.1-8B", "full", 1024, 1, checkpointing=True),
    ),
    steps=8, warmup=3, budget_s=150, worker_min_s=30, case_margin_s=12)

# A Llama-shaped toy with a vocabulary twice the tokenizer's, like the real rows (model vocab > ids used).
TINY_ARCH = ModelArch(name="tiny-llama", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16, vocab_size=2048, max_position_embeddings=256,
                      tie_word_embeddings=False, source="bench/gpu_calibrate.py (CPU smoke test)", as_of=RETRIEVED)
TINY_PLAN = Plan(cases=tuple(Case(TINY_ARCH.name, m, 64, 2) for m in METHODS),
                 steps=3, warmup=1, budget_s=120, worker_min_s=5, case_margin_s=2)
TINY_VALIDATE_PLAN = Plan(cases=(Case(TINY_ARCH.name, "lora", 128, 1, checkpointing=True),
                                 Case(TINY_ARCH.name, "qlora", 64, 4)),
                          steps=3, warmup=1, budget_s=120, worker_min_s=5, case_margin_s=2)
# (tiny CPU smoke test?, which cases) -> plan
PLANS = {(False, "calibrate"): GPU_PLAN, (False, "validate"): VALIDATE_PLAN,
         (True, "calibrate"): TINY_PLAN, (True, "validate"): TINY_VALIDATE_PLAN}


def architectures() -> dict[str, ModelArch]:
    return load_models() | {TINY_ARCH.name: TINY_ARCH}


def gpu_spec(device_name: str) -> GpuSpec | None:
    """The bench GPU row for a CUDA device name ("NVIDIA H200" -> H200); None when there is none."""
    words = device_name.replace("NVIDIA", "").split()
    for name, spec in load_gpus().items():
        if words and name.split("-")[0] == words[0]:
            return spec
    return None


# ---- the worker: one model, in its own process ------------------------------------------------------------

def hf_config(arch: ModelArch, tokenizer):
    """The Hugging Face config of a catalog row: Qwen2 for rows with q/k/v biases, else Llama."""
    from transformers import LlamaConfig, Qwen2Config

    if arch.num_experts:
        raise ValueError(f"{arch.name}: mixture-of-experts rows are not built here")
    kind = Qwen2Config if arch.qkv_bias else LlamaConfig
    return kind(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                num_key_value_heads=arch.num_kv_heads, head_dim=arch.head_dim,
                max_position_embeddings=arch.max_position_embeddings, tie_word_embeddings=arch.tie_word_embeddings,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)


def build_model_folder(arch: ModelArch, folder: Path, device: str) -> Path:
    """A randomly initialised model of this architecture, created on ``device`` (bf16 on a GPU: no fp32 copy on
    the CPU) and saved with the word-level tokenizer, to be loaded back as a real run loads a model."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = words_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(arch, tokenizer),
                                                 dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    _release(torch)
    return folder


def long_chats(n: int, seq_len: int, seed: int = 0) -> list[dict]:
    """Chats whose assistant turn alone is longer than ``seq_len`` tokens (one token per word), so every
    example is cut to exactly seq_len and most of it is trained on."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "system", "content": "You answer at length."},
                          {"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(8))},
                          {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(seq_len + 32))}]}
            for _ in range(n)]


def _release(torch) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _step_timer(torch, device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall-clock at the start of training and at every step end, after the GPU has finished the step."""

        def __init__(self):
            self.start = 0.0
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    return StepTimer()


def measure_case(case: Case, arch: ModelArch, model_dir: Path, scratch: Path, plan: Plan, gpu: GpuSpec | None,
                 memory_gib: float | None) -> dict:
    """Train one case for ``plan.steps`` steps through the local trainer's code; the record of it."""
    import torch
    from ftbroker.backends.local import loading, train_data
    from ftbroker.backends.local import train as recipe
    from ftbroker.backends.local.config import TrainConfig
    from ftbroker.estimate import summarize

    data_file = scratch / f"chats-{case.seq_len}x{plan.steps * case.micro_batch}.jsonl"
    if not data_file.exists():
        data_file.write_text("".join(json.dumps(c) + "\n" for c in long_chats(plan.steps * case.micro_batch,
                                                                                 case.seq_len)))
    config = TrainConfig(model=str(model_dir), dataset=str(data_file), method=case.method, epochs=1,
                         eval_fraction=0, micro_batch_size=case.micro_batch, max_seq_len=case.seq_len,
                         gradient_checkpointing=case.checkpointing, logging_steps=1, seed=0)
    device, precision = loading.device_and_precision(config, torch)
    setup = config.training_setup(precision).with_(optimizer=case.optimizer, impl=BENCH_IMPL)
    estimate = summarize(arch, setup, gpu)
    record = {"case": asdict(case), "id": case.id, "setup": _setup_json(setup), "device": device,
              "precision": precision, "steps": plan.steps, "warmup": plan.warmup,
              "tokens_per_step": case.micro_batch * case.seq_len, "estimate": _estimate_json(estimate)}
    if memory_gib is not None and estimate.memory.total > memory_gib:
        return record | {"status": "skipped", "reason": f"estimated {estimate.memory.total:.1f} GiB > the card's "
                                                         f"{memory_gib:.1f} GiB"}
    from ftbroker.backends.local import callbacks  # transformers: imported only for a case that runs
    from transformers import PrinterCallback

    started = time.perf_counter()
    cuda = device == "cuda"
    tokenizer = loading.load_tokenizer(config)
    data = train_data.prepare_data(config, tokenizer)
    _release(torch)
    baseline = torch.cuda.memory_allocated() if cuda else None
    timer = _step_timer(torch, device)
    guard = callbacks.GradientGuard(quantized=case.method == "qlora", adapter=config.uses_adapter)
    optim = HF_OPTIMIZERS[case.optimizer]
    # No checkpoint: a run saves at the end of the epoch, which here would time the disk, not the GPU.
    overrides = {"save_strategy": "no"} | ({"optim": optim} if optim else {})
    trainer = None
    measured: dict = {"baseline_allocated": baseline}
    try:
        trainer = recipe.build_trainer(config, tokenizer, data, scratch / "run", device, precision,
                                       callbacks=[timer, guard], **overrides)
        trainer.remove_callback(PrinterCallback)
        if cuda:
            measured |= {"loaded_allocated": torch.cuda.memory_allocated(),
                         "load_peak_allocated": torch.cuda.max_memory_allocated()}
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        status, reason = "ok", ""
    except (torch.OutOfMemoryError, RuntimeError) as exc:  # bitsandbytes reports CUDA OOM as a RuntimeError
        if not isinstance(exc, torch.OutOfMemoryError) and "out of memory" not in str(exc):
            raise
        status, reason = "oom", str(exc).splitlines()[0]
    finally:
        if cuda:
            free, total = torch.cuda.mem_get_info()
            measured |= {"max_allocated": torch.cuda.max_memory_allocated(),
                         "max_reserved": torch.cuda.max_memory_reserved(),
                         "context": total - free - torch.cuda.memory_reserved()}
    ends = timer.ends
    if status == "ok" and len(ends) >= plan.warmup + 2:
        steady = ends[-1] - ends[plan.warmup - 1] if plan.warmup else ends[-1] - ends[0]
        steady_steps = len(ends) - max(plan.warmup, 1)
        measured["tokens_per_s"] = record["tokens_per_step"] * steady_steps / steady
    measured["step_ends_s"] = [round(t - timer.start, 4) for t in ends]  # from the start of trainer.train()
    measured["losses"] = [e["loss"] for e in trainer.state.log_history if "loss" in e] if trainer else []
    measured["seconds"] = round(time.perf_counter() - started, 2)
    if trainer is not None:
        trainer.accelerator.free_memory()  # accelerate keeps the prepared model and optimizer too
    trainer = None  # drop the model, optimizer and activations before the next case
    _release(torch)
    return record | {"status": status, "reason": reason, "measured": measured}


def _setup_json(setup: TrainingSetup) -> dict:
    fields = asdict(setup)
    fields["impl"] = setup.impl.name
    fields["targets"] = list(setup.targets)
    return fields


def setup_from_json(fields: dict) -> TrainingSetup:
    if fields["impl"] != BENCH_IMPL.name:
        raise ValueError(f"a case measured with implementation {fields['impl']!r}, not the local trainer")
    return TrainingSetup(**(fields | {"impl": BENCH_IMPL, "targets": tuple(fields["targets"])}))


def _estimate_json(estimate) -> dict:
    m = estimate.memory
    cal = estimate.calibration
    tput = estimate.throughput
    return {"allocated_gib": m.allocated, "reserved_gib": m.allocated + m.allocator_overhead, "total_gib": m.total,
            "static_gib": m.weights + m.adapter, "phase": m.phase,
            "tokens_per_s": tput.tokens_per_s_per_gpu.expected if tput and tput.tokens_per_s_per_gpu else None,
            "calibration": {"source": cal.source, "fitted_on": cal.fitted_on,
                            "measured_on": cal.trainer.on if cal.trainer else "",
                            "allocator_overhead": m.allocator_overhead / m.allocated if m.allocated else 0.0,
                            "cuda_context_gib": m.cuda_context}}


def worker(cases: Sequence[Case], plan: Plan, scratch: Path, results: Path, deadline: float) -> None:
    """Measure the cases of one model, appending one JSON line per case to ``results`` as soon as it is done
    (the first line describes the device), so a crash or a kill keeps what was measured."""
    import importlib.metadata

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    arch = architectures()[cases[0].model]
    versions = {}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    meta = {"device": device, "versions": versions, "cuda": torch.version.cuda,
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    gpu, memory_gib = None, None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        memory_gib = props.total_memory / GIB
        gpu = gpu_spec(props.name)
        meta |= {"gpu": props.name, "memory_gib": memory_gib, "capability": f"{props.major}.{props.minor}",
                 "gpu_row": gpu.name if gpu else None}
    with results.open("a", encoding="utf-8") as out:
        def emit(line: dict) -> None:
            out.write(json.dumps(line) + "\n")
            out.flush()

        emit({"meta": meta})
        model_dir = scratch / arch.name
        t0 = time.perf_counter()
        build_model_folder(arch, model_dir, device)
        print(f"[{arch.name}] built and saved in {time.perf_counter() - t0:.1f} s", flush=True)
        for case in cases:
            if time.time() > deadline - plan.case_margin_s:
                emit(_not_run(case, "time budget spent"))
                continue
            try:
                record = measure_case(case, arch, model_dir, scratch, plan, gpu, memory_gib)
            except Exception as exc:  # noqa: BLE001 - one failing case is a result; the next one still runs
                import traceback

                traceback.print_exc()
                record = {"id": case.id, "case": asdict(case), "status": "error",
                          "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                _release(torch)
            emit(record)
            print(f"[{case.id}] {record['status']} {record.get('reason', '')} {_brief(record)}", flush=True)
        shutil.rmtree(model_dir, ignore_errors=True)


def _brief(record: dict) -> str:
    m = record.get("measured") or {}
    parts = []
    if m.get("max_allocated") is not None:
        parts.append(f"allocated {m['max_allocated'] / GIB:.2f} GiB (est {record['estimate']['allocated_gib']:.2f})")
    if m.get("tokens_per_s"):
        parts.append(f"{m['tokens_per_s']:,.0f} tokens/s")
    return ", ".join(parts)


def _not_run(case: Case, reason: str) -> dict:
    return {"id": case.id, "case": asdict(case), "status": "not run", "reason": reason}


# ---- the parent: one worker process per model, then the report --------------------------------------------

def by_model(cases: Iterable[Case]) -> list[tuple[str, list[Case]]]:
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.model, []).append(case)
    return list(groups.items())


def collect(cases: Sequence[Case], lines: Sequence[dict], ended: str) -> tuple[dict, list[dict]]:
    """(device meta, one record per case) from a worker's lines; a case without a line gets ``ended`` (how the
    worker ended) as the reason it was not run."""
    meta = next((line["meta"] for line in lines if "meta" in line), {})
    found = {line["id"]: line for line in lines if "id" in line}
    return meta, [found.get(case.id) or _not_run(case, ended) for case in cases]


def read_lines(path: Path) -> list[dict]:
    """The complete JSON lines of a worker's results (a line cut short by a kill is left out)."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def run_plan(plan: Plan, scratch: Path, plan_args: list[str], save) -> tuple[dict, list[dict]]:
    """Run every model's cases in its own worker process (``plan_args`` select the same plan there);
    ``save(meta, records)`` after each (a kill of this process at a time limit keeps what was measured)."""
    deadline = time.time() + plan.budget_s
    meta: dict = {}
    records: list[dict] = []
    for model, cases in by_model(plan.cases):
        left = deadline - time.time()
        if left < plan.worker_min_s:
            records += [_not_run(c, "time budget spent before this model started") for c in cases]
            continue
        results = scratch / f"{model}.jsonl"
        command = [sys.executable, __file__, "--worker", model, "--scratch", str(scratch), "--results", str(results),
                   "--deadline", str(deadline), *plan_args]
        print(f"== {model}: {len(cases)} cases, {left:.0f} s left", flush=True)
        try:
            code = subprocess.run(command, timeout=left + 20).returncode
            ended = f"the worker exited with code {code} before this case"
        except subprocess.TimeoutExpired:
            ended = "the worker was stopped at the time budget before this case"
        worker_meta, worker_records = collect(cases, read_lines(results), ended)
        meta = meta or worker_meta
        records += worker_records
        save(meta, records)
    return meta, records


# ---- the report -----------------------------------------------------------------------------------------

def _pct(estimate: float | None, measured: float | None) -> float | None:
    if not estimate or not measured:
        return None
    return (estimate / measured - 1) * 100


def comparison(record: dict, arch: ModelArch | None, gpu: GpuSpec | None) -> dict:
    """Estimate vs measurement of one record (GiB, tokens/s, signed % errors, achieved efficiency)."""
    e, m = record.get("estimate") or {}, record.get("measured") or {}

    def gib(key):
        return m[key] / GIB if m.get(key) is not None else None

    row = {"alloc": (e.get("allocated_gib"), gib("max_allocated")),
           "reserved": (e.get("reserved_gib"), gib("max_reserved")),
           "static": (e.get("static_gib"), gib("loaded_allocated")),
           "tokens_per_s": (e.get("tokens_per_s"), m.get("tokens_per_s"))}
    out = {key: (est, meas, _pct(est, meas)) for key, (est, meas) in row.items()}
    efficiency = None
    if record.get("status") == "ok" and m.get("tokens_per_s") and arch and gpu:
        efficiency = achieved_efficiency(arch, gpu, setup_from_json(record["setup"]), m["tokens_per_s"])
    out["efficiency"] = efficiency
    return out


def report(meta: dict, records: Sequence[dict]) -> str:
    archs = architectures()
    gpu = gpu_spec(meta.get("gpu", "")) if meta.get("gpu") else None
    lines = [f"device: {meta.get('gpu') or meta.get('device', '?')}"
             + (f" ({meta['memory_gib']:.1f} GiB, bench row {gpu.name if gpu else 'none'})" if meta.get("memory_gib")
                else "")
             + f"; {', '.join(f'{k} {v}' for k, v in (meta.get('versions') or {}).items())}",
             "estimate: the shipped calibration; err = estimate / measured - 1; static = weights + adapter after "
             "loading; eff = achieved fraction of the dense peak", ""]
    header = (f"{'case':40} {'status':8} {'allocated GiB est/meas':>23} {'err':>7} {'reserved GiB est/meas':>22}"
              f" {'err':>7} {'static est/meas':>16} {'tokens/s est/meas':>21} {'err':>7} {'eff':>6}")
    lines += [header, "-" * len(header)]

    def pair(values, digits):
        est, meas, _ = values
        return f"{'-' if est is None else f'{est:,.{digits}f}'} / {'-' if meas is None else f'{meas:,.{digits}f}'}"

    def pct(values):
        return "-" if values[2] is None else f"{values[2]:+.1f}%"

    for record in records:
        c = comparison(record, archs.get(record["case"]["model"]), gpu)
        eff = "-" if c["efficiency"] is None else f"{c['efficiency']:.1%}"
        lines.append(f"{record['id']:40} {record['status']:8} {pair(c['alloc'], 2):>23} {pct(c['alloc']):>7}"
                     f" {pair(c['reserved'], 2):>22} {pct(c['reserved']):>7} {pair(c['static'], 2):>16}"
                     f" {pair(c['tokens_per_s'], 0):>21} {pct(c['tokens_per_s']):>7} {eff:>6}")
        if record["status"] != "ok" and record.get("reason"):
            lines.append(f"{'':40}   {record['reason']}")
    lines += ["", "absolute % error, median / p90 (n), by method:"]
    for method in (*METHODS, "all"):
        chosen = [r for r in records if r["status"] == "ok" and method in ("all", r["case"]["method"])]
        cells = []
        for key in ("alloc", "reserved", "tokens_per_s"):
            errors = [abs(v[2]) for r in chosen
                      if (v := comparison(r, archs.get(r["case"]["model"]), gpu)[key])[2] is not None]
            cells.append(f"{key} {statistics.median(errors):.1f} / {p90(errors):.1f} ({len(errors)})" if errors
                         else f"{key} -")
        lines.append(f"  {method:6} " + "   ".join(cells))
    return "\n".join(lines)


# ---- --fit ---------------------------------------------------------------------------------------------

def step_parts(record: dict, arch: ModelArch, gpu: GpuSpec) -> dict:
    """The measured step time of a record and the parts of the step-time model that do not depend on the fitted
    constants: FLOP seconds at the full dense peak, HBM traffic seconds, and decoder layer-passes."""
    setup = setup_from_json(record["setup"])
    tokens = record["tokens_per_step"]
    return {"method": setup.method, "seconds": tokens / record["measured"]["tokens_per_s"],
            "flop_s": tokens * flops_per_token(arch, setup).total / (peak_tflops(gpu) * 1e12),
            "traffic_s": step_traffic_bytes(arch, setup, tokens, DEQUANT_BYTES_PER_PARAM) / (gpu.bandwidth_gbps * 1e9),
            "layer_passes": arch.num_layers * layer_passes(setup)}


def _predicted_step(part: dict, host_ms: dict[str, float], efficiency: float) -> float:
    return overlapped(host_ms[part["method"]] * 1e-3 * part["layer_passes"],
                      part["flop_s"] / efficiency + part["traffic_s"], OVERLAP)


def _minimize(f, x0: list[float], step: float = 0.5, iterations: int = 600) -> list[float]:
    """Nelder-Mead (reflection, expansion, contraction, shrink): the few constants of the step-time model."""
    simplex = [list(x0)] + [[v + (step if i == j else 0) for j, v in enumerate(x0)] for i in range(len(x0))]
    values = [f(x) for x in simplex]
    for _ in range(iterations):
        order = sorted(range(len(simplex)), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centre = [sum(col) / (len(simplex) - 1) for col in zip(*simplex[:-1])]

        def toward(t: float) -> list[float]:
            return [c + t * (w - c) for c, w in zip(centre, simplex[-1])]

        reflected = toward(-1)
        fr = f(reflected)
        if fr < values[0]:
            expanded = toward(-2)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = toward(0.5)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                simplex = [simplex[0]] + [[b + (v - b) / 2 for b, v in zip(simplex[0], x)] for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[min(range(len(simplex)), key=values.__getitem__)]


def fit_timing(parts: Sequence[dict]) -> tuple[dict[str, float], float]:
    """(host ms per layer-pass by method, device efficiency) minimising the squared log error of the step times."""
    methods = sorted({p["method"] for p in parts})

    def unpack(x):  # logs keep the host times positive; a logistic keeps the efficiency in (0, 1)
        return {m: math.exp(v) for m, v in zip(methods, x)}, 1 / (1 + math.exp(-x[-1]))

    def loss(x):
        host, eff = unpack(x)
        return sum(math.log(_predicted_step(p, host, eff) / p["seconds"]) ** 2 for p in parts)

    host, eff = unpack(_minimize(loss, [math.log(3.0)] * len(methods) + [0.0]))
    return {m: round(v, 3) for m, v in host.items()}, round(eff, 3)


def fit_calibration(records: Sequence[dict], meta: dict, base: Calibration, source: str, when: str) -> Calibration:
    """``base`` with the local trainer's measured constants (a ``TrainerTiming``) from these successful CUDA
    records: allocator overhead per method (median reserved / allocated - 1), CUDA context (median), and the
    step-time model's host times and device efficiency (least squares on log step time)."""
    gpu = gpu_spec(meta.get("gpu", ""))
    archs = architectures()
    parts = [step_parts(r, archs[r["case"]["model"]], gpu) for r in records]
    host, efficiency = fit_timing(parts)
    overheads: dict[str, list[float]] = {}
    for r in records:
        overheads.setdefault(r["case"]["method"], []).append(r["measured"]["max_reserved"] / r["measured"]["max_allocated"] - 1)
    versions = meta.get("versions") or {}
    timing = TrainerTiming(
        on=(f"{meta['gpu']}, torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
            f"trl {versions.get('trl')}, measured {when}: {Path(source).name}, {len(records)} cases"),
        implementation=BENCH_IMPL.name, gpu_class=gpu_class(gpu), peak_tflops=float(peak_tflops(gpu)),
        device_efficiency=efficiency, host_ms=host, overlap=OVERLAP, dequant_bytes_per_param=DEQUANT_BYTES_PER_PARAM,
        allocator_overhead={m: round(statistics.median(v), 3) for m, v in sorted(overheads.items())},
        cuda_context_gib=round(statistics.median(r["measured"]["context"] / GIB for r in records), 3))
    return replace(base, trainer=timing)


def cuda_records(results: dict, source: str) -> list[dict]:
    """The successful CUDA records; ValueError when there are none or the GPU has no row with a dense peak."""
    meta = results["meta"]
    ok = [r for r in results["cases"] if r["status"] == "ok" and r.get("device") == "cuda"]
    if not ok:
        raise ValueError(f"{source} holds no successful CUDA case: nothing to fit")
    gpu = gpu_spec(meta.get("gpu", "")) if meta.get("gpu") else None
    if gpu is None or not peak_tflops(gpu):
        raise ValueError(f"{meta.get('gpu')!r} has no row with a dense peak in bench/data/gpus.csv: add it first")
    return ok


def fit(results: dict, base: Calibration, source: str) -> tuple[Calibration, list[str]]:
    """The measured constants of the local trainer and what they change (see ``fit_calibration``)."""
    meta = results["meta"]
    ok = cuda_records(results, source)
    gpu = gpu_spec(meta["gpu"])
    fitted = fit_calibration(ok, meta, base, source, results.get("date", "?"))
    t = fitted.trainer
    lines = [f"{len(ok)} successful CUDA cases on {meta['gpu']} (bench row {gpu.name}, {peak_tflops(gpu):g} TFLOPS, "
             f"{gpu.bandwidth_gbps:g} GB/s)",
             "allocator overhead (reserved / allocated - 1, median by method): "
             + ", ".join(f"{m} {v}" for m, v in t.allocator_overhead.items()),
             f"CUDA context: {t.cuda_context_gib} GiB (median)",
             f"step = (host^{OVERLAP:g} + device^{OVERLAP:g})^(1/{OVERLAP:g}); host = ms per layer-pass x layers x passes;"
             f" device = FLOPs / ({peak_tflops(gpu):g} TFLOPS x efficiency) + HBM traffic / bandwidth",
             "  host ms per layer-pass: " + ", ".join(f"{m} {v}" for m, v in t.host_ms.items()),
             f"  device efficiency: {t.device_efficiency} of the dense peak",
             f"  NF4 dequantization: {t.dequant_bytes_per_param} B per weight and pass (fixed; pairs below)"]
    return fitted, lines + dequant_pairs(ok, fitted, gpu) + _fit_errors(ok, base, fitted, gpu, architectures())


def dequant_pairs(records: Sequence[dict], cal: Calibration, gpu: GpuSpec) -> list[str]:
    """QLoRA minus LoRA step time on the same model, batch and checkpointing: measured and estimated."""
    archs = architectures()
    by_key = {(r["case"]["model"], r["case"]["seq_len"], r["case"]["micro_batch"], r["case"]["checkpointing"],
               r["case"]["method"]): r for r in records}
    lines = ["", "QLoRA minus LoRA step time, same model, batch and checkpointing (ms): measured / estimated"]
    for (model, seq, batch, ckpt, method), q in by_key.items():
        lora = by_key.get((model, seq, batch, ckpt, "lora"))
        if method != "qlora" or lora is None:
            continue
        diff = []
        for r in (q, lora):
            est = throughput(archs[model], gpu, setup_from_json(r["setup"]), cal).step_seconds
            diff.append((r["tokens_per_step"] / r["measured"]["tokens_per_s"], est))
        lines.append(f"  {q['id']:34} {(diff[0][0] - diff[1][0]) * 1e3:+7.1f} / {(diff[0][1] - diff[1][1]) * 1e3:+7.1f}")
    return lines


def _fit_errors(ok: Sequence[dict], base: Calibration, fitted: Calibration, gpu: GpuSpec, archs) -> list[str]:
    """Reserved-memory and tokens/s errors on these cases with the shipped and with the fitted constants (the same
    cases the constants came from: an in-sample check that the fit does what it says)."""
    from ftbroker.estimate import summarize

    lines = ["", "absolute % error on these cases, median / p90: shipped -> fitted"]
    for method in (*METHODS, "all"):
        chosen = [r for r in ok if method in ("all", r["case"]["method"])]
        if not chosen:
            continue
        cells = []
        for key in ("reserved", "tokens_per_s"):
            pairs = []
            for cal in (base, fitted):
                errors = []
                for r in chosen:
                    e = summarize(archs[r["case"]["model"]], setup_from_json(r["setup"]), gpu, cal)
                    if key == "reserved":
                        est, meas = e.memory.allocated + e.memory.allocator_overhead, r["measured"]["max_reserved"] / GIB
                    else:
                        est, meas = e.throughput.tokens_per_s_per_gpu.expected, r["measured"].get("tokens_per_s")
                    if meas:
                        errors.append(err(est, meas))
                pairs.append(f"{statistics.median(errors):.1f} / {p90(errors):.1f}" if errors else "-")
            cells.append(f"{key} {pairs[0]} -> {pairs[1]}")
        lines.append(f"  {method:6} " + "   ".join(cells))
    return lines


# ---- command line ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny Llama, full/LoRA/QLoRA")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="folder for gpu_calibrate[-tiny] / gpu_validate[-tiny] .json and .txt "
                             "(default bench/results)")
    parser.add_argument("--budget", type=float, help="seconds for all the cases (default: 270 GPU, 120 tiny)")
    parser.add_argument("--cases", choices=("calibrate", "validate"), default="calibrate",
                        help="calibrate: the cases the constants are fitted on; validate: new cases to check them")
    parser.add_argument("--fit", type=Path, metavar="RESULTS", help="derive calibration constants from a results JSON")
    parser.add_argument("--write", action="store_true", help="with --fit: rewrite broker/estimate/calibration.toml")
    parser.add_argument("--report", type=Path, metavar="RESULTS",
                        help="print a results JSON's table again, estimated with the shipped calibration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = PLANS[args.tiny, args.cases]
    if args.budget:
        plan = replace(plan, budget_s=args.budget)

    if args.fit:
        return _fit_command(args.fit, args.write)
    if args.report:
        return _report_command(args.report)
    if args.worker:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(name, "1")  # the GPU machine has no network: never wait on a hub
        worker([c for c in plan.cases if c.model == args.worker], plan, args.scratch, args.results, args.deadline)
        return 0

    if not args.tiny and not _cuda_present():
        print("no CUDA GPU here: run with --tiny for the CPU smoke test", file=sys.stderr)
        return 2
    stem = ("gpu_calibrate" if args.cases == "calibrate" else "gpu_validate") + ("-tiny" if args.tiny else "")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_calibrate-"))
    started = time.monotonic()
    results: dict = {}

    def save(meta: dict, records: list[dict]) -> None:
        results.update({"date": date.today().isoformat(), "seconds": round(time.monotonic() - started, 1),
                        "plan": {"steps": plan.steps, "warmup": plan.warmup, "budget_s": plan.budget_s},
                        "meta": meta, "cases": records})
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        (args.out / f"{stem}.txt").write_text(report(meta, records) + "\n", encoding="utf-8")

    try:
        meta, records = run_plan(plan, scratch, ["--cases", args.cases] + (["--tiny"] if args.tiny else []), save)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    save(meta, records)
    print(report(meta, records))
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "oom", "error", "not run")}
    print(f"\n{len(records)} cases in {results['seconds']:.0f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"wrote {args.out / (stem + '.json')} and {stem}.txt")
    return 0 if counts["ok"] else 1


def _cuda_present() -> bool:
    """Whether a CUDA GPU is visible, asked without creating a CUDA context in this (parent) process."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _report_command(path: Path) -> int:
    """The table of a results JSON with every estimate made again from the shipped calibration."""
    from ftbroker.estimate import summarize

    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        meta, records = results["meta"], results["cases"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    archs, gpu = architectures(), gpu_spec(meta.get("gpu", ""))
    for record in records:
        if "setup" in record:
            record["estimate"] = _estimate_json(summarize(archs[record["case"]["model"]],
                                                          setup_from_json(record["setup"]), gpu))
    print(report(meta, records))
    return 0


def _fit_command(path: Path, write: bool) -> int:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        fitted, lines = fit(results, default_calibration(), str(path))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if write:
        CALIBRATION_TOML.write_text(calibration_toml(fitted), encoding="utf-8")
        print(f"\nwrote {CALIBRATION_TOML}")
    else:
        print("\n(not written: add --write to update broker/estimate/calibration.toml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
