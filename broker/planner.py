"""The planner, PURE: a dataset report x the catalog x options -> a ``Plan`` of routes.

No I/O, no clock (``today`` is an input), no SDK, no torch. ``ftbroker.planning`` is the shell around it: it
loads the catalog, resolves model names, counts tokens with every counter the routes need (``token_needs``),
then calls ``build_plan``.

Routes come from route sources, each a pure function ``(PlanInputs) -> list[Route]`` (``ROUTE_SOURCES``), and
plan-wide notes from note sources (``NOTE_SOURCES``). ``managed_routes`` prices the managed fine-tuning APIs;
``gpu_routes`` the local trainer on the user's GPU and on rented cloud instances: the config ``ftbroker run
--backend local`` would give the trainer for the same flags, estimated by the local backend's pre-flight path
(``ftbroker.backends.local.preflight``, on ``ftbroker.estimate``; like every estimate, it reads the estimator's
shipped calibration once), so a local route and ``run``'s quote agree.

Which managed offers are planned (``--model``):
- no model asked: every managed offer; a size-tier offer (Together / Fireworks "up to 16B" ...) is shown for its
  ``reference_model``, since a tier prices no model in particular;
- ``--model NAME`` (repeatable): the offers for that model. A closed model (``gpt-4o-mini``, ``gemini-2.5-flash``,
  ``Nova Lite``) selects the offers whose model id or base model it names. An open model (catalog name, HF repo id,
  local folder) selects the per-model offers that fine-tune it and, for each provider without one, the size tier
  its parameter count falls in.
``--method lora|full`` keeps the offers of that method; ``qlora`` keeps none of them. Offers where the provider
chooses how it trains (method ``sft``: OpenAI, Bedrock, Vertex) stay in every case. The dataset format picks the
objective: preference data -> DPO offers, anything else -> SFT offers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import (TrainerData, electricity, lowered_batch_note, no_fit_reason,
                                               trainer_data, untimed_note)
from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.compute import Overheads, Range, gpu_class
from ftbroker.estimate.cost import (DEFAULT_USD_PER_KWH, DEFAULT_USD_PER_KWH_AS_OF, DEFAULT_USD_PER_KWH_SOURCE,
                                    CostEstimate, cloud_cost)
from ftbroker.estimate.run import DatasetTime, Fit, capped_tokens, fit_setup
from ftbroker.pricing.catalog import Catalog, CloudInstance, GpuSpec, ManagedOffer, ModelArch, is_stale

if TYPE_CHECKING:  # the dataset report's types; the planner only reads their fields
    from ftbroker.data import DatasetReport, TokenStats

CLOSING_SOON_DAYS = 60
_MILLION = Decimal(1_000_000)


# ---------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class TokenizerSpec:
    """Which token counter a route needs; the shell turns it into ``tokens.resolve(tokenizer, hf_repo=, family=)``."""

    tokenizer: str | None = None  # a fixed encoding ("o200k_base") or a local tokenizer / model folder
    hf_repo: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class ModelRequest:
    """One ``--model``: the name as asked, and the architecture when it is an open model."""

    name: str
    arch: ModelArch | None = None


@dataclass(frozen=True)
class PlanOptions:
    models: tuple[ModelRequest, ...] = ()
    method: str | None = None  # "full" | "lora" | "qlora"; None: every method
    epochs: int | None = None  # None: each provider's default
    n_evals: int | None = None  # validation passes billed per eval (Together); None: the provider default
    max_seq_len: int | None = None
    tokenizer: str | None = None  # --tokenizer: counts open-model routes with this instead of their own
    gpu: GpuSpec | None = None  # the local GPU (``preflight.local_gpus``: named or detected)
    gpu_count: int = 1
    gpu_source: str = ""  # "--gpu" | "FTBROKER_GPU" | "detected"
    gpu_note: str = ""  # why there is no local GPU, or what to know about it (a card the catalog does not know)
    lora_r: int | None = None
    all_instances: bool = False  # every cloud instance, not only the cheapest per GPU type and cloud

    def to_json(self) -> dict[str, Any]:
        return {"models": [m.name for m in self.models], "method": self.method, "epochs": self.epochs,
                "n_evals": self.n_evals, "max_seq_len": self.max_seq_len, "tokenizer": self.tokenizer,
                "gpu": self.gpu and {"name": self.gpu.name, "count": self.gpu_count, "source": self.gpu_source},
                "gpu_note": self.gpu_note or None, "lora_r": self.lora_r, "all_instances": self.all_instances}


@dataclass(frozen=True)
class PlanInputs:
    report: DatasetReport
    validation: DatasetReport | None
    catalog: Catalog
    options: PlanOptions
    counter_keys: Mapping[TokenizerSpec, str]  # spec -> key of the counter that counted it in the reports
    today: date

    def token_stats(self, spec: TokenizerSpec, report: DatasetReport | None = None) -> TokenStats | None:
        report = self.report if report is None else report
        key = self.counter_keys.get(spec)
        return report.tokens.get(key) if key is not None else None


# ---------------------------------------------------------------------------------------------- outputs

@dataclass(frozen=True)
class Hardware:
    gpu: str
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "count": self.count}


@dataclass(frozen=True)
class Route:
    """One way to get the fine-tuned model, with its cost and whether it is possible (``reason`` if not)."""

    kind: str  # "managed" | "local" | "cloud"
    backend: str
    model: str
    method: str
    objective: str = "sft"
    hardware: Hardware | None = None
    feasible: bool = True
    reason: str = ""
    vram_gib: float | None = None
    hours: float | None = None
    cost_usd: Decimal | None = None
    billed_tokens: int | None = None
    epochs: int | None = None
    breakdown: Mapping[str, Any] = field(default_factory=dict)
    price_source: str = ""
    price_as_of: date | None = None
    stale: bool = False
    notes: tuple[str, ...] = ()
    provider_model: str = ""  # the provider's own model id, when it has one
    price_known: bool = True  # False: no source gave this route's price ("price unknown", never invented)
    instance: str = ""  # cloud routes: the instance type
    pricing: str = ""  # cloud routes: "on-demand" | "spot"

    @property
    def id(self) -> str:
        parts = [self.backend, self.model, self.method]
        if self.objective != "sft":
            parts.append(self.objective)
        if self.instance:
            parts += [self.instance, self.pricing]
        if self.hardware:
            parts.append(f"{self.hardware.gpu}x{self.hardware.count}")
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "backend": self.backend, "model": self.model,
            "provider_model": self.provider_model or None, "method": self.method, "objective": self.objective,
            "hardware": self.hardware.to_json() if self.hardware else None, "feasible": self.feasible,
            "reason": self.reason or None, "vram_gib": self.vram_gib, "hours": self.hours,
            "cost_usd": jsonable(self.cost_usd), "billed_tokens": self.billed_tokens, "epochs": self.epochs,
            "breakdown": jsonable(self.breakdown), "price_source": self.price_source or None,
            "price_as_of": self.price_as_of.isoformat() if self.price_as_of else None, "stale": self.stale,
            "price_known": self.price_known, "notes": list(self.notes), "instance": self.instance or None,
            "pricing": self.pricing or None,
        }


@dataclass(frozen=True)
class CatalogInfo:
    version: str
    oldest: date
    newest: date
    files: tuple[str, ...]
    stale_rows: int

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "as_of": {"oldest": self.oldest.isoformat(),
                                                   "newest": self.newest.isoformat()},
                "files": list(self.files), "stale_rows": self.stale_rows}


@dataclass(frozen=True)
class Plan:
    """Every route for one dataset, sorted: feasible by cost, then those without a price, then the infeasible."""

    dataset: DatasetReport
    validation: DatasetReport | None
    routes: tuple[Route, ...]
    catalog: CatalogInfo
    today: date
    options: PlanOptions
    notes: tuple[str, ...] = ()  # about the plan as a whole (which models, which GPU, what was assumed)

    @property
    def cheapest(self) -> Route | None:
        priced = [r for r in self.routes if r.feasible and r.cost_usd is not None]
        return min(priced, key=lambda r: r.cost_usd) if priced else None

    @property
    def fastest(self) -> Route | None:
        timed = [r for r in self.routes if r.feasible and r.hours is not None]
        return min(timed, key=lambda r: r.hours) if timed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_json(),
            "validation": self.validation.to_json() if self.validation else None,
            "routes": [r.to_json() for r in self.routes],
            "cheapest": self.cheapest.id if self.cheapest else None,
            "fastest": self.fastest.id if self.fastest else None,
            "catalog": self.catalog.to_json(),
            "today": self.today.isoformat(),
            "options": self.options.to_json(),
            "notes": list(self.notes),
        }


def jsonable(value: Any) -> Any:
    """A value fit for ``json.dumps``: money (Decimal) becomes a JSON number, dates ISO text, containers recurse."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- planning

RouteSource = Callable[[PlanInputs], Sequence[Route]]
NoteSource = Callable[[PlanInputs], Sequence[str]]


def build_plan(inputs: PlanInputs, sources: Sequence[RouteSource] | None = None,
               note_sources: Sequence[NoteSource] | None = None) -> Plan:
    routes = [r for source in (ROUTE_SOURCES if sources is None else sources) for r in source(inputs)]
    routes.sort(key=_route_order)
    notes = [n for source in (NOTE_SOURCES if note_sources is None else note_sources) for n in source(inputs)]
    oldest, newest = inputs.catalog.as_of_range()
    info = CatalogInfo(version=inputs.catalog.version, oldest=oldest, newest=newest, files=inputs.catalog.files,
                       stale_rows=len(inputs.catalog.stale_rows(inputs.today)))
    return Plan(dataset=inputs.report, validation=inputs.validation, routes=tuple(routes), catalog=info,
                today=inputs.today, options=inputs.options, notes=tuple(notes))


def _route_order(r: Route) -> tuple:
    return (not r.feasible, r.cost_usd is None, r.cost_usd or 0, r.hours if r.hours is not None else float("inf"),
            r.backend, r.model, r.method)


def token_needs(catalog: Catalog, options: PlanOptions) -> list[TokenizerSpec]:
    """Every token counter the routes of this plan need, once each, in a stable order."""
    specs = [c.spec for c in _managed_candidates(catalog, options)]
    specs += [model_tokenizer(r.arch, options) for r in options.models if r.arch]
    specs += [model_tokenizer(arch, options) for arch in gpu_models(catalog, options)]
    return list(dict.fromkeys(specs))


def token_limits(catalog: Catalog, options: PlanOptions) -> dict[TokenizerSpec, int]:
    """The tightest per-example token limit among the offers counted with each spec (for the dataset report)."""
    limits: dict[TokenizerSpec, int] = {}
    for c in _managed_candidates(catalog, options):
        if c.offer.max_tokens_per_example:
            limits[c.spec] = min(limits.get(c.spec, c.offer.max_tokens_per_example), c.offer.max_tokens_per_example)
    return limits


def model_tokenizer(arch: ModelArch, options: PlanOptions) -> TokenizerSpec:
    """How an open model's tokens are counted: --tokenizer, else its local folder, else its HF repo or family."""
    if options.tokenizer:
        return TokenizerSpec(tokenizer=options.tokenizer)
    if arch.local_tokenizer:
        return TokenizerSpec(tokenizer=arch.local_tokenizer)
    return TokenizerSpec(hf_repo=arch.hf_repo, family=arch.tokenizer_family or None)


def matching_offers(offers: Sequence[ManagedOffer], request: ModelRequest) -> list[ManagedOffer]:
    """The per-model (not size-tier) offers that fine-tune the model a request names."""
    names = {request.name.lower()}
    if request.arch:
        names |= {request.arch.name.lower(), *(a.lower() for a in request.arch.aliases)}
        names |= {request.arch.hf_repo.lower()} if request.arch.hf_repo else set()
    return [o for o in offers if not o.tier
            and names & {o.model.lower(), o.base_model.lower(), (o.hf_repo or "").lower()} - {""}]


@dataclass(frozen=True)
class _Candidate:
    offer: ManagedOffer
    model: str  # what the route is called
    arch: ModelArch | None
    spec: TokenizerSpec
    via_tier: str = ""  # "reference" | "size" when a size tier prices it


def _managed_candidates(catalog: Catalog, options: PlanOptions) -> list[_Candidate]:
    offers = [o for o in catalog.managed if _method_wanted(o, options.method)]
    picks: list[tuple[ManagedOffer, ModelArch | None, str]] = []
    if not options.models:
        for o in offers:
            if o.tier:
                picks.append((o, catalog.models[o.reference_model], "reference"))
            else:
                picks.append((o, catalog.models.get(o.base_model), ""))
    for request in options.models:
        matched = matching_offers(offers, request)
        picks += [(o, request.arch or catalog.models.get(o.base_model), "") for o in matched]
        if request.arch:
            served = {o.provider for o in matched}
            picks += [(o, request.arch, "size") for o in offers
                      if o.provider not in served and o.covers_size(request.arch.size_b)]
    candidates = []
    for offer, arch, via_tier in picks:
        model = offer.model or (arch.name if arch and (via_tier or not offer.base_model) else offer.base_model)
        candidates.append(_Candidate(offer, model, arch, _offer_tokenizer(offer, arch, options), via_tier))
    return list(dict.fromkeys(candidates))


def _method_wanted(offer: ManagedOffer, method: str | None) -> bool:
    return method is None or offer.method in ("sft", method)


def _offer_tokenizer(offer: ManagedOffer, arch: ModelArch | None, options: PlanOptions) -> TokenizerSpec:
    if offer.tokenizer:  # the provider counts with a fixed encoding, whatever --tokenizer says
        return TokenizerSpec(tokenizer=offer.tokenizer)
    if arch is not None:
        return model_tokenizer(arch, options)
    if offer.hf_repo and options.tokenizer:
        return TokenizerSpec(tokenizer=options.tokenizer)
    return TokenizerSpec(hf_repo=offer.hf_repo, family=offer.tokenizer_family or None)  # none: a labelled guess


def managed_routes(inputs: PlanInputs) -> list[Route]:
    """One route per managed offer in play (see the module docstring for which)."""
    objective = "dpo" if inputs.report.format == "preference" else "sft"
    return [_managed_route(c, inputs) for c in _managed_candidates(inputs.catalog, inputs.options)
            if c.offer.objective in (objective, "rft")]


def _managed_route(c: _Candidate, inputs: PlanInputs) -> Route:
    offer, report, options = c.offer, inputs.report, inputs.options
    stats = inputs.token_stats(c.spec)
    notes: list[str] = []
    breakdown: dict[str, Any] = {"billing": _billing_rule(offer), "tokenizer": stats.tokenizer if stats else None,
                                 "exact_tokens": stats.exact if stats else None}
    if offer.usd_per_m_tokens is not None:  # even when the cost cannot be computed: an actual cost is priced by it
        breakdown["usd_per_m_tokens"] = offer.usd_per_m_tokens
    billed = epochs = cost = None
    if stats is not None:
        epochs, epoch_rule = _epochs(offer, report.examples, options.epochs)
        breakdown["epochs_rule"] = epoch_rule
        per_epoch, over, longest = _billable_per_epoch(offer, stats)
        breakdown["train_tokens_per_epoch"] = per_epoch
        if over and offer.long_examples == "truncated":
            notes.append(f"{over:,} example(s) over the {offer.max_tokens_per_example:,}-token limit are truncated "
                         f"(billed at the limit; longest {longest:,})")
        validation_tokens = _validation_tokens(c, inputs, breakdown, notes)
        if epochs is not None:
            billed = per_epoch * epochs + validation_tokens
            cost = _cost(offer, billed, breakdown)
    else:
        notes.append("no token count for this route's tokenizer")
    if epochs is None and stats is not None:
        notes.append(f"{offer.provider} does not publish a default epoch count: pass --epochs to price it")
    if not offer.price_known:
        notes.append(offer.note or "no public source gives this price")
    elif offer.secondary:
        notes.append("price from a secondary source (unverified)")
    if offer.note and offer.price_known:
        breakdown["catalog_note"] = offer.note
    if c.via_tier == "reference":
        notes.append(f"{offer.tier} tier shown for {c.model}; pass --model to price another model")
    elif c.via_tier == "size":
        notes.append(f"priced by the {offer.tier} size tier ({c.arch.size_b}B); "
                     f"check that {offer.provider} fine-tunes this model")
    reason, closing = availability(offer, inputs.today)
    if closing:
        notes.insert(0, closing)
    reason = reason or _infeasible_reason(offer, inputs, stats)
    return Route(
        kind="managed", backend=offer.backend, model=c.model, method=offer.method, objective=offer.objective,
        feasible=not reason, reason=reason, cost_usd=cost, billed_tokens=billed, epochs=epochs,
        breakdown=breakdown, price_source=offer.source, price_as_of=offer.as_of,
        stale=is_stale(offer, inputs.today), notes=tuple(notes),
        provider_model=offer.model if offer.model != c.model else "", price_known=offer.price_known,
    )


def _billing_rule(offer: ManagedOffer) -> str:
    if offer.usd_per_hour is not None:
        return f"${offer.usd_per_hour} per training hour"
    rule = "tokens x epochs"
    if offer.long_examples == "truncated" and offer.max_tokens_per_example:
        rule = f"min(example tokens, {offer.max_tokens_per_example:,}) x epochs"
    if offer.validation_billing == "per_eval":
        rule += " + validation tokens x n_evals"
    if offer.min_charge_usd:
        rule += f"; minimum ${offer.min_charge_usd}"
    return rule


def _epochs(offer: ManagedOffer, examples: int, asked: int | None) -> tuple[int | None, str]:
    if asked is not None:
        return asked, "--epochs"
    if offer.default_epochs is not None:
        return offer.default_epochs, f"{offer.provider} default"
    if offer.auto_epochs is not None:
        epochs = offer.auto_epochs.epochs_for(examples)
        return epochs, f"auto: {epochs} for {examples:,} examples"
    return None, "unknown: no published default"


def _billable_per_epoch(offer: ManagedOffer, stats: TokenStats) -> tuple[int, int, int]:
    """(tokens billed per epoch, examples over the limit, longest example)."""
    capped, over, longest = capped_tokens(stats, offer.max_tokens_per_example)
    return (capped if offer.long_examples == "truncated" else stats.total), over, longest


def _validation_tokens(c: _Candidate, inputs: PlanInputs, breakdown: dict[str, Any], notes: list[str]) -> int:
    """Validation tokens this offer bills (0 unless its rule bills them), with what was assumed in notes."""
    if inputs.validation is None:
        return 0
    stats = inputs.token_stats(c.spec, inputs.validation)
    tokens = stats.total if stats else 0
    breakdown["validation_tokens"] = tokens
    billing = c.offer.validation_billing
    if billing == "unknown":
        notes.append(f"{c.offer.provider} does not say whether validation tokens are billed; not included")
        return 0
    if billing == "none":
        return 0
    n_evals = inputs.options.n_evals if inputs.options.n_evals is not None else c.offer.default_n_evals
    breakdown["n_evals"] = n_evals
    if n_evals == 0:
        notes.append("validation tokens are billed per evaluation; n_evals is 0 (pass --n-evals)")
    return tokens * n_evals


def _cost(offer: ManagedOffer, billed: int, breakdown: dict[str, Any]) -> Decimal | None:
    if offer.usd_per_m_tokens is None:
        return None
    cost = Decimal(billed) * offer.usd_per_m_tokens / _MILLION
    if cost < offer.min_charge_usd:
        breakdown["min_charge_applied"] = offer.min_charge_usd
        cost = offer.min_charge_usd
    return cost.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def availability(offer: ManagedOffer, today: date) -> tuple[str, str]:
    """(why the offer is closed on ``today``, or ""; a warning when it closes within CLOSING_SOON_DAYS, or "").

    The one rule for "is this route open": the plan shows it, and a backend refuses a closed route with it.
    """
    why = f" ({offer.availability_note})" if offer.availability_note else ""
    if offer.available_from and today < offer.available_from:
        return f"not open yet: opens to new jobs on {offer.available_from}{why}", ""
    if offer.end_of_life and today >= offer.end_of_life:
        return f"closed: the model reached end of life on {offer.end_of_life}{why}", ""
    if offer.available_until and today >= offer.available_until:
        return f"closed: no new jobs since {offer.available_until}{why}", ""
    ends = [d for d in (offer.available_until, offer.end_of_life) if d]
    if ends and (min(ends) - today).days <= CLOSING_SOON_DAYS:
        end = min(ends)
        days = (end - today).days
        return "", f"closes to new jobs in {days} day{'s' if days != 1 else ''} ({end}){why}"
    return "", ""


def _infeasible_reason(offer: ManagedOffer, inputs: PlanInputs, stats: TokenStats | None) -> str:
    report = inputs.report
    issues = report.provider_issues.get(offer.provider) or ()
    if issues:  # every rule broken, each once (the data layer has already counted the lines that break it)
        return "; ".join([str(issues[0]), *(f"line {i.line}: {i.message}" if i.line else i.message
                                            for i in issues[1:])])
    if offer.objective == "rft":
        return "reinforcement fine-tuning needs a grader and is billed per training hour: not planned"
    accepted = ("preference",) if offer.objective == "dpo" else offer.formats
    if report.format not in accepted:
        return f"takes {' or '.join(accepted)} data; this file is {report.format}"
    if offer.min_examples and report.examples < offer.min_examples:
        return f"needs at least {offer.min_examples:,} examples; the file has {report.examples:,}"
    if offer.max_examples and report.examples > offer.max_examples:
        return f"takes at most {offer.max_examples:,} examples; the file has {report.examples:,}"
    validation = inputs.validation
    if validation and offer.max_validation_examples and validation.examples > offer.max_validation_examples:
        return (f"takes at most {offer.max_validation_examples:,} validation examples; "
                f"the validation file has {validation.examples:,}")
    if stats is not None and offer.long_examples == "rejected" and offer.max_tokens_per_example:
        _, over, longest = _billable_per_epoch(offer, stats)
        if over:
            return (f"{over:,} example(s) exceed the {offer.max_tokens_per_example:,}-token limit "
                    f"(longest {longest:,})")
    if offer.max_file_bytes and report.size_bytes > offer.max_file_bytes:
        return f"the file is {report.size_bytes:,} bytes; the limit is {offer.max_file_bytes:,}"
    return ""


# ---------------------------------------------------------------------------------------------- GPU routes
# Local and cloud GPU routes: the local trainer (ftbroker run --backend local) on the user's GPU or on a rented
# instance, priced by the estimator (ftbroker.estimate) with this dataset's real token lengths.

DEFAULT_GPU_MODELS = ("Llama-3.1-8B", "Qwen2.5-7B")  # when --model names no open model: two common 7-8B bases
GPU_METHODS = ("full", "lora", "qlora")
# Cloud wall-clock outside training, billed too (assumptions, stated in each route's breakdown): instance boot and
# environment set-up, and the model's download from the Hugging Face hub. A local run assumes the model is cached.
CLOUD_STARTUP_S = Range(120, 300, 900)
CLOUD_DOWNLOAD_GBPS = Range(0.1, 0.3, 1.0)


def gpu_models(catalog: Catalog, options: PlanOptions) -> list[ModelArch]:
    """The open models GPU routes are planned for: those asked for, else (nothing asked) the default set."""
    if options.models:
        return list({r.arch.name: r.arch for r in options.models if r.arch}.values())
    return [catalog.models[name] for name in DEFAULT_GPU_MODELS if name in catalog.models]


@dataclass(frozen=True)
class _GpuJob:
    """One model and method trained on this dataset by the local trainer: what every GPU option shares."""

    arch: ModelArch
    config: TrainConfig  # what ``ftbroker run --backend local`` with this plan's flags gives the trainer
    data: TrainerData  # the dataset as that trainer reads it
    epochs_rule: str
    reason: str  # why no GPU can run it ("" when some may)
    notes: tuple[str, ...]
    assumptions: tuple[str, ...]


def trainer_config(inputs: PlanInputs, model: str, method: str) -> TrainConfig:
    """The trainer's config for this plan's flags: the JobSpec ``ftbroker run`` would build from the same flags,
    through the local backend's one mapping, so every setting the plan does not name is the trainer's default."""
    from ftbroker.backends.local.backend import LocalOptions, train_config
    from ftbroker.spec import JobSpec

    options = inputs.options
    spec = JobSpec(dataset=inputs.report.path, validation=inputs.validation.path if inputs.validation else None,
                   model=model, method=method, lora={"r": options.lora_r},
                   hyperparameters={"epochs": options.epochs, "max_seq_len": options.max_seq_len})
    return train_config(spec, LocalOptions())


def _gpu_jobs(inputs: PlanInputs) -> list[_GpuJob]:
    options = inputs.options
    cap_rule = "--max-seq-len" if options.max_seq_len else "the local trainer's default; --max-seq-len"
    jobs = []
    for arch in gpu_models(inputs.catalog, options):
        spec = model_tokenizer(arch, options)
        stats = inputs.token_stats(spec)
        if stats is None or not stats.length_counts:
            continue
        validation = inputs.token_stats(spec, inputs.validation) if inputs.validation else None
        configs = [trainer_config(inputs, arch.name, method)
                   for method in ((options.method,) if options.method else GPU_METHODS)]
        data = trainer_data(configs[0], stats, validation)  # the same for every method
        epochs_rule = ("--epochs" if options.epochs
                       else f"the local trainer's default ({configs[0].epochs:g}; --epochs)")
        notes = (data.cut_note(cap_rule),) if data.cut else ()
        assumptions = (f"tokens counted with {stats.tokenizer}", data.evaluation)
        jobs += [_GpuJob(arch, config, data, epochs_rule, data.context_reason(arch), notes, assumptions)
                 for config in configs]
    return jobs


@dataclass(frozen=True)
class _GpuRun:
    """A job on ``count`` GPUs of one type: the setup that fits (or why none does) and its wall-clock."""

    gpu: GpuSpec
    count: int
    fit: Fit
    time: DatasetTime | None  # None: it does not fit
    reason: str


def _gpu_run(job: _GpuJob, gpu: GpuSpec, count: int, overheads: Overheads, cal: Calibration) -> _GpuRun:
    """The job as the trainer would run it: its config's setup, or the largest micro-batch that fits."""
    setup = job.config.training_setup(seq_len=job.data.seq_len, n_gpus=count)
    fit = fit_setup(job.arch, gpu, setup, calibration=cal)
    if not fit.fits:
        return _GpuRun(gpu, count, fit, None, job.reason or no_fit_reason(fit, gpu))
    return _GpuRun(gpu, count, fit, job.data.time(job.arch, gpu, fit.setup, overheads, cal), job.reason)


def _gpu_breakdown(job: _GpuJob, run: _GpuRun) -> dict[str, Any]:
    s, m = run.fit.setup, run.fit.memory
    setup = {"micro_batch": s.micro_batch, "grad_accumulation": s.grad_accumulation, "seq_len": s.seq_len,
             "grad_checkpointing": s.grad_checkpointing, "precision": s.precision,
             "optimizer": s.optimizer_kind.name, "n_gpus": s.n_gpus, "sharding": s.sharding}
    if s.method != "full":
        setup.update(lora_r=s.lora_r, lora_dropout=s.lora_dropout, targets=sorted(s.lora_modules))
    out: dict[str, Any] = {"setup": setup, "vram_gib": m.to_json(), "gpu_memory_gib": run.gpu.memory_gib,
                           "gpu_class": gpu_class(run.gpu),
                           "epochs_rule": job.epochs_rule, "tokenizer": job.data.stats.tokenizer,
                           "exact_tokens": job.data.stats.exact}
    assumptions = [*job.assumptions, *m.assumptions]
    if run.time is not None:
        t, p = run.time, run.time.padding
        out["tokens"] = {"real_per_epoch": round(t.real_tokens), "processed_per_epoch": round(t.processed_tokens),
                         "padding_waste": max(0.0, round(p.waste, 4)),
                         "eval_processed_per_pass": round(t.eval_tokens), "eval_passes": job.data.eval_passes}
        if t.time is not None:
            out["hours"] = t.time.hours.to_json()
            out["hours_by_part"] = {k: round(v.expected / 3600, 4) for k, v in t.time.breakdown.items()}
            assumptions += t.time.assumptions
    out["assumptions"] = assumptions
    return out


def _gpu_route(kind: str, backend: str, job: _GpuJob, run: _GpuRun, cost: CostEstimate | None,
               notes: Sequence[str], extra: Mapping[str, Any] = {}, **fields: Any) -> Route:
    breakdown = {**_gpu_breakdown(job, run), **extra}
    timed = run.time.time if run.time else None
    hours = timed.hours if timed else None
    if cost is not None:
        breakdown.update(cost_usd=cost.usd.to_json(), cost=cost.breakdown)
        if cost.hours != hours:  # spot: the reclaims' restarts and lost work, billed and waited for
            hours = cost.hours
            breakdown["hours_with_reclaims"] = hours.to_json()
    if run.time is not None and timed is None:
        notes = [*notes, untimed_note(run.gpu)]
    lowered = lowered_batch_note(job.config, run.fit) if run.fit.fits else ""
    return Route(kind=kind, backend=backend, model=job.arch.name, method=job.config.method,
                 hardware=Hardware(run.gpu.name, run.count), feasible=not run.reason, reason=run.reason,
                 vram_gib=round(run.fit.memory.total, 2), hours=round(hours.expected, 3) if hours else None,
                 cost_usd=cost.usd.expected if cost else None, epochs=int(job.config.epochs), breakdown=breakdown,
                 notes=(*job.notes, *([lowered] if lowered else []), *notes), **fields)


def _local_route(job: _GpuJob, run: _GpuRun, today: date) -> Route:
    timed = run.time.time if run.time else None
    cost, why_not = electricity(timed, run.gpu, run.count) if timed is not None else (None, "")
    notes = [why_not] if why_not else []
    return _gpu_route("local", "local", job, run, cost, notes,
                      price_source=f"electricity at {DEFAULT_USD_PER_KWH} $/kWh: {DEFAULT_USD_PER_KWH_SOURCE}",
                      price_as_of=DEFAULT_USD_PER_KWH_AS_OF, stale=is_stale(DEFAULT_USD_PER_KWH_AS_OF, today))


def _cloud_routes(job: _GpuJob, run: _GpuRun, inst: CloudInstance, today: date) -> list[Route]:
    timed = run.time.time if run.time else None
    notes = [inst.note] if inst.note else []
    weights_gib = job.arch.params * 2 / 2**30
    if not run.reason and inst.memory_gib is not None and inst.memory_gib < weights_gib:
        run = replace(run, reason=f"{inst.memory_gib:g} GiB of host RAM is less than the model's "
                                  f"{weights_gib:.0f} GiB of 16-bit weights, which loading reads through it")
    routes = []
    for pricing, price, region in (("on-demand", inst.on_demand_usd_per_hour, inst.region),
                                   ("spot", inst.spot_usd_per_hour, inst.spot_region or inst.region)):
        if price is None:
            continue
        cost = None
        if timed is not None:
            parts = timed.breakdown
            restart = parts["start-up"] + parts["model download"] + parts["model load"]
            cost = cloud_cost(timed.hours, price, spot=pricing == "spot", restart_hours=restart.scaled(1 / 3600),
                              checkpoint_hours=parts["checkpoints"].expected / job.data.checkpoints / 3600)
        routes.append(_gpu_route("cloud", inst.cloud, job, run, cost, notes,
                                 {"usd_per_hour": price, "region": region}, instance=inst.instance_type,
                                 pricing=pricing, price_source=inst.source, price_as_of=inst.as_of,
                                 stale=is_stale(inst, today)))
    return routes


def _cheapest_per_cloud_and_gpu(routes: Sequence[Route]) -> list[Route]:
    """Per model, method, cloud, GPU type and pricing: the cheapest feasible instance (else the cheapest per hour;
    else, all out, the one with the most GPUs, whose reason says the most)."""
    best: dict[tuple, Route] = {}
    for r in routes:
        key = (r.model, r.method, r.backend, r.hardware.gpu, r.pricing)
        if key not in best or _cloud_order(r) < _cloud_order(best[key]):
            best[key] = r
    return list(best.values())


def _cloud_order(r: Route) -> tuple:
    return (not r.feasible, r.cost_usd is None, r.cost_usd or 0,
            r.breakdown["usd_per_hour"] if r.feasible else -r.hardware.count)


def gpu_routes(inputs: PlanInputs) -> list[Route]:
    """Local routes on the user's GPU and cloud routes on every instance type (by default the cheapest per GPU
    type and cloud), for each model and method (see ``gpu_models``, ``GPU_METHODS``)."""
    from ftbroker.backends.local.backend import LocalBackend  # the trainer's capabilities (data)

    if inputs.report.format not in LocalBackend.capabilities.data_formats:
        return []
    cal, catalog, options, today = default_calibration(), inputs.catalog, inputs.options, inputs.today
    local = Overheads()
    cloud = Overheads(startup_s=CLOUD_STARTUP_S, download_gbps=CLOUD_DOWNLOAD_GBPS)
    routes: list[Route] = []
    for job in _gpu_jobs(inputs):
        if options.gpu:
            routes.append(_local_route(job, _gpu_run(job, options.gpu, options.gpu_count, local, cal), today))
        runs: dict[tuple[str, int], _GpuRun] = {}
        offers = []
        for inst in catalog.instances:
            key = (inst.gpu, inst.gpu_count)
            if key not in runs:
                runs[key] = _gpu_run(job, catalog.gpus[inst.gpu], inst.gpu_count, cloud, cal)
            offers += _cloud_routes(job, runs[key], inst, today)
        routes += offers if options.all_instances else _cheapest_per_cloud_and_gpu(offers)
    return routes


def gpu_notes(inputs: PlanInputs) -> list[str]:
    """What the GPU routes assume, said once for the plan."""
    from ftbroker.backends.local.backend import LocalBackend

    caps, options, fmt = LocalBackend.capabilities, inputs.options, inputs.report.format
    if fmt not in caps.data_formats:
        return [f"no GPU routes: {caps.reason(f'format.{fmt}') or f'the local trainer does not train {fmt} data'}"]
    models = gpu_models(inputs.catalog, options)
    if not models:
        return ["no GPU routes: --model names no open model (a catalog model, a local folder or a config.json)"]
    epochs = (f"{options.epochs} epochs" if options.epochs
              else f"{TrainConfig.model_fields['epochs'].default:g} epochs (the local trainer's default; --epochs)")
    chosen = "" if options.models else " (the default models; --model for others)"
    notes = [f"GPU routes: {', '.join(m.name for m in models)}{chosen}, {epochs}"]
    if options.gpu:
        notes.append(f"local GPU: {options.gpu_count} x {options.gpu.name} ({options.gpu_source or '--gpu'})"
                     + (f"; {options.gpu_note}" if options.gpu_note else ""))
    else:
        notes.append(options.gpu_note or "local GPU: none named (--gpu NAME[:COUNT]), so no local routes")
    shown = "every instance" if options.all_instances else "the cheapest instance per GPU type and cloud (--all: all)"
    notes.append(f"cloud GPUs: {shown}, on-demand and spot. No ftbroker backend rents instances yet: on the "
                 "instance, ftbroker run --backend local")
    return notes


ROUTE_SOURCES: tuple[RouteSource, ...] = (managed_routes, gpu_routes)
NOTE_SOURCES: tuple[NoteSource, ...] = (gpu_notes,)
