"""The trainer's config.json, as a validated model (the schema itself is documented in ``train.py``).

Importing this module is cheap (pydantic only), so the local backend can build and check a config
before it launches the trainer process.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Literal

from ftbroker.errors import SpecError
from ftbroker.estimate.stacks import FTBROKER, STACKS, Stack
from ftbroker.spec import LoraSettings
from ftbroker.vocabulary import Method
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_NAME = "config.json"
RUNS_DIR = "runs"  # FTBROKER_HOME/runs/<job id>: the run folders
# In a run folder another backend keeps there (ec2 downloads its output into one): which backend, and where the
# job's state lives. `ftbroker ledger rebuild` restores local jobs only, and says this of the others.
OWNER_NAME = "backend.json"

# The trainer's settings and how it holds tensors, as the estimator sees them: one Stack (ftbroker.estimate.stacks),
# whose defaults are this config's defaults, so `ftbroker estimate`, `plan` and `run` start from the same values.
# GPU_PRECISION: how the trainer holds the weights on a GPU, in the estimator's terms (``TrainingSetup.precision``):
#   full         "amp": fp32 master weights, gradients and AdamW states, bf16 (fp16) autocast. Pure 16-bit AdamW
#                would round away every update smaller than 2^-8 of a weight, which lr 1e-5 steps mostly are.
#   lora, qlora  "bf16": the frozen base in 16-bit (QLoRA: NF4 linears, the rest 16-bit); the adapters in fp32
#                for LoRA (PEFT's autocast_adapter_dtype) and bf16 for QLoRA (TRL casts them).
# (TRL would load a model given by name in fp32 unless told otherwise; this trainer loads the model itself.)
# On the CPU every weight is fp32.
GPU_PRECISION = FTBROKER.precision

# What the trainer imports (the `local` extra); QLoRA needs bitsandbytes too.
TRAINER_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


# The experiment trackers the trainer logs to through transformers' own integrations (TrainingArguments.report_to,
# https://huggingface.co/docs/transformers/main_classes/callback), and the package each needs (the `track` extra
# has mlflow and tensorboard; wandb is the user's own install).
TrackerName = Literal["wandb", "mlflow", "tensorboard"]
TRACKER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}
TRACKER_DEFAULT_PROJECT = "ftbroker"


# The adapter a job leaves to the trainer (a None in its LoraSettings): the ftbroker stack's, alpha 2r at r 16.
LORA_DEFAULTS = {"r": FTBROKER.lora_r, "alpha": 32, "dropout": FTBROKER.lora_dropout,
                 "target_modules": FTBROKER.targets[0]}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str | None = None
    model: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    validation_dataset: str | None = None
    eval_fraction: float = Field(0.1, ge=0, le=0.5)
    eval_at_start: bool = True
    method: Method = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    micro_batch_size: int = Field(FTBROKER.micro_batch, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    # a run folder written before the knob took the CLI's name (max_seq_length) is still read: its job may resume
    max_seq_len: int = Field(FTBROKER.seq_len, ge=8, validation_alias=AliasChoices("max_seq_len", "max_seq_length"))
    packing: bool = FTBROKER.packing
    padding_free: bool = False
    gradient_checkpointing: bool = FTBROKER.grad_checkpointing
    seed: int = 42
    early_stopping_patience: int | None = Field(None, ge=1)
    save_steps: int = Field(0, ge=0)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    merge: bool = False
    chat_template: str | None = None
    use_unsloth: bool = False
    use_liger: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    report_to: list[TrackerName] = Field(default_factory=list)
    tracker_project: str | None = Field(None, min_length=1)
    tracking_uri: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _lora_defaults(self) -> TrainConfig:
        """The job's own LoraSettings, with the trainer's default for every setting it leaves unset."""
        unset = {name: value for name, value in LORA_DEFAULTS.items() if getattr(self.lora, name) is None}
        if unset:
            self.lora = self.lora.model_copy(update=unset)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.early_stopping_patience is not None and not self.has_eval:
            raise ValueError("early_stopping_patience needs a held-out set: set validation_dataset or "
                             "eval_fraction > 0")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU")
        return self

    @property
    def has_eval(self) -> bool:
        return self.validation_dataset is not None or self.eval_fraction > 0

    @property
    def uses_adapter(self) -> bool:
        return self.method in ("lora", "qlora")

    def training_setup(self, precision: str = "bf16", *, seq_len: int | None = None, n_gpus: int = 1,
                       distributed: str = "auto", stack: Stack = FTBROKER):
        """This config as the estimator sees it (``ftbroker.estimate.TrainingSetup``), through the ftbroker stack: the
        one mapping, used by the local backend's pre-flight, the planner's GPU routes, ``ftbroker estimate`` (whose
        defaults are this config's) and the GPU calibration. ``precision`` is the trainer's resolved one ("bf16" or
        "fp16" on a GPU: the stack's for the method; "fp32": everything fp32); ``seq_len`` the longest row a
        micro-batch will hold (default max_seq_len); ``distributed`` the backend's multi-GPU strategy
        (``sharding``). Packing and padding-free batches both concatenate examples; Unsloth and Liger change how
        tensors are stored (Unsloth's kernels and offloaded checkpoints, Liger's fused loss). ``stack``: another
        trainer given these settings (a plan's ``--stack``): how it holds tensors, its precision and optimizer."""
        targets = self.lora.target_modules
        kernels = STACKS["unsloth"] if self.use_unsloth else stack
        impl = kernels.setup(self.method, grad_checkpointing=self.gradient_checkpointing).impl
        if self.use_liger:
            impl = replace(impl, loss="fused")
        return stack.setup(
            self.method, micro_batch=self.micro_batch_size, seq_len=seq_len or self.max_seq_len,
            lora_r=self.lora.r, targets=(targets,) if isinstance(targets, str) else tuple(targets),
            lora_dropout=self.lora.dropout, grad_checkpointing=self.gradient_checkpointing,
            precision=None if precision in ("bf16", "fp16") else "fp32", n_gpus=n_gpus,
            sharding=sharding(self.method, n_gpus, distributed), grad_accumulation=self.gradient_accumulation_steps,
            packing=self.packing or self.padding_free, impl=impl)


# backend_options.distributed -> the estimator's sharding
SHARDING = {"ddp": "ddp", "fsdp": "fsdp", "deepspeed": "zero3"}


def sharding(method: str, n_gpus: int, distributed: str = "auto") -> str:
    """How the backend spreads a run over ``n_gpus``, in the estimator's terms: one GPU runs without accelerate
    (none); several, the strategy asked for, else ``launch_strategy``'s."""
    if n_gpus == 1:
        return "none"
    return SHARDING[launch_strategy(method, n_gpus, distributed)]


def launch_strategy(method: str, n_gpus: int, distributed: str = "auto") -> str:
    """What ``accelerate launch`` runs on several GPUs: ``distributed`` ("ddp", "fsdp", "deepspeed"), or for "auto"
    the estimator's default (DDP for LoRA / QLoRA, FSDP for full fine-tuning)."""
    from ftbroker.estimate.stacks import default_sharding

    return default_sharding(method, n_gpus) if distributed == "auto" else distributed


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a config.json; relative paths in it are taken from the file's folder.

    Raises ``SpecError`` naming every bad field at once.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError([f"{path} does not exist"], source=str(path)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError([f"not readable JSON: {exc}"], source=str(path)) from exc
    if not isinstance(raw, dict):
        raise SpecError(["the top level must be a JSON object"], source=str(path))
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(err) for err in exc.errors()], source=str(path)) from exc
    return _resolve_paths(config, path.parent)


def _describe(err) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "config"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{field}: {message}"


def _resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    updates = {
        "dataset": resolve(config.dataset),
        "validation_dataset": resolve(config.validation_dataset),
        "chat_template": resolve(config.chat_template),
    }
    local_model = base / config.model
    if not Path(config.model).is_absolute() and local_model.exists():  # else a hub id, left as is
        updates["model"] = str(local_model.resolve())
    return config.model_copy(update=updates)
