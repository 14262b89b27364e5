"""Catalogs: the facts the planner and the estimator work from, loaded from data files.

Every row carries ``source`` (where the fact comes from) and ``as_of`` (the date it held), so a plan
can say where each number came from and how old it is.

What is in force, in order (a later file adds rows or replaces the fields it gives of a row with the same key):

1. the shipped files in ``pricing/data/`` (``gpus.csv``, ``instances.csv``, ``managed.toml``, ``models.toml``);
2. the user's override file: ``$FTBROKER_HOME/catalog.toml`` when ``FTBROKER_HOME`` is set, else
   ``catalog.toml`` in the user config dir (``platformdirs.user_config_path("ftbroker")``, e.g.
   ``~/.config/ftbroker/catalog.toml`` on Linux);
3. each ``--catalog FILE`` (a ``.toml`` like the override file, or a ``.csv`` shaped like ``gpus.csv`` or
   ``instances.csv``).

An override TOML holds ``[[gpu]]``, ``[[instance]]``, ``[[model]]`` and ``[[offer]]`` tables (and
``[provider.NAME]`` defaults for its own offers). Keys: GPU ``name``; instance ``cloud`` + ``instance_type``;
model ``name``; offer ``provider`` + model id (or base model, or tier) + ``method`` + ``objective``. A row whose key
is new must be complete; a row whose key exists replaces only the fields it gives, and must give ``source`` and
``as_of`` so the provenance stays right. Every row is validated (types, units, plausible ranges, no duplicate
key in a file); a problem raises ``CatalogError`` naming ``FILE:LINE``, the field and what is wrong.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any

from ftbroker.errors import CatalogError, InputError, UnknownNameError
from ftbroker.tokens.estimate import family_of_config

DATA_DIR = Path(__file__).with_name("data")
SHIPPED_FILES = ("gpus.csv", "instances.csv", "managed.toml", "models.toml")
OVERRIDE_FILE_NAME = "catalog.toml"
STALE_AFTER_DAYS = 90


# ---------------------------------------------------------------------------------------------- row types

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


# ---------------------------------------------------------------------------------------------- the catalog

class Catalog:
    """The rows in force, with lookups. Built by ``load_catalog``."""

    def __init__(self, *, models: Mapping[str, ModelArch], gpus: Mapping[str, GpuSpec],
                 instances: Sequence[CloudInstance], managed: Sequence[ManagedOffer], files: Sequence[str],
                 version: str):
        self.models = dict(models)
        self.gpus = dict(gpus)
        self.instances = tuple(instances)
        self.managed = tuple(managed)
        self.files = tuple(files)
        self.version = version
        self._model_index = _model_index(self.models.values())
        self._gpu_index = {_gpu_key(n): g for g in self.gpus.values() for n in (g.name, *g.aliases)}

    def model(self, name_or_path: str) -> ModelArch:
        """A catalog model (name, alias or Hugging Face repo id; any case), a local model folder, or a config.json."""
        local = Path(name_or_path).expanduser()
        if local.is_file() or (local.is_dir() and (local / "config.json").is_file()):
            return model_from_config(local)
        if local.is_dir():
            raise InputError(f"{local}: a folder without a config.json is not a model folder")
        found = self._model_index.get(name_or_path.strip().lower())
        if found is None:
            names = [n for m in self.models.values() for n in (m.name, *m.aliases)]
            raise UnknownNameError("model", name_or_path, names,
                                   hint="or give a local model folder or a config.json path; "
                                        "`ftbroker catalog show --kind models` lists the catalog's")
        return found

    def gpu(self, name: str) -> GpuSpec:
        """A GPU by name or alias, ignoring case, spaces, dashes and vendor words ("NVIDIA GeForce RTX 4090")."""
        found = self._gpu_index.get(_gpu_key(name))
        if found is None:
            raise UnknownNameError("GPU", name, [n for g in self.gpus.values() for n in (g.name, *g.aliases)],
                                   hint="`ftbroker catalog show --kind gpus` lists them")
        return found

    def stale_rows(self, today: date, max_age_days: int = STALE_AFTER_DAYS) -> list[CloudInstance | ManagedOffer]:
        """Priced rows not checked against their source for ``max_age_days`` (hardware specs and architectures do
        not go stale)."""
        return [r for r in (*self.instances, *self.managed) if is_stale(r, today, max_age_days)]

    def doubted(self) -> list[CloudInstance]:
        """Instances whose price the loader's sanity rules doubt (``price_doubt``)."""
        return [i for i in self.instances if i.price_doubt]

    def as_of_range(self) -> tuple[date, date]:
        dates = [r.as_of for r in self.rows()]
        return min(dates), max(dates)

    def rows(self) -> Iterable[Row]:
        yield from self.gpus.values()
        yield from self.instances
        yield from self.managed
        yield from self.models.values()


def is_stale(row: date | CloudInstance | ManagedOffer, today: date, max_age_days: int = STALE_AFTER_DAYS) -> bool:
    """A price is stale when it was last checked against its source more than ``max_age_days`` ago: its
    ``verified`` day (set by the last refresh that saw it: shipped data, ``ftbroker catalog update``), else the day
    it held (``as_of``). A refresh renews the rows it reads, so the mark falls on what the refresh left behind."""
    checked = row if isinstance(row, date) else (row.verified or row.as_of)
    return (today - checked).days > max_age_days


def _gpu_key(name: str) -> str:
    name = re.sub(r"\b(nvidia|geforce|tesla|amd|instinct)\b", "", name.lower())
    return re.sub(r"[^a-z0-9]", "", name)


def _model_index(models: Iterable[ModelArch]) -> dict[str, ModelArch]:
    index: dict[str, ModelArch] = {}
    for m in models:
        org = m.hf_repo.split("/")[0] + "/" if m.hf_repo and "/" in m.hf_repo else ""
        for n in (m.name, *m.aliases):
            index.setdefault(n.lower(), m)
            if org:
                index.setdefault((org + n).lower(), m)
        if m.hf_repo:
            index.setdefault(m.hf_repo.lower(), m)
    return index


# ---------------------------------------------------------------------------------------------- loading

def user_override_path() -> Path:
    """Where the user's override file lives (see the module docstring)."""
    home = os.environ.get("FTBROKER_HOME")
    if home:
        return Path(home) / OVERRIDE_FILE_NAME
    from platformdirs import user_config_path

    return user_config_path("ftbroker") / OVERRIDE_FILE_NAME


def user_catalog_dir() -> Path:
    """Where ``ftbroker catalog update`` writes refreshed prices: ``catalog/`` beside the override file."""
    return user_override_path().parent / "catalog"


def load_catalog(extra: Sequence[str | os.PathLike] = (), *, data_dir: Path = DATA_DIR) -> Catalog:
    """Shipped data (``data_dir``: the package's, or a test's fixture folder) + the prices ``ftbroker catalog
    update`` refreshed (``user_catalog_dir()/*.csv``) + the user's override file (if any) + ``extra`` files,
    validated and merged."""
    builder = _Builder()
    for name in SHIPPED_FILES:
        builder.add_file(data_dir / name, shipped=True)
    refreshed = user_catalog_dir()
    if refreshed.is_dir():
        for path in sorted(refreshed.glob("*.csv")):
            builder.add_file(path)
    override = user_override_path()
    if override.is_file():
        builder.add_file(override)
    for path in extra:
        builder.add_file(Path(path))
    return builder.build()


class _Builder:
    def __init__(self) -> None:
        self.rows: dict[str, dict[Any, Row]] = {"gpu": {}, "instance": {}, "offer": {}, "model": {}}
        self.lines: dict[tuple[str, Any], str] = {}  # (kind, key) -> "FILE:LINE" of the row, for cross checks
        self.files: list[str] = []
        self.digest = hashlib.sha256()

    def add_file(self, path: Path, shipped: bool = False) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read catalog file: {exc.strerror or exc}") from exc
        self.files.append(f"{path.name} (shipped)" if shipped else str(path))
        self.digest.update(path.name.encode() + b"\0" + data + b"\0")
        problems: list[str] = []
        parsed = _parse_file(path, data, problems)
        for kind, where, fields in parsed:
            self._merge(kind, where, fields, problems, partial_allowed=not shipped)
        if problems:
            raise CatalogError(_problem_text(path, problems))

    def _merge(self, kind: str, where: str, fields: dict[str, Any], problems: list[str],
               partial_allowed: bool) -> None:
        spec = _SPECS[kind]
        key = spec.key(fields)
        if key is None:
            problems.append(f"{where}: {spec.key_text}: must be given (the row's key)")
            return
        seen_here = self.lines.get((kind, key))
        if seen_here and seen_here.rsplit(":", 1)[0] == where.rsplit(":", 1)[0]:
            problems.append(f"{where}: duplicate {kind} {_key_text(key)} (first at line {seen_here.rsplit(':', 1)[1]})")
            return
        existing = self.rows[kind].get(key)
        try:
            if existing is not None and partial_allowed:
                for required in ("source", "as_of"):
                    if required not in fields:
                        raise _RowError(required, "an override row must give its own source and as_of")
                # the key's spelling stays the catalog's ("llama-3.1-8b" updates "Llama-3.1-8B")
                row = spec.build({k: v for k, v in fields.items() if k not in spec.key_fields}, existing)
            else:
                row = spec.build(fields)
            spec.check(row)
        except _RowError as exc:
            problems.append(f"{where}: {exc.field}: {exc.message}")
            return
        except TypeError as exc:  # a required field is missing
            missing = re.findall(r"'(\w+)'", str(exc))
            problems.append(f"{where}: {', '.join(missing) or kind}: required field missing")
            return
        self.rows[kind][key] = row
        self.lines[(kind, key)] = where

    def build(self) -> Catalog:
        gpus = {g.name: g for g in self.rows["gpu"].values()}
        models = {m.name: m for m in self.rows["model"].values()}
        problems = []
        aliases: dict[str, str] = {}
        for g in gpus.values():
            for n in (g.name, *g.aliases):
                other = aliases.setdefault(_gpu_key(n), g.name)
                if other != g.name:
                    problems.append(f"{self.lines[('gpu', g.name.lower())]}: aliases: {n!r} also names {other}")
        for key, inst in self.rows["instance"].items():
            if inst.gpu not in gpus:
                problems.append(f"{self.lines[('instance', key)]}: gpu: unknown GPU {inst.gpu!r} (not in gpus)")
        for key, offer in self.rows["offer"].items():
            ref = offer.reference_model
            if ref and ref not in models:
                problems.append(f"{self.lines[('offer', key)]}: reference_model: unknown model {ref!r}")
            elif ref and not offer.covers_size(models[ref].size_b):
                problems.append(f"{self.lines[('offer', key)]}: reference_model: {ref} ({models[ref].size_b}B) "
                                f"is outside the tier {offer.tier}")
        if problems:
            raise CatalogError("catalog cross-check failed:\n" + "\n".join(f"  {p}" for p in problems))
        return Catalog(models=models, gpus=gpus, instances=price_sanity(self.rows["instance"].values(), gpus),
                       managed=list(self.rows["offer"].values()), files=self.files,
                       version=self.digest.hexdigest()[:12])


# ---------------------------------------------------------------------------------------------- price sanity

def _with_note(inst: CloudInstance, note: str, **changes: Any) -> CloudInstance:
    return dataclasses.replace(inst, note="; ".join(n for n in (inst.note, note) if n), **changes)


def _gpu_family(name: str) -> tuple[str, bool]:
    """(the name without its memory size, whether it had one): A100-SXM-40GB and A100-SXM-80GB are one family."""
    family = re.sub(r"-?\d+GB$", "", name)
    return family, family != name


def price_sanity(instances: Iterable[CloudInstance], gpus: Mapping[str, GpuSpec]) -> list[CloudInstance]:
    """The rows as upstream gave them, less what contradicts itself (SkyPilot's catalogs carry such artefacts):

    * a spot price above the same instance's on-demand price is left out (the row keeps its on-demand price);
    * an instance whose GPU is the larger-memory card of a family (A100-SXM-80GB beside A100-SXM-40GB) but costs
      less per GPU-hour on demand than the smaller card on the same cloud, at the same GPU count, is kept with
      ``price_doubt`` saying so: one of the two prices is wrong, and a plan must not recommend it as cheapest.
    """
    rows = []
    for inst in instances:
        od, spot = inst.on_demand_usd_per_hour, inst.spot_usd_per_hour
        if od is not None and spot is not None and spot > od:
            inst = _with_note(inst, f"spot price left out: {spot} $/h was above the on-demand {od} $/h in the source",
                              spot_usd_per_hour=None, spot_region="")
        rows.append(inst)
    cheapest: dict[tuple[str, int, str], dict[str, Decimal]] = {}  # (cloud, count, family) -> gpu -> $/GPU-hour
    for inst in rows:
        family, sized = _gpu_family(inst.gpu)
        if sized and inst.on_demand_usd_per_hour is not None:
            per_gpu = inst.on_demand_usd_per_hour / inst.gpu_count
            by_gpu = cheapest.setdefault((inst.cloud, inst.gpu_count, family), {})
            by_gpu[inst.gpu] = min(per_gpu, by_gpu.get(inst.gpu, per_gpu))
    out = []
    for inst in rows:
        family, sized = _gpu_family(inst.gpu)
        if sized and inst.on_demand_usd_per_hour is not None:
            per_gpu = inst.on_demand_usd_per_hour / inst.gpu_count
            smaller = [(gpu, price) for gpu, price in cheapest[(inst.cloud, inst.gpu_count, family)].items()
                       if gpus[gpu].memory_gib < gpus[inst.gpu].memory_gib and price > per_gpu]
            if smaller:
                gpu, price = max(smaller, key=lambda item: item[1])
                doubt = (f"{inst.gpu} at {per_gpu:.2f} $/GPU-hour costs less than the smaller {gpu} "
                         f"({price:.2f}) on {inst.cloud}: one of the two source prices is wrong")
                inst = _with_note(inst, doubt, price_doubt=doubt)
        out.append(inst)
    return out


def _problem_text(path: Path, problems: list[str]) -> str:
    shown = problems[:20]
    more = len(problems) - len(shown)
    text = f"invalid catalog file {path}:\n" + "\n".join(f"  {p}" for p in shown)
    return text + (f"\n  ... and {more} more" if more > 0 else "")


def _key_text(key: Any) -> str:
    return " / ".join(str(k) for k in key) if isinstance(key, tuple) else repr(key)


# ---------------------------------------------------------------------------------------------- file parsing

_CSV_KINDS = {"gpus.csv": "gpu", "instances.csv": "instance"}


def _parse_file(path: Path, data: bytes, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, "FILE:LINE", typed fields) for every row of a catalog file; problems collected, not raised."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if path.suffix.lower() == ".csv":
        return _parse_csv(path, text, problems)
    if path.suffix.lower() == ".toml":
        return _parse_toml(path, text, problems)
    raise CatalogError(f"{path}: a catalog file must be .toml or .csv")


def _parse_csv(path: Path, text: str, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = set(reader.fieldnames or ())
    kind = _CSV_KINDS.get(path.name) or next(
        (k for k in ("gpu", "instance") if _SPECS[k].required <= header), None)
    if kind is None:
        raise CatalogError(f"{path}:1: header matches neither gpus.csv nor instances.csv "
                           f"(columns: {', '.join(sorted(header)) or 'none'})")
    spec = _SPECS[kind]
    unknown = header - spec.fields.keys()
    if unknown:
        raise CatalogError(f"{path}:1: unknown column(s) {', '.join(sorted(unknown))}")
    missing = spec.required - header
    if missing:
        raise CatalogError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
    rows = []
    start = 2
    for raw in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if None in raw:
            problems.append(f"{where}: more values than columns")
            continue
        fields = spec.coerce(raw, where, problems)
        if fields is not None:
            rows.append((kind, where, fields))
    return rows


_TOML_TABLES = {"gpu": "gpu", "instance": "instance", "offer": "offer", "model": "model"}


def _parse_toml(path: Path, text: str, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(doc) - set(_TOML_TABLES) - {"provider"}
    if unknown:
        raise CatalogError(f"{path}: unknown table(s) {', '.join(sorted(unknown))} "
                           f"(expected [[gpu]], [[instance]], [[model]], [[offer]], [provider.NAME])")
    lines = text.splitlines()
    providers = doc.get("provider", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise CatalogError(f"{path}: [provider.NAME] tables expected")
    headers: dict[str, list[int]] = {}  # table name -> line numbers of its [[table]] headers, in order
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("[["):
            headers.setdefault(line.strip().strip("[]").strip(), []).append(number)
    rows = []
    for table, kind in _TOML_TABLES.items():
        entries = doc.get(table, [])
        if not isinstance(entries, list):
            raise CatalogError(f"{path}: use [[{table}]] (an array of tables)")
        header_lines = headers.get(table, [])
        for index, entry in enumerate(entries):
            line = header_lines[index] if index < len(header_lines) else 0
            if kind == "offer":
                provider = entry.get("provider")
                entry = {**providers.get(provider, {}), **entry} if isinstance(provider, str) else entry
                for expanded in _expand_prices(entry):
                    rows.extend(_toml_row(kind, path, lines, line, expanded, problems))
            else:
                rows.extend(_toml_row(kind, path, lines, line, entry, problems))
    return rows


def _toml_row(kind, path, lines, line, entry, problems):
    def where_of(name: str | None) -> str:
        return f"{path}:{_field_line(lines, line, name) if name else line}"

    fields = _SPECS[kind].coerce(entry, where_of, problems)
    return [] if fields is None else [(kind, where_of(None), fields)]


def _field_line(lines: list[str], header: int, name: str) -> int:
    """The line of ``name = ...`` in the table whose header is on line ``header`` (else the header line)."""
    for i in range(header, len(lines)):  # lines[header] is the line after the header
        if re.match(r"\s*\[", lines[i]):
            break
        if re.match(rf"\s*{re.escape(name)}\s*=", lines[i]):
            return i + 1
    return header


def _expand_prices(entry: dict[str, Any]) -> list[dict[str, Any]]:
    prices = entry.get("prices")
    if prices is None:
        return [entry]
    base = {k: v for k, v in entry.items() if k != "prices"}
    if not isinstance(prices, dict) or not prices:
        return [{**base, "prices": prices}]  # let coercion report it
    out = []
    for combo, price in prices.items():
        method, _, objective = str(combo).partition("_")
        out.append({**base, "method": method, "objective": objective, "usd_per_m_tokens": price})
    return out


# ---------------------------------------------------------------------------------------------- field schema

class _RowError(Exception):
    def __init__(self, field_name: str, message: str):
        self.field, self.message = field_name, message
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class _F:
    kind: str  # str | int | float | money | date | bool | list
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()


def _coerce_value(name: str, f: _F, value: Any) -> Any:
    if f.kind == "str":
        if not isinstance(value, str):
            raise _RowError(name, f"expected text, got {value!r}")
        value = value.strip()
        if f.choices and value not in f.choices:
            raise _RowError(name, f"{value!r} is not one of {', '.join(f.choices)}")
        return value
    if f.kind == "list":
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(";")) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _RowError(name, f"expected a list of text, got {value!r}")
        bad = [v for v in value if f.choices and v not in f.choices]
        if bad:
            raise _RowError(name, f"{bad[0]!r} is not one of {', '.join(f.choices)}")
        return tuple(value)
    if f.kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _RowError(name, f"expected true or false, got {value!r}")
        return value
    if f.kind == "date":
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            raise _RowError(name, f"expected a date YYYY-MM-DD, got {value!r}") from None
    number = _number(name, f.kind, value)
    if f.lo is not None and number < f.lo or f.hi is not None and number > f.hi:
        raise _RowError(name, f"{value} is outside the plausible range {f.lo:g}..{f.hi:g}")
    return number


def _number(name: str, kind: str, value: Any) -> int | float | Decimal:
    if isinstance(value, bool):
        raise _RowError(name, f"expected a number, got {value!r}")
    try:
        if kind == "int":
            if isinstance(value, Decimal | float) and value != int(value):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip().replace("_", ""))
        if kind == "money":
            amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
            if not amount.is_finite():
                raise ValueError
            return amount
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    except (ValueError, InvalidOperation):
        raise _RowError(name, f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None


class _Spec:
    def __init__(self, cls, fields: dict[str, _F], key_fields: tuple[str, ...], key_text: str = ""):
        self.cls, self.fields, self.key_fields = cls, fields, key_fields
        self.key_text = key_text or " and ".join(key_fields)
        self.required = {n for n, f in fields.items() if f.required}
        # optional facts the row type still lists without a default (e.g. a GPU's unpublished TFLOPS): None
        self.none_when_empty = {f.name for f in dataclasses.fields(cls)
                                if f.default is dataclasses.MISSING and f.name not in self.required}

    def coerce(self, raw: Mapping[str, Any], where, problems: list[str]) -> dict[str, Any] | None:
        where_of = where if callable(where) else (lambda _name: where)
        out, ok = {}, True
        for name, value in raw.items():
            f = self.fields.get(name)
            if f is None:
                problems.append(f"{where_of(name)}: {name}: unknown field")
                ok = False
                continue
            if value is None or value == "":
                if name in self.required:
                    problems.append(f"{where_of(name)}: {name}: must not be empty")
                    ok = False
                elif name in self.none_when_empty:
                    out[name] = None
                continue
            try:
                out[name] = _coerce_value(name, f, value)
            except _RowError as exc:
                problems.append(f"{where_of(name)}: {exc.field}: {exc.message}")
                ok = False
        return out if ok else None

    def key(self, fields: Mapping[str, Any]) -> Any:
        values = [fields.get(k) for k in self.key_fields]
        if any(v in (None, "") for v in values):
            return None
        return values[0].lower() if len(values) == 1 else tuple(v.lower() for v in values)

    def build(self, fields: dict[str, Any], existing: Row | None = None) -> Row:
        """A new row from complete fields, or ``existing`` with the given fields replaced."""
        if existing is not None:
            return dataclasses.replace(existing, **fields)
        return self.cls(**{**dict.fromkeys(self.none_when_empty), **fields})

    def check(self, row: Row) -> None:
        _CHECKS[self.cls](row)


_TEXT = _F("str")
_SOURCE = _F("str", required=True)
_AS_OF = _F("date", required=True)

_GPU_FIELDS = {
    "name": _F("str", required=True), "aliases": _F("list"),
    "memory_gib": _F("float", required=True, lo=4, hi=1024),
    "bf16_tflops": _F("float", lo=1, hi=20000), "fp16_tflops": _F("float", lo=1, hi=20000),
    "bandwidth_gbps": _F("float", required=True, lo=50, hi=50000), "tdp_w": _F("float", lo=10, hi=3000),
    "supports_bf16": _F("bool", required=True), "source": _SOURCE, "as_of": _AS_OF, "note": _TEXT,
    "interconnect_gbps": _F("float", lo=1, hi=20000),
}
_INSTANCE_FIELDS = {
    "cloud": _F("str", required=True), "instance_type": _F("str", required=True), "gpu": _F("str", required=True),
    "gpu_count": _F("int", required=True, lo=1, hi=16),
    "on_demand_usd_per_hour": _F("money", lo=0.01, hi=500), "spot_usd_per_hour": _F("money", lo=0.001, hi=500),
    "region": _TEXT, "spot_region": _TEXT, "vcpus": _F("int", lo=1, hi=1024), "memory_gib": _F("float", lo=1, hi=16384),
    "source": _SOURCE, "as_of": _AS_OF, "note": _TEXT, "verified": _F("date"),
}
_MODEL_FIELDS = {
    "name": _F("str", required=True), "aliases": _F("list"), "hf_repo": _TEXT, "tokenizer_family": _TEXT,
    "hidden_size": _F("int", required=True, lo=64, hi=65536),
    "intermediate_size": _F("int", required=True, lo=64, hi=524288),
    "num_layers": _F("int", required=True, lo=1, hi=1024), "num_heads": _F("int", required=True, lo=1, hi=1024),
    "num_kv_heads": _F("int", required=True, lo=1, hi=1024), "head_dim": _F("int", required=True, lo=8, hi=1024),
    "vocab_size": _F("int", required=True, lo=256, hi=2_000_000),
    "max_position_embeddings": _F("int", required=True, lo=256, hi=100_000_000),
    "tie_word_embeddings": _F("bool", required=True), "num_experts": _F("int", lo=0, hi=4096),
    "experts_per_token": _F("int", lo=0, hi=4096), "moe_intermediate_size": _F("int", lo=16, hi=524288),
    "qkv_bias": _F("bool"), "qk_norm": _F("bool"), "norms_per_layer": _F("int", lo=0, hi=8),
    "source": _SOURCE, "as_of": _AS_OF, "note": _TEXT,
}
_FORMATS = ("chat", "prompt_completion", "preference", "text")
_OFFER_FIELDS = {
    "provider": _F("str", required=True),
    "method": _F("str", required=True, choices=("lora", "full", "sft")),
    "objective": _F("str", required=True, choices=("sft", "dpo", "rft")),
    "model": _TEXT, "base_model": _TEXT, "tier": _TEXT,
    "size_b_min": _F("int", lo=0, hi=100000), "size_b_max": _F("int", lo=1, hi=100000),
    "reference_model": _TEXT,
    "usd_per_m_tokens": _F("money", lo=0.01, hi=1000), "usd_per_hour": _F("money", lo=0.01, hi=10000),
    "price_unknown": _F("bool"),
    "min_charge_usd": _F("money", lo=0, hi=10000),
    "default_epochs": _F("int", lo=1, hi=100),
    "validation_billing": _F("str", choices=("none", "per_eval", "unknown")),
    "default_n_evals": _F("int", lo=0, hi=1000),
    "max_tokens_per_example": _F("int", lo=128, hi=10_000_000),
    "long_examples": _F("str", choices=("truncated", "rejected")),
    "min_examples": _F("int", lo=1, hi=1_000_000), "max_examples": _F("int", lo=1, hi=1_000_000_000),
    "max_validation_examples": _F("int", lo=1, hi=1_000_000_000),
    "max_file_bytes": _F("int", lo=1_000_000, hi=10**12),
    "formats": _F("list", choices=_FORMATS), "tokenizer": _TEXT, "hf_repo": _TEXT, "tokenizer_family": _TEXT,
    "available_from": _F("date"), "available_until": _F("date"), "end_of_life": _F("date"),
    "availability_note": _TEXT, "availability_source": _TEXT, "region": _TEXT, "secondary": _F("bool"),
    "source": _SOURCE, "as_of": _AS_OF, "note": _TEXT, "verified": _F("date"),
}


class _OfferSpec(_Spec):
    """Offers add an ``auto_epochs`` table and the ``price_unknown`` flag (a row must say it has no price)."""

    def coerce(self, raw, where, problems):
        where_of = where if callable(where) else (lambda _name: where)
        raw = dict(raw)
        if "prices" in raw:  # still here only when it was not a table (see _expand_prices)
            problems.append(f"{where_of('prices')}: prices: expected a table like {{lora_sft = 0.48}}")
            return None
        auto = raw.pop("auto_epochs", None)
        fields = super().coerce(raw, where, problems)
        if fields is None or auto is None:
            return fields
        try:
            fields["auto_epochs"] = _auto_epochs(auto)
        except _RowError as exc:
            problems.append(f"{where_of('auto_epochs')}: {exc.field}: {exc.message}")
            return None
        return fields

    def key(self, fields):  # provider, the offer's label (model id, else base model, else tier), method, objective
        label = fields.get("model") or fields.get("base_model") or fields.get("tier")
        values = (fields.get("provider"), label, fields.get("method"), fields.get("objective"))
        return None if not all(values) else tuple(v.lower() for v in values)

    def build(self, fields, existing=None):
        fields = dict(fields)
        price_unknown = fields.pop("price_unknown", False)
        priced = any(fields.get(k) is not None for k in ("usd_per_m_tokens", "usd_per_hour"))
        if price_unknown and priced:
            raise _RowError("price_unknown", "true, yet a price is given")
        if price_unknown:
            fields.update(usd_per_m_tokens=None, usd_per_hour=None)
        offer = super().build(fields, existing)
        if not offer.price_known and not price_unknown:
            raise _RowError("usd_per_m_tokens", "no price: give usd_per_m_tokens, usd_per_hour, "
                                                "or price_unknown = true when no source gives one")
        return offer


def _auto_epochs(table: Any) -> AutoEpochs:
    if not isinstance(table, dict):
        raise _RowError("auto_epochs", "expected a table (target, min_example_passes, max_example_passes, "
                                       "max_epochs, min_epochs)")
    names = [f.name for f in dataclasses.fields(AutoEpochs)]
    unknown = set(table) - set(names)
    if unknown or set(names) - set(table):
        raise _RowError("auto_epochs", f"needs exactly {', '.join(names)}")
    values = {n: _coerce_value(f"auto_epochs.{n}", _F("int", lo=1, hi=10_000_000), table[n]) for n in names}
    return AutoEpochs(**values)


def _check_gpu(g: GpuSpec) -> None:
    if not g.supports_bf16 and g.bf16_tflops is not None:
        raise _RowError("bf16_tflops", "given for a GPU without bf16 support")


def _check_instance(i: CloudInstance) -> None:
    if i.on_demand_usd_per_hour is None and i.spot_usd_per_hour is None:
        raise _RowError("on_demand_usd_per_hour", "neither an on-demand nor a spot price")
    for name in ("on_demand_usd_per_hour", "spot_usd_per_hour"):
        price = getattr(i, name)
        if price is not None and not Decimal("0.01") <= price / i.gpu_count <= Decimal(30):
            raise _RowError(name, f"{price / i.gpu_count:.4f} $/GPU-hour is outside the plausible 0.01..30")


def _check_model(m: ModelArch) -> None:
    if m.num_kv_heads > m.num_heads or m.num_heads % m.num_kv_heads:
        raise _RowError("num_kv_heads", f"{m.num_kv_heads} must divide num_heads {m.num_heads}")
    if m.num_experts and not 1 <= m.experts_per_token <= m.num_experts:
        raise _RowError("experts_per_token", f"must be 1..num_experts ({m.num_experts}) for a MoE model")
    if not m.num_experts and m.experts_per_token:
        raise _RowError("experts_per_token", "given for a dense model (num_experts 0)")


def _check_offer(o: ManagedOffer) -> None:
    if not (o.model or o.base_model or o.tier):
        raise _RowError("model", "an offer needs a model, a base_model or a tier")
    if o.tier and (o.model or o.base_model):
        raise _RowError("tier", "a size-tier row prices any open model of that size: no model or base_model")
    if o.tier and o.size_b_min is None:
        raise _RowError("size_b_min", "a size-tier row needs size_b_min (and size_b_max unless open-ended)")
    if not o.tier and (o.size_b_min is not None or o.size_b_max is not None or o.reference_model):
        raise _RowError("tier", "size bounds and reference_model belong to size-tier rows only")
    if o.size_b_min is not None and o.size_b_max is not None and o.size_b_min > o.size_b_max:
        raise _RowError("size_b_max", f"{o.size_b_max} is below size_b_min {o.size_b_min}")
    if o.objective == "rft" and o.usd_per_hour is None and o.usd_per_m_tokens is None:
        raise _RowError("usd_per_hour", "an RFT row needs its price (or price_unknown = true)")
    if o.default_epochs is not None and o.auto_epochs is not None:
        raise _RowError("default_epochs", "give default_epochs or auto_epochs, not both")
    if o.available_until and o.available_from and o.available_until <= o.available_from:
        raise _RowError("available_until", "is not after available_from")
    if o.min_examples and o.max_examples and o.min_examples > o.max_examples:
        raise _RowError("max_examples", "is below min_examples")


_CHECKS = {GpuSpec: _check_gpu, CloudInstance: _check_instance, ModelArch: _check_model, ManagedOffer: _check_offer}
_SPECS: dict[str, _Spec] = {
    "gpu": _Spec(GpuSpec, _GPU_FIELDS, ("name",)),
    "instance": _Spec(CloudInstance, _INSTANCE_FIELDS, ("cloud", "instance_type")),
    "model": _Spec(ModelArch, _MODEL_FIELDS, ("name",)),
    "offer": _OfferSpec(ManagedOffer, _OFFER_FIELDS, ("provider", "model", "base_model", "tier", "method", "objective"),
                        "provider, method, objective and one of model / base_model / tier"),
}


# ---------------------------------------------------------------------------------------------- HF config.json

def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


_TIED_BY_DEFAULT = ("gemma",)  # model_type prefixes whose HF config class ties embeddings when the key is absent
_QK_NORM_TYPES = ("qwen3", "gemma3", "olmo2")
_FOUR_NORM_TYPES = ("gemma2", "gemma3")


def model_from_config(path: Path) -> ModelArch:
    """A ModelArch from a Hugging Face config.json (or the folder holding one); nested ``text_config`` read too."""
    config_path = path / "config.json" if path.is_dir() else path
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{config_path}: cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path}: not a valid config.json: {exc}") from exc
    if not isinstance(cfg, dict):
        raise InputError(f"{config_path}: not a valid config.json: expected a JSON object")
    for nested in ("text_config", "llm_config", "language_config"):
        if isinstance(cfg.get(nested), dict):
            cfg = {**cfg, **cfg[nested], "model_type": cfg[nested].get("model_type") or cfg.get("model_type")}
    model_type = str(cfg.get("model_type") or "")

    def need(what: str, *keys: str) -> int:
        value = _first(cfg, *keys)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{config_path}: no {what} (looked for {', '.join(keys)})")
        return value

    hidden = need("hidden size", "hidden_size", "n_embd", "d_model", "dim")
    heads = need("attention head count", "num_attention_heads", "n_head", "num_heads", "n_heads")
    layers = need("layer count", "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts") or 0
    intermediate = _first(cfg, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size") or (
        4 * hidden if model_type == "gpt2" else None)
    moe_intermediate = _first(cfg, "moe_intermediate_size", "expert_intermediate_size")
    if experts and moe_intermediate is None:
        moe_intermediate = intermediate  # Mixtral-style: each expert is a full-width MLP
    if intermediate is None:
        intermediate = moe_intermediate or need("MLP width", "intermediate_size", "ffn_dim", "n_inner")
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = model_type.startswith(_TIED_BY_DEFAULT)
    vocab = need("vocabulary size", "vocab_size", "padded_vocab_size")
    arch = ModelArch(
        name=path.name if path.is_dir() else path.parent.name or str(cfg.get("_name_or_path") or "local model"),
        hidden_size=hidden, intermediate_size=int(intermediate), num_layers=layers, num_heads=heads,
        num_kv_heads=_first(cfg, "num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num") or heads,
        head_dim=_first(cfg, "head_dim") or hidden // heads, vocab_size=vocab,
        max_position_embeddings=need("context length", "max_position_embeddings", "n_positions",
                                     "max_sequence_length", "seq_length"),
        tie_word_embeddings=bool(tie), num_experts=int(experts),
        experts_per_token=(int(_first(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk") or 0)
                           if experts else 0),
        moe_intermediate_size=moe_intermediate if experts else None,
        qkv_bias=bool(_first(cfg, "attention_bias", "qkv_bias")) or model_type.startswith("qwen2"),
        qk_norm=model_type.startswith(_QK_NORM_TYPES),
        norms_per_layer=4 if model_type.startswith(_FOUR_NORM_TYPES) else 2,
        tokenizer_family=family_of_config(cfg) or "", source=str(config_path),
        as_of=date.fromtimestamp(config_path.stat().st_mtime),
        local_tokenizer=str(config_path.parent.resolve()) if (config_path.parent / "tokenizer.json").is_file()
        else None,
    )
    try:
        _check_model(arch)
    except _RowError as exc:
        raise InputError(f"{config_path}: {exc.field}: {exc.message}") from None
    return arch


__all__ = ["AutoEpochs", "Catalog", "CloudInstance", "GpuSpec", "Linear", "ManagedOffer", "ModelArch", "is_stale",
           "load_catalog", "model_from_config", "price_sanity", "user_catalog_dir", "user_override_path"]
