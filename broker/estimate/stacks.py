"""Training stacks: how each common trainer stores tensors and what it does when the user sets nothing. Pure data.

A ``Stack`` is the one mapping from a method (full, LoRA, QLoRA) and the settings a user gives to the estimator's
``TrainingSetup``: the precision the weights are held in, the optimizer, the loss and attention kernels, gradient
checkpointing and packing, and the defaults of everything left unsaid. ``ftbroker`` is our own trainer
(``TrainConfig.training_setup`` and ``ftbroker estimate`` both go through it, so estimate, plan and run agree); the
others let a plan or an estimate describe a run made with the user's own trainer (``--stack``).

Each stack's facts come from the project's own code at the commit named beside it (read 2026-12-07).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from ftbroker.errors import UnknownNameError
from ftbroker.estimate.setup import LOCAL_TRAINER, Implementation, TrainingSetup
from ftbroker.vocabulary import METHODS

T = TypeVar("T")


def default_sharding(method: str, n_gpus: int) -> str:
    """What a multi-GPU run shards: DDP for adapters (small gradients), FSDP for full fine-tuning."""
    if n_gpus == 1:
        return "none"
    return "fsdp" if method == "full" else "ddp"


def _per_method(value: str | Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict.fromkeys(METHODS, value) if isinstance(value, str) else dict(value))


@dataclass(frozen=True)
class Stack:
    """A trainer as the estimator sees it: its tensors (``impl``, per method where it differs) and its defaults."""

    name: str
    title: str
    impl: Implementation
    precision: Mapping[str, str]      # by method: a key of setup.PRECISIONS
    optimizer: Mapping[str, str]      # by method: a key of setup.OPTIMIZERS (or an alias)
    grad_checkpointing: bool
    micro_batch: int
    seq_len: int
    lora_r: int
    lora_dropout: float
    targets: tuple[str, ...]
    packing: bool
    sources: tuple[str, ...]
    impl_by_method: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # Implementation changes
    offload_is_checkpointing: bool = False  # the activation offload is how it checkpoints: off without checkpointing

    def implementation(self, method: str) -> Implementation:
        changes = self.impl_by_method.get(method)
        return replace(self.impl, **changes) if changes else self.impl

    def setup(self, method: str, *, micro_batch: int | None = None, seq_len: int | None = None,
              lora_r: int | None = None, targets: tuple[str, ...] | None = None, lora_dropout: float | None = None,
              grad_checkpointing: bool | None = None, optimizer: str | None = None, precision: str | None = None,
              n_gpus: int = 1, sharding: str | None = None, grad_accumulation: int = 1, packing: bool | None = None,
              impl: Implementation | None = None) -> TrainingSetup:
        """The setup of ``method`` under this stack: every setting not given (None) is the stack's default."""
        if method not in METHODS:
            raise UnknownNameError("method", method, METHODS)

        def pick(given: T | None, default: T) -> T:
            return default if given is None else given

        checkpointing = pick(grad_checkpointing, self.grad_checkpointing)
        impl = pick(impl, self.implementation(method))
        if self.offload_is_checkpointing and not checkpointing:
            impl = replace(impl, activation_offload=False)
        return TrainingSetup(
            method=method, micro_batch=pick(micro_batch, self.micro_batch), seq_len=pick(seq_len, self.seq_len),
            lora_r=pick(lora_r, self.lora_r), targets=tuple(pick(targets, self.targets)),
            lora_dropout=pick(lora_dropout, self.lora_dropout),
            grad_checkpointing=checkpointing,
            optimizer=pick(optimizer, self.optimizer[method]), precision=pick(precision, self.precision[method]),
            n_gpus=n_gpus, sharding=pick(sharding, default_sharding(method, n_gpus)),
            grad_accumulation=grad_accumulation, packing=pick(packing, self.packing),
            impl=impl)


FTBROKER = Stack(
    name="ftbroker", title="ftbroker's trainer (TRL SFTTrainer + PEFT)", impl=LOCAL_TRAINER,
    # full: fp32 master weights, gradients and AdamW states under bf16 autocast (pure 16-bit AdamW rounds away most
    # updates at lr 1e-5); LoRA/QLoRA: the frozen base in 16-bit (QLoRA: NF4), the adapters as PEFT/TRL keep them
    precision=_per_method({"full": "amp", "lora": "bf16", "qlora": "bf16"}), optimizer=_per_method("adamw"),
    grad_checkpointing=True, micro_batch=4, seq_len=2048, lora_r=16, lora_dropout=0.05, targets=("all-linear",),
    packing=False, sources=("ftbroker.backends.local.train (this repository)",))

STACKS: Mapping[str, Stack] = MappingProxyType({s.name: s for s in (
    FTBROKER,
    Stack(
        name="hf", title="plain transformers Trainer + PEFT",
        # ForCausalLMLoss: logits.float() then cross_entropy, the whole [tokens x vocab] in fp32
        impl=Implementation(name="hf", loss="hf"),
        # transformers 5 loads a checkpoint in its own dtype (bf16) unless told otherwise
        precision=_per_method("bf16"), optimizer=_per_method("adamw"), grad_checkpointing=False, micro_batch=8,
        seq_len=2048, lora_r=8, lora_dropout=0.0, targets=("q_proj", "v_proj"), packing=False,
        sources=("huggingface/transformers@0114da07 src/transformers/loss/loss_utils.py (ForCausalLMLoss)",
                 "huggingface/transformers@fd798335 src/transformers/training_args.py (per_device_train_batch_size"
                 " 8, gradient_checkpointing False, optim adamw_torch_fused)",
                 "huggingface/trl#5457 (transformers 5 loads models in their checkpoint dtype)",
                 "huggingface/peft@00a4d080 src/peft/tuners/lora/config.py (LoraConfig r 8, lora_dropout 0.0; "
                 "Llama target modules q_proj, v_proj)")),
    Stack(
        name="unsloth", title="Unsloth (FastLanguageModel)",
        # fused chunked cross-entropy (no logits), Triton RMSNorm/SwiGLU/RoPE kernels that save fewer tensors,
        # use_gradient_checkpointing="unsloth": the checkpointed layer inputs are offloaded to CPU RAM
        impl=Implementation(name="unsloth", loss="fused", compiled=True, activation_offload=True,
                            peft_adapters=False),
        precision=_per_method("bf16"), optimizer=_per_method("adamw_8bit"), grad_checkpointing=True, micro_batch=2,
        seq_len=2048, lora_r=16, lora_dropout=0.0, targets=("all-linear",), packing=False,
        offload_is_checkpointing=True,
        sources=("unslothai/unsloth@015bdef0 unsloth/models/llama.py (get_peft_model: r 16, the 7 linear "
                 "projections, lora_dropout 0, use_gradient_checkpointing 'unsloth'; unsloth_fused_ce_loss)",
                 "unslothai/unsloth@015bdef0 unsloth/models/loader.py (from_pretrained: max_seq_length 2048, "
                 "load_in_4bit True)",
                 "unslothai/unsloth@015bdef0 unsloth/models/_utils.py (apply_unsloth_gradient_checkpointing: "
                 "offloads activations from 512 tokens)",
                 "unslothai/unsloth@015bdef0 studio/backend/assets/configs/model_defaults/default.yaml (batch_size "
                 "2, max_seq_length 2048, packing false, optim adamw_8bit)")),
    Stack(
        name="axolotl", title="Axolotl (its example configs)",
        # the examples load Cut Cross Entropy (no logits), flash attention, sample packing, PEFT fp32 adapters
        impl=Implementation(name="axolotl", loss="fused"),
        precision=_per_method("bf16"), optimizer=_per_method("adamw_8bit"), grad_checkpointing=True, micro_batch=2,
        seq_len=2048, lora_r=32, lora_dropout=0.05, targets=("all-linear",), packing=True,
        sources=("axolotl-ai-cloud/axolotl@067b021c examples/*/README.md and their QLoRA configs "
                 "(CutCrossEntropyPlugin, sample_packing, micro_batch_size 2, sequence_len 2048, lora_r 32, "
                 "lora_dropout 0.05, adamw_bnb_8bit, gradient_checkpointing, flash_attention_2)",)),
    Stack(
        name="llamafactory", title="LLaMA-Factory",
        # HF loss; trainable parameters upcast to fp32 unless pure_bf16 (full: fp32 master weights under autocast)
        impl=Implementation(name="llamafactory", loss="hf"),
        precision=_per_method({"full": "amp", "lora": "bf16", "qlora": "bf16"}), optimizer=_per_method("adamw"),
        grad_checkpointing=True, micro_batch=1, seq_len=2048, lora_r=8, lora_dropout=0.0, targets=("all-linear",),
        packing=False,
        sources=("hiyouga/LLaMA-Factory@ff6d4d12 src/llamafactory/model/adapter.py (cast_trainable_params_to_fp32"
                 " unless pure_bf16)",
                 "hiyouga/LLaMA-Factory@ff6d4d12 src/llamafactory/hparams/ (lora_rank 8, lora_dropout 0, "
                 "lora_target all, cutoff_len 2048, gradient checkpointing on, flash_attn auto, liger off)",
                 "hiyouga/LLaMA-Factory@ff6d4d12 examples/train_lora/qwen3_lora_sft.yaml "
                 "(per_device_train_batch_size 1)")),
    Stack(
        name="litgpt", title="LitGPT (litgpt finetune, one GPU)",
        # bf16-true: weights, adapters, gradients and torch AdamW states in bf16; QLoRA: Lightning's
        # BitsandbytesPrecision turns every Linear into NF4, the head included, and bitsandbytes' PagedAdamW keeps
        # 32-bit states; the head is its own matrix even for a tied checkpoint; chunked bf16 cross-entropy; GQA k/v
        # repeated before SDPA; fit() rebinds logits after the next forward; no activation checkpointing on one GPU
        # (FSDP wraps Blocks when there are several)
        impl=Implementation(name="litgpt", loss="bf16_chunked", peft_adapters=False, repeat_kv=True,
                            saves_frozen_inputs=True, quantize_lm_head=True, untied_head=True,
                            holds_previous_logits=True),
        precision=_per_method("bf16"),
        optimizer=_per_method({"full": "adamw_torch", "lora": "adamw_torch", "qlora": "paged_adamw_32bit"}),
        # micro_batch_size 1; max_seq_length None trains to the longest sample: the estimator's common 2048 here
        grad_checkpointing=False, micro_batch=1, seq_len=2048, lora_r=8, lora_dropout=0.05,
        targets=("q_proj", "v_proj"), packing=False,
        sources=("https://github.com/Lightning-AI/litgpt/blob/26857050fe3ff627cd714fe92f5838f51a3d5efa/litgpt/finetune/"
                 "lora.py (lora_r 8, lora_dropout 0.05, lora_query/lora_value only, micro_batch_size 1, "
                 "max_seq_length None, AdamW; bnb.* quantize -> BitsandbytesPrecision + instantiate_bnb_optimizer; "
                 "model(input_ids, lm_head_chunk_size=128) + chunked_cross_entropy)",
                 "https://github.com/Lightning-AI/litgpt/blob/26857050fe3ff627cd714fe92f5838f51a3d5efa/litgpt/utils.py"
                 " (get_default_supported_precision: bf16-true; instantiate_bnb_optimizer: bnb.optim.PagedAdamW)",
                 "https://github.com/Lightning-AI/litgpt/blob/26857050fe3ff627cd714fe92f5838f51a3d5efa/litgpt/scripts/"
                 "convert_hf_checkpoint.py (copy_weights_hf_llama: lm_head.weight = transformer.wte.weight when the "
                 "checkpoint has no head)",
                 "https://github.com/Lightning-AI/litgpt/blob/26857050fe3ff627cd714fe92f5838f51a3d5efa/litgpt/model.py"
                 " (lm_head nn.Linear; k/v repeat_interleave before scaled_dot_product_attention)",
                 "https://github.com/Lightning-AI/litgpt/blob/26857050fe3ff627cd714fe92f5838f51a3d5efa/pyproject.toml"
                 " (bitsandbytes>=0.45.2 on Linux: MatMul4Bit no longer keeps its input, bitsandbytes#1270)")),
    Stack(
        name="torchtune", title="torchtune (single-device recipes)",
        # LinearCrossEntropyLoss: logits in chunks, each chunk's fp32 log-softmax kept; LoRA adapters in bf16
        impl=Implementation(name="torchtune", loss="linear_chunked", peft_adapters=False, repeat_kv=True),
        precision=_per_method("bf16"),
        optimizer=_per_method({"full": "paged_adamw_8bit", "lora": "adamw_torch", "qlora": "adamw_torch"}),
        grad_checkpointing=True, micro_batch=2, seq_len=2048, lora_r=8, lora_dropout=0.0,
        targets=("q_proj", "v_proj", "o_proj", "mlp"), packing=False,
        impl_by_method={"full": {"optimizer_in_backward": True}},
        sources=("pytorch/torchtune@bd2a0fc7 recipes/configs/llama3_1/8B_{full,lora,qlora}_single_device.yaml "
                 "(dtype bf16, batch_size 2, lora_rank 8 on q/v/output_proj + MLP, activation checkpointing, "
                 "compile False; full: PagedAdamW8bit with optimizer_in_bwd)",
                 "pytorch/torchtune@bd2a0fc7 torchtune/modules/loss/cross_entropy_loss.py "
                 "(LinearCrossEntropyLoss, 8 chunks)")),
)})


def resolve_stack(name: str) -> Stack:
    try:
        return STACKS[name.strip().lower()]
    except KeyError:
        raise UnknownNameError("stack", name, STACKS) from None
