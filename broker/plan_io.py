"""The I/O around the pure planner (``ftbroker.planner``), which ``ftbroker plan`` and ``ftbroker.plan()`` share.

It loads the catalog, resolves the ``--model`` names (catalog, local folder, config.json, or a managed model),
finds the route sources (``route_sources``: every backend of the registry that contributes routes, and stand-ins
for the catalog rows no backend claims yet), builds every token counter they need, reads the dataset ONCE with all
of them (``data.analysis.analyze``), and hands the reports to ``planner.build_plan``. Nothing heavy is imported: a backend
module imports its SDK only to run a job; counters come from ``ftbroker.tokens.resolve``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from ftbroker import clock, planner
from ftbroker.backends.base import GPU_ENV
from ftbroker.backends.registry import BUILTIN_BACKENDS, backend_class, backend_names
from ftbroker.backends.local.preflight import LocalGpus, local_gpus
from ftbroker.errors import FtBrokerError, InputError
from ftbroker.estimate.measured import Corrections
from ftbroker.estimate.stacks import resolve_stack
from ftbroker.pricing.catalog import Catalog, load_catalog
from ftbroker.routes import ROUTE_SOURCE_METHODS, Note, PlanOptions, RouteContext, RouteSource, resolve_model
from ftbroker.vocabulary import METHODS
from ftbroker.your_runs import corrections as your_runs_corrections


def plan(path: str | os.PathLike, *, models: Sequence[str] = (), method: str | None = None,
         epochs: int | None = None, n_evals: int | None = None, max_seq_len: int | None = None,
         tokenizer: str | None = None, gpu: str | None = None, lora_r: int | None = None,
         validation_file: str | os.PathLike | None = None, catalog: Sequence[str | os.PathLike] = (),
         all_instances: bool = False, stack: str = "ftbroker", max_cost: Decimal | float | str | None = None,
         deadline_hours: float | None = None, your_runs: bool = True, today: date | None = None) -> planner.Plan:
    """Plan every route for the dataset at ``path``; the same Plan ``ftbroker plan`` renders.

    ``models``: catalog names, HF repo ids, local model folders or config.json paths, or managed model names
    (``gpt-4o-mini``); empty: every managed offer, and GPU routes for ``gpu_routes.DEFAULT_GPU_MODELS``.
    ``epochs``: every route's passes over the data; None: the number the plan recommends for the dataset's size
    (``routes.plan_epochs``). ``gpu``: the local GPU, ``NAME[:COUNT]``; None: FTBROKER_GPU, else the GPUs
    ``nvidia-smi`` reports, if any. ``catalog``: extra catalog files. ``all_instances``: a cloud route for every
    instance type, not only the cheapest per GPU type and cloud. ``stack``: the trainer the GPU routes' figures are
    for (``ftbroker.estimate.STACKS``). ``max_cost`` (USD) and ``deadline_hours``: routes over them are marked and
    never a best route. ``your_runs``: correct the GPU routes by the user's measured runs in the ledger
    (``ftbroker.your_runs``). Dataset problems do not raise: they are in ``plan.dataset.errors``
    (``plan.dataset.raise_for_errors()``). ``ftbroker.plan_chart(plan, "plan.png")`` draws it.
    """
    # light (no torch), but not needed for --help
    from ftbroker.data.advice import advise
    from ftbroker.data.analysis import analyze
    from ftbroker.data.reader import name_problem
    from ftbroker.tokens.resolve import resolve

    for named in (path, validation_file):
        problem = name_problem(named) if named is not None else None
        if problem:
            raise InputError(problem)
    if method is not None and method not in METHODS:
        raise InputError(f"method must be {', '.join(METHODS[:-1])} or {METHODS[-1]}, not {method!r}")
    for name, value in (("epochs", epochs), ("n_evals", n_evals), ("max_seq_len", max_seq_len), ("lora_r", lora_r)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InputError(f"{name} must be an integer >= 0, not {value!r}")
    _check_trainer_settings(epochs=epochs, max_seq_len=max_seq_len, lora_r=lora_r)
    budget = _limits(max_cost, deadline_hours)
    stack = resolve_stack(stack).name
    today = today or clock.today()
    cat = load_catalog(catalog)
    local = find_local_gpus(cat, gpu, today=today)
    options = PlanOptions(models=tuple(resolve_model(cat, m) for m in models), method=method,
                          epochs=epochs, n_evals=n_evals, max_seq_len=max_seq_len, tokenizer=tokenizer,
                          gpu=local.gpu if local else None, gpu_count=local.count if local else 1,
                          gpu_source=local.source if local else "",
                          gpu_note=local.note if local else NO_LOCAL_GPU, lora_r=lora_r,
                          all_instances=all_instances, stack=stack, max_cost=budget, deadline_hours=deadline_hours,
                          corrections=your_runs_corrections(cat) if your_runs else Corrections())
    sources, notes = route_sources(cat)
    needs = planner.token_needs(sources, cat, options)
    counters = {n.spec: resolve(n.spec.tokenizer, hf_repo=n.spec.hf_repo, family=n.spec.family) for n in needs}
    unique = list({c.key: c for c in counters.values()}.values())
    limits: dict[str, int] = {}
    for need in needs:
        if need.limit:
            key = counters[need.spec].key
            limits[key] = min(limits.get(key, need.limit), need.limit)
    files = [f for f in (data_file("dataset", path), validation_file and data_file("validation", validation_file))
             if f]  # as they are before the reading: a file changed meanwhile is refused by `run --route`
    report = analyze(path, counters=unique, limits=limits)
    validation = analyze(validation_file, counters=unique, limits=limits) if validation_file else None
    advice = advise(report, lora_r=lora_r, epochs=epochs, has_validation=validation is not None)
    report = dataclasses.replace(report, advice=tuple(advice))  # with what the options add (rank, epochs)
    context = RouteContext(report=report, validation=validation, catalog=cat, options=options,
                           counter_keys={spec: c.key for spec, c in counters.items()}, today=today)
    return dataclasses.replace(planner.build_plan(context, sources, notes), files=tuple(files))


def _limits(max_cost: Decimal | float | str | None, deadline_hours: float | None) -> Decimal | None:
    """The budget as money, both checked: a positive amount of dollars and of hours."""
    budget = None
    if max_cost is not None:
        try:
            budget = Decimal(str(max_cost))
        except ArithmeticError:
            raise InputError(f"max_cost must be an amount of US dollars, not {max_cost!r}") from None
        if not budget.is_finite() or budget <= 0:
            raise InputError(f"max_cost must be more than $0, not {max_cost!r}")
    if deadline_hours is not None and not (isinstance(deadline_hours, int | float) and 0 < deadline_hours < math.inf):
        raise InputError(f"deadline must be a number of hours above 0, not {deadline_hours!r}")
    return budget


def route_sources(catalog: Catalog) -> tuple[list[RouteSource], list[str]]:
    """Who contributes routes, and a note for each backend that could not be loaded to ask.

    Every backend of the registry (built-ins, then plug-ins) with the ``RouteSource`` classmethods, the managed
    ones first (the counters the providers bill by come first in the dataset report); after each group, the
    stand-in that prices the catalog rows no backend claims (``capabilities.providers`` / ``clouds``), so the plan
    still compares them, marked not runnable. Backend modules import their SDKs lazily: nothing heavy loads."""
    from ftbroker.backends.gpu_routes import UnclaimedClouds
    from ftbroker.backends.managed_routes import UnclaimedOffers

    managed: list[RouteSource] = []
    others: list[RouteSource] = []
    notes = []
    for name in dict.fromkeys([*BUILTIN_BACKENDS, *backend_names()]):
        try:
            cls = backend_class(name)
        except FtBrokerError as exc:
            notes.append(f"the {name} backend's routes are missing: {exc}")
            continue
        if all(callable(getattr(cls, m, None)) for m in ROUTE_SOURCE_METHODS):
            (managed if cls.capabilities.managed else others).append(cls)
    claims = [cls.capabilities for cls in (*managed, *others)]
    providers = [p for p in dict.fromkeys(o.provider for o in catalog.managed) if not any(p in c.providers
                                                                                          for c in claims)]
    clouds = [c for c in dict.fromkeys(i.cloud for i in catalog.instances) if not any(c in k.clouds for k in claims)]
    return [*managed, *([UnclaimedOffers(tuple(providers))] if providers else []),
            *others, *([UnclaimedClouds(tuple(clouds))] if clouds else [])], notes


def data_file(role: str, path: str | os.PathLike) -> planner.DataFile | None:
    """A file as it is now (absolute path, size, modification time); None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return planner.DataFile(role, os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _check_trainer_settings(*, epochs: int | None, max_seq_len: int | None, lora_r: int | None) -> None:
    """The bounds ``ftbroker run`` holds these to (the JobSpec's): the GPU routes give the trainer the same config."""
    from pydantic import ValidationError

    from ftbroker.spec import Hyperparameters, LoraSettings

    problems = []
    for part, fields, prefix in ((Hyperparameters, {"epochs": epochs, "max_seq_len": max_seq_len}, ""),
                                 (LoraSettings, {"r": lora_r}, "lora_")):
        try:
            part(**fields)
        except ValidationError as exc:
            problems += [f"{prefix}{e['loc'][0]}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise InputError("; ".join(problems))


NO_LOCAL_GPU = Note("local GPU: none detected (nvidia-smi) and none named, so no local routes", "gpu")


def find_local_gpus(cat: Catalog, gpu: str | None, *, today: date) -> LocalGpus | None:
    """The local routes' GPUs: ``gpu`` (``NAME[:COUNT]``), else FTBROKER_GPU, else what ``nvidia-smi`` reports;
    resolved by the local backend's own rule (``preflight.local_gpus``), so plan and run plan for the same GPU."""
    from ftbroker.backends.base import detect_gpus  # nvidia-smi, not torch

    declared = gpu or os.environ.get(GPU_ENV) or None
    return local_gpus(cat, () if declared else detect_gpus(), declared, declared_by="--gpu" if gpu else GPU_ENV,
                      today=today)
