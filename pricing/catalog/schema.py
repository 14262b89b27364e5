"""The catalog's row types: the facts the planner and the estimator work from, one frozen dataclass per kind of row.

Every row carries ``source`` (where the fact comes from) and ``as_of`` (the date it held), so a plan can say where
each number came from and how old it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property

STALE_AFTER_DAYS = 90


@dataclass(frozen=True)
class Linear:
    """One kind of matrix in a decoder layer: ``count`` copies (experts) of a d_in x d_out weight."""

    name: str
    d_in: int
    d_out: int
    count: int = 1

    @property
    def params(self) -> int:
        return self.d_in * self.d_out * self.count


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
    tokenizer_family: str = ""  # e.g. "llama3", "qwen2", "gemma", "o200k": picks the token estimate ("": unknown)
    qk_norm: bool = False
    norms_per_layer: int = 2  # RMSNorm/LayerNorm weights per block (Gemma 2/3: 4)
    aliases: tuple[str, ...] = ()
    local_tokenizer: str | None = None  # a local model folder holding this model's tokenizer.json
    note: str = ""

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def mlp_width(self) -> int:
        """Width of one MLP a token passes through (an expert's for MoE models)."""
        if self.num_experts:
            return self.moe_intermediate_size or self.intermediate_size
        return self.intermediate_size

    @cached_property
    def linears(self) -> tuple[Linear, ...]:
        """The weight matrices of one decoder layer (Llama-style: q/k/v/o, gated MLP; MoE: every expert)."""
        h, experts = self.hidden_size, max(1, self.num_experts)
        return (
            Linear("q_proj", h, self.q_dim),
            Linear("k_proj", h, self.kv_dim),
            Linear("v_proj", h, self.kv_dim),
            Linear("o_proj", self.q_dim, h),
            Linear("gate_proj", h, self.mlp_width, experts),
            Linear("up_proj", h, self.mlp_width, experts),
            Linear("down_proj", self.mlp_width, h, experts),
        )

    @cached_property
    def layer_other_params(self) -> int:
        """Per layer, what is not a matrix: norms, q/k/v biases, q/k norms and the MoE router (small)."""
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        qk_norm = 2 * self.head_dim if self.qk_norm else 0
        return self.norms_per_layer * self.hidden_size + bias + qk_norm + self.hidden_size * self.num_experts

    @cached_property
    def params(self) -> int:
        """Total parameters from the shapes (MoE: every expert). Biases other than q/k/v are not counted."""
        per_layer = sum(lin.params for lin in self.linears) + self.layer_other_params
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embeddings + self.hidden_size  # + final norm

    @property
    def size_b(self) -> int:
        """Nominal size in billions of parameters (rounded), as providers' size tiers read it."""
        return round(self.params / 1e9)


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. ``bf16_tflops`` is dense (no sparsity) tensor throughput; None where not published."""

    name: str
    memory_gib: float
    bf16_tflops: float | None
    fp16_tflops: float | None
    bandwidth_gbps: float  # GB/s
    tdp_w: float | None
    supports_bf16: bool
    source: str
    as_of: date
    aliases: tuple[str, ...] = ()
    note: str = ""
    interconnect_gbps: float | None = None  # GPU-to-GPU, GB/s in one direction (NVLink; else the PCIe slot)


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
    spot_region: str = ""  # where the spot price was seen, when not `region`
    verified: date | None = None  # the last day the price was checked against its source (None: as_of)
    price_doubt: str = ""  # why the price contradicts the rest of the catalog (the loader's sanity rules)


@dataclass(frozen=True)
class AutoEpochs:
    """A provider's "auto" epoch rule: ``target`` epochs, then examples x epochs kept within the passes bounds."""

    target: int
    min_example_passes: int
    max_example_passes: int
    max_epochs: int
    min_epochs: int

    def epochs_for(self, examples: int) -> int:
        if examples <= 0:
            return self.target
        if examples * self.target < self.min_example_passes:
            return min(self.max_epochs, self.min_example_passes // examples)
        if examples * self.target > self.max_example_passes:
            return max(self.min_epochs, self.max_example_passes // examples)
        return self.target


@dataclass(frozen=True)
class ManagedOffer:
    """One managed fine-tuning route: who runs it, what it costs, how it bills, what it accepts, and when.

    ``model`` is the provider's model id where known; ``base_model`` what it fine-tunes (a catalog model name
    or a closed model's family); a size-tier row has neither model nor base model but ``tier`` and the
    ``size_b_min``/``size_b_max`` bounds (nominal billions, inclusive) and prices any open model of that size.
    """

    provider: str  # who trains it; the backend that claims it (``Capabilities.providers``) runs its routes
    method: str  # "lora" | "full" | "sft" (the provider chooses how it trains)
    objective: str  # "sft" | "dpo" | "rft"
    source: str
    as_of: date
    model: str = ""
    base_model: str = ""
    tier: str = ""
    size_b_min: int | None = None
    size_b_max: int | None = None
    reference_model: str = ""  # the catalog model a tier is shown for when no --model is given
    usd_per_m_tokens: Decimal | None = None  # None with usd_per_hour None: price unknown
    usd_per_hour: Decimal | None = None
    min_charge_usd: Decimal = Decimal(0)
    default_epochs: int | None = None
    auto_epochs: AutoEpochs | None = None
    validation_billing: str = "unknown"  # "none" | "per_eval" (validation tokens x n_evals) | "unknown"
    default_n_evals: int = 0
    max_tokens_per_example: int | None = None
    long_examples: str = "rejected"  # what happens past the limit: "truncated" (billed capped) | "rejected"
    min_examples: int | None = None
    max_examples: int | None = None
    max_validation_examples: int | None = None
    max_file_bytes: int | None = None
    formats: tuple[str, ...] = ()
    tokenizer: str | None = None  # a fixed encoding the provider counts with ("o200k_base"); else hf_repo/family
    hf_repo: str | None = None
    tokenizer_family: str = ""
    available_from: date | None = None
    available_until: date | None = None  # first day new jobs are refused
    end_of_life: date | None = None  # the model is shut down
    availability_note: str = ""
    availability_source: str = ""
    region: str = ""
    secondary: bool = False  # the price comes from a secondary source only
    note: str = ""
    verified: date | None = None  # the last day the row was checked against its source (None: as_of)

    @property
    def price_known(self) -> bool:
        return self.usd_per_m_tokens is not None or self.usd_per_hour is not None

    @property
    def label(self) -> str:
        """What the offer is called: provider model id, else base model, else size tier."""
        return self.model or self.base_model or self.tier

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.provider, self.label.lower(), self.method, self.objective)

    def covers_size(self, size_b: int) -> bool:
        return bool(self.tier) and (self.size_b_min or 0) <= size_b <= (self.size_b_max or size_b)


Row = ModelArch | GpuSpec | CloudInstance | ManagedOffer


def is_stale(row: date | CloudInstance | ManagedOffer, today: date, max_age_days: int = STALE_AFTER_DAYS) -> bool:
    """A price is stale when it was last checked against its source more than ``max_age_days`` ago: its
    ``verified`` day (set by the last refresh that saw it: shipped data, ``ftbroker catalog update``), else the day
    it held (``as_of``). A refresh renews the rows it reads, so the mark falls on what the refresh left behind."""
    checked = row if isinstance(row, date) else (row.verified or row.as_of)
    return (today - checked).days > max_age_days
