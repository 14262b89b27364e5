"""Catalog rows: the facts the planner and the estimator work from.

Every row carries ``source`` (where the fact comes from) and ``as_of`` (the date it held), so a plan
can say where each number came from and how old it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only transformer's shape, as in its Hugging Face ``config.json``."""

    name: str
    hidden_size: int
    intermediate_size: int  # dense MLP width (for MoE models: of a dense layer, if any)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    source: str
    as_of: date
    hf_repo: str | None = None
    num_experts: int = 0  # 0 for dense models
    experts_per_token: int = 0
    moe_intermediate_size: int | None = None
    qkv_bias: bool = False
    tokenizer_family: str = ""  # e.g. "llama3", "qwen2", "gemma", "o200k": picks the token estimate


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. ``bf16_tflops`` is dense (no sparsity) tensor throughput; None where not published."""

    name: str
    memory_gib: float
    bf16_tflops: float | None
    fp16_tflops: float | None
    bandwidth_gbps: float
    tdp_w: float | None
    supports_bf16: bool
    source: str
    as_of: date
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudInstance:
    """A rentable instance type and its cheapest price across the regions read."""

    cloud: str
    instance_type: str
    gpu: str  # a GpuSpec name
    gpu_count: int
    on_demand_usd_per_hour: Decimal | None
    spot_usd_per_hour: Decimal | None
    region: str
    source: str
    as_of: date
    vcpus: int | None = None
    memory_gib: float | None = None
    note: str = ""
