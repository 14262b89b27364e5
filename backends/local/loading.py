"""What the local trainer loads before it trains: its packages checked (before any heavy import), the device and
precision, the tokenizer, the model (transformers, in the method's precision or 4-bit for QLoRA; or Unsloth), the
LoRA config, and the environment transformers' tracker integrations read. Runs in the trainer's process only.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ftbroker.backends.local.config import (GPU_PRECISION, TRACKER_DEFAULT_PROJECT, TRACKER_PACKAGES, TRAINER_PACKAGES,
                                            TrainConfig)
from ftbroker.errors import ExtraNotInstalledError, InputError, SpecError

TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard: the event files of report_to=tensorboard

def check_installed(config: TrainConfig) -> None:
    """Fail fast, before any heavy import, when a package the config needs is missing."""
    needed = list(TRAINER_PACKAGES)
    if config.method == "qlora":
        needed.append("bitsandbytes")
    for package in needed:
        if importlib.util.find_spec(package) is None:
            raise ExtraNotInstalledError(package, "local", "local training")
    if config.use_unsloth and importlib.util.find_spec("unsloth") is None:
        raise ExtraNotInstalledError("unsloth", "unsloth", "use_unsloth (Unsloth's CUDA training kernels)")
    if config.use_liger and importlib.util.find_spec("liger_kernel") is None:
        raise ExtraNotInstalledError("liger-kernel", "liger", "use_liger (Liger's Triton kernels)")
    for tracker in config.report_to:
        package = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            raise ExtraNotInstalledError(package, "track" if tracker != "wandb" else "wandb",
                                         f"report_to={tracker}")


def tracker_environment(config: TrainConfig, run_dir: Path) -> None:
    """Point transformers' tracker integrations (they read only environment variables) at the job's project and
    store; a variable the user set wins. Credentials (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, ...) come from the
    environment only, never from config.json."""
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / TENSORBOARD_DIR))
    for name in ("WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME"):  # the job's own project first
        if config.tracker_project is not None:
            os.environ[name] = config.tracker_project
        else:
            os.environ.setdefault(name, TRACKER_DEFAULT_PROJECT)
    if config.tracking_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = config.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI", "").startswith("file:"):
        # a folder store: MLflow 3 refuses one unless this is set (it prefers a database, which mlflow-skinny, the
        # `track` extra, cannot write; https://mlflow.org/docs/latest/self-hosting/migrate-from-file-store/)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def device_and_precision(config: TrainConfig, torch) -> tuple[str, str]:
    cuda = torch.cuda.is_available()
    device = config.device if config.device != "auto" else ("cuda" if cuda else "cpu")
    if device == "cuda" and not cuda:
        raise SpecError(["device: 'cuda' was asked for, but torch finds no CUDA GPU"])
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
    if precision == "fp16" and device == "cpu":
        raise SpecError(["precision: fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU"])
    if config.use_liger and device != "cuda":
        raise SpecError(["use_liger: Liger kernels are Triton GPU kernels and need device cuda"])
    if config.use_unsloth and device != "cuda":
        raise SpecError(["use_unsloth: Unsloth needs device cuda"])
    return device, precision


def concatenates(config: TrainConfig) -> bool:
    return config.packing or config.padding_free


def _torch_dtype(precision: str, torch):
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_tokenizer(config: TrainConfig):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
    except (OSError, ValueError) as exc:
        raise InputError(f"the tokenizer of model {config.model!r} cannot be loaded: {exc}") from exc
    if not tokenizer.is_fast:
        raise InputError(f"the tokenizer of {config.model!r} is not a fast (Rust) tokenizer; the trainer maps "
                         "assistant turns to tokens through a fast tokenizer's offsets")
    if config.chat_template:
        try:
            tokenizer.chat_template = Path(config.chat_template).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError([f"chat_template: cannot read {config.chat_template}: {exc.strerror}"]) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked out of the loss anyway
    return tokenizer


def load_model(config: TrainConfig, device: str, precision: str, torch):
    """Full fine-tuning keeps fp32 master weights (mixed precision autocasts); LoRA loads the frozen base in
    the training precision; QLoRA in 4-bit NF4 with double quantization (``config.GPU_PRECISION``)."""
    dtype = _torch_dtype(precision, torch)
    if config.use_unsloth:
        return _load_with_unsloth(config, dtype)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch.float32 if GPU_PRECISION[config.method] == "amp" else dtype}
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    if device == "cuda":
        from accelerate import PartialState

        kwargs["device_map"] = {"": PartialState().local_process_index}
        if concatenates(config) and importlib.util.find_spec("flash_attn"):
            kwargs["attn_implementation"] = "flash_attention_2"  # variable-length kernel: no cross-example work
    from safetensors import SafetensorError

    try:
        return AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:  # missing, unreadable or corrupt weights
        raise InputError(f"model {config.model!r} cannot be loaded: {exc}") from exc


def _load_with_unsloth(config: TrainConfig, dtype):
    """Unsloth loads and wraps the model itself (its own LoRA); the tokenizer stays the one loaded above."""
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=config.model, max_seq_length=config.max_seq_len, dtype=dtype,
        load_in_4bit=config.method == "qlora", full_finetuning=config.method == "full")
    if config.uses_adapter:
        lora = config.lora
        model = FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, random_state=config.seed,
            use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False)
    return model


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")
