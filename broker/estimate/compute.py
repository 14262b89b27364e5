"""FLOPs, throughput and wall-clock of a fine-tuning run. Pure: no I/O, no clock, no torch.

FLOPs per token follow the usual accounting (EleutherAI "Transformer Math 101"; litgpt ``estimate_flops``):
a matmul costs 2 FLOPs per weight per token forward; backward costs 4 for a trained weight (input and weight
gradients) and 2 for a frozen one (input gradient only); activation checkpointing adds one more forward of
the decoder layers. Causal attention does 4 * q_dim * i FLOPs for the i-th token of a sequence, i.e.
2 * q_dim * s per token on average: FlashAttention/SDPA skip the masked half, so this is the work done,
half the non-causal 4*L*h*s convention that MFU tables use.

Throughput, for an implementation measured on a GPU (the local trainer: bench/gpu_calibrate.py): a step takes
(host^k + device^k)^(1/k), the host launching eager kernels ahead of the GPU (a fixed cost per decoder layer
and pass, so small steps are bound by it), the device doing the FLOPs at a measured fraction of its dense peak
plus the HBM traffic the FLOP count misses at its bandwidth (``step_traffic_bytes``). For the frameworks of the
published runs: the dense peak x an efficiency calibrated on them (per method and GPU class), plus the NF4
dequantization traffic. Both: multi-GPU scaling; results are ranges with their assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.setup import NF4_BYTES, NF4_DQ_BYTES, PRECISIONS, ModelShape, TrainingSetup, trained_arch
from ftbroker.pricing.catalog import GpuSpec, ModelArch

# HBM-class cards (A100, H100, H200, B200, MI300X) vs GDDR workstation/consumer cards (RTX 4090, L40S, L4, A10)
HBM_BANDWIDTH_GBPS = 1200


@dataclass(frozen=True)
class Range:
    """An uncertain quantity: low <= expected <= high."""

    low: float
    expected: float
    high: float

    @classmethod
    def exact(cls, value: float) -> Range:
        return cls(value, value, value)

    def __add__(self, other: Range) -> Range:
        return Range(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def scaled(self, factor: float) -> Range:
        return Range(self.low * factor, self.expected * factor, self.high * factor)

    def to_json(self, digits: int = 3) -> dict[str, float]:
        return {"low": round(self.low, digits), "expected": round(self.expected, digits),
                "high": round(self.high, digits)}


@dataclass(frozen=True)
class FlopsPerToken:
    forward: float
    backward: float
    recompute: float
    attention_forward: float   # included in forward
    terms: tuple[str, ...]

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute


def flops_per_token(arch: ModelArch, setup: TrainingSetup, context: float | None = None) -> FlopsPerToken:
    """Training FLOPs per processed token. ``context``: mean attended sequence length (default seq_len)."""
    shape = ModelShape(arch)
    s = setup.seq_len if context is None else context
    matmul = shape.active_matmul_params
    layer_matmul = matmul - shape.embedding_params  # the head runs once, outside the checkpointed layers
    adapter = 0
    if setup.method != "full":
        active_layers = [lin for lin in shape.linears if lin.name in setup.lora_modules]
        per_layer = sum(setup.lora_r * (lin.d_in + lin.d_out) * (arch.experts_per_token if lin.count > 1 else 1)
                        for lin in active_layers)
        adapter = arch.num_layers * per_layer
        if "lm_head" in setup.lora_modules:
            adapter += setup.lora_r * (shape.h + arch.vocab_size)
    attention = 2 * arch.num_layers * shape.q_dim * s
    forward = 2 * (matmul + adapter) + attention
    if setup.method == "full":
        backward = 4 * matmul + 2 * attention
        terms = [f"forward 2 x {matmul / 1e9:.3f}e9 weights + attention 2*L*q_dim*s = {attention / 1e9:.3f} GFLOP",
                 "backward 4 x weights (input + weight gradients) + 2 x attention"]
    else:
        backward = 2 * matmul + 4 * adapter + 2 * attention
        terms = [(f"forward 2 x ({matmul / 1e9:.3f}e9 frozen + {adapter / 1e6:.1f}e6 adapter) weights"
                  f" + attention {attention / 1e9:.3f} GFLOP"),
                 "backward 2 x frozen weights (input gradients only) + 4 x adapter weights + 2 x attention"]
    recompute = 0.0
    if setup.grad_checkpointing:
        recompute = 2 * layer_matmul + attention + (2 * adapter if setup.method != "full" else 0)
        terms.append("checkpointing recomputes one forward of the decoder layers")
    if setup.impl.loss == "trl_fused":
        # TRL's chunked log-prob head never keeps the logits: its backward projects every tile again
        # (trl/kernels/chunked_logprob.py, backward: torch.mm(hidden_chunk, w_chunk.t()) before the gradients)
        recompute += 2 * shape.embedding_params
        terms.append("TRL's chunked loss head recomputes the output projection in backward (2 x V x h)")
    return FlopsPerToken(forward, backward, recompute, attention, tuple(terms))


def trainable_params(shape: ModelShape, setup: TrainingSetup) -> int:
    return shape.total_params if setup.method == "full" else shape.lora_params(setup.lora_modules, setup.lora_r)


def fp32_adapters(setup: TrainingSetup) -> bool:
    """PEFT keeps LoRA adapters in fp32 (autocast_adapter_dtype) over a 16-bit base: each adapted module casts its
    input up, and autocast casts it back for the matmul. TRL casts QLoRA adapters to the 16-bit compute dtype."""
    return setup.method == "lora" and setup.impl.peft_adapters and setup.precision in ("bf16", "mixed")


def trainable_bytes(setup: TrainingSetup) -> int:
    """Bytes of one trainable parameter: the model's for full fine-tuning; PEFT keeps LoRA adapters in fp32
    (TRL casts QLoRA adapters to the 16-bit compute dtype); fp32/amp precisions keep them in fp32."""
    if setup.method == "full":
        return PRECISIONS[setup.precision][0]
    if setup.method == "lora" and setup.impl.peft_adapters:
        return 4
    return setup.weight_bytes


# Bytes one element of an adapted module's input moves through HBM in the LoRA side path per pass, beyond the
# matmuls: PEFT's fp32 adapters cast the input up (read 2, write 4) and autocast casts it back for lora_A (read 4,
# write 2); fused dropout reads and writes it and writes a 1-byte mask (fp32: 4 + 4 + 1, 16-bit: 2 + 2 + 1).
# Backward moves the same in reverse, and adds the adapter's input gradient to the base layer's (2 + 2 + 2).
_ADAPTER_CAST_BYTES = 12
_ADAPTER_DROPOUT_BYTES = {4: 9, 2: 5}
_ADAPTER_GRAD_SUM_BYTES = 6
# Under autocast ("amp") every fp32 matmul weight is cast to 16-bit in each forward pass (read 4, write 2), and a
# trained weight's 16-bit gradient is cast and accumulated into its fp32 .grad (write 2, read 2, write 4).
_AMP_CAST_BYTES = 6
_AMP_GRAD_BYTES = 8


def step_traffic_bytes(arch: ModelArch, setup: TrainingSetup, tokens: float, dequant_bytes_per_param: float) -> float:
    """HBM bytes per micro-batch step of eager training code that the FLOP count does not see: the LoRA side path
    per token (casts, dropout, gradient sums), autocast weight casts, the optimizer update and gradient clipping
    (read and write the parameter, read the gradient, read and write every state; read the gradient again to
    clip) and the NF4 dequantizations of QLoRA."""
    shape = ModelShape(arch)
    forward_passes = 2 if setup.grad_checkpointing else 1
    total = 0.0
    if setup.method != "full":
        per_element = (_ADAPTER_CAST_BYTES if fp32_adapters(setup) else 0) + (
            _ADAPTER_DROPOUT_BYTES[trainable_bytes(setup)] if setup.lora_dropout > 0 else 0)
        elements = sum(lin.d_in * (arch.experts_per_token if lin.count > 1 else 1)
                       for lin in shape.linears if lin.name in setup.lora_modules)
        total += tokens * arch.num_layers * elements * (
            per_element * (forward_passes + 1) + _ADAPTER_GRAD_SUM_BYTES)
    if setup.precision == "amp":
        total += _AMP_CAST_BYTES * shape.active_matmul_params * forward_passes
    trainable = trainable_params(shape, setup)
    param_b, grad_b = trainable_bytes(setup), trainable_bytes(setup)
    opt = setup.optimizer_kind
    state_b = opt.state_bytes if opt.state_bytes is not None else param_b
    total += trainable * (2 * param_b + 2 * grad_b + 2 * opt.states * state_b)
    if setup.precision == "amp":
        total += _AMP_GRAD_BYTES * trainable
    if setup.method == "qlora":
        total += layer_passes(setup) * quantized_params(arch, setup) * dequant_bytes_per_param
    return total


def quantized_params(arch: ModelArch, setup: TrainingSetup) -> int:
    """Weights stored in NF4 under QLoRA: every decoder matmul (experts included), and the head when quantized."""
    shape = ModelShape(trained_arch(arch, setup.impl))
    head = shape.lm_head_params if setup.impl.quantize_lm_head else 0
    return arch.num_layers * shape.layer_linear_params + head


def gpu_class(gpu: GpuSpec) -> str:
    return "datacenter" if gpu.bandwidth_gbps >= HBM_BANDWIDTH_GBPS else "workstation"


def peak_tflops(gpu: GpuSpec) -> float | None:
    return gpu.bf16_tflops if (gpu.supports_bf16 and gpu.bf16_tflops) else gpu.fp16_tflops


# Host to GPU over the PCIe slot, GB/s a direction (PCIe 4.0 x16): what parameter offload streams weights through
HOST_LINK_GBPS = 32.0


@dataclass(frozen=True)
class Communication:
    """What a multi-GPU step moves between GPUs (and from the host, with parameter offload), per micro-batch."""

    seconds: float
    gpu_bytes: float        # received by each GPU over the interconnect
    host_bytes: float       # streamed from CPU memory (parameter offload)
    formula: str


def communication(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup) -> Communication | None:
    """Seconds of one micro-batch's collectives on each GPU: ring all-gather / reduce-scatter / all-reduce move
    (n-1)/n of the data through each GPU's link, at its bandwidth in one direction (``GpuSpec.interconnect_gbps``).

    * FSDP / ZeRO-3: every micro-batch gathers the weights for the forward and again for the backward (stored
      dtype: NF4 under QLoRA, else 16-bit) and reduce-scatters the trainable gradients;
    * ZeRO-1/2: the gradients are reduce-scattered and the updated weights gathered once per optimizer step;
    * DDP: the trainable gradients are all-reduced (2 x (n-1)/n) once per optimizer step;
    * parameter offload: each GPU also streams its shard of the weights from CPU memory for both passes.
    None when the GPU's interconnect is not in the catalog; zero on one GPU."""
    n = setup.n_gpus
    if n == 1:
        return Communication(0.0, 0.0, 0.0, "")
    if not gpu.interconnect_gbps:
        return None
    shape = ModelShape(arch)
    share = (n - 1) / n
    grads = trainable_params(shape, setup) * (PRECISIONS[setup.precision][1] if setup.method == "full"
                                              else trainable_bytes(setup))
    if setup.method == "qlora":
        quantized = quantized_params(arch, setup)
        weights = quantized * (NF4_DQ_BYTES if setup.double_quant else NF4_BYTES) + (shape.total_params - quantized) * 2
    else:
        weights = shape.total_params * 2  # gathered in the 16-bit compute dtype
    per_step = setup.grad_accumulation
    if setup.sharding in ("fsdp", "zero3"):
        moved, what = share * (2 * weights + grads), "2 weight all-gathers + a gradient reduce-scatter per micro-batch"
    elif setup.sharding in ("zero1", "zero2"):
        updated = trainable_params(shape, setup) * 2
        moved, what = share * (grads + updated) / per_step, "gradient reduce-scatter + weight all-gather per step"
    else:
        moved, what = 2 * share * grads / per_step, "a gradient all-reduce per optimizer step"
    host = 2 * weights / n if setup.cpu_offload == "params" else 0.0
    seconds = moved / (gpu.interconnect_gbps * 1e9) + host / (min(HOST_LINK_GBPS, gpu.interconnect_gbps) * 1e9)
    formula = (f"{setup.sharding} over {n} GPUs: {what}, {moved / 1e9:.2f} GB per GPU / {gpu.interconnect_gbps:g} GB/s"
               + (f" + {host / 1e9:.2f} GB of offloaded weights from the host / {HOST_LINK_GBPS:g} GB/s"
                  if host else "")
               + f" = {seconds * 1e3:.0f} ms per micro-batch")
    return Communication(seconds, moved, host, formula)


@dataclass(frozen=True)
class Throughput:
    """Processed tokens per second (padding included), per GPU and for all GPUs together."""

    tokens_per_s: Range | None          # all GPUs
    tokens_per_s_per_gpu: Range | None
    step_seconds: float | None          # one micro-batch on one GPU (expected)
    efficiency: float | None            # fraction of the dense peak the FLOP count achieves (expected)
    flops: FlopsPerToken
    reason: str = ""                    # why throughput is unknown, when it is
    assumptions: tuple[str, ...] = field(default=())


def throughput(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, calibration: Calibration | None = None,
               *, context: float | None = None) -> Throughput:
    """Tokens per second. The implementation measured on a GPU (the local trainer) takes the longer of its host
    time and its device time, with partial overlap (``TrainerTiming``); others run at a published efficiency."""
    cal = calibration or default_calibration()
    flops = flops_per_token(arch, setup, context)
    peak = peak_tflops(gpu)
    if not peak:
        return Throughput(None, None, None, None, flops,
                          reason=f"{gpu.name} has no published dense bf16/fp16 TFLOPS in the catalog")
    klass = gpu_class(gpu)
    timing = cal.measured(setup.impl.name)
    eff = cal.device_efficiency(setup.impl.name, setup.method, klass)
    if timing is not None:
        notes = [f"device: {eff:.0%} of the {peak:g} TFLOPS dense peak on the FLOP count ({setup.impl.name} measured "
                 f"on a {timing.gpu_class} GPU: {timing.on}"
                 + (")" if klass == timing.gpu_class else f"; scaled by the published {klass}/{timing.gpu_class}"
                    " efficiencies)")]
    else:
        notes = [f"{klass} GPU: {eff:.0%} of the {peak:g} TFLOPS dense peak (calibrated, {setup.method}, "
                 "compiled code)"]
        if not setup.impl.compiled:
            slowdown = cal.eager(setup.impl.name)
            eff /= slowdown
            notes.append(f"eager PyTorch ({setup.impl.name}): / {slowdown:.2f} vs torch.compile")
    if setup.n_gpus > 1:
        eff *= cal.multi_gpu_efficiency
        notes.append(f"{setup.n_gpus} GPUs: x {cal.multi_gpu_efficiency:.2f} per-GPU scaling")
    tokens = setup.micro_batch * (setup.seq_len if context is None else context)
    seconds = tokens * flops.total / (peak * 1e12 * eff)
    bandwidth = gpu.bandwidth_gbps * 1e9
    if timing is not None:
        traffic = step_traffic_bytes(arch, setup, tokens, timing.dequant_bytes_per_param)
        device = seconds + traffic / bandwidth
        host = timing.host_seconds(setup.method, arch.num_layers, layer_passes(setup))
        k = timing.overlap
        seconds = overlapped(host, device, k)
        notes += [f"device: + {traffic / 1e9:.2f} GB of HBM traffic the FLOPs miss (LoRA casts and dropout, autocast"
                  f" casts, optimizer update, NF4 dequantization) / {gpu.bandwidth_gbps:g} GB/s; {device * 1e3:.0f} ms"
                  " per step",
                  f"host: {timing.host_ms[setup.method]:.2f} ms x {arch.num_layers} layers x {layer_passes(setup)}"
                  f" passes = {host * 1e3:.0f} ms per step (eager launches, measured: a similar host CPU assumed)",
                  f"step = (host^{k:g} + device^{k:g})^(1/{k:g}) = {seconds * 1e3:.0f} ms"]
    elif setup.method == "qlora":
        dequant = dequant_seconds(arch, gpu, setup, cal)
        seconds += dequant
        notes.append(f"NF4 dequantization: {layer_passes(setup)} passes x {quantized_params(arch, setup) / 1e9:.2f}e9"
                     f" weights x {cal.dequant_bytes_per_param:.1f} B / {gpu.bandwidth_gbps:g} GB/s = "
                     f"{dequant * 1e3:.0f} ms per step")
    comm = communication(arch, gpu, setup)
    if comm is None:
        notes.append(f"{gpu.name} has no interconnect bandwidth in the catalog: communication not timed")
    elif comm.seconds:
        compute_s, seconds = seconds, overlapped(seconds, comm.seconds, cal.comm_overlap)
        notes.append(f"communication: {comm.formula}; step = (compute^{cal.comm_overlap:g} + communication^"
                     f"{cal.comm_overlap:g})^(1/{cal.comm_overlap:g}) = {seconds * 1e3:.0f} ms (compute "
                     f"{compute_s * 1e3:.0f} ms)")
    if cal.your_time != 1:
        seconds *= cal.your_time
        notes.append(f"step time x {cal.your_time:.3f} ({cal.your_runs})")
    per_gpu = tokens / seconds
    achieved = per_gpu * flops.total / (peak * 1e12)
    spread = Range(1 - cal.spread, 1.0, 1 + cal.spread)
    per_gpu_range = spread.scaled(per_gpu)
    return Throughput(per_gpu_range.scaled(setup.n_gpus), per_gpu_range, seconds, achieved, flops,
                      assumptions=tuple(notes))


def overlapped(host_s: float, device_s: float, k: float) -> float:
    """A step's time when the host launches work ahead of the device: a smooth maximum, (host^k + device^k)^(1/k)."""
    return float((host_s**k + device_s**k) ** (1 / k))


def layer_passes(setup: TrainingSetup) -> int:
    """Passes over the decoder layers per step: forward, backward, and the recompute under checkpointing."""
    return 3 if setup.grad_checkpointing else 2


def dequant_seconds(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, calibration: Calibration) -> float:
    """Seconds per micro-batch that bitsandbytes spends dequantizing NF4 weights (HBM-bound; 0 unless QLoRA)."""
    if setup.method != "qlora":
        return 0.0
    passes = layer_passes(setup)
    return passes * quantized_params(arch, setup) * calibration.dequant_bytes_per_param / (gpu.bandwidth_gbps * 1e9)


def achieved_efficiency(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, tokens_per_s: float,
                        calibration: Calibration | None = None) -> float | None:
    """The inverse of ``throughput``: the fraction of the dense peak that makes it predict ``tokens_per_s`` (per GPU)
    for this setup, once the step's communication (taken back out of the smooth maximum) and the calibrated
    dequantization time are removed. None when those alone take longer than the measured step, or the GPU's peak
    or interconnect is unknown."""
    cal = calibration or default_calibration()
    peak = peak_tflops(gpu)
    comm = communication(arch, gpu, setup)
    if not peak or comm is None:
        return None
    tokens = setup.tokens
    step, k = tokens / tokens_per_s, cal.comm_overlap
    if step <= comm.seconds:
        return None
    compute_s = float((step**k - comm.seconds**k) ** (1 / k)) - dequant_seconds(arch, gpu, setup, cal)
    if compute_s <= 0:
        return None
    return tokens * flops_per_token(arch, setup).total / (peak * 1e12 * compute_s)


@dataclass(frozen=True)
class Padding:
    """Tokens one epoch really computes for a dataset's length distribution."""

    examples: int
    real_tokens: int           # example lengths after truncation to max_len
    processed_tokens: float    # padding included (expected)
    steps: int                 # micro-batches per epoch, all GPUs together
    mean_batch_len: float      # expected padded length of a micro-batch
    truncated: int             # examples longer than max_len

    @property
    def waste(self) -> float:
        return 1 - self.real_tokens / self.processed_tokens if self.processed_tokens else 0.0


BATCHING = ("random", "sorted", "packed")


def padded_tokens(length_counts: Mapping[int, int], micro_batch: int, max_len: int, *,
                  batching: str = "random") -> Padding:
    """Padding waste from the real length distribution.

    random: batches of ``micro_batch`` drawn at random, each padded to its longest example; the expected
    longest of b draws is sum_l l * (F(l)^b - F(l-)^b) with F the empirical CDF. sorted: examples sorted by
    length then batched (group_by_length). packed: examples concatenated into ``max_len`` rows, no padding.
    """
    if batching not in BATCHING:
        from ftbroker.errors import UnknownNameError

        raise UnknownNameError("batching", batching, BATCHING)
    lengths = sorted((min(length, max_len), count) for length, count in length_counts.items() if count > 0)
    n = sum(c for _, c in lengths)
    real = sum(length * c for length, c in lengths)
    truncated = sum(c for length, c in length_counts.items() if length > max_len)
    if n == 0:
        return Padding(0, 0, 0.0, 0, 0.0, 0)
    if batching == "packed":
        rows = math.ceil(real / max_len)
        return Padding(n, real, float(real), math.ceil(rows / micro_batch), float(max_len), truncated)
    steps = math.ceil(n / micro_batch)
    if batching == "sorted":
        # sorted ascending, a full batch is padded to its last (longest) example: count the batch ends per length
        processed, start = 0, 0
        for length, c in lengths:
            processed += ((start + c) // micro_batch - start // micro_batch) * micro_batch * length
            start += c
        processed += (n % micro_batch) * lengths[-1][0]  # the last, partial batch holds the longest examples
        return Padding(n, real, float(processed), steps, processed / n, truncated)
    expected_max, below = 0.0, 0
    for length, c in lengths:
        f_before, below = below / n, below + c
        expected_max += length * ((below / n) ** micro_batch - f_before ** micro_batch)
    return Padding(n, real, min(n * expected_max, float(n * max_len)), steps, expected_max, truncated)


@dataclass(frozen=True)
class Overheads:
    """Wall-clock outside the training steps. Defaults are labelled assumptions; the planner passes its own."""

    startup_s: Range = Range(0, 0, 0)                 # instance boot + environment set-up (cloud)
    download_gbps: Range | None = None               # model download bandwidth, GB/s; None: already local
    load_gbps: Range = Range(0.5, 1.5, 3.0)          # disk to GPU while loading (assumption: NVMe/network disk)
    checkpoint_gbps: Range = Range(0.3, 1.0, 2.0)    # checkpoint write bandwidth (assumption)
    checkpoints: int = 1                             # saves during the run (the final save included)
    eval_fraction: float = 0.0                       # evaluated tokens per epoch / trained tokens per epoch


@dataclass(frozen=True)
class TimeEstimate:
    hours: Range
    train_hours: Range
    breakdown: dict[str, Range]     # seconds by component
    padding: Padding | None
    assumptions: tuple[str, ...]


def checkpoint_bytes(arch: ModelArch, setup: TrainingSetup) -> float:
    """What one save writes: trainable weights and optimizer states (HF Trainer saves both)."""
    trainable = trainable_params(ModelShape(arch), setup)
    opt = setup.optimizer_kind
    state_b = opt.state_bytes if opt.state_bytes is not None else 4
    return trainable * (2 + opt.states * state_b)


def training_time(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, *, real_tokens: int,
                  processed_tokens: float, epochs: float, context: float | None = None,
                  overheads: Overheads = Overheads(), calibration: Calibration | None = None,
                  padding: Padding | None = None) -> TimeEstimate | None:
    """Wall-clock of ``epochs`` over a dataset whose epoch computes ``processed_tokens`` (padding included).
    None when the GPU's throughput is unknown."""
    tput = throughput(arch, gpu, setup, calibration, context=context)
    if tput.tokens_per_s is None:
        return None
    rate = tput.tokens_per_s
    train_s = Range(processed_tokens * epochs / rate.high, processed_tokens * epochs / rate.expected,
                    processed_tokens * epochs / rate.low)
    shape = ModelShape(arch)
    weights_gb = shape.total_params * 2 / 1e9  # 16-bit checkpoint on disk
    parts = {"training": train_s, "start-up": overheads.startup_s}
    if overheads.download_gbps is not None:
        d = overheads.download_gbps
        parts["model download"] = Range(weights_gb / d.high, weights_gb / d.expected, weights_gb / d.low)
    lg = overheads.load_gbps
    parts["model load"] = Range(weights_gb / lg.high, weights_gb / lg.expected, weights_gb / lg.low)
    ckpt_gb = checkpoint_bytes(arch, setup) / 1e9 * overheads.checkpoints
    cg = overheads.checkpoint_gbps
    parts["checkpoints"] = Range(ckpt_gb / cg.high, ckpt_gb / cg.expected, ckpt_gb / cg.low)
    if overheads.eval_fraction:
        # forward only: a third of the full-training FLOPs of a trained weight, at the same efficiency
        per_token_share = tput.flops.forward / tput.flops.total
        parts["evaluation"] = train_s.scaled(overheads.eval_fraction * per_token_share)
    total = Range(0, 0, 0)
    for part in parts.values():
        total = total + part
    notes = [*tput.assumptions,
             f"{processed_tokens * epochs / 1e6:.2f}M processed tokens ({real_tokens * epochs / 1e6:.2f}M real)"]
    return TimeEstimate(total.scaled(1 / 3600), train_s.scaled(1 / 3600), parts, padding, tuple(notes))
