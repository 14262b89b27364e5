"""Routes: what the planning layer and the backends exchange. Types, and the small pure rules both sides share.

A route is one way to get the fine-tuned model (a managed API, the user's GPU, a rented cloud instance) with its
figures and the backend that runs it. Each backend contributes the routes it can run through ``RouteSource``; the
planner (``ftbroker.planner``) composes, ranks and numbers them; the shell (``ftbroker.plan_io``) does the I/O
around it. This module imports neither side: no backend, no planner, no CLI (an import-layering test keeps it so).

    class MyBackend:                      # a backend that contributes routes: three classmethods
        @classmethod
        def token_needs(cls, catalog, options) -> Iterable[TokenNeed]: ...  # the counters its routes bill by
        @classmethod
        def routes(cls, context) -> Iterable[Route]: ...                    # its routes for this dataset, priced
        @classmethod
        def plan_notes(cls, context) -> Iterable[str]: ...                  # what its routes assume, said once
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate.measured import Corrections
from ftbroker.pricing.catalog import AutoEpochs

if TYPE_CHECKING:  # the dataset report's types and the catalog's rows; routes only read their fields
    from ftbroker.data.report import DatasetReport, TokenStats
    from ftbroker.pricing.catalog import Catalog, GpuSpec, ManagedOffer, ModelArch

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class TokenizerSpec:
    """Which token counter a route needs; the shell turns it into ``tokens.resolve(tokenizer, hf_repo=, family=)``."""

    tokenizer: str | None = None  # a fixed encoding ("o200k_base") or a local tokenizer / model folder
    hf_repo: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class TokenNeed:
    """A counter a route source needs, and the per-example token limit its routes hold examples to (None: none),
    so the dataset report counts the examples over it."""

    spec: TokenizerSpec
    limit: int | None = None


@dataclass(frozen=True)
class ModelRequest:
    """One model as the user named it (``--model``, a job's ``model``), resolved once (``resolve_model`` for a plan,
    ``model_request`` for a job): everything downstream reads these fields, never the string again.

    ``name``: as asked (a local folder or config.json: its absolute path), what a route's job and the ledger name.
    ``arch``: the architecture (the catalog's row, or the local config.json's) when it is an open model the catalog
    can shape; ``unresolved``: why not (the catalog's error, raised where a backend cannot do without it).
    ``folder``: the local model folder it names, if any (what a cloud backend stages).
    ``load_id``: what the trainer loads: the local path, a Hugging Face repo id as given, a catalog model's repo,
    or a name the catalog does not know (the hub's to resolve); None: a catalog row that names no repo."""

    name: str
    arch: ModelArch | None = None
    folder: str | None = None
    load_id: str | None = None
    unresolved: InputError | None = field(default=None, compare=False)

    def trainer_model(self) -> str:
        """``load_id``, or the InputError of a catalog row that names no repo to load."""
        if self.load_id is None:
            raise InputError(f"model: the catalog's {self.arch.name if self.arch else self.name} names no Hugging Face "
                             "repo (hf_repo) to load it from; give --model as a repo id (ORG/NAME) or a local model "
                             "folder, or add hf_repo to its row")
        return self.load_id

    def need_arch(self) -> ModelArch:
        """The architecture, or the catalog's error for a model it cannot shape."""
        if self.arch is None:
            raise self.unresolved or UnknownNameError("model", self.name, [])
        return self.arch

    def tokenizer(self, options: PlanOptions | None = None) -> TokenizerSpec:
        """How its tokens are counted: --tokenizer (``options.tokenizer``), else an open model's own
        (``model_tokenizer``), else the local folder's tokenizer, else the hub repo the name gives."""
        if self.arch is not None:
            return model_tokenizer(self.arch, options or PlanOptions())
        if options is not None and options.tokenizer:
            return TokenizerSpec(tokenizer=options.tokenizer)
        return TokenizerSpec(tokenizer=self.folder) if self.folder else TokenizerSpec(hf_repo=self.name)


@dataclass(frozen=True)
class PlanOptions:
    models: tuple[ModelRequest, ...] = ()
    method: str | None = None  # "full" | "lora" | "qlora"; None: every method
    epochs: int | None = None  # every route's passes over the data; None until the planner sets the plan's own
    epochs_rule: str = ""  # why that many (``plan_epochs``, or --epochs)
    n_evals: int | None = None  # validation passes billed per eval (Together); None: the provider default
    max_seq_len: int | None = None
    tokenizer: str | None = None  # --tokenizer: counts open-model routes with this instead of their own
    gpu: GpuSpec | None = None  # the local GPU (``preflight.local_gpus``: named or detected)
    gpu_count: int = 1
    gpu_source: str = ""  # "--gpu" | "FTBROKER_GPU" | "detected"
    gpu_note: str = ""  # why there is no local GPU, or what to know about it (a card the catalog does not know)
    lora_r: int | None = None
    all_instances: bool = False  # every cloud instance, not only the cheapest per GPU type and cloud
    stack: str = "ftbroker"  # the trainer the GPU routes' figures are for (``ftbroker.estimate.stacks``)
    max_cost: Decimal | None = None  # the user's budget: a route over it is marked, never a best route
    deadline_hours: float | None = None  # the user's deadline: likewise
    corrections: Corrections = field(default_factory=Corrections)  # the user's measured runs (GPU routes)

    def to_json(self) -> dict[str, Any]:
        return {"models": [m.name for m in self.models], "method": self.method, "epochs": self.epochs,
                "epochs_rule": self.epochs_rule or None,
                "n_evals": self.n_evals, "max_seq_len": self.max_seq_len, "tokenizer": self.tokenizer,
                "gpu": self.gpu and {"name": self.gpu.name, "count": self.gpu_count, "source": self.gpu_source},
                "gpu_note": self.gpu_note or None, "lora_r": self.lora_r, "all_instances": self.all_instances,
                "stack": self.stack, "max_cost": jsonable(self.max_cost), "deadline_hours": self.deadline_hours,
                "calibration": self.corrections.to_json()}


# The plan's one number of passes over the data when --epochs does not give it: OpenAI's published "auto" rule
# (github.com/openai/openai-cookbook examples/Chat_finetuning_data_prep.ipynb: TARGET_EPOCHS 3, then examples x
# epochs kept within MIN_TARGET_EXAMPLES 100 and MAX_TARGET_EXAMPLES 25,000, epochs within 1 and 25; the catalog's
# [provider.openai.auto_epochs]), the one provider rule that scales with the dataset; its target is the local
# trainer's default too (TrainConfig.epochs, 3; a test keeps them equal). So small sets get more passes, large ones
# fewer, and every route of a plan trains the same number.
# the rule of a setting the caller gave (epochs, max_seq_len): a front end words it as its own flag
AS_ASKED = "as asked"
PLAN_EPOCHS = AutoEpochs(target=3, min_example_passes=100, max_example_passes=25_000, max_epochs=25, min_epochs=1)


def plan_epochs(examples: int) -> tuple[int, str]:
    """(epochs, why) for a dataset of ``examples``: ``PLAN_EPOCHS``."""
    rule = PLAN_EPOCHS
    return rule.epochs_for(examples), (
        f"OpenAI's auto rule for {examples:,} examples ({rule.target}, or as many as keep examples x epochs within "
        f"{rule.min_example_passes:,}-{rule.max_example_passes:,}; {rule.target} is the local trainer's default too)")


@dataclass(frozen=True, eq=False)
class RouteContext:
    """What a route source prices its routes from: the dataset report(s), counted with every counter the sources
    asked for, the catalog, the options and ``today`` (an input: sources read no clock)."""

    report: DatasetReport
    validation: DatasetReport | None
    catalog: Catalog
    options: PlanOptions
    counter_keys: Mapping[TokenizerSpec, str]  # spec -> key of the counter that counted it in the reports
    today: date
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)  # a replaced context: a new one

    def token_stats(self, spec: TokenizerSpec, report: DatasetReport | None = None) -> TokenStats | None:
        report = self.report if report is None else report
        key = self.counter_keys.get(spec)
        return report.tokens.get(key) if key is not None else None

    def memo(self, key: Any, make: Callable[[], T]) -> T:
        """``make()``, once per context: what several sources derive alike (e.g. the trainer's view of the data)."""
        if key not in self._memo:
            self._memo[key] = make()
        made: T = self._memo[key]
        return made


class RouteSource(Protocol):
    """What contributes routes to a plan: a backend class (its classmethods), or the shell's stand-in for the
    catalog rows no backend claims yet. All three are pure; ``routes`` reads only the context."""

    def token_needs(self, catalog: Catalog, options: PlanOptions) -> Iterable[TokenNeed]: ...

    def routes(self, context: RouteContext) -> Iterable[Route]: ...

    def plan_notes(self, context: RouteContext) -> Iterable[str]: ...


ROUTE_SOURCE_METHODS = ("token_needs", "routes", "plan_notes")


# ---------------------------------------------------------------------------------------------- routes

class Note(str):
    """A note of a route or a plan that a setting changes: the fact, worded for the SDK as for the CLI, and
    ``setting``, the ``PlanOptions`` field that changes it (``epochs``, ``models``, ``n_evals``). Computation
    speaks in facts; a front end names the setting its own way (the CLI: its flag). Everywhere else (JSON, CSV,
    comparisons) a plain ``str``."""

    setting: str

    def __new__(cls, fact: str, setting: str) -> Note:
        note = super().__new__(cls, fact)
        note.setting = setting
        return note


@dataclass(frozen=True)
class Hardware:
    gpu: str
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "count": self.count}


@dataclass(frozen=True)
class Route:
    """One way to get the fine-tuned model, with its cost, whether it is possible (``reason`` if not) and which
    ftbroker backend runs it (``backend``; None with ``not_runnable`` saying why when none does yet).

    ``job`` holds the JobSpec fields that run it as it was priced (backend, model, method, the settings and
    backend options the route was priced with), in the JobSpec's nested shape; the dataset and validation file
    are the plan's. ``number`` is its number in the plan (the planner numbers every route)."""

    kind: str  # "managed" | "local" | "cloud"
    backend: str | None
    model: str
    method: str
    objective: str = "sft"
    hardware: Hardware | None = None
    feasible: bool = True
    reason: str = ""
    closed: bool = False  # out because the provider takes no new jobs on it (``reason`` says since when)
    vram_gib: float | None = None
    hours: float | None = None
    cost_usd: Decimal | None = None
    billed_tokens: int | None = None
    epochs: int | None = None
    breakdown: Mapping[str, Any] = field(default_factory=dict)
    price_source: str = ""
    price_as_of: date | None = None
    stale: bool = False
    notes: tuple[str, ...] = ()  # facts; a ``Note`` also names the setting that changes it
    provider_model: str = ""  # the provider's own model id, when it has one
    price_known: bool = True  # False: no source gave this route's price ("price unknown", never invented)
    price_doubt: str = ""  # why the catalog itself doubts the price (a contradiction, a secondary source)
    provider: str = ""  # managed routes: who trains it
    cloud: str = ""  # cloud routes: where the instance is rented
    region: str = ""
    instance_type: str = ""
    market: str = ""  # cloud routes: "on-demand" | "spot"
    not_runnable: str = ""  # why no ftbroker backend runs it yet, and what to do instead
    job: Mapping[str, Any] | None = None
    number: int = 0

    @property
    def venue(self) -> str:
        """Who trains or rents it out: the managed provider, the cloud, or the backend (``local``)."""
        return self.provider or self.cloud or self.backend or ""

    @property
    def runnable(self) -> bool:
        """Whether ``ftbroker run --route`` can dispatch it: a backend runs it as priced, it is possible and open."""
        return self.backend is not None and self.job is not None and self.feasible

    @property
    def doubt(self) -> str:
        """Why the plan doubts this route's price ("" when it does not): unknown, contradicted or from a secondary
        source, or not checked against its source for 90 days (``stale``). A route on the user's own GPU is
        priced at an electricity tariff, a stand-in for the user's own (U.S. states differ threefold) rather
        than a price anyone charges: its age is no doubt about what the run costs, and the cost is cents."""
        if not self.price_known:
            return "price unknown"
        if self.price_doubt:
            return self.price_doubt
        if self.stale and self.kind != "local":
            return "price not checked against its source for 90 days"
        return ""

    @property
    def id(self) -> str:
        parts = [self.venue, self.model, self.method]
        if self.objective != "sft":
            parts.append(self.objective)
        if self.instance_type:
            parts += [self.instance_type, self.market]
        if self.hardware:
            parts.append(f"{self.hardware.gpu}x{self.hardware.count}")
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number, "id": self.id, "kind": self.kind, "backend": self.backend,
            "runnable": self.runnable, "not_runnable": self.not_runnable or None, "provider": self.provider or None,
            "cloud": self.cloud or None, "region": self.region or None, "instance_type": self.instance_type or None,
            "market": self.market or None, "model": self.model, "provider_model": self.provider_model or None,
            "method": self.method, "objective": self.objective,
            "hardware": self.hardware.to_json() if self.hardware else None, "feasible": self.feasible,
            "reason": self.reason or None, "closed": self.closed, "vram_gib": self.vram_gib, "hours": self.hours,
            "cost_usd": jsonable(self.cost_usd), "billed_tokens": self.billed_tokens, "epochs": self.epochs,
            "breakdown": jsonable(self.breakdown), "price_source": self.price_source or None,
            "price_as_of": self.price_as_of.isoformat() if self.price_as_of else None, "stale": self.stale,
            "price_known": self.price_known, "price_doubt": self.price_doubt or None, "doubt": self.doubt or None,
            "notes": list(self.notes),
            "job": jsonable(self.job),
        }


def route_order(r: Route) -> tuple[Any, ...]:
    """Available by cost, then those without a price, then those out; quicker first at equal cost."""
    return (not r.feasible, r.cost_usd is None, r.cost_usd or 0, r.hours if r.hours is not None else float("inf"),
            r.venue, r.model, r.method)


def job_fields(**fields: Any) -> dict[str, Any]:
    """A route's ``job``: the JobSpec fields given, nested sections included, without the unset (None) ones."""
    out = {}
    for name, value in fields.items():
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v is not None}
        if value is not None and value != {}:
            out[name] = value
    return out


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


# ---------------------------------------------------------------------------------------------- models

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


def model_request(catalog: Catalog, name: str) -> ModelRequest:
    """A job's model, resolved once: an open model with its architecture where the catalog can shape it (a catalog
    name, alias or repo id, a local folder or config.json), else a name the trainer hands to the hub as is."""
    from pathlib import Path

    local = Path(name).expanduser()
    path = str(local.resolve()) if local.exists() else None
    folder = path if local.is_dir() else None
    try:
        arch = catalog.model(name)
    except InputError as exc:  # unknown to the catalog, or a folder / config.json it cannot read
        return ModelRequest(name, folder=folder, load_id=name, unresolved=exc)
    if path is not None:
        return ModelRequest(path, arch, folder=folder, load_id=name)
    # a repo id (ORG/NAME) loads as given; a catalog name or alias by its row's repo
    return ModelRequest(name, arch, load_id=name if "/" in name else arch.hf_repo or None)


def resolve_model(catalog: Catalog, name: str) -> ModelRequest:
    """A plan's ``--model``: an open model (catalog, local folder, config.json) with its architecture, or a managed
    model by name; anything else is an UnknownNameError listing the names known.

    A local folder or config.json is named by its absolute path, so a route's job finds it from anywhere."""
    request = model_request(catalog, name)
    if request.arch is not None:
        return request
    if not isinstance(request.unresolved, UnknownNameError):
        raise request.unresolved or UnknownNameError("model", name, [])
    if matching_offers(catalog.managed, request):
        return ModelRequest(name)
    known = [n for m in catalog.models.values() for n in (m.name, *m.aliases)]
    known += [n for o in catalog.managed for n in (o.model, o.base_model) if n]
    hint = ("a catalog or managed model, a local model folder or a config.json; "
            "`ftbroker catalog show --kind models` (and `--kind managed`) lists them")
    raise UnknownNameError("model", name, known, hint=hint) from None
