"""Peak GPU memory of a fine-tuning setup, per GPU, as a named breakdown. Pure: no I/O, no torch.

The model follows what autograd actually keeps, tensor by tensor, for a Llama-style block (pre-norm RMSNorm,
GQA attention with RoPE, gated MLP) in 16-bit activations; the per-layer accounting for the HF stack is
checked against the tensors autograd really saves (tests/test_estimate_autograd.py). Framework differences
(compiled kernels, loss implementations, old bitsandbytes) are switches of ``Implementation``.
Two phases compete for the peak:

* forward/backward: weights + optimizer states + stored activations + the loss buffers (or one layer's
  backward workspace, whichever is larger) [+ gradients when accumulating over micro-batches];
* optimizer step: weights + optimizer states + all gradients + the step's temporaries.

Their maximum is what ``torch.cuda.max_memory_allocated`` reports; the CUDA context and the caching
allocator's slack come on top of it and are what must fit on the card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field

from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.compute import fp32_adapters, quantized_params, trainable_bytes, trainable_params
from ftbroker.estimate.setup import (
    LOSS_BYTES_PER_LOGIT,
    NF4_BYTES,
    NF4_DQ_BYTES,
    PRECISIONS,
    ModelShape,
    TrainingSetup,
    trained_arch,
)
from ftbroker.pricing.catalog import GpuSpec, ModelArch

GIB = 2**30
COMPUTE_BYTES = 2  # activations and dequantized weights are 16-bit in every supported precision

# CUDA's fused dropout kernel keeps a bool mask for backward (aten/src/ATen/native/Dropout.cpp: dropout runs as
# native_dropout when is_fused_kernel_acceptable, i.e. on CUDA)
DROPOUT_MASK_BYTES = 1


@dataclass(frozen=True)
class Term:
    """One line of the derivation: what it is, its size and how it was computed."""

    name: str
    gib: float
    formula: str


@dataclass(frozen=True)
class MemoryBreakdown:
    """Peak memory per GPU in GiB. The component fields are their values at the peak and sum to ``total``."""

    weights: float              # base model weights resident on this GPU (16-bit, fp32 or NF4)
    adapter: float              # LoRA A/B matrices
    gradients: float            # gradients alive at the peak
    optimizer: float            # optimizer states on the GPU (paged states are in optimizer_paged)
    master_weights: float       # fp32 master copy kept by "mixed" precision
    activations: float          # tensors saved for backward across all layers
    loss: float                 # logits and cross-entropy buffers
    workspace: float            # one layer's backward/recompute, dequantized weight, gathered shards, step temps
    cuda_context: float
    allocator_overhead: float   # reserved by the caching allocator but not allocated (fragmentation)
    your_runs: float            # the correction the user's own measured runs make to the allocated peak
    total: float                # what must fit on the GPU
    allocated: float            # the peak torch.cuda.max_memory_allocated would report
    optimizer_paged: float      # bitsandbytes paged states: unified memory, evicted to CPU under pressure
    phase: str                  # "forward/backward" or "optimizer step": when the peak happens
    terms: tuple[Term, ...]     # the derivation, for --explain
    assumptions: tuple[str, ...]

    def components(self) -> dict[str, float]:
        skip = {"total", "allocated", "optimizer_paged", "phase", "terms", "assumptions"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_json(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {name: round(value, 3) for name, value in self.components().items()}
        out.update(optimizer_paged=round(self.optimizer_paged, 3), allocated=round(self.allocated, 3),
                   phase=self.phase)
        return out


def _fmt(x: float) -> str:
    return f"{x / 1e9:.3f}e9" if x >= 1e7 else f"{x:,.0f}"


# TRL's chunked log-prob head projects [4096 tokens x 32768 vocabulary] tiles (trl/kernels/chunked_logprob.py:
# TOKEN_CHUNK_SIZE; trl/trainer/utils.py: _CHUNKED_LOGPROB_CHUNK_SIZE)
TRL_TILE = (4096, 32768)


def loss_buffer_bytes(loss: str, tokens: int, arch: ModelArch, head_trains: bool,
                      head_bytes: int = 2) -> tuple[float, str]:
    """Bytes the logits and the cross-entropy hold at the start of backward, and how they were counted.
    ``head_bytes``: bytes of one output-head weight (its gradient, the .grad, is counted with the gradients)."""
    per_logit = LOSS_BYTES_PER_LOGIT[loss]
    total = tokens * arch.vocab_size * per_logit
    formula = f"{tokens:,} tokens x vocab {arch.vocab_size:,} x {per_logit:g} B ({loss} cross-entropy)"
    if loss == "trl_fused":
        # saved: the gathered 16-bit hidden states + fp32 log-sum-exp and entropy; backward: the fp32 input
        # gradient and its 16-bit cast, one 16-bit projection tile, and for a trained 16-bit head the fp32
        # gradient it accumulates before the cast that becomes the .grad (an fp32 head's is the .grad itself)
        h = arch.hidden_size
        tile = min(tokens, TRL_TILE[0]) * TRL_TILE[1] * 2
        head = 4 * arch.vocab_size * h if head_trains and head_bytes < 4 else 0
        total = tokens * (8 * h + 16) + tile + head
        formula = (f"TRL chunked log-prob head: {tokens:,} tokens x (8h + 16) B + a {TRL_TILE[0]}x{TRL_TILE[1]}"
                   f" 16-bit tile" + (" + the fp32 head gradient before its cast (4 B x V x h)" if head else ""))
    return total, formula


class _Layer:
    """Bytes saved for backward per token in one decoder layer, by part (validated against HF on CPU)."""

    def __init__(self, shape: ModelShape, setup: TrainingSetup):
        self.shape, self.setup = shape, setup
        self.full = setup.method == "full"
        self.lora = setup.lora_modules
        # LoRA's A saves its own transformed copy of the input, not the block's shared one, when the adapter path
        # transforms it: dropout, or PEFT's cast to the fp32 adapter dtype that autocast casts back to 16-bit.
        self.fp32_adapters = fp32_adapters(setup)
        self.own_copies = bool(self.lora) and (setup.lora_dropout > 0 or self.fp32_adapters)
        self.keeps_inputs = self.full or setup.impl.saves_frozen_inputs

    def needs_input(self, module: str) -> bool:
        return self.keeps_inputs or module in self.lora

    def _input_readers(self, modules: tuple[str, ...]) -> int:
        """How many of these matmuls, which read one shared input, need it saved for a weight gradient."""
        if self.keeps_inputs:
            return len(modules)
        return 0 if self.own_copies else sum(m in self.lora for m in modules)

    def checkpointed_input(self) -> float:
        """Bytes per token a checkpointed layer keeps: its input, the residual stream, fp32 where fp32 weights make
        it so (see ``norm``)."""
        return self.setup.weight_bytes * self.shape.h

    def norm(self, readers: int) -> float:
        """RMSNorm followed by ``readers`` matmuls that need its output for their weight gradients."""
        h = self.shape.h
        if self.setup.impl.compiled:  # fused RMSNorm saves its 16-bit input and the inverse RMS
            return 2 * h + 4 + (2 * h if readers else 0)
        if self.setup.precision == "amp":
            # fp32 weights keep the residual stream in fp32: the norm saves its fp32 input, 1/rms and, when its
            # weight trains, the fp32 normalised tensor; autocast casts the fp32 output to 16-bit once per matmul
            return 4 * h + 4 + (4 * h if self.full else 0) + 2 * h * readers
        # eager: the fp32 upcast (4h; the 16-bit input without upcast) and 1/rms; the normalised 16-bit tensor
        # (2h) when the weight trains; the output (2h) when a following matmul needs it for a weight gradient
        upcast = 4 * h if self.setup.impl.norm_upcast else 2 * h
        return upcast + 4 + (2 * h if self.full else 0) + (2 * h if readers else 0)

    def attention(self) -> float:
        s, a = self.shape, self.shape.arch
        kv = s.q_dim if self.setup.repeats_kv else s.kv_dim
        if self.setup.impl.attention == "eager":
            # q, repeated k and v; fp32 softmax + its 16-bit copy (s^2 per head); o_proj's input copy
            o_in = 2 * s.q_dim if self.needs_input("o_proj") and not self.own_copies else 0
            return 2 * s.q_dim + 4 * s.q_dim + 6 * a.num_heads * self.setup.seq_len + o_in
        # SDPA / flash: q, k, v after RoPE, the output (which is also o_proj's input) and a fp32 log-sum-exp
        return 2 * s.q_dim + 4 * kv + 2 * s.q_dim + 4 * a.num_heads

    def mlp(self, width: int) -> float:
        act = 4 * width if self.setup.impl.compiled else 6 * width  # gate (+ act(gate) eager) + up
        down_in = 2 * width if (self.keeps_inputs or ("down_proj" in self.lora and not self.own_copies)) else 0
        return act + down_in

    def moe(self) -> float:
        s, a = self.shape, self.shape.arch
        experts_need = any(self.needs_input(m) for m in ("gate_proj", "up_proj", "down_proj"))
        per_expert = self.mlp(s.mlp_width) + (2 * s.h if experts_need else 0) + (2 * s.h if self.full else 0)
        return a.experts_per_token * per_expert + 8 * a.num_experts  # + fp32 router logits and softmax

    def adapters(self) -> float:
        """Per adapted module: A's 16-bit output (2r, saved by B), its own 16-bit input copy (2 d_in) when the path
        transforms the input, and the dropout mask. CUDA's fused dropout (at::native_dropout) keeps a bool mask,
        1 byte an element; PyTorch's unfused CPU path would keep the scaled noise in the input dtype instead."""
        total = 0.0
        r, dropout = self.setup.lora_r, self.setup.lora_dropout > 0
        for lin in self.shape.linears:
            if lin.name not in self.lora:
                continue
            copies = lin.count if lin.count == 1 else self.shape.arch.experts_per_token
            per = 2 * r + (2 * lin.d_in if self.own_copies else 0) + (DROPOUT_MASK_BYTES * lin.d_in if dropout else 0)
            total += copies * per
        return total

    def autocast_weight_copies(self) -> float:
        """Bytes (per layer, not per token) of the 16-bit copies autocast makes of fp32 weights for each matmul,
        which autograd keeps for the input gradient: the base weights under "amp", PEFT's fp32 adapters."""
        params = self.shape.layer_linear_params if self.setup.precision == "amp" else 0
        if self.fp32_adapters:
            params += self.shape.lora_params(self.lora - {"lm_head"}, self.setup.lora_r) // self.shape.arch.num_layers
        return 2 * params

    def backward_transient(self) -> float:
        """Gradient buffers alive in one layer's backward beyond its saved tensors, per token: the 16-bit gradient
        of the MLP's hidden width; with PEFT's fp32 adapters, the fp32 gradients of the widest adapted input's
        cast and of its dropout (measured against the H200 peaks and the CPU memory timeline of the HF stack)."""
        width = self.shape.mlp_width * (self.shape.arch.experts_per_token if self.shape.moe else 1)
        total = 2.0 * width
        if self.fp32_adapters:
            widest = max(lin.d_in for lin in self.shape.linears if lin.name in self.lora)
            total += (4 + (4 if self.setup.lora_dropout > 0 else 0)) * widest
        return total

    def quantized_inputs(self) -> float:
        """Old bitsandbytes kept the input of every 4-bit matmul: the q/k/v and gate/up inputs and down's."""
        if self.setup.method != "qlora" or not self.setup.impl.bnb_saves_inputs:
            return 0.0
        width = self.shape.mlp_width * (self.shape.arch.experts_per_token if self.shape.moe else 1)
        return 4 * self.shape.h + 2 * width

    def total(self) -> float:
        attn_in = self._input_readers(("q_proj", "k_proj", "v_proj"))
        mlp_in = self._input_readers(("gate_proj", "up_proj"))
        mlp = self.moe() if self.shape.moe else self.mlp(self.shape.mlp_width)
        return (self.norm(attn_in) + self.attention() + self.norm(mlp_in) + mlp + self.adapters()
                + self.quantized_inputs())


def previous_step_inputs(layer: _Layer, setup: TrainingSetup, num_layers: int) -> float:
    """Bytes per token of the previous micro-batch's 4-bit matmul inputs still allocated during the next forward,
    when bitsandbytes keeps them past backward (``Implementation.bnb_inputs_outlive_step``). Without checkpointing
    only: a reentrant checkpoint runs the forward without a graph and frees its recomputed one within backward."""
    if not setup.impl.bnb_inputs_outlive_step or setup.grad_checkpointing:
        return 0.0
    return num_layers * layer.quantized_inputs()


def forward_end(setup: TrainingSetup, arch: ModelArch, tokens: int, head_dequant: float) -> float:
    """Bytes beyond the activations at the end of the forward when the loop still holds the previous step's logits
    (``Implementation.holds_previous_logits``): both steps' 16-bit logits, and a quantized head's dequantized weight
    for the last chunk it projects."""
    if not setup.impl.holds_previous_logits:
        return 0.0
    return 2 * tokens * arch.vocab_size * 2 + head_dequant


def estimate_memory(arch: ModelArch, setup: TrainingSetup, calibration: Calibration | None = None) -> MemoryBreakdown:
    """Peak memory per GPU of training ``arch`` with ``setup``: each term below adds its lines to the derivation,
    in the order --explain shows them."""
    cal = calibration or default_calibration()
    arch = trained_arch(arch, setup.impl)
    shape = ModelShape(arch)
    out = _Derivation()
    resident = _trainable_state(shape, setup, _weights(shape, setup, out), out)
    _shard_and_offload(resident, shape, setup, out)
    activation_scale, overhead_share, context_gib = cal.memory_constants(setup.impl.name, setup.method)
    layer = _Layer(shape, setup)
    activations = _activations(shape, setup, layer, activation_scale, out)
    head_trains = setup.method == "full" or "lm_head" in setup.lora_modules
    loss, loss_formula = loss_buffer_bytes(setup.impl.loss, setup.tokens, arch, head_trains,
                                           PRECISIONS[setup.precision][0])
    out.term("loss", loss, loss_formula)
    workspace, held = _backward_workspace(shape, setup, layer, activation_scale, out)
    return _peak(shape, setup, cal, resident, _Backward(activations, loss, workspace, held),
                 (overhead_share, context_gib), out)


@dataclass
class _Derivation:
    """The lines of the derivation (``Term``) and the assumptions, in the order the terms are worked out."""

    terms: list[Term] = dataclass_field(default_factory=list)
    notes: list[str] = dataclass_field(default_factory=list)

    def term(self, name: str, size_bytes: float, formula: str) -> None:
        self.terms.append(Term(name, size_bytes / GIB, formula))


@dataclass
class _Resident:
    """Bytes per GPU of the parameters and their training state, as sharding and offload leave them on the card."""

    weights: float
    adapter: float
    grads: float  # every trainable gradient
    states: float  # optimizer states in device memory
    master: float  # fp32 master copy
    trainable: int  # trainable parameters
    grad_b: int  # bytes of one gradient
    state_b: float  # bytes of one optimizer state
    gathered: float = 0.0  # gathered shards or DDP's gradient buckets, alive through backward and the step
    paged: float = 0.0  # paged optimizer states (unified memory, not in max_memory_allocated)


@dataclass(frozen=True)
class _Backward:
    """The forward/backward phase's own bytes: stored activations, the loss buffers and one layer's workspace."""

    activations: float
    loss: float
    workspace: float  # one layer's backward, with any dequantized matrix
    held: float  # what the loop still holds at the end of the forward (``forward_end``)


def _weights(shape: ModelShape, setup: TrainingSetup, out: _Derivation) -> float:
    """The base model's weights: 16-bit, fp32 or NF4 (a tied head is the embedding matrix: it stays 16-bit)."""
    total_p = shape.total_params
    if setup.method != "qlora":
        param_b = PRECISIONS[setup.precision][0]
        weights: float = total_p * param_b
        out.term("weights", weights, f"{_fmt(total_p)} params x {param_b} B ({setup.precision})")
        return weights
    q_bytes = NF4_DQ_BYTES if setup.double_quant else NF4_BYTES
    quantized = quantized_params(shape.arch, setup)
    rest = total_p - quantized
    rest_b = setup.weight_bytes
    weights = quantized * q_bytes + rest * rest_b
    out.term("weights", weights,
             f"{_fmt(quantized)} quantized params x {q_bytes:.4f} B (NF4{'+DQ' if setup.double_quant else ''}) + "
             f"{_fmt(rest)} embedding/head/norm params x {rest_b} B")
    return weights


def _trainable_state(shape: ModelShape, setup: TrainingSetup, weights: float, out: _Derivation) -> _Resident:
    """The trainable parameters (LoRA's adapters), their gradients, optimizer states and master copy."""
    _, grad_b, master_b = PRECISIONS[setup.precision]
    opt = setup.optimizer_kind
    trainable = trainable_params(shape, setup)
    train_b = trainable_bytes(setup)
    adapter = 0.0
    if setup.method != "full":
        adapter = trainable * train_b
        out.term("adapter", adapter,
                 f"{_fmt(trainable)} LoRA params (r={setup.lora_r} on {','.join(sorted(setup.lora_modules))}) x "
                 f"{train_b} B")
        grad_b, master_b = train_b, 0
    state_b = opt.state_bytes if opt.state_bytes is not None else (4 if master_b else train_b)
    resident = _Resident(weights=weights, adapter=adapter, grads=trainable * grad_b,
                         states=trainable * opt.states * state_b, master=trainable * master_b, trainable=trainable,
                         grad_b=grad_b, state_b=state_b)
    out.term("gradients (all)", resident.grads, f"{_fmt(trainable)} trainable x {grad_b} B")
    out.term("optimizer states", resident.states, f"{_fmt(trainable)} trainable x {opt.states} states x "
                                                  f"{state_b:.3g} B ({opt.name}{', paged' if opt.paged else ''})")
    if resident.master:
        out.term("master weights", resident.master, f"{_fmt(trainable)} x 4 B fp32 copy")
    return resident


def _shards_states(setup: TrainingSetup) -> bool:
    return setup.sharding in ("zero1", "zero2", "zero3", "fsdp")


def _shard_and_offload(r: _Resident, shape: ModelShape, setup: TrainingSetup, out: _Derivation) -> None:
    """What ZeRO/FSDP sharding, DDP's buckets, CPU offload and paged optimizer states change on the card."""
    n = setup.n_gpus
    shard_params = setup.sharding in ("zero3", "fsdp")
    if _shards_states(setup):
        r.states, r.master = r.states / n, r.master / n
    if setup.sharding in ("zero2", "zero3", "fsdp"):
        r.grads /= n
    if shard_params:
        r.weights, r.adapter = r.weights / n, r.adapter / n
        # the unit being computed and the prefetched next one are gathered in 16-bit (NF4 for QLoRA)
        unit_b = NF4_DQ_BYTES if setup.method == "qlora" else COMPUTE_BYTES
        r.gathered = 2 * (shape.layer_linear_params * unit_b + shape.layer_other_params * COMPUTE_BYTES)
        if setup.sharding == "fsdp":  # the root unit (embedding, head) stays gathered through backward
            r.gathered += (shape.embedding_params + shape.lm_head_params) * COMPUTE_BYTES
        out.term("gathered shards", r.gathered, "2 decoder layers in compute dtype"
                 + (" + root unit (embedding, head)" if setup.sharding == "fsdp" else ""))
        out.notes.append(f"{setup.sharding} over {n} GPUs: weights, grads and optimizer states divided by {n}")
    elif setup.sharding == "ddp" and n > 1:
        # DDP reducer buckets hold a second copy of the gradients (gradient_as_bucket_view=False)
        r.gathered = r.trainable * r.grad_b
        out.term("DDP gradient buckets", r.gathered, "one copy of the trainable gradients")
    if setup.cpu_offload in ("optimizer", "params"):
        r.states, r.master = 0.0, 0.0
        out.notes.append("optimizer states and master weights offloaded to CPU memory")
    if setup.cpu_offload == "params":
        r.weights, r.adapter = 0.0, 0.0
        r.grads = shape.largest_layer_params * r.grad_b if setup.method == "full" else 0.0
        out.notes.append("parameters and gradients offloaded to CPU; only gathered layers on the GPU")
    if setup.optimizer_kind.paged:
        r.paged, r.states = r.states, 0.0
        out.notes.append("paged optimizer states live in CUDA unified memory: not in max_memory_allocated, "
                         "evicted to CPU under memory pressure")


def _activations(shape: ModelShape, setup: TrainingSetup, layer: _Layer, activation_scale: float,
                 out: _Derivation) -> float:
    """The tensors every layer saves for backward (only the checkpointed inputs under gradient checkpointing)."""
    tokens, num_layers = setup.tokens, shape.arch.num_layers
    per_layer = layer.total()
    final_norm = layer.norm(int(setup.method == "full" or "lm_head" in setup.lora_modules))
    stored_layers = min(num_layers, 2) if setup.impl.activation_offload else num_layers
    if setup.grad_checkpointing:
        per_token = stored_layers * layer.checkpointed_input() + final_norm
        formula = (f"{stored_layers} layers x {layer.checkpointed_input():,.0f} B checkpointed inputs + final norm"
                   f" ({final_norm:,.0f} B), x {tokens:,} tokens")
    else:
        per_token = stored_layers * per_layer + final_norm
        formula = (f"{stored_layers} layers x {per_layer:,.0f} B saved per token per layer + final norm"
                   f" ({final_norm:,.0f} B), x {tokens:,} tokens")
    if setup.impl.activation_offload:
        out.notes.append("activation offloading: only the layers in flight keep activations on the GPU")
    activations = per_token * tokens * activation_scale
    if activation_scale != 1:
        formula += f" x {activation_scale:.3f} (calibrated)"
    previous = previous_step_inputs(layer, setup, num_layers) * tokens * activation_scale
    if previous:
        activations += previous
        formula += " + the previous micro-batch's 4-bit matmul inputs (bitsandbytes < 0.43.2, bitsandbytes#1270)"
    casts_per_layer = layer.autocast_weight_copies()
    if casts_per_layer:
        # autocast casts each fp32 weight to 16-bit for its matmul and autograd keeps the copy for backward
        cast_layers = 1 if setup.grad_checkpointing else num_layers
        activations += cast_layers * casts_per_layer
        formula += f" + 16-bit autocast copies of {cast_layers} layers' fp32 weights"
    out.term("activations", activations, formula)
    return activations


def _backward_workspace(shape: ModelShape, setup: TrainingSetup, layer: _Layer, activation_scale: float,
                        out: _Derivation) -> tuple[float, float]:
    """One layer's backward: its gradient transients on top of what is stored, under checkpointing the layer's
    recomputed saved tensors as well, and for QLoRA one dequantized matrix; and what the loop holds at the end of
    the forward (``forward_end``), which competes with it."""
    per_layer = layer.total()
    transient = layer.backward_transient()
    recomputed = per_layer if setup.grad_checkpointing else 0.0
    layer_ws = (recomputed + transient) * setup.tokens * activation_scale
    # bitsandbytes dequantizes a whole matrix to 16-bit for each matmul, forward and backward; a quantized head
    # (V x h) is the largest one and is dequantized while every activation is still stored
    dequant = head_dequant = 0.0
    if setup.method == "qlora":
        head = shape.embedding_params if setup.impl.quantize_lm_head and not shape.arch.tie_word_embeddings else 0
        dequant, head_dequant = max(shape.largest_matrix, head) * COMPUTE_BYTES, head * COMPUTE_BYTES
    held = forward_end(setup, shape.arch, setup.tokens, head_dequant)
    if held:
        out.term("forward end", held, "the previous and this step's 16-bit logits"
                 + (" + the dequantized head" if head_dequant else ""))
    out.term("backward workspace", layer_ws + dequant,
             (f"one layer recomputed ({per_layer:,.0f} B/token) + " if recomputed else "")
             + f"gradient transients ({transient:,.0f} B/token) x {setup.tokens:,} tokens"
             + (" + one dequantized matrix" if dequant else ""))
    return layer_ws + dequant, held


def _peak(shape: ModelShape, setup: TrainingSetup, cal: Calibration, r: _Resident, backward: _Backward,
          overhead: tuple[float, float], out: _Derivation) -> MemoryBreakdown:
    """The larger of the two phases on top of what is resident, the user's runs' correction, the allocator's slack
    and the CUDA context (``overhead``: the calibrated share of the allocated peak and the context in GiB)."""
    param_b = PRECISIONS[setup.precision][0]
    opt = setup.optimizer_kind
    # optimizer step: every gradient at once (unless fused into backward) + foreach temporaries
    step_tmp = 0.0 if (opt.fused or opt.states == 0) else r.trainable * r.state_b / (
        setup.n_gpus if _shards_states(setup) else 1)
    if setup.impl.optimizer_in_backward:
        live_grads = shape.largest_layer_params * r.grad_b if setup.method == "full" else r.grads
        out.notes.append("optimizer step fused into backward: gradients freed as soon as they are applied")
    else:
        live_grads = r.grads
    accumulating = setup.grad_accumulation > 1
    head_grad = shape.embedding_params * param_b if setup.method == "full" else 0.0
    fb_grads = live_grads if accumulating else min(head_grad, live_grads)
    # the loss buffers, one layer's backward and the forward's end are not alive at once: the largest counts
    workspace_fb = max(backward.workspace, backward.loss, backward.held) - backward.loss + r.gathered
    fb = backward.activations + backward.loss + workspace_fb + fb_grads
    # the end of backward: with every gradient made, a tied input embedding's dense gradient is made too, then
    # added to the head's (the same .grad)
    tied = (shape.embedding_params * r.grad_b if setup.method == "full" and shape.arch.tie_word_embeddings
            and not setup.impl.optimizer_in_backward else 0.0)
    step_ws = max(step_tmp, tied) + r.gathered
    step = live_grads + step_ws
    if fb >= step:
        phase, peak = "forward/backward", (fb_grads, backward.activations, backward.loss, workspace_fb)
    else:
        phase, peak = "optimizer step", (live_grads, 0.0, 0.0, step_ws)
    allocated = r.weights + r.adapter + r.states + r.master + max(fb, step)
    yours = allocated * (cal.your_memory - 1)
    if yours:
        out.term("your runs", yours, f"allocated peak x {cal.your_memory:.3f} ({cal.your_runs})")
        allocated += yours
    slack, context = allocated * overhead[0], overhead[1] * GIB
    if accumulating:
        out.notes.append(f"gradient accumulation over {setup.grad_accumulation} micro-batches keeps gradients "
                         "alive during forward/backward")
    peak_grads, peak_act, peak_loss, peak_ws = peak
    return MemoryBreakdown(
        weights=r.weights / GIB, adapter=r.adapter / GIB, gradients=peak_grads / GIB, optimizer=r.states / GIB,
        master_weights=r.master / GIB, activations=peak_act / GIB, loss=peak_loss / GIB, workspace=peak_ws / GIB,
        cuda_context=context / GIB, allocator_overhead=slack / GIB, your_runs=yours / GIB,
        total=(allocated + slack + context) / GIB, allocated=allocated / GIB, optimizer_paged=r.paged / GIB,
        phase=phase, terms=tuple(out.terms), assumptions=tuple(out.notes),
    )


def fits(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, calibration: Calibration | None = None) -> bool:
    return estimate_memory(arch, setup, calibration).total <= gpu.memory_gib


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest x in [lo, hi] with ok(x), assuming ok is monotone (true then false); lo - 1 if none."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_micro_batch(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, *, limit: int = 4096,
                    calibration: Calibration | None = None) -> int:
    """Largest micro-batch at ``setup.seq_len`` that fits on ``gpu``; 0 when even 1 does not."""
    return _largest(1, limit, lambda b: fits(arch, gpu, setup.with_(micro_batch=b), calibration))


def max_seq_len(arch: ModelArch, gpu: GpuSpec, setup: TrainingSetup, *, calibration: Calibration | None = None,
                multiple_of: int = 64) -> int:
    """Longest sequence (a multiple of ``multiple_of``, up to the model's context) at ``setup.micro_batch`` that
    fits on ``gpu``; 0 when even ``multiple_of`` tokens do not."""
    top = max(1, arch.max_position_embeddings // multiple_of)
    steps = _largest(1, top, lambda k: fits(arch, gpu, setup.with_(seq_len=k * multiple_of), calibration))
    return steps * multiple_of
