"""Accuracy of ftbroker's estimator against published measurements, stack by stack, beside two public rules.

    python bench/estimator_accuracy.py            # print the tables
    python bench/estimator_accuracy.py --write    # refit, then rewrite broker/estimate/calibration.toml

Data (bench/data/, each row with its source): reference_points.csv (the measurements, their caveats in
`notes`, the `stack` that made them, and how this bench reads each run in the `run_*` columns, `metric`, `why`),
models.csv, gpus.csv (with each card's GPU-to-GPU link, for the communication time of multi-GPU runs).
Sources: torchtune's README and tutorials, litgpt's resource tables and config hub, the PEFT docs (DeepSpeed,
FSDP), Unsloth's benchmark tables (its own column and the "Hugging Face + FA2" one), Answer.AI's FSDP-QLoRA
benchmarks, axolotl's example READMEs, the QLoRA paper (bounds). A stack's runs are estimated with the
``ftbroker.estimate.stacks`` Implementation of that stack (run_impl), as a user's `--stack` would.
Split: usable points alternate fit / holdout in file order (the `split` column, fixed). Constants are fitted
on the fit points only (per stack where a stack has fit points of that kind: allocator overhead, eager
slowdown); errors are reported on the held-out points and on all points. Dropped points are printed with
their written reason. A "capacity" point is the longest run that fits a card of that size: its peak is the
card's memory.

Public rules, applied as their authors describe them:
* accelerate `estimate-memory` (src/accelerate/commands/estimate.py): training = max(model, grads, optimizer,
  step) with fp32 size 4P: 16P for fp32 runs, 8P for bf16/fp16 runs. It has no notion of adapters, so LoRA
  points get its model-load size in the run's dtype (2P or 4P) and QLoRA points its int4 size (P/2).
* LLaMA-Factory README hardware table: GB per billion params: full AMP 18, full pure bf16 8, LoRA 2,
  QLoRA-4bit 0.5 (GB = 1e9 bytes).
Both give a per-model figure; for runs sharded over N GPUs (zero3/fsdp) they are divided by N (the generous
reading). Neither predicts throughput.

Then the local trainer's own cases, measured on an H200 (bench/results/gpu_calibrate.json), as reference points
of their own: VRAM (max_memory_allocated and max_memory_reserved) and tokens/s, held out by model size (the
constants fitted on the 1B cases predict the 7B/8B ones and the reverse) and all (the shipped constants).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from ftbroker.estimate.calibration import Calibration, StackCheck, default_calibration
from ftbroker.estimate.compute import achieved_efficiency, dequant_seconds, gpu_class, throughput
from ftbroker.estimate.memory import GIB, estimate_memory
from ftbroker.estimate.setup import LOCAL_TRAINER, Implementation, ModelShape, TrainingSetup
from ftbroker.estimate.stacks import STACKS
from ftbroker.vocabulary import METHODS
from ftbroker.pricing.catalog import GpuSpec, ModelArch

DATA = Path(__file__).parent / "data"
CALIBRATION_TOML = Path(__file__).parents[1] / "broker" / "estimate" / "calibration.toml"
RETRIEVED = date(2026, 11, 28)  # when the facts in bench/data were read

# How each framework stores tensors (see ftbroker.estimate.stacks and the `why` column): the stacks' own
# Implementations, and the older framework versions of published runs.
_LITGPT = STACKS["litgpt"].impl
IMPLEMENTATIONS = {
    **{name: stack.impl for name, stack in STACKS.items() if name != "ftbroker"},
    # lit-gpt @cf91ad27 (2023): RMSNorm without the fp32 upcast; bitsandbytes 0.41 kept MatMul4Bit's input; the
    # first micro-batch holds the longest sample (get_batch(..., longest_seq_ix if iter_num == 0)), so no earlier
    # step's inputs or logits are alive at its peak
    "litgpt-2023": replace(_LITGPT, name="litgpt-2023", norm_upcast=False, bnb_saves_inputs=True,
                           holds_previous_logits=False),
    # litgpt @00af8b0d (2024) pins bitsandbytes==0.42.0: MatMul4Bit keeps its input past backward
    # (bitsandbytes#1270, fixed in 0.43.2) and fit() holds the last step's loss and logits into the next forward
    "litgpt-2024": replace(_LITGPT, name="litgpt-2024", bnb_saves_inputs=True, bnb_inputs_outlive_step=True),
    # axolotl @dc71d887 (2023-08): no Cut Cross-Entropy yet (the HF loss: the run_loss column says so);
    # bitsandbytes before 0.43.2 kept MatMul4Bit's input
    "axolotl-2023": replace(STACKS["axolotl"].impl, bnb_saves_inputs=True),
    # Answer.AI fsdp_qlora train.py (2024): the HF stack (the HF model and its loss), PEFT 0.9 adapters in bf16
    "fsdp-qlora": Implementation(name="hf", loss="hf", peft_adapters=False),
}
# Stacks in the order the tables print them
STACK_ORDER = ("torchtune", "hf", "unsloth", "axolotl", "llamafactory", "litgpt")


def _bool(text: str) -> bool:
    return text.strip().lower() == "true"


def load_models() -> dict[str, ModelArch]:
    models = {}
    with open(DATA / "models.csv", newline="") as f:
        for r in csv.DictReader(f):
            models[r["name"]] = ModelArch(
                name=r["name"], hidden_size=int(r["hidden_size"]), intermediate_size=int(r["intermediate_size"]),
                num_layers=int(r["num_layers"]), num_heads=int(r["num_heads"]), num_kv_heads=int(r["num_kv_heads"]),
                head_dim=int(r["head_dim"]), vocab_size=int(r["vocab_size"]),
                max_position_embeddings=int(r["max_position_embeddings"]),
                tie_word_embeddings=_bool(r["tie_word_embeddings"]), source=r["source"], as_of=RETRIEVED,
                num_experts=int(r["num_experts"]), experts_per_token=int(r["experts_per_token"]),
                moe_intermediate_size=int(r["moe_intermediate_size"]) if r["moe_intermediate_size"] else None,
                qkv_bias=_bool(r["qkv_bias"]))
    return models


def load_gpus() -> dict[str, GpuSpec]:
    gpus = {}
    with open(DATA / "gpus.csv", newline="") as f:
        for r in csv.DictReader(f):
            tflops = float(r["bf16_tflops"]) if r["bf16_tflops"] else None
            gpus[r["name"]] = GpuSpec(
                name=r["name"], memory_gib=float(r["memory_gib"]), bf16_tflops=tflops, fp16_tflops=tflops,
                bandwidth_gbps=float(r["bandwidth_gbps"]), tdp_w=float(r["tdp_w"]) if r["tdp_w"] else None,
                supports_bf16=True, source=r["source"], as_of=RETRIEVED,
                interconnect_gbps=float(r["interconnect_gbps"]) if r["interconnect_gbps"] else None)
    return gpus


@dataclass(frozen=True)
class Point:
    id: str
    stack: str
    row: dict
    arch: ModelArch | None
    gpu: GpuSpec | None
    setup: TrainingSetup | None
    metric: str
    split: str
    vram: float | None           # GiB as measured (bounds: the card's memory)
    tokens_per_s: float | None   # per GPU
    drop_vram: str
    drop_tps: str


def load_points() -> list[Point]:
    models, gpus = load_models(), load_gpus()
    points = []
    with open(DATA / "reference_points.csv", newline="") as f:
        for r in csv.DictReader(f):
            def g(key: str, row: dict = r) -> str:
                return row["run_" + key]

            setup = arch = gpu = None
            if not r["drop_vram"] or (r["measured_tokens_per_s"] and not r["drop_tps"]):
                arch = models[g("arch")]
                gpu = gpus.get(g("gpu"))
                if gpu is not None and g("interconnect_gbps"):  # the machine's own link (e.g. fewer PCIe lanes)
                    gpu = replace(gpu, interconnect_gbps=float(g("interconnect_gbps")))
                base = IMPLEMENTATIONS[g("impl")]  # a blank run_* column keeps the implementation's own
                impl = replace(base, loss=g("loss") or base.loss,
                               compiled=_bool(g("compiled")) if g("compiled") else base.compiled,
                               activation_offload=(_bool(g("activation_offload")) if g("activation_offload")
                                                   else base.activation_offload),
                               optimizer_in_backward=(_bool(g("optimizer_in_backward")) if g("optimizer_in_backward")
                                                      else base.optimizer_in_backward))
                setup = TrainingSetup(
                    method=g("method"), micro_batch=int(g("micro_batch")), seq_len=int(g("seq_len")),
                    lora_r=int(g("lora_r") or 16), targets=tuple(g("targets").split(",")) if g("targets") else ("all-linear",),
                    lora_dropout=float(g("lora_dropout") or 0), grad_checkpointing=_bool(g("grad_ckpt")),
                    optimizer=g("optimizer"), precision=g("precision"), n_gpus=int(g("n_gpus")), sharding=g("sharding"),
                    cpu_offload=g("cpu_offload"), grad_accumulation=int(g("grad_accum")), packing=_bool(g("packing")),
                    double_quant=_bool(g("double_quant")), impl=impl)
            measured_tps = float(r["measured_tokens_per_s"]) if r["measured_tokens_per_s"] else None
            if measured_tps is not None and r["tps_scope"] == "total":
                measured_tps /= int(r["run_n_gpus"] or 1)
            vram = float(r["measured_peak_vram_gib"]) if r["measured_peak_vram_gib"] else None
            points.append(Point(r["id"], r["stack"], r, arch, gpu, setup, r["metric"], r["split"], vram, measured_tps,
                                r["drop_vram"], r["drop_tps"] if measured_tps is not None else ""))
    return points


# --- the two public rules -------------------------------------------------------------------------------
def accelerate_rule(p: Point) -> float:
    params = ModelShape(p.arch).total_params
    fp32 = p.setup.precision in ("fp32", "amp")
    if p.setup.method == "full":
        gib = params * (16 if fp32 else 8) / GIB
    elif p.setup.method == "lora":
        gib = params * (4 if fp32 else 2) / GIB
    else:
        gib = params * 0.5 / GIB
    return gib / _rule_shards(p)


def llamafactory_rule(p: Point) -> float:
    billions = ModelShape(p.arch).total_params / 1e9
    per_b = {"full": 18 if p.setup.precision in ("fp32", "amp", "mixed") else 8, "lora": 2, "qlora": 0.5}
    return billions * per_b[p.setup.method] * 1e9 / GIB / _rule_shards(p)


def _rule_shards(p: Point) -> int:
    return p.setup.n_gpus if p.setup.sharding in ("zero3", "fsdp") else 1


# --- ours -----------------------------------------------------------------------------------------------
def predicted_vram(p: Point, cal: Calibration) -> float:
    m = estimate_memory(p.arch, p.setup, cal)
    if p.metric == "reserved":
        return m.allocated + m.allocator_overhead
    if p.metric in ("nvidia-smi", "bound", "capacity"):  # capacity: the longest run that fits a card of that size
        return m.total + outside_allocator(p, m)
    return m.allocated


def outside_allocator(p: Point, m) -> float:
    """What a reading counts beyond the allocator and the CUDA context: the driver's (nvidia-smi) counts the paged
    (unified memory) optimizer states resident on the card, which need not fit in it (capacity, bounds)."""
    return m.optimizer_paged if p.metric == "nvidia-smi" else 0.0


def vram_points(points: list[Point]) -> list[Point]:
    return [p for p in points if p.vram is not None and not p.drop_vram and p.metric != "bound"]


def tps_points(points: list[Point]) -> list[Point]:
    return [p for p in points if p.tokens_per_s is not None and not p.drop_tps and p.gpu and p.gpu.bf16_tflops]


def err(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas * 100


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


# CUDA context + cuBLAS/cuDNN workspaces outside the allocator: 1000 MiB (furiousteabag/vram-calculator@ea7ab041
# app/_lib/index.ts; gpu_poor uses 650 MB). Only the points read from nvidia-smi see it.
CUDA_CONTEXT_GIB = 1000 / 1024


def fit_memory(points: list[Point], base: Calibration) -> Calibration:
    """activation_scale: grid search minimising the mean absolute % error on the fit points that report allocated
    memory; allocator_overhead: the median overhead implied by the fit points read as reserved, nvidia-smi or a
    card's capacity, over all of them and per stack (by Implementation name) where a stack has such fit points.
    ``base``'s measured trainer constants (bench/gpu_calibrate.py --fit) are kept."""
    fit = [p for p in vram_points(points) if p.split == "fit"]
    allocated = [p for p in fit if p.metric in ("allocated", "active")]
    cal = replace(base, cuda_context_gib=CUDA_CONTEXT_GIB, allocator_overhead=0.0, allocator_overhead_by={})
    best = None
    for scale in (0.8 + 0.01 * i for i in range(61)):
        trial = replace(cal, activation_scale=scale)
        score = statistics.mean(err(predicted_vram(p, trial), p.vram) for p in allocated)
        if best is None or score < best[0]:
            best = (score, trial)
    cal = best[1]
    implied: dict[str, list[float]] = {}
    for p in fit:
        if p.metric in ("reserved", "nvidia-smi", "capacity"):
            m = estimate_memory(p.arch, p.setup, cal)
            context = cal.cuda_context_gib if p.metric in ("nvidia-smi", "capacity") else 0.0
            outside = context + outside_allocator(p, m)
            implied.setdefault(p.setup.impl.name, []).append(max(0.0, (p.vram - outside) / m.allocated - 1))
    overall = round(statistics.median(v for values in implied.values() for v in values), 3)
    return replace(cal, allocator_overhead=overall,
                   allocator_overhead_by={k: round(statistics.median(v), 3) for k, v in sorted(implied.items())},
                   points=tuple(p.id for p in fit), fitted_on=date.today().isoformat(), source="fit")


# --- throughput -------------------------------------------------------------------------------------------
ALPACA2K_TRAIN = 1900  # litgpt Alpaca2k: 2000 rows, val_split_fraction 0.05 (litgpt/data/alpaca_2k.py @00af8b0d)
# (LoRA run, QLoRA run) measured on the same data, batch and GPU: their time difference is the dequantization
DEQUANT_PAIRS = [("lg23-llama-2-7b-lora-mb1", "lg23-llama-2-7b-qlora-mb1"),
                 ("lg23-llama-2-7b-lora-mb1", "lg23-llama-2-7b-qlora-dq-mb1"),
                 ("lg23-llama-2-13b-lora-mb1", "lg23-llama-2-13b-qlora-mb1"),
                 ("lg23-llama-2-13b-lora-mb1", "lg23-llama-2-13b-qlora-dq-mb1"),
                 ("lg24-llama-2-7b-lora", "lg24-llama-2-7b-qlora"),
                 ("lg24-mistral-7b-v0.1-lora", "lg24-mistral-7b-v0.1-qlora")]


def seconds_per_iteration(p: Point) -> float:
    """litgpt times: 'X min / 1k iters', or 'X min (N epochs)' over Alpaca2k (evaluation included)."""
    text = p.row["measured_time"]
    minutes = float(text.split()[0])
    if "/ 1k iters" in text:
        return minutes * 60 / 1000
    epochs = int(text.split("(")[1].split()[0])
    return minutes * 60 / (epochs * ALPACA2K_TRAIN / p.setup.micro_batch)


def dequant_seconds_per_byte(p: Point) -> float:
    """Seconds one byte of dequantization traffic per weight costs for this QLoRA run (passes x weights / BW)."""
    return dequant_seconds(p.arch, p.gpu, p.setup, Calibration(dequant_bytes_per_param=1.0))


def implied_efficiency(p: Point, cal: Calibration) -> float:
    """The compiled single-GPU efficiency that reproduces this point's measured tokens/s per GPU."""
    eff = achieved_efficiency(p.arch, p.gpu, p.setup, p.tokens_per_s, cal)
    if not p.setup.impl.compiled:
        eff *= cal.eager(p.setup.impl.name)
    return eff / (cal.multi_gpu_efficiency if p.setup.n_gpus > 1 else 1.0)


def predicted_tps(p: Point, cal: Calibration) -> float:
    return throughput(p.arch, p.gpu, p.setup, cal).tokens_per_s_per_gpu.expected


def fit_throughput(points: list[Point], cal: Calibration) -> Calibration:
    """Dequantization bytes from the fit LoRA/QLoRA pairs; the eager slowdown from the fit eager point against
    the compiled efficiency of its cell; efficiencies per method and GPU class from the compiled fit points
    (median); the range half-width from the fit residuals."""
    by_id = {p.id: p for p in points}
    per_byte = []
    for lora, qlora in DEQUANT_PAIRS:
        q = by_id[qlora]
        if q.split == "fit":
            delta = seconds_per_iteration(q) - seconds_per_iteration(by_id[lora])
            per_byte.append(delta / dequant_seconds_per_byte(q))
    cal = replace(cal, dequant_bytes_per_param=round(statistics.median(per_byte), 2), eager_slowdown=1.0,
                  eager_slowdown_by={}, multi_gpu_efficiency=1.0)
    fit = [p for p in tps_points(points) if p.split == "fit"]
    cells: dict[str, dict[str, list[float]]] = {}
    for p in fit:
        if p.setup.impl.compiled:
            cells.setdefault(p.setup.method, {}).setdefault(gpu_class(p.gpu), []).append(implied_efficiency(p, cal))
    mfu = {m: {c: round(statistics.median(v), 3) for c, v in by.items()} for m, by in cells.items()}
    cal = replace(cal, mfu=mfu)
    eager: dict[str, list[float]] = {}  # per stack: its eager code against the compiled efficiency of the cell
    for p in fit:
        if not p.setup.impl.compiled:
            eager.setdefault(p.setup.impl.name, []).append(
                cal.efficiency(p.setup.method, gpu_class(p.gpu)) / implied_efficiency(p, cal))
    if eager:
        cal = replace(cal, eager_slowdown=round(statistics.median(v for vs in eager.values() for v in vs), 3),
                      eager_slowdown_by={k: round(statistics.median(v), 3) for k, v in sorted(eager.items())})
    residuals = [abs(predicted_tps(p, cal) / p.tokens_per_s - 1) for p in fit]
    return replace(cal, spread=round(max(0.15, p90(residuals)), 3))


def report_throughput(points: list[Point], cal: Calibration) -> None:
    rows = tps_points(points)
    print_error_table("Throughput (tokens/s per GPU)", rows, lambda p: p.tokens_per_s,
                      {"ours": lambda p: predicted_tps(p, cal)})
    print("   (the two public memory rules do not predict throughput)")
    print("\n== Throughput points ==")
    for p in rows:
        ours = predicted_tps(p, cal)
        print(f"{p.id:42} {p.split:7} {gpu_class(p.gpu):11} measured {p.tokens_per_s:8.0f}  ours {ours:8.0f}"
              f" ({(ours / p.tokens_per_s - 1) * 100:+6.1f}%)")
    print("\n== NF4 dequantization: QLoRA minus LoRA seconds per iteration (same data, batch, GPU) ==")
    print("   (litgpt publishes times, not tokens/s: its variable-length Alpaca batches have no published token"
          " count, so its runs enter only as these same-data differences)")
    by_id = {p.id: p for p in points}
    for lora, qlora in DEQUANT_PAIRS:
        q = by_id[qlora]
        measured = seconds_per_iteration(q) - seconds_per_iteration(by_id[lora])
        ours = cal.dequant_bytes_per_param * dequant_seconds_per_byte(q)
        print(f"{qlora:42} {q.split:7} measured {measured * 1e3:6.0f} ms  ours {ours * 1e3:6.0f} ms"
              f" ({(ours / measured - 1) * 100:+6.1f}%)")


def print_error_table(title: str, rows: list[Point], measured, predictors: dict) -> None:
    """Median / p90 absolute % error by method, on the held-out points and on all."""
    print(f"\n== {title}: absolute % error by method (median / p90) ==")
    print(f"{'method':7} {'subset':8} {'n':>3} " + " ".join(f"{name:>15}" for name in predictors))
    for method in (*METHODS, "all"):
        for subset in ("holdout", "all"):
            sel = [p for p in rows if (method == "all" or p.setup.method == method)
                   and (subset == "all" or p.split == subset)]
            if sel:
                cols = []
                for predict in predictors.values():
                    errors = [err(predict(p), measured(p)) for p in sel]
                    cols.append(f"{statistics.median(errors):6.1f} / {p90(errors):6.1f}")
                print(f"{method:7} {subset:8} {len(sel):3d} " + " ".join(f"{c:>15}" for c in cols))


def report_vram(points: list[Point], cal: Calibration) -> None:
    print_error_table("Peak VRAM", vram_points(points), lambda p: p.vram,
                      {"ours": lambda p: predicted_vram(p, cal), "accelerate": accelerate_rule,
                       "LLaMA-Factory": llamafactory_rule})


def report_points(points: list[Point], cal: Calibration) -> None:
    print("\n== Every VRAM point (GiB) ==")
    for p in vram_points(points):
        ours = predicted_vram(p, cal)
        print(f"{p.id:42} {p.split:7} {p.metric:10} measured {p.vram:7.2f}  ours {ours:7.2f} ({(ours / p.vram - 1) * 100:+6.1f}%)"
              f"  accel {accelerate_rule(p):7.2f}  LF {llamafactory_rule(p):7.2f}")
    print("\n== Bounds (the run fitted on a card of this size) ==")
    for p in points:
        if p.metric == "bound" and not p.drop_vram:
            total = estimate_memory(p.arch, p.setup, cal).total
            print(f"{p.id:42} bound {p.vram:6.1f} GiB  ours {total:6.2f} GiB  {'ok' if total <= p.vram else 'EXCEEDS'}")



def under_share(pairs: list[tuple[float, float]]) -> tuple[int, int]:
    """(misses over 10%, of which under-estimates) among (predicted, measured) pairs: an under-estimate of memory is
    an out-of-memory the plan said would not happen."""
    misses = [(pred, meas) for pred, meas in pairs if err(pred, meas) > 10]
    return len(misses), sum(pred < meas for pred, meas in misses)


def stack_rows(points: list[Point], cal: Calibration, subset: str) -> list[tuple[str, list, list]]:
    """Per stack (then all of them): its VRAM (predicted, measured) pairs and its time errors, on ``subset``."""
    vram, tps = vram_points(points), tps_points(points)
    rows = []
    groups = {**{stack: (stack,) for stack in STACK_ORDER},
              "--stack all": tuple(s for s in STACK_ORDER if s in STACKS), "all": STACK_ORDER}
    for stack, members in groups.items():
        def chosen(p: Point, members: tuple[str, ...] = members) -> bool:
            return p.stack in members and (subset == "all" or p.split == subset)

        memory = [(predicted_vram(p, cal), p.vram) for p in vram if chosen(p)]
        # time error: a run's hours are its tokens over tokens/s, so |measured tokens/s / predicted - 1|
        times = [abs(p.tokens_per_s / predicted_tps(p, cal) - 1) * 100 for p in tps if chosen(p)]
        if memory or times:
            rows.append((stack, memory, times))
    return rows


def report_stacks(points: list[Point], cal: Calibration) -> None:
    print("\n== Per stack: peak VRAM and time against published runs (goal: VRAM median <= 10%, p90 <= 25%, "
          "under-estimates <= 1/3 of the misses over 10%; time median <= 20%) ==")
    print(f"{'stack':12} {'subset':8} {'VRAM n':>6} {'median':>7} {'p90':>7} {'misses':>7} {'under':>6}   "
          f"{'time n':>6} {'median':>7} {'p90':>7}")
    for subset in ("holdout", "all"):
        for stack, memory, times in stack_rows(points, cal, subset):
            line = f"{stack:12} {subset:8} {len(memory):6d} "
            if memory:
                errors = [err(pred, meas) for pred, meas in memory]
                misses, under = under_share(memory)
                line += f"{statistics.median(errors):6.1f}% {p90(errors):6.1f}% {misses:7d} {under:6d}   "
            else:
                line += f"{'-':>7} {'-':>7} {'-':>7} {'-':>6}   "
            line += (f"{len(times):6d} {statistics.median(times):6.1f}% {p90(times):6.1f}%" if times
                     else f"{0:6d} {'-':>7} {'-':>7}")
            print(line)
    print("   misses: points off by more than 10%; under: those the estimate under-states (an OOM risk)")
    print("   --stack all: the stacks --stack names; all: every stack above (ftbroker's own trainer: at the end)")


def stack_check(pairs: list[tuple[float, float]], measured_on: str) -> StackCheck:
    errors = [err(pred, meas) for pred, meas in pairs]
    misses, under = under_share(pairs)
    return StackCheck(runs=len(pairs), median=round(statistics.median(errors) / 100, 3),
                      p90=round(p90(errors) / 100, 3), misses=misses, under=under, measured_on=measured_on)


def stack_checks(points: list[Point], cal: Calibration) -> dict[str, StackCheck]:
    """Each stack's held-out peak-memory error by Implementation name, as ``estimate`` and ``plan`` report it: the
    published runs of the stacks we model, and our own trainer's held-out cases measured on a GPU (reserved)."""
    checks = {stack: stack_check(memory, f"published {stack} runs held out of the fit")
              for stack, memory, _ in stack_rows(points, cal, "holdout") if stack in STACKS and memory}
    trainer, _ = trainer_points(cal)
    checks[LOCAL_TRAINER.name] = stack_check(
        [(p["held"]["reserved"], p["measured"]["reserved"]) for p in trainer],
        f"runs of ftbroker's trainer on an H200 ({TRAINER_DATE}), each predicted by constants fitted without its model")
    return checks


def report_misses(points: list[Point], cal: Calibration) -> None:
    print("\n== Peak VRAM points off by more than 10%, by stack (- : under-estimated, an OOM risk) ==")
    for p in sorted(vram_points(points), key=lambda p: (STACK_ORDER.index(p.stack), p.id)):
        ours = predicted_vram(p, cal)
        if err(ours, p.vram) > 10:
            print(f"{p.stack:10} {p.id:42} {p.split:7} {p.metric:10} measured {p.vram:6.2f}  ours {ours:6.2f} "
                  f"({(ours / p.vram - 1) * 100:+6.1f}%)")


def report_dropped(points: list[Point]) -> None:
    print("\n== Dropped points, with the reason ==")
    for p in points:
        for what, reason in (("vram", p.drop_vram), ("tokens/s", p.drop_tps)):
            if reason:
                print(f"{p.id:42} {what:8} {reason}")


def calibration_toml(cal: Calibration) -> str:
    """The calibration file; bench/gpu_calibrate.py --fit --write writes it too (with its [trainer] part)."""
    mfu = "\n".join(f"[throughput.mfu.{m}]\n" + "\n".join(f"{c} = {v}" for c, v in sorted(by.items())) + "\n"
                    for m, by in sorted(cal.mfu.items()))
    points = ",\n".join(f'    "{p}"' for p in cal.points)
    return f"""# Estimator calibration, written by bench/estimator_accuracy.py --write and bench/gpu_calibrate.py --fit --write.
# Do not edit by hand: refit. Data: bench/data/reference_points.csv (published runs, sources per row; fit on the
# rows whose split is "fit") and, in [trainer], the local trainer measured on a GPU (bench/results/).

[memory]
# multiplies the per-tensor activation accounting (grid search, mean |error| on allocated-memory fit points)
activation_scale = {cal.activation_scale}
# reserved-but-unallocated share of the peak: median implied by the fit points read as reserved, nvidia-smi or a
# card's capacity; then per stack (Implementation name) where the stack has such fit points
allocator_overhead = {cal.allocator_overhead}
allocator_overhead_by_stack = {{ {", ".join(f'"{k}" = {v}' for k, v in sorted(cal.allocator_overhead_by.items()))} }}
# CUDA context: 1000 MiB (furiousteabag/vram-calculator@ea7ab041 app/_lib/index.ts)
cuda_context_gib = {cal.cuda_context_gib}

[throughput]
# eager PyTorch vs torch.compile, from the fit eager points against their cells' compiled efficiency: over all,
# then per stack (Implementation name)
eager_slowdown = {cal.eager_slowdown}
eager_slowdown_by_stack = {{ {", ".join(f'"{k}" = {v}' for k, v in sorted(cal.eager_slowdown_by.items()))} }}
# effective HBM bytes per weight per NF4 dequantization pass (median of the fit LoRA/QLoRA time pairs)
dequant_bytes_per_param = {cal.dequant_bytes_per_param}
# per-GPU efficiency of a sharded run vs one GPU: no fit pair measures it; 1.0
multi_gpu_efficiency = {cal.multi_gpu_efficiency}
# k of the smooth maximum of compute and communication time, (compute^k + communication^k)^(1/k): not fitted
comm_overlap = {cal.comm_overlap}
# half-width of the tokens/s range: p90 of the fit residuals, at least 0.15
spread = {cal.spread}

# achieved fraction of the dense bf16 peak, compiled code, by method and GPU class (median of fit points)
{mfu}
{_checks_toml(cal)}[fit]
date = "{cal.fitted_on}"
points = [
{points},
]
{_trainer_toml(cal)}"""


def _checks_toml(cal: Calibration) -> str:
    """How far each stack's estimates were from the runs held out of the fit: what ``--stack`` tells its user."""
    return ("# each stack's peak memory against the runs held out of the fit: |error| median and p90, the runs off by more\n"
            "# than 10% and how many of them the estimate under-states; `estimate` and `plan --stack` show it\n") + "".join(
        f"""[checks.{name}]
runs = {c.runs}
median = {c.median}
p90 = {c.p90}
misses = {c.misses}
under = {c.under}
measured_on = "{c.measured_on}"

""" for name, c in sorted(cal.checks.items()))


def _trainer_toml(cal: Calibration) -> str:
    t = cal.trainer
    if t is None:
        return ""

    def table(values: dict[str, float]) -> str:
        return "\n".join(f"{key} = {value}" for key, value in sorted(values.items()))

    return f"""
# The local trainer measured on a GPU (bench/gpu_calibrate.py --fit; ftbroker.estimate.calibration.TrainerTiming).
# It replaces the published constants above for that implementation: step = (host^k + device^k)^(1/k), host =
# host_ms x decoder layers x passes, device = FLOPs / (dense peak x device_efficiency) + HBM traffic / bandwidth.
# device_efficiency carries to other GPU classes in proportion to [throughput.mfu]. overlap (k) and
# dequant_bytes_per_param are fixed by bench/gpu_calibrate.py (OVERLAP, DEQUANT_BYTES_PER_PARAM), not fitted.
[trainer]
on = "{t.on}"
implementation = "{t.implementation}"
gpu_class = "{t.gpu_class}"
peak_tflops = {t.peak_tflops}
device_efficiency = {t.device_efficiency}
overlap = {t.overlap}
dequant_bytes_per_param = {t.dequant_bytes_per_param}
# device memory in use outside the allocator (cudaMemGetInfo minus memory_reserved), median of the cases
cuda_context_gib = {t.cuda_context_gib}

# host milliseconds per decoder layer per pass (forward, backward, recompute), by method
[trainer.host_ms]
{table(t.host_ms)}

# max_memory_reserved / max_memory_allocated - 1, median of the cases, by method
[trainer.allocator_overhead]
{table(t.allocator_overhead)}
"""


# --- the local trainer, measured on a GPU -----------------------------------------------------------------
TRAINER_RESULTS = Path(__file__).parent / "results" / "gpu_calibrate.json"
TRAINER_DATE = "2026-11-28"
TRAINER_LABEL = f"ftbroker trainer, H200, measured {TRAINER_DATE}"
# Cross-validation by model size: the constants fitted on the 1B cases predict the 7B/8B ones, and the reverse.
# The 1B steps are bound by the host, the 7B/8B ones by the GPU, so each fold must carry over between regimes.
TRAINER_FOLDS = (("Llama-3.2-1B",), ("Llama-3.1-8B", "Qwen2.5-7B"))


def trainer_points(cal: Calibration) -> tuple[list[dict], str]:
    """Every successful case of bench/results/gpu_calibrate.json with its measurements and two predictions:
    ``held`` from the calibration fitted on the other fold, ``all`` from ``cal`` (fitted on every case)."""
    import json

    import gpu_calibrate as gc  # it imports this module: loaded here, not at the top

    results = json.loads(TRAINER_RESULTS.read_text(encoding="utf-8"))
    records = gc.cuda_records(results, str(TRAINER_RESULTS))
    meta, archs = results["meta"], gc.architectures()
    gpu = gc.gpu_spec(meta["gpu"])

    def predict(record: dict, calibration: Calibration) -> dict:
        arch, setup = archs[record["case"]["model"]], gc.setup_from_json(record["setup"])
        memory = estimate_memory(arch, setup, calibration)
        return {"allocated": memory.allocated, "reserved": memory.allocated + memory.allocator_overhead,
                "tokens_per_s": throughput(arch, gpu, setup, calibration).tokens_per_s_per_gpu.expected}

    held = {}
    for fold in TRAINER_FOLDS:
        fitted = gc.fit_calibration([r for r in records if r["case"]["model"] in fold], meta, cal,
                                    str(TRAINER_RESULTS), results["date"])
        held |= {r["id"]: predict(r, fitted) for r in records if r["case"]["model"] not in fold}
    points = []
    for r in records:
        arch, setup = archs[r["case"]["model"]], gc.setup_from_json(r["setup"])
        rule = Point(r["id"], "ftbroker", {}, arch, gpu, setup, "", "", None, None, "", "")
        points.append({"id": r["id"], "method": setup.method, "held": held[r["id"]], "all": predict(r, cal),
                       "measured": {"allocated": r["measured"]["max_allocated"] / GIB,
                                    "reserved": r["measured"]["max_reserved"] / GIB,
                                    "tokens_per_s": r["measured"]["tokens_per_s"]},
                       "accelerate": accelerate_rule(rule), "LLaMA-Factory": llamafactory_rule(rule)})
    return points, f"{TRAINER_LABEL} ({len(points)} cases, source {TRAINER_RESULTS.relative_to(DATA.parent.parent)})"


def report_trainer(cal: Calibration, show_points: bool) -> None:
    points, title = trainer_points(cal)
    print(f"\n== {title} ==")
    print("   held-out: each case predicted by the constants fitted on the other model size (folds: "
          + " | ".join(", ".join(f) for f in TRAINER_FOLDS) + "); all: the shipped constants, fitted on every case")
    print("   (allocated memory has no constant fitted on these cases: held-out and all differ only in reserved)")
    header = f"{'method':7} {'subset':9} {'n':>3} {'ours':>15} {'accelerate':>15} {'LLaMA-Factory':>15}  ours / (best rule / 3)"
    for key, title in (("allocated", "VRAM max_memory_allocated"), ("reserved", "VRAM max_memory_reserved"),
                       ("tokens_per_s", "throughput (tokens/s)")):
        print(f"\n-- {title}: absolute % error by method (median / p90) --\n{header}")
        for method in (*METHODS, "all"):
            for subset in ("held", "all"):
                sel = [p for p in points if method in ("all", p["method"])]
                ours = [err(p[subset][key], p["measured"][key]) for p in sel]
                cols = [f"{statistics.median(ours):6.1f} / {p90(ours):6.1f}"]
                versus = ""
                if key != "tokens_per_s":
                    rules = [[err(p[rule], p["measured"][key]) for p in sel] for rule in ("accelerate", "LLaMA-Factory")]
                    cols += [f"{statistics.median(e):6.1f} / {p90(e):6.1f}" for e in rules]
                    best = min(statistics.median(e) for e in rules)
                    versus = f"  {statistics.median(ours) / (best / 3):.2f} (median)"
                print(f"{method:7} {'held-out' if subset == 'held' else 'all':9} {len(sel):3d} "
                      + " ".join(f"{c:>15}" for c in cols) + versus)
        if key == "tokens_per_s":
            print("   (the two public memory rules do not predict throughput)")
    if show_points:
        print("\n-- every case: measured / held-out / all (GiB, GiB, tokens/s) --")
        for p in points:
            print(f"{p['id']:42} " + "   ".join(
                f"{key} {p['measured'][key]:,.2f} / {p['held'][key]:,.2f} / {p['all'][key]:,.2f}"
                for key in ("allocated", "reserved", "tokens_per_s")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="refit and rewrite broker/estimate/calibration.toml")
    parser.add_argument("--points", action="store_true", help="print every point and the bounds")
    args = parser.parse_args(argv)
    points = load_points()
    cal = default_calibration()
    if args.write:
        cal = fit_throughput(points, fit_memory(points, cal))
        cal = replace(cal, checks=stack_checks(points, cal))
        CALIBRATION_TOML.write_text(calibration_toml(cal), encoding="utf-8")
        print(f"wrote {CALIBRATION_TOML}")
    print(f"calibration: {cal.source} (fitted {cal.fitted_on or 'never'}); activation_scale {cal.activation_scale:.2f}, "
          f"allocator_overhead {cal.allocator_overhead:.2f}, cuda_context {cal.cuda_context_gib:.2f} GiB")
    report_stacks(points, cal)
    report_misses(points, cal)
    report_vram(points, cal)
    report_throughput(points, cal)
    if args.points:
        report_points(points, cal)
    report_dropped(points)
    report_trainer(cal, args.points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
