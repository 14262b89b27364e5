"""The catalog's field schema: each row kind's fields with their types, units and plausible ranges, how a raw value
is coerced to one, the key that identifies a row, and the checks across a row's fields."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from ftbroker.pricing.catalog.schema import AutoEpochs, CloudInstance, GpuSpec, ManagedOffer, ModelArch, Row
from ftbroker.vocabulary import FORMATS

R = TypeVar("R", bound=Row)


class RowError(Exception):
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
            raise RowError(name, f"expected text, got {value!r}")
        value = value.strip()
        if f.choices and value not in f.choices:
            raise RowError(name, f"{value!r} is not one of {', '.join(f.choices)}")
        return value
    if f.kind == "list":
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(";")) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RowError(name, f"expected a list of text, got {value!r}")
        bad = [v for v in value if f.choices and v not in f.choices]
        if bad:
            raise RowError(name, f"{bad[0]!r} is not one of {', '.join(f.choices)}")
        return tuple(value)
    if f.kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise RowError(name, f"expected true or false, got {value!r}")
        return value
    if f.kind == "date":
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            raise RowError(name, f"expected a date YYYY-MM-DD, got {value!r}") from None
    number = _number(name, f.kind, value)
    if f.lo is not None and number < f.lo or f.hi is not None and number > f.hi:
        raise RowError(name, f"{value} is outside the plausible range {f.lo:g}..{f.hi:g}")
    return number


def _number(name: str, kind: str, value: Any) -> int | float | Decimal:
    if isinstance(value, bool):
        raise RowError(name, f"expected a number, got {value!r}")
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
        raise RowError(name, f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None


Key = str | tuple[str, ...]  # a row's key: its name, or the tuple of its key fields (lower case)
Where = str | Callable[[str], str]  # "FILE:LINE" of a row, or of each of its fields by the field's name


class _Spec(Generic[R]):
    """One kind of row: its fields, its key, and the checks across its fields (``check``)."""

    def __init__(self, cls: type[R], fields: dict[str, _F], key_fields: tuple[str, ...],
                 check: Callable[[R], None], key_text: str = ""):
        self.cls, self.fields, self.key_fields, self.check = cls, fields, key_fields, check
        self.key_text = key_text or " and ".join(key_fields)
        self.required = {n for n, f in fields.items() if f.required}
        # optional facts the row type still lists without a default (e.g. a GPU's unpublished TFLOPS): None
        self.none_when_empty = {f.name for f in dataclasses.fields(cls)
                                if f.default is dataclasses.MISSING and f.name not in self.required}

    def coerce(self, raw: Mapping[str, Any], where: Where, problems: list[str]) -> dict[str, Any] | None:
        where_of = _where_of(where)
        out: dict[str, Any] = {}
        ok = True
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
            except RowError as exc:
                problems.append(f"{where_of(name)}: {exc.field}: {exc.message}")
                ok = False
        return out if ok else None

    def key(self, fields: Mapping[str, Any]) -> Key | None:
        values = [fields.get(k) for k in self.key_fields]
        if any(v in (None, "") for v in values):
            return None
        texts = tuple(str(v).lower() for v in values)  # key fields are text
        return texts[0] if len(texts) == 1 else texts

    def build(self, fields: dict[str, Any], existing: R | None = None) -> R:
        """A new row from complete fields, or ``existing`` with the given fields replaced."""
        if existing is not None:
            return dataclasses.replace(existing, **fields)
        return self.cls(**{**dict.fromkeys(self.none_when_empty), **fields})


def _where_of(where: Where) -> Callable[[str], str]:
    return where if callable(where) else (lambda _name: where)


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
    "formats": _F("list", choices=FORMATS), "tokenizer": _TEXT, "hf_repo": _TEXT, "tokenizer_family": _TEXT,
    "available_from": _F("date"), "available_until": _F("date"), "end_of_life": _F("date"),
    "availability_note": _TEXT, "availability_source": _TEXT, "region": _TEXT, "secondary": _F("bool"),
    "source": _SOURCE, "as_of": _AS_OF, "note": _TEXT, "verified": _F("date"),
}


class _OfferSpec(_Spec[ManagedOffer]):
    """Offers add an ``auto_epochs`` table and the ``price_unknown`` flag (a row must say it has no price)."""

    def coerce(self, raw: Mapping[str, Any], where: Where, problems: list[str]) -> dict[str, Any] | None:
        where_of = _where_of(where)
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
        except RowError as exc:
            problems.append(f"{where_of('auto_epochs')}: {exc.field}: {exc.message}")
            return None
        return fields

    def key(self, fields: Mapping[str, Any]) -> Key | None:
        # provider, the offer's label (model id, else base model, else tier), method, objective
        label = fields.get("model") or fields.get("base_model") or fields.get("tier")
        values = (fields.get("provider"), label, fields.get("method"), fields.get("objective"))
        return None if not all(values) else tuple(str(v).lower() for v in values)

    def build(self, fields: dict[str, Any], existing: ManagedOffer | None = None) -> ManagedOffer:
        fields = dict(fields)
        price_unknown = fields.pop("price_unknown", False)
        priced = any(fields.get(k) is not None for k in ("usd_per_m_tokens", "usd_per_hour"))
        if price_unknown and priced:
            raise RowError("price_unknown", "true, yet a price is given")
        if price_unknown:
            fields.update(usd_per_m_tokens=None, usd_per_hour=None)
        offer = super().build(fields, existing)
        if not offer.price_known and not price_unknown:
            raise RowError("usd_per_m_tokens", "no price: give usd_per_m_tokens, usd_per_hour, "
                                                "or price_unknown = true when no source gives one")
        return offer


def _auto_epochs(table: Any) -> AutoEpochs:
    if not isinstance(table, dict):
        raise RowError("auto_epochs", "expected a table (target, min_example_passes, max_example_passes, "
                                       "max_epochs, min_epochs)")
    names = [f.name for f in dataclasses.fields(AutoEpochs)]
    unknown = set(table) - set(names)
    if unknown or set(names) - set(table):
        raise RowError("auto_epochs", f"needs exactly {', '.join(names)}")
    values = {n: _coerce_value(f"auto_epochs.{n}", _F("int", lo=1, hi=10_000_000), table[n]) for n in names}
    return AutoEpochs(**values)


def _check_gpu(g: GpuSpec) -> None:
    if not g.supports_bf16 and g.bf16_tflops is not None:
        raise RowError("bf16_tflops", "given for a GPU without bf16 support")


def _check_instance(i: CloudInstance) -> None:
    if i.on_demand_usd_per_hour is None and i.spot_usd_per_hour is None:
        raise RowError("on_demand_usd_per_hour", "neither an on-demand nor a spot price")
    for name in ("on_demand_usd_per_hour", "spot_usd_per_hour"):
        price = getattr(i, name)
        if price is not None and not Decimal("0.01") <= price / i.gpu_count <= Decimal(30):
            raise RowError(name, f"{price / i.gpu_count:.4f} $/GPU-hour is outside the plausible 0.01..30")


def check_model(m: ModelArch) -> None:
    if m.num_kv_heads > m.num_heads or m.num_heads % m.num_kv_heads:
        raise RowError("num_kv_heads", f"{m.num_kv_heads} must divide num_heads {m.num_heads}")
    if m.num_experts and not 1 <= m.experts_per_token <= m.num_experts:
        raise RowError("experts_per_token", f"must be 1..num_experts ({m.num_experts}) for a MoE model")
    if not m.num_experts and m.experts_per_token:
        raise RowError("experts_per_token", "given for a dense model (num_experts 0)")


def _check_offer(o: ManagedOffer) -> None:
    if not (o.model or o.base_model or o.tier):
        raise RowError("model", "an offer needs a model, a base_model or a tier")
    if o.tier and (o.model or o.base_model):
        raise RowError("tier", "a size-tier row prices any open model of that size: no model or base_model")
    if o.tier and o.size_b_min is None:
        raise RowError("size_b_min", "a size-tier row needs size_b_min (and size_b_max unless open-ended)")
    if not o.tier and (o.size_b_min is not None or o.size_b_max is not None or o.reference_model):
        raise RowError("tier", "size bounds and reference_model belong to size-tier rows only")
    if o.size_b_min is not None and o.size_b_max is not None and o.size_b_min > o.size_b_max:
        raise RowError("size_b_max", f"{o.size_b_max} is below size_b_min {o.size_b_min}")
    if o.objective == "rft" and o.usd_per_hour is None and o.usd_per_m_tokens is None:
        raise RowError("usd_per_hour", "an RFT row needs its price (or price_unknown = true)")
    if o.default_epochs is not None and o.auto_epochs is not None:
        raise RowError("default_epochs", "give default_epochs or auto_epochs, not both")
    if o.available_until and o.available_from and o.available_until <= o.available_from:
        raise RowError("available_until", "is not after available_from")
    if o.min_examples and o.max_examples and o.min_examples > o.max_examples:
        raise RowError("max_examples", "is below min_examples")


SPECS: dict[str, _Spec[Any]] = {
    "gpu": _Spec(GpuSpec, _GPU_FIELDS, ("name",), _check_gpu),
    "instance": _Spec(CloudInstance, _INSTANCE_FIELDS, ("cloud", "instance_type"), _check_instance),
    "model": _Spec(ModelArch, _MODEL_FIELDS, ("name",), check_model),
    "offer": _OfferSpec(ManagedOffer, _OFFER_FIELDS, ("provider", "model", "base_model", "tier", "method", "objective"),
                        _check_offer, "provider, method, objective and one of model / base_model / tier"),
}
