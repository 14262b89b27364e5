"""Managed fine-tuning offers priced for a dataset: the one pricing function of every managed route. PURE.

Each managed backend (``ManagedBackend``) contributes the catalog offers of the providers it claims
(``Capabilities.providers``) through ``offer_routes``, and prices its own job for ``quote`` with the same function
on the offers of one model (``candidates``), so a plan and a run quote the same cost. The shell prices the offers
of providers no backend claims yet the same way (``UnclaimedOffers``): shown, marked not runnable.

Which offers are planned (``--model``):
- no model asked: every offer; a size-tier offer (Together / Fireworks "up to 16B" ...) is shown for its
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

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from ftbroker.estimate.run import capped_tokens
from ftbroker.pricing.catalog import Catalog, ManagedOffer, ModelArch, is_stale
from ftbroker.routes import (Note, PlanOptions, Route, RouteContext, TokenizerSpec, TokenNeed, job_fields,
                             matching_offers, model_tokenizer)

if TYPE_CHECKING:
    from ftbroker.data.report import TokenStats

CLOSING_SOON_DAYS = 60
SECONDARY = "price from a secondary source (unverified)"
_MILLION = Decimal(1_000_000)

# What a managed backend adds to a route's job: the backend options that run it as priced (e.g. Together's n_evals).
RouteOptions = Callable[[Route], Mapping[str, Any]]


@dataclass(frozen=True)
class Candidate:
    """An offer in play for this plan, and the model its route is called by."""

    offer: ManagedOffer
    model: str  # what the route is called
    arch: ModelArch | None
    spec: TokenizerSpec
    via_tier: str = ""  # "reference" | "size" when a size tier prices it
    request: str = ""  # the --model that selected it ("" when none was asked)


def candidates(catalog: Catalog, options: PlanOptions, providers: Collection[str] | None = None) -> list[Candidate]:
    """The offers in play (see the module docstring), of ``providers`` only when given."""
    offers = [o for o in catalog.managed if _method_wanted(o, options.method)
              and (providers is None or o.provider in providers)]
    picks: list[tuple[ManagedOffer, ModelArch | None, str, str]] = []
    if not options.models:
        for o in offers:
            if o.tier:
                picks.append((o, catalog.models[o.reference_model], "reference", ""))
            else:
                picks.append((o, catalog.models.get(o.base_model), "", ""))
    for request in options.models:
        matched = matching_offers(offers, request)
        picks += [(o, request.arch or catalog.models.get(o.base_model), "", request.name) for o in matched]
        if request.arch:
            served = {o.provider for o in matched}
            picks += [(o, request.arch, "size", request.name) for o in offers
                      if o.provider not in served and o.covers_size(request.arch.size_b)]
    found = []
    for offer, arch, via_tier, asked in picks:
        model = offer.model or (arch.name if arch and (via_tier or not offer.base_model) else offer.base_model)
        found.append(Candidate(offer, model, arch, _offer_tokenizer(offer, arch, options), via_tier, asked))
    return list(dict.fromkeys(found))


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


def token_needs(found: Iterable[Candidate]) -> list[TokenNeed]:
    """The counters these candidates bill by, each with the offer's per-example limit (for the dataset report)."""
    return [TokenNeed(c.spec, c.offer.max_tokens_per_example) for c in found]


def offer_routes(context: RouteContext, providers: Collection[str] | None, *, backend: str | None,
                 route_options: RouteOptions | None = None) -> list[Route]:
    """One route per offer of ``providers`` in play (see the module docstring), run by ``backend`` (None: by no
    backend yet); ``route_options`` gives the backend options each route runs with."""
    objective = "dpo" if context.report.format == "preference" else "sft"
    routes = []
    for c in candidates(context.catalog, context.options, providers):
        if c.offer.objective in (objective, "rft"):
            route = offer_route(c, context, backend=backend)
            if route_options is not None and route.job is not None:
                route = replace(route, job=job_fields(**{**route.job, "backend_options": route_options(route)}))
            routes.append(route)
    return routes


def offer_route(c: Candidate, context: RouteContext, *, backend: str | None) -> Route:
    """The offer priced for this dataset: billed tokens by its rule, its cost, and whether it is open and possible."""
    offer, report, options = c.offer, context.report, context.options
    stats = context.token_stats(c.spec)
    notes: list[str] = []
    breakdown: dict[str, Any] = {"billing": _billing_rule(offer), "tokenizer": stats.tokenizer if stats else None,
                                 "exact_tokens": stats.exact if stats else None}
    if offer.usd_per_m_tokens is not None:  # even when the cost cannot be computed: an actual cost is priced by it
        breakdown["usd_per_m_tokens"] = offer.usd_per_m_tokens
    billed = epochs = cost = None
    if stats is not None:
        epochs, epoch_rule = _epochs(offer, report.examples, options.epochs)
        breakdown["epochs_rule"] = options.epochs_rule or epoch_rule
        notes += [own] if (own := _own_epochs_note(offer, report.examples, options.epochs)) else []
        per_epoch, over, longest = _billable_per_epoch(offer, stats)
        breakdown["train_tokens_per_epoch"] = per_epoch
        if over and offer.long_examples == "truncated":
            notes.append(f"{over:,} example(s) over the {offer.max_tokens_per_example:,}-token limit are truncated "
                         f"(billed at the limit; longest {longest:,})")
        validation_tokens = _validation_tokens(c, context, breakdown, notes)
        if epochs is not None:
            billed = per_epoch * epochs + validation_tokens
            cost = _cost(offer, billed, breakdown)
    else:
        notes.append("no token count for this route's tokenizer")
    notes += _price_notes(c, epochs is None and stats is not None)
    if offer.note and offer.price_known:
        breakdown["catalog_note"] = offer.note
    closed, closing = availability(offer, context.today)
    if closing:
        notes.insert(0, closing)
    reason = closed or _infeasible_reason(offer, context, stats)
    job = None if backend is None else job_fields(
        backend=backend, model=_job_model(c), method=offer.method if offer.method != "sft" else None,
        hyperparameters={"epochs": options.epochs})
    return Route(
        kind="managed", backend=backend, provider=offer.provider, model=c.model, method=offer.method,
        objective=offer.objective, feasible=not reason, reason=reason, closed=bool(closed), cost_usd=cost,
        billed_tokens=billed, epochs=epochs, breakdown=breakdown, price_source=offer.source,
        price_as_of=offer.as_of, stale=is_stale(offer, context.today), notes=tuple(notes),
        provider_model=offer.model if offer.model != c.model else "", price_known=offer.price_known,
        price_doubt=SECONDARY if offer.secondary and offer.price_known else "", job=job,
    )


def _job_model(c: Candidate) -> str:
    """What the backend is given to train: the provider's model id, else the model's repo, else what was asked."""
    return c.offer.model or c.offer.hf_repo or (c.arch.hf_repo if c.arch and c.arch.hf_repo else "") \
        or c.request or c.model


def _price_notes(c: Candidate, no_epochs: bool) -> list[str]:
    offer, notes = c.offer, []
    if no_epochs:
        notes.append(Note(f"{offer.provider} publishes no default epoch count: no price without a number of epochs",
                          "epochs"))
    if not offer.price_known:
        notes.append(offer.note or "no public source gives this price")
    elif offer.secondary:
        notes.append(SECONDARY)
    if c.via_tier == "reference":
        notes.append(Note(f"{offer.tier} tier shown for {c.model}, its reference model", "models"))
    elif c.via_tier == "size":
        notes.append(f"priced by the {offer.tier} size tier ({c.arch.size_b}B); "
                     f"check that {offer.provider} fine-tunes this model")
    return notes


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


def _own_epochs_note(offer: ManagedOffer, examples: int, epochs: int | None) -> str:
    """The provider's own default, when the plan trains another number of epochs (priced and run at the plan's, so
    that every route of a plan is the same training)."""
    own, _ = _epochs(offer, examples, None)
    if epochs is None or own is None or own == epochs:
        return ""
    return f"{offer.provider}'s own default is {own} epoch{'s' if own != 1 else ''}; priced and run at the plan's"


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


def _validation_tokens(c: Candidate, context: RouteContext, breakdown: dict[str, Any], notes: list[str]) -> int:
    """Validation tokens this offer bills (0 unless its rule bills them), with what was assumed in notes."""
    if context.validation is None:
        return 0
    stats = context.token_stats(c.spec, context.validation)
    tokens = stats.total if stats else 0
    breakdown["validation_tokens"] = tokens
    billing = c.offer.validation_billing
    if billing == "unknown":
        notes.append(f"{c.offer.provider} does not say whether validation tokens are billed; not included")
        return 0
    if billing == "none":
        return 0
    n_evals = context.options.n_evals if context.options.n_evals is not None else c.offer.default_n_evals
    breakdown["n_evals"] = n_evals
    if n_evals == 0:
        notes.append(Note("validation tokens are billed per evaluation; n_evals is 0", "n_evals"))
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


def _infeasible_reason(offer: ManagedOffer, context: RouteContext, stats: TokenStats | None) -> str:
    report = context.report
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
    validation = context.validation
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


@dataclass(frozen=True)
class UnclaimedOffers:
    """The route source of the catalog's managed offers whose provider no backend claims yet (the shell adds it):
    priced like every offer, so the plan still compares them, and marked not runnable."""

    providers: tuple[str, ...]

    def token_needs(self, catalog: Catalog, options: PlanOptions) -> list[TokenNeed]:
        return token_needs(candidates(catalog, options, self.providers))

    def routes(self, context: RouteContext) -> list[Route]:
        return [replace(r, not_runnable=f"no ftbroker backend runs {r.provider} jobs yet (priced for comparison)")
                for r in offer_routes(context, self.providers, backend=None)]

    def plan_notes(self, context: RouteContext) -> tuple[str, ...]:
        return ()

