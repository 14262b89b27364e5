"""What is being trained and how: the inputs shared by the memory, compute and cost estimates.

``TrainingSetup`` is the user's choice (method, batch, sequence, optimizer, GPUs). ``Implementation`` says how
the training code stores tensors; its default is the local trainer (HF Trainer + TRL + PEFT, eager PyTorch).
The other presets describe the frameworks whose published measurements calibrate the estimator.
``ModelShape`` is the estimator's view of a catalog ``ModelArch`` (whose matrices and parameter count it reuses).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from ftbroker import bounds
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.pricing.catalog import Linear, ModelArch
from ftbroker.vocabulary import METHODS

# Bytes of one parameter, its gradient and its fp32 master copy, per training precision.
#   bf16  pure 16-bit: the model is loaded in bf16; grads and torch optimizer states follow the param dtype
#         (HF Trainer on a bf16-loaded model, torchtune dtype=bf16, litgpt bf16-true, LLaMA-Factory pure_bf16)
#   amp   fp32 weights + bf16/fp16 autocast (HF Trainer on a model loaded in fp32: TRL's default when it loads
#         the model from a name; transformers "model memory anatomy")
#   fp32  no autocast
#   mixed 16-bit weights and grads + fp32 master weights (ZeRO paper Fig. 1, DeepSpeed/Megatron, apex O2)
PRECISIONS: dict[str, tuple[int, int, int]] = {
    "bf16": (2, 2, 0),
    "amp": (4, 4, 0),
    "fp32": (4, 4, 0),
    "mixed": (2, 2, 4),
}

# NF4 (QLoRA paper, arXiv 2305.14314 sec. 3): 4-bit codes + one fp32 absmax per 64 weights (0.5 bit), or with
# double quantization fp8 absmax per 64 + one fp32 constant per 256 blocks (8/64 + 32/(64*256) = 0.127 bit).
NF4_BYTES = (4 + 32 / 64) / 8
NF4_DQ_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8

SHARDINGS = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
CPU_OFFLOADS = ("none", "optimizer", "params")
ATTENTIONS = ("sdpa", "eager")

# Bytes per (token x vocabulary entry) held for the loss at its peak, by implementation:
#   hf               transformers ForCausalLMLoss: logits.float() then cross_entropy. At the start of backward the
#                    saved fp32 log-softmax (4), its incoming gradient (4) and the outgoing gradient (4) coexist.
#   fp32_compiled    fp32 logits into a compiled cross-entropy: the saved fp32 input (4) and its gradient (4).
#   chunked          torchtune CEWithChunkedOutputLoss, eager: bf16 logit chunks kept (2) + every chunk's fp32
#                    log-softmax saved (4) + one chunk's gradients in flight (~1 over 8 chunks).
#   chunked_compiled the same under torch.compile: the fused loss saves its bf16 input and a log-sum-exp (2); the
#                    fp32 work of one chunk is transient (torchtune's Llama 3.2 3B rows: LoRA 8.5, QLoRA 4.6 GiB).
#   linear_chunked   torchtune LinearCrossEntropyLoss, eager: each chunk is projected inside the loss and only its
#                    fp32 log-softmax is saved (4); the 16-bit logits of a chunk are transient.
#   bf16_chunked     litgpt chunked_cross_entropy: bf16 logit chunks (2) + bf16 log-softmax outputs (2).
#   fused            fused linear + cross-entropy (Liger, Cut Cross-Entropy): logits never materialised.
#   trl_fused        TRL SFTTrainer's chunked log-prob head (trl/kernels/chunked_logprob.py, TRL >= 1.x): no
#                    logits either; its per-token and tile buffers are in memory.loss_buffer_bytes.
LOSS_BYTES_PER_LOGIT: dict[str, float] = {
    "hf": 12.0,
    "fp32_compiled": 8.0,
    "chunked": 7.0,
    "chunked_compiled": 2.0,
    "linear_chunked": 4.0,
    "bf16_chunked": 4.0,
    "fused": 0.0,
    "trl_fused": 0.0,
}


@dataclass(frozen=True)
class OptimizerKind:
    """How much state an optimizer keeps per trainable parameter and where."""

    name: str
    states: int                   # moments per parameter (AdamW: 2)
    state_bytes: float | None     # bytes per moment; None: the parameter's dtype (torch optimizers)
    paged: bool = False           # bitsandbytes paged: CUDA unified memory, outside max_memory_allocated
    fused: bool = True            # False: torch foreach step, one full-size temporary per moment group


_BNB_8BIT = 1 + 4 / 256  # one byte per state + an fp32 absmax per 256-value block (bitsandbytes blockwise)
OPTIMIZERS: dict[str, OptimizerKind] = {
    "adamw": OptimizerKind("adamw", 2, None),               # transformers 5 default optim: adamw_torch_fused
    "adamw_torch": OptimizerKind("adamw_torch", 2, None, fused=False),
    "adamw_8bit": OptimizerKind("adamw_8bit", 2, _BNB_8BIT),
    "paged_adamw_8bit": OptimizerKind("paged_adamw_8bit", 2, _BNB_8BIT, paged=True),
    "paged_adamw_32bit": OptimizerKind("paged_adamw_32bit", 2, 4.0, paged=True),  # bnb keeps 32-bit states fp32
    "adamw_4bit": OptimizerKind("adamw_4bit", 2, 0.5),       # torchao 4-bit AdamW
    "sgd": OptimizerKind("sgd", 0, None),                    # torch SGD without momentum
}
_OPTIMIZER_ALIASES = {
    "adamw_torch_fused": "adamw", "adamw_hf": "adamw_torch", "adamw_bnb_8bit": "adamw_8bit",
    "adamw8bit": "adamw_8bit", "paged_adamw": "paged_adamw_32bit", "paged_adamw8bit": "paged_adamw_8bit",
}

_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_TARGET_ALIASES = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "output_proj": "o_proj",
    "gate": "gate_proj", "up": "up_proj", "down": "down_proj", "w1": "gate_proj", "w3": "up_proj",
    "w2": "down_proj", "output": "lm_head",
}
_TARGET_GROUPS = {
    "all-linear": _LINEARS,  # PEFT's all-linear: every Linear except the output head
    "attention": _LINEARS[:4],
    "mlp": _LINEARS[4:],
}


def resolve_optimizer(name: str) -> OptimizerKind:
    key = name.strip().lower()
    key = _OPTIMIZER_ALIASES.get(key, key)
    if key not in OPTIMIZERS:
        raise UnknownNameError("optimizer", name, [*OPTIMIZERS, *_OPTIMIZER_ALIASES],
                               hint=f"valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def resolve_targets(targets: tuple[str, ...] | list[str]) -> frozenset[str]:
    """LoRA target names (HF module names, short forms, or the groups all-linear/attention/mlp) -> module set."""
    resolved: set[str] = set()
    choices = [*_LINEARS, "lm_head", *_TARGET_ALIASES, *_TARGET_GROUPS]
    for raw in targets:
        for name in (p.strip() for p in raw.split(",")):
            if not name:
                continue
            key = name.lower()
            if key in _TARGET_GROUPS:
                resolved.update(_TARGET_GROUPS[key])
            elif key in (*_LINEARS, "lm_head"):
                resolved.add(key)
            elif key in _TARGET_ALIASES:
                resolved.add(_TARGET_ALIASES[key])
            else:
                raise UnknownNameError("LoRA target module", name, choices)
    if not resolved:
        raise InputError("no LoRA target modules given (e.g. q_proj,v_proj or all-linear)")
    return frozenset(resolved)


@dataclass(frozen=True)
class Implementation:
    """How the training code stores tensors. Defaults: the local trainer (TRL SFTTrainer + PEFT, eager)."""

    name: str = "trl-sft"
    loss: str = "trl_fused"          # a key of LOSS_BYTES_PER_LOGIT
    compiled: bool = False           # torch.compile: fused norms and activations save fewer tensors
    attention: str = "sdpa"          # sdpa / flash (no s^2 terms) or eager (materialised softmax)
    repeat_kv: bool | None = None    # GQA k/v expanded before attention; None: HF rule (padded batch -> mask)
    peft_adapters: bool = True       # PEFT: fp32 adapters (LoRA only; TRL casts QLoRA adapters to bf16), and
                                     # each adapted module keeps its own autocast copy of its input
    quantize_lm_head: bool = False   # Lightning Fabric bitsandbytes converts every Linear, the head included
    norm_upcast: bool = True         # RMSNorm computes in fp32 (HF, torchtune, litgpt >= 2024); saves a fp32 copy
    saves_frozen_inputs: bool = False  # frozen matmuls keep their inputs: litgpt's published LoRA peaks sit ~12h
                                       # per layer above the saved-tensor count, the size of those inputs
                                       # (PyTorch 2.13 autograd keeps only what a gradient needs)
    bnb_saves_inputs: bool = False   # bitsandbytes < 0.43.2 MatMul4Bit kept its input A for backward (ctx.tensors =
                                     # (A, B)); 0.43.2 keeps (None, B) (bitsandbytes#1270)
    bnb_inputs_outlive_step: bool = False  # bitsandbytes < 0.43.2 kept that input as a ctx attribute, which backward
                                           # does not release (bitsandbytes#1270): a loop that holds the last step's
                                           # loss until the next one is computed (litgpt's fit) keeps it meanwhile
    holds_previous_logits: bool = False  # the loop rebinds ``logits = model(...)`` only when the next forward returns
                                         # (litgpt's fit): the previous step's logits live through that forward
    untied_head: bool = False        # the head is its own matrix even where the checkpoint ties it to the embedding
                                     # (litgpt's convert_hf_checkpoint copies wte.weight into lm_head.weight)
    activation_offload: bool = False
    optimizer_in_backward: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSS_BYTES_PER_LOGIT:
            raise UnknownNameError("loss implementation", self.loss, LOSS_BYTES_PER_LOGIT)
        if self.attention not in ATTENTIONS:
            raise UnknownNameError("attention implementation", self.attention, ATTENTIONS)


LOCAL_TRAINER = Implementation()


def trained_arch(arch: ModelArch, impl: Implementation) -> ModelArch:
    """The model as the training code holds it: an untied copy of a tied head where the code keeps its own."""
    return replace(arch, tie_word_embeddings=False) if impl.untied_head and arch.tie_word_embeddings else arch


@dataclass(frozen=True)
class TrainingSetup:
    """One training configuration. ``micro_batch`` and ``seq_len`` are per GPU and per step."""

    method: str
    micro_batch: int = 1
    seq_len: int = 2048
    lora_r: int = 16
    targets: tuple[str, ...] = ("all-linear",)
    lora_dropout: float = 0.0
    grad_checkpointing: bool = True
    optimizer: str = "adamw"
    precision: str = "bf16"
    n_gpus: int = 1
    sharding: str = "none"
    cpu_offload: str = "none"
    grad_accumulation: int = 1
    packing: bool = False
    double_quant: bool = True
    impl: Implementation = field(default=LOCAL_TRAINER)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            raise UnknownNameError("method", self.method, METHODS)
        if self.precision not in PRECISIONS:
            raise UnknownNameError("precision", self.precision, PRECISIONS)
        if self.sharding not in SHARDINGS:
            raise UnknownNameError("sharding", self.sharding, SHARDINGS)
        if self.cpu_offload not in CPU_OFFLOADS:
            raise UnknownNameError("CPU offload", self.cpu_offload, CPU_OFFLOADS)
        resolve_optimizer(self.optimizer)
        checked = {"micro_batch": "micro_batch", "seq_len": "seq_len", "n_gpus": "gpus",
                   "grad_accumulation": "grad_accum", **({"lora_r": "lora_r"} if self.method != "full" else {})}
        for name, bound in checked.items():
            why = bounds.problem(bound, getattr(self, name))
            if why is not None:
                problems.append(f"{name.replace('_', '-')} {getattr(self, name)}: {why}")
        if self.method != "full":
            resolve_targets(self.targets)
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora dropout must be in [0, 1), got {self.lora_dropout}")
        if self.n_gpus == 1 and self.sharding not in ("none", "ddp"):
            problems.append(f"sharding {self.sharding} needs more than one GPU")
        if self.cpu_offload == "params" and self.sharding not in ("zero3", "fsdp"):
            problems.append("parameter offload needs zero3 or fsdp sharding")
        if problems:
            raise InputError("; ".join(problems))

    @property
    def optimizer_kind(self) -> OptimizerKind:
        return resolve_optimizer(self.optimizer)

    @property
    def weight_bytes(self) -> int:
        """Bytes of a weight the precision holds (4 under amp and fp32, else 2): an unquantized one of QLoRA, and
        the residual stream it carries."""
        return PRECISIONS[self.precision][0]

    @property
    def lora_modules(self) -> frozenset[str]:
        return frozenset() if self.method == "full" else resolve_targets(self.targets)

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def repeats_kv(self) -> bool:
        """HF SDPA expands GQA k/v when an attention mask is present, i.e. for padded (unpacked) batches > 1."""
        if self.impl.repeat_kv is not None:
            return self.impl.repeat_kv
        return self.impl.attention == "eager" or (not self.packing and self.micro_batch > 1)

    def with_(self, **changes: Any) -> TrainingSetup:
        return replace(self, **changes)


@dataclass(frozen=True)
class ModelShape:
    """The estimator's view of a catalog ``ModelArch``: its matrices (from the arch, the one place parameters are
    counted), the embedding and head, the LoRA adapters and the weights one token is multiplied by."""

    arch: ModelArch

    @property
    def h(self) -> int:
        return self.arch.hidden_size

    @property
    def q_dim(self) -> int:
        return self.arch.q_dim

    @property
    def kv_dim(self) -> int:
        return self.arch.kv_dim

    @property
    def moe(self) -> bool:
        return self.arch.num_experts > 0

    @property
    def mlp_width(self) -> int:
        return self.arch.mlp_width

    @property
    def linears(self) -> tuple[Linear, ...]:
        return self.arch.linears

    @cached_property
    def layer_linear_params(self) -> int:
        return sum(lin.params for lin in self.linears)

    @property
    def layer_other_params(self) -> int:
        """Norms, attention biases and the MoE router: small, never quantized."""
        return self.arch.layer_other_params

    @property
    def embedding_params(self) -> int:
        return self.arch.vocab_size * self.h

    @property
    def lm_head_params(self) -> int:
        """Separate output-head parameters (0 when tied to the input embedding)."""
        return 0 if self.arch.tie_word_embeddings else self.embedding_params

    @property
    def total_params(self) -> int:
        return self.arch.params

    @cached_property
    def active_matmul_params(self) -> int:
        """Weights one token is multiplied by: attention, its experts' (or the dense) MLP, and the head."""
        per_layer = 0
        for lin in self.linears:
            per_layer += lin.d_in * lin.d_out * (self.arch.experts_per_token if lin.count > 1 else 1)
        per_layer += self.h * self.arch.num_experts  # router
        return self.arch.num_layers * per_layer + self.embedding_params

    def lora_params(self, modules: frozenset[str], r: int) -> int:
        """LoRA adds A (r x d_in) and B (d_out x r) to every adapted matrix, experts included."""
        per_layer = sum(r * (lin.d_in + lin.d_out) * lin.count for lin in self.linears if lin.name in modules)
        head = r * (self.h + self.arch.vocab_size) if "lm_head" in modules else 0
        return self.arch.num_layers * per_layer + head

    @cached_property
    def largest_layer_params(self) -> int:
        return max(self.layer_linear_params + self.layer_other_params, self.embedding_params)

    @cached_property
    def largest_matrix(self) -> int:
        return max(lin.d_in * lin.d_out for lin in self.linears)
