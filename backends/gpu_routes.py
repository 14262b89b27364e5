"""GPU routes: the local trainer (``ftbroker run --backend local``) on N GPUs of one type, priced by the estimator
with this dataset's real token lengths. PURE.

One computation for every GPU route: the trainer's config through the local backend's one mapping
(``train_config``), then ``preflight.gpu_run`` (the setup that fits, its peak VRAM, its wall-clock), then the cost
(the GPUs' electricity, or the instance's price). The local backend contributes the routes on the user's GPU
(``local_routes``); a backend that rents cloud instances contributes the routes on its catalog rows with one call::

    @classmethod
    def routes(cls, context):
        mine = [i for i in context.catalog.instances if i.cloud in cls.capabilities.clouds]
        return cloud_gpu_routes(context, mine, backend=cls.name)

and quotes one job on one instance with ``instance_quote``, which gives the figures of that route. The shell prices
the instances of clouds no backend claims yet the same way (``UnclaimedClouds``): shown, marked not runnable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from ftbroker.backends.base import Quote, Verdict
from ftbroker.backends.local.backend import LocalBackend, LocalOptions
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import (
    GpuRun,
    TrainerData,
    electricity,
    estimate_keys,
    gpu_run,
    lowered_batch_note,
    no_fit_reason,
    trainer_data,
    untimed_note,
)
from ftbroker.backends.local.prepare import train_config
from ftbroker.estimate.calibration import Calibration, default_calibration
from ftbroker.estimate.compute import Overheads, Range, communication, gpu_class
from ftbroker.estimate.cost import (
    DEFAULT_USD_PER_KWH,
    DEFAULT_USD_PER_KWH_AS_OF,
    DEFAULT_USD_PER_KWH_SOURCE,
    CostEstimate,
    cloud_cost,
)
from ftbroker.estimate.measured import Corrections
from ftbroker.estimate.stacks import FTBROKER, Stack, resolve_stack
from ftbroker.estimate.summary import check_text
from ftbroker.pricing.catalog import Catalog, CloudInstance, GpuSpec, ModelArch, is_stale
from ftbroker.routes import (
    AS_ASKED,
    Hardware,
    ModelRequest,
    Note,
    PlanOptions,
    Route,
    RouteContext,
    TokenNeed,
    job_fields,
    model_tokenizer,
)
from ftbroker.vocabulary import METHODS

DEFAULT_GPU_MODELS = ("Llama-3.1-8B", "Qwen2.5-7B")  # when --model names no open model: two common 7-8B bases
# Cloud wall-clock outside training, billed too (assumptions, stated in each route's breakdown): instance boot and
# environment set-up, and the model's download from the Hugging Face hub. A local run assumes the model is cached.
CLOUD_STARTUP_S = Range(120, 300, 900)
CLOUD_DOWNLOAD_GBPS = Range(0.1, 0.3, 1.0)
LOCAL_OVERHEADS = Overheads()
CLOUD_OVERHEADS = Overheads(startup_s=CLOUD_STARTUP_S, download_gbps=CLOUD_DOWNLOAD_GBPS)
# Inter-node bandwidth when the route does not say: 100 Gbit/s, the Ethernet of GPU clouds without InfiniBand (e.g.
# GCP A2 machines: "up to 100 Gbps", https://cloud.google.com/compute/docs/gpus#a100-gpus). Nodes with InfiniBand or
# GPUDirect reach 1,600-3,200 Gbit/s (Azure ND A100 v4: 8 x 200 Gb/s HDR,
# https://learn.microsoft.com/azure/virtual-machines/nda100-v4-series): a backend passes the real figure where known.
DEFAULT_INTERCONNECT_GBPS = 100.0

# A cloud route's backend options: how its backend is told the instance (instance, market, region) -> options.
CloudOptions = Callable[[CloudInstance, str, str], Mapping[str, Any]]


def default_cloud_options(instance: CloudInstance, market: str, region: str) -> dict[str, Any]:
    return {"instance_type": instance.instance_type, "region": region or None, "spot": market == "spot"}


def gpu_models(catalog: Catalog, options: PlanOptions) -> list[ModelRequest]:
    """The open models GPU routes are planned for: those asked for, else (nothing asked) the default set."""
    if options.models:
        asked: dict[str, ModelRequest] = {}
        for r in options.models:
            if r.arch:
                asked.setdefault(r.arch.name, r)
        return list(asked.values())
    return [ModelRequest(name, catalog.models[name]) for name in DEFAULT_GPU_MODELS if name in catalog.models]


def token_needs(catalog: Catalog, options: PlanOptions) -> list[TokenNeed]:
    """The counters GPU routes read the dataset's lengths with: each model's own tokenizer (or --tokenizer)."""
    return [TokenNeed(model_tokenizer(r.arch, options)) for r in gpu_models(catalog, options)]


# ---------------------------------------------------------------------------------------------- the jobs

@dataclass(frozen=True)
class GpuJob:
    """One model and method trained on this dataset by the local trainer: what every GPU option shares."""

    request: ModelRequest  # the model as asked (what the route's job names) and its architecture
    config: TrainConfig  # what ``ftbroker run --backend local`` with this plan's flags gives the trainer
    data: TrainerData  # the dataset as that trainer reads it
    epochs_rule: str
    reason: str  # why no GPU can run it ("" when some may)
    notes: tuple[str, ...]
    assumptions: tuple[str, ...]
    asked: Mapping[str, Any]  # the plan's settings a route's job carries (epochs, max_seq_len, lora r)
    stack: Stack = FTBROKER  # the trainer it is estimated for (``--stack``); another than ours: not runnable

    @property
    def arch(self) -> ModelArch:
        assert self.request.arch is not None
        return self.request.arch


def trainer_config(context: RouteContext, model: str, method: str) -> TrainConfig:
    """The trainer's config for this plan's flags: the JobSpec ``ftbroker run`` would build from the same flags,
    through the local backend's one mapping, so every setting the plan does not name is the trainer's default.
    Another ``--stack``: the settings that trainer starts from (``stack_config``)."""
    from ftbroker.spec import JobSpec

    options = context.options
    stack = resolve_stack(options.stack)
    if stack is not FTBROKER:
        return stack_config(stack, context, model, method)
    spec = JobSpec(dataset=context.report.path, validation=context.validation.path if context.validation else None,
                   model=model, method=method, lora={"r": options.lora_r},
                   hyperparameters={"epochs": options.epochs, "max_seq_len": options.max_seq_len})
    return train_config(spec, LocalOptions())


def stack_config(stack: Stack, context: RouteContext, model: str, method: str) -> TrainConfig:
    """This plan's flags given to another trainer: every setting they leave out is that stack's default (micro-batch,
    sequence length, checkpointing, packing, LoRA rank, dropout and targets), and nothing is held out for evaluation
    unless a validation file is given (none of those trainers holds examples out by default)."""
    options = context.options
    targets = stack.targets[0] if stack.targets == ("all-linear",) else list(stack.targets)
    fields = {"model": model, "dataset": context.report.path, "method": method, "epochs": options.epochs,
              "validation_dataset": context.validation.path if context.validation else None,
              "eval_fraction": 0.0, "eval_at_start": False, "micro_batch_size": stack.micro_batch,
              "max_seq_len": options.max_seq_len or stack.seq_len, "packing": stack.packing,
              "gradient_checkpointing": stack.grad_checkpointing,
              "lora": {"r": options.lora_r or stack.lora_r, "dropout": stack.lora_dropout, "target_modules": targets}}
    return TrainConfig.model_validate({k: v for k, v in fields.items() if v is not None})


def gpu_job(request: ModelRequest, config: TrainConfig, stats: Any, validation: Any | None = None, *,
            epochs_rule: str = "", cap_rule: str = "", asked: Mapping[str, Any] | None = None,
            stack: Stack = FTBROKER) -> GpuJob:
    """``config`` on a dataset whose lengths ``stats`` (and ``validation``'s) give: the dataset as the trainer reads
    it, why no GPU can run it, and what the routes of it note and assume."""
    data = trainer_data(config, stats, validation)
    notes = (Note(data.cut_note(cap_rule or AS_ASKED), "max_seq_len"),) if data.cut else ()
    assumptions = (f"tokens counted with {stats.tokenizer}", data.evaluation)
    return GpuJob(request, config, data, epochs_rule, data.context_reason(request.arch), notes, assumptions,
                  dict(asked or {}), stack)


def gpu_jobs(context: RouteContext) -> list[GpuJob]:
    """Every model and method of the plan's GPU routes (once per context, whichever backends ask)."""
    return context.memo("gpu_routes.jobs", lambda: _gpu_jobs(context))


def _gpu_jobs(context: RouteContext) -> list[GpuJob]:
    options = context.options
    stack = resolve_stack(options.stack)
    trainer = "the local trainer's" if stack is FTBROKER else f"{stack.name}'s"
    cap_rule = AS_ASKED if options.max_seq_len else f"{trainer} default"
    asked = {"epochs": options.epochs, "max_seq_len": options.max_seq_len, "lora_r": options.lora_r}
    jobs = []
    for request in gpu_models(context.catalog, options):
        spec = model_tokenizer(request.arch, options)
        stats = context.token_stats(spec)
        if stats is None or not stats.length_counts:
            continue
        validation = context.token_stats(spec, context.validation) if context.validation else None
        configs = [trainer_config(context, request.arch.name, method)
                   for method in ((options.method,) if options.method else METHODS)]
        epochs_rule = options.epochs_rule or (AS_ASKED if options.epochs
                                              else f"{trainer} default ({configs[0].epochs:g})")
        jobs += [gpu_job(request, config, stats, validation, epochs_rule=epochs_rule, cap_rule=cap_rule,
                         asked=asked, stack=stack) for config in configs]
    return jobs


def _run(context: RouteContext, job: GpuJob, gpu: GpuSpec, count: int, where: str) -> GpuRun:
    """The job on ``count`` x ``gpu`` as a plan runs it (a micro-batch that does not fit lowered), once per context,
    corrected by the user's own runs of that GPU, method and stack."""
    overheads = LOCAL_OVERHEADS if where == "local" else CLOUD_OVERHEADS
    calibration = context.options.corrections.calibration(default_calibration(), gpu.name, job.config.method,
                                                           job.stack.name)
    key = ("gpu_routes.run", job.request.name, job.config.method, gpu.name, gpu.memory_gib, count, where)
    return context.memo(key, lambda: gpu_run(job.arch, job.config, job.data, gpu, count, overheads,
                                             calibration=calibration, stack=job.stack))


# ---------------------------------------------------------------------------------------------- the routes

def _breakdown(job: GpuJob, run: GpuRun) -> dict[str, Any]:
    s, m = run.fit.setup, run.fit.memory
    setup = {"micro_batch": s.micro_batch, "grad_accumulation": s.grad_accumulation, "seq_len": s.seq_len,
             "grad_checkpointing": s.grad_checkpointing, "precision": s.precision,
             "optimizer": s.optimizer_kind.name, "n_gpus": s.n_gpus, "sharding": s.sharding}
    if s.method != "full":
        setup.update(lora_r=s.lora_r, lora_dropout=s.lora_dropout, targets=sorted(s.lora_modules))
    out: dict[str, Any] = {"stack": job.stack.name, "setup": setup, "vram_gib": m.to_json(),
                           "gpu_memory_gib": run.gpu.memory_gib, "gpu_class": gpu_class(run.gpu),
                           "epochs_rule": job.epochs_rule, "tokenizer": job.data.stats.tokenizer,
                           "exact_tokens": job.data.stats.exact}
    if run.calibration.your_runs:
        out["your_runs"] = {"memory_factor": run.calibration.your_memory, "time_factor": run.calibration.your_time,
                            "said": run.calibration.your_runs}
    assumptions = [*job.assumptions, *m.assumptions]
    if run.time is not None:
        t, p = run.time, run.time.padding
        out["tokens"] = {"real_per_epoch": round(t.real_tokens), "processed_per_epoch": round(t.processed_tokens),
                         "padding_waste": max(0.0, round(p.waste, 4)),
                         "eval_processed_per_pass": round(t.eval_tokens), "eval_passes": job.data.eval_passes}
        if t.time is not None:
            out["hours"] = t.time.hours.to_json()
            out["hours_by_part"] = {k: round(v.expected / 3600, 4) for k, v in t.time.breakdown.items()}
            # what the trainer measures as tokens_per_s: the real (non-padding) tokens per second of training
            out["tokens_per_s"] = round(t.real_tokens * job.data.epochs / t.time.train_hours.expected / 3600, 1)
            assumptions += t.time.assumptions
    out["assumptions"] = assumptions
    return out


def _job(job: GpuJob, run: GpuRun, backend: str | None, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JobSpec fields that run this route as priced: the plan's settings, the micro-batch that fits (none when
    the route is priced for another trainer than ftbroker's)."""
    if backend is None or job.stack is not FTBROKER:
        return None
    s, asked = run.fit.setup, job.asked
    return job_fields(backend=backend, model=job.request.name, method=job.config.method,
                      hyperparameters={"epochs": asked.get("epochs"), "max_seq_len": asked.get("max_seq_len"),
                                       "micro_batch_size": s.micro_batch,
                                       "gradient_accumulation_steps": s.grad_accumulation},
                      lora={"r": asked.get("lora_r") if job.config.method != "full" else None},
                      backend_options=options)


def _route(kind: str, backend: str | None, job: GpuJob, run: GpuRun, cost: CostEstimate | None,
           notes: Sequence[str], *, reason: str = "", options: Mapping[str, Any] = {},
           extra: Mapping[str, Any] = {}, **fields: Any) -> Route:
    reason = reason or job.reason or ("" if run.fit.fits else no_fit_reason(run.fit, run.gpu))
    breakdown = {**_breakdown(job, run), **extra}
    timed = run.time.time if run.time else None
    hours = timed.hours if timed else None
    if cost is not None:
        breakdown.update(cost_usd=cost.usd.to_json(), cost=cost.breakdown)
        if cost.hours != hours:  # spot: the reclaims' restarts and lost work, billed and waited for
            hours = cost.hours
            breakdown["hours_with_reclaims"] = hours.to_json()
    if run.time is not None and timed is None:
        notes = [*notes, untimed_note(run.gpu)]
    if run.calibration.your_runs:
        notes = [*notes, run.calibration.your_runs]
    if job.stack is not FTBROKER:
        fields.setdefault("not_runnable", f"priced for the {job.stack.name} stack: train it with {job.stack.title}; "
                                          "ftbroker runs its own trainer")
    lowered = lowered_batch_note(job.config, run.fit) if run.fit.fits else ""
    return Route(kind=kind, backend=backend, model=job.arch.name, method=job.config.method,
                 hardware=Hardware(run.gpu.name, run.count), feasible=not reason, reason=reason,
                 vram_gib=round(run.fit.memory.total, 2), hours=round(hours.expected, 3) if hours else None,
                 cost_usd=cost.usd.expected if cost else None, epochs=int(job.config.epochs), breakdown=breakdown,
                 notes=(*job.notes, *([lowered] if lowered else []), *notes), job=_job(job, run, backend, options),
                 **fields)


def local_routes(context: RouteContext) -> list[Route]:
    """The routes on the user's GPU (``options.gpu``), one per model and method; cost: the GPUs' electricity."""
    options = context.options
    if options.gpu is None or context.report.format not in LocalBackend.capabilities.data_formats:
        return []
    # a declared GPU is passed on (the run plans for it too); one found is found again by the run
    gpu = {} if options.gpu_source == "detected" else {"gpu": f"{options.gpu.name}:{options.gpu_count}"}
    routes = []
    for job in gpu_jobs(context):
        run = _run(context, job, options.gpu, options.gpu_count, "local")
        timed = run.time.time if run.time else None
        cost, why_not = electricity(timed, run.gpu, run.count) if timed is not None else (None, "")
        routes.append(_route("local", LocalBackend.name, job, run, cost, [why_not] if why_not else [], options=gpu,
                             price_source=f"electricity at {DEFAULT_USD_PER_KWH} $/kWh: {DEFAULT_USD_PER_KWH_SOURCE}",
                             price_as_of=DEFAULT_USD_PER_KWH_AS_OF,
                             stale=is_stale(DEFAULT_USD_PER_KWH_AS_OF, context.today)))
    return routes


def cloud_gpu_routes(context: RouteContext, instances: Iterable[CloudInstance], *, backend: str | None,
                     options: CloudOptions = default_cloud_options) -> list[Route]:
    """The routes on ``instances`` (a cloud backend's catalog rows), run by ``backend`` (None: by none yet), each
    instance on-demand and spot where priced: by default the cheapest per model, method, cloud, GPU type and market
    (``--all``: every instance). ``options`` says how ``backend`` is told the instance, region and market."""
    if context.report.format not in LocalBackend.capabilities.data_formats:
        return []
    routes: list[Route] = []
    for job in gpu_jobs(context):
        offers = []
        for inst in instances:
            run = _run(context, job, context.catalog.gpus[inst.gpu], inst.gpu_count, "cloud")
            offers += _instance_routes(job, run, inst, context.today, backend, options)
        routes += offers if context.options.all_instances else _cheapest_per_cloud_and_gpu(offers)
    return routes


def _instance_routes(job: GpuJob, run: GpuRun, inst: CloudInstance, today: date, backend: str | None,
                     options: CloudOptions) -> list[Route]:
    timed = run.time.time if run.time else None
    notes = [inst.note] if inst.note else []
    weights_gib = job.arch.params * 2 / 2**30
    reason = ""
    if not job.reason and run.fit.fits and inst.memory_gib is not None and inst.memory_gib < weights_gib:
        reason = (f"{inst.memory_gib:g} GiB of host RAM is less than the model's {weights_gib:.0f} GiB of 16-bit "
                  "weights, which loading reads through it")
    routes = []
    for market, price, region in (("on-demand", inst.on_demand_usd_per_hour, inst.region),
                                  ("spot", inst.spot_usd_per_hour, inst.spot_region or inst.region)):
        if price is None:
            continue
        cost = None
        if timed is not None:
            parts = timed.breakdown
            restart = parts["start-up"] + parts["model download"] + parts["model load"]
            cost = cloud_cost(timed.hours, price, spot=market == "spot", restart_hours=restart.scaled(1 / 3600),
                              checkpoint_hours=parts["checkpoints"].expected / job.data.checkpoints / 3600)
        routes.append(_route("cloud", backend, job, run, cost, notes, reason=reason,
                             options=options(inst, market, region) if backend else {},
                             extra={"usd_per_hour": price, "region": region}, cloud=inst.cloud, region=region,
                             instance_type=inst.instance_type, market=market, price_source=inst.source,
                             price_as_of=inst.as_of, stale=is_stale(inst, today), price_doubt=inst.price_doubt))
    return routes


def _cheapest_per_cloud_and_gpu(routes: Sequence[Route]) -> list[Route]:
    """Per model, method, cloud, GPU type and market: the cheapest feasible instance (else the cheapest per hour;
    else, all out, the one with the most GPUs, whose reason says the most)."""
    best: dict[tuple, Route] = {}
    for r in routes:
        key = (r.model, r.method, r.cloud, r.hardware.gpu, r.market)
        if key not in best or _cloud_order(r) < _cloud_order(best[key]):
            best[key] = r
    return list(best.values())


def _cloud_order(r: Route) -> tuple:
    return (not r.feasible, r.cost_usd is None, r.cost_usd or 0,
            r.breakdown["usd_per_hour"] if r.feasible else -r.hardware.count)


def gpu_notes(context: RouteContext, *, local: bool = False, cloud: bool = False) -> list[str]:
    """What the GPU routes assume, said once for the plan: the models and epochs, and (``local``) the user's GPU or
    (``cloud``) which instances are shown."""
    caps, options, fmt = LocalBackend.capabilities, context.options, context.report.format
    if fmt not in caps.data_formats:
        return [f"no GPU routes: {caps.reason(f'format.{fmt}') or f'the local trainer does not train {fmt} data'}"]
    models = gpu_models(context.catalog, options)
    if not models:
        return [Note("no GPU routes: no open model among those asked for (a catalog model, a local folder or a "
                     "config.json)", "models")]
    stack = resolve_stack(options.stack)
    trainer = ("ftbroker's trainer" if stack is FTBROKER
               else f"figures for the {stack.name} stack with its defaults, which ftbroker does not run ({stack.title})")
    names = ", ".join(m.arch.name for m in models)
    notes: list[str] = [f"GPU routes: {names}, {trainer}" if options.models
                        else Note(f"GPU routes: {names} (the default models), {trainer}", "models")]
    notes.append(check_text(default_calibration().checks.get(stack.impl.name), stack.name))
    if local and options.gpu:
        notes.append(f"local GPU: {options.gpu_count} x {options.gpu.name} ({options.gpu_source or 'named'})"
                     + (f"; {options.gpu_note}" if options.gpu_note else ""))
    elif local:
        notes.append(options.gpu_note or Note("local GPU: none named, so no local routes", "gpu"))
    if cloud:
        notes.append("cloud GPUs: every instance, on-demand and spot" if options.all_instances
                     else Note("cloud GPUs: the cheapest instance per GPU type and cloud, on-demand and spot",
                               "all_instances"))
    return notes


@dataclass(frozen=True)
class UnclaimedClouds:
    """The route source of the catalog's instances of clouds no backend rents yet (the shell adds it): priced like
    every instance, so the plan still compares them, and marked not runnable."""

    clouds: tuple[str, ...]

    def token_needs(self, catalog: Catalog, options: PlanOptions) -> list[TokenNeed]:
        return token_needs(catalog, options)

    def routes(self, context: RouteContext) -> list[Route]:
        instances = [i for i in context.catalog.instances if i.cloud in self.clouds]
        return [replace(r, not_runnable=f"no ftbroker backend rents {r.cloud} instances yet: on the instance, "
                                        "ftbroker's local backend runs it")
                for r in cloud_gpu_routes(context, instances, backend=None)]

    def plan_notes(self, context: RouteContext) -> list[str]:
        return gpu_notes(context, cloud=True)


# ---------------------------------------------------------------------------------------------- one job's quote

def instance_quote(config: TrainConfig, request: ModelRequest, stats: Any, validation: Any | None,
                   instance: CloudInstance, market: str, gpu: GpuSpec, *, backend: str, today: date,
                   nodes: int = 1, interconnect_gbps: float = DEFAULT_INTERCONNECT_GBPS,
                   corrections: Corrections = Corrections()) -> Quote:
    """A cloud backend's quote of one job (``config``, the trainer's: ``train_config(spec, LocalOptions())``) on
    one instance and market: the figures of that instance's route in a plan with the same settings and the same
    measured runs of the user (``env.corrections``). On ``nodes`` instances (one data-parallel run over all their
    GPUs): ``over_nodes``."""
    job = gpu_job(request, config, stats, validation)
    calibration = corrections.calibration(default_calibration(), gpu.name, config.method, FTBROKER.name)
    run = gpu_run(request.arch, config, job.data, gpu, instance.gpu_count * nodes, CLOUD_OVERHEADS, fit_batch=False,
                  calibration=calibration)
    if nodes > 1:
        run, instance = over_nodes(job, run, instance, nodes, interconnect_gbps)
    routes = _instance_routes(job, run, instance, today, backend, default_cloud_options)
    route = next((r for r in routes if r.market == market), None)
    if route is None:
        return Quote(backend=backend, reason=f"the catalog has no {market} price for {instance.cloud} "
                                             f"{instance.instance_type}: its cost cannot be estimated")
    return route_quote(route, backend)


def route_quote(route: Route, backend: str) -> Quote:
    """A GPU route as its backend's Quote: the same VRAM, hours and cost; out of reach: does not fit. Its resources
    are those a local job records, so a cloud job's measurement corrects later estimates the same way."""
    cost = route.breakdown.get("cost_usd") or {}
    resources = {"estimated_peak_vram_gib": route.vram_gib} if route.vram_gib is not None else {}
    if route.hours is not None:
        resources["estimated_hours"] = route.hours
    allocated = (route.breakdown.get("vram_gib") or {}).get("allocated")
    if allocated is not None:
        resources["estimated_allocated_gib"] = allocated
    if "tokens_per_s" in route.breakdown:
        resources["estimated_tokens_per_s"] = route.breakdown["tokens_per_s"]
    if route.hardware is not None:
        yours = route.breakdown.get("your_runs") or {}
        resources.update(estimate_keys(route.hardware.gpu, route.hardware.count, route.breakdown["stack"],
                                       Calibration(your_memory=yours.get("memory_factor", 1.0),
                                                   your_time=yours.get("time_factor", 1.0),
                                                   your_runs=yours.get("said", ""))))
    return Quote(backend=backend, verdict=Verdict.OK if route.feasible else Verdict.DOES_NOT_FIT,
                 reason=route.reason or None, cost_usd=route.cost_usd,
                 cost_high_usd=Decimal(str(cost["high"])) if "high" in cost else None, hours=route.hours,
                 peak_vram_gib=route.vram_gib,
                 hardware=f"{route.hardware.count}x {route.hardware.gpu}" if route.hardware else None,
                 warnings=route.notes, breakdown=dict(route.breakdown), resources=resources)


def over_nodes(job: GpuJob, run: GpuRun, instance: CloudInstance, nodes: int,
               interconnect_gbps: float) -> tuple[GpuRun, CloudInstance]:
    """``run`` (on ``nodes`` x the instance's GPUs) with its collectives over the nodes' network added to its time
    (the estimator's ``communication``, at one node's bandwidth to the others, the figure NCCL's bus bandwidth
    approaches on multi-node runs, and not overlapped with compute: an upper bound), and the instance priced as
    ``nodes``."""
    if run.time is None or run.time.time is None:
        return run, instance
    setup, timed = run.fit.setup, run.time
    network = communication(job.arch, replace(run.gpu, interconnect_gbps=interconnect_gbps / 8), setup)
    train_share = timed.real_tokens / timed.padding.real_tokens if timed.padding.real_tokens else 1.0
    micro_batches = job.data.epochs * timed.padding.steps * train_share / run.count  # per rank
    seconds = micro_batches * network.seconds
    time = replace(timed.time, hours=timed.time.hours + Range.exact(seconds / 3600),
                   breakdown={**timed.time.breakdown, "communication": Range.exact(seconds)},
                   assumptions=(*timed.time.assumptions,
                                (f"{nodes} nodes: {seconds / 3600:.2f} h of collectives over {interconnect_gbps:g} "
                                 "Gbit/s between them, not overlapped with compute (an upper bound)")))
    priced = replace(instance, on_demand_usd_per_hour=_times(instance.on_demand_usd_per_hour, nodes),
                     spot_usd_per_hour=_times(instance.spot_usd_per_hour, nodes),
                     note="; ".join(filter(None, [instance.note, f"{nodes} instances: the price is theirs"])))
    return replace(run, time=replace(timed, time=time)), priced


def _times(price: Decimal | None, n: int) -> Decimal | None:
    return price * n if price is not None else None
