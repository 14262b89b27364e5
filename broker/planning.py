"""The shell around the pure planner: the I/O that ``ftbroker plan`` and ``ftbroker.plan()`` share.

It loads the catalog, resolves the ``--model`` names (catalog, local folder, config.json, or a managed model),
builds every token counter the routes need, reads the dataset ONCE with all of them (``data.analyze``), and hands
the reports to ``planner.build_plan``. Nothing heavy is imported: counters come from ``ftbroker.tokens``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from datetime import date

from ftbroker import clock, planner
from ftbroker.backends.base import GPU_ENV
from ftbroker.backends.local.preflight import LocalGpus, local_gpus
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.pricing.catalog import Catalog, load_catalog


def plan(path: str | os.PathLike, *, models: Sequence[str] = (), method: str | None = None,
         epochs: int | None = None, n_evals: int | None = None, max_seq_len: int | None = None,
         tokenizer: str | None = None, gpu: str | None = None, lora_r: int | None = None,
         validation_file: str | os.PathLike | None = None, catalog: Sequence[str | os.PathLike] = (),
         all_instances: bool = False, today: date | None = None) -> planner.Plan:
    """Plan every route for the dataset at ``path``; the same Plan ``ftbroker plan`` renders.

    ``models``: catalog names, HF repo ids, local model folders or config.json paths, or managed model names
    (``gpt-4o-mini``); empty: every managed offer, and GPU routes for ``planner.DEFAULT_GPU_MODELS``.
    ``gpu``: the local GPU, ``NAME[:COUNT]``; None: FTBROKER_GPU, else the GPUs ``nvidia-smi`` reports, if any.
    ``catalog``: extra catalog files. ``all_instances``: a cloud route for every instance type, not only the
    cheapest per GPU type and cloud. Dataset problems do not raise: they are in ``plan.dataset.errors``
    (``plan.dataset.raise_for_errors()``).
    """
    from ftbroker import data, tokens  # light (no torch), but not needed for --help

    for named in (path, validation_file):
        problem = data.name_problem(named) if named is not None else None
        if problem:
            raise InputError(problem)
    if method not in (None, "full", "lora", "qlora"):
        raise InputError(f"method must be full, lora or qlora, not {method!r}")
    for name, value in (("epochs", epochs), ("n_evals", n_evals), ("max_seq_len", max_seq_len), ("lora_r", lora_r)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InputError(f"{name} must be an integer >= 0, not {value!r}")
    _check_trainer_settings(epochs=epochs, max_seq_len=max_seq_len, lora_r=lora_r)
    today = today or clock.today()
    cat = load_catalog(catalog)
    local = find_local_gpus(cat, gpu, today=today)
    options = planner.PlanOptions(models=tuple(resolve_model(cat, m) for m in models), method=method,
                                  epochs=epochs, n_evals=n_evals, max_seq_len=max_seq_len, tokenizer=tokenizer,
                                  gpu=local.gpu if local else None, gpu_count=local.count if local else 1,
                                  gpu_source=local.source if local else "",
                                  gpu_note=local.note if local else NO_LOCAL_GPU, lora_r=lora_r,
                                  all_instances=all_instances)
    counters = {spec: tokens.resolve(spec.tokenizer, hf_repo=spec.hf_repo, family=spec.family)
                for spec in planner.token_needs(cat, options)}
    unique = list({c.key: c for c in counters.values()}.values())
    limits: dict[str, int] = {}
    for spec, limit in planner.token_limits(cat, options).items():
        key = counters[spec].key
        limits[key] = min(limits.get(key, limit), limit)
    report = data.analyze(path, counters=unique, limits=limits)
    validation = data.analyze(validation_file, counters=unique, limits=limits) if validation_file else None
    advice = data.advise(report, lora_r=lora_r, epochs=epochs, has_validation=validation is not None)
    report = dataclasses.replace(report, advice=tuple(advice))  # with what the options add (rank, epochs)
    inputs = planner.PlanInputs(report=report, validation=validation, catalog=cat, options=options,
                                counter_keys={spec: c.key for spec, c in counters.items()}, today=today)
    return planner.build_plan(inputs)


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


def resolve_model(cat: Catalog, name: str) -> planner.ModelRequest:
    """An open model (catalog, local folder, config.json) with its architecture, or a managed model by name."""
    try:
        return planner.ModelRequest(name, cat.model(name))
    except UnknownNameError:
        request = planner.ModelRequest(name)
        if planner.matching_offers(cat.managed, request):
            return request
        known = [n for m in cat.models.values() for n in (m.name, *m.aliases)]
        known += [n for o in cat.managed for n in (o.model, o.base_model) if n]
        hint = ("a catalog or managed model, a local model folder or a config.json; "
                "`ftbroker catalog show --kind models` (and `--kind managed`) lists them")
        raise UnknownNameError("model", name, known, hint=hint) from None


NO_LOCAL_GPU = "local GPU: none detected (nvidia-smi) and none named (--gpu NAME[:COUNT]), so no local routes"


def find_local_gpus(cat: Catalog, gpu: str | None, *, today: date) -> LocalGpus | None:
    """The local routes' GPUs: ``gpu`` (``NAME[:COUNT]``), else FTBROKER_GPU, else what ``nvidia-smi`` reports;
    resolved by the local backend's own rule (``preflight.local_gpus``), so plan and run plan for the same GPU."""
    from ftbroker.backends.base import detect_gpus  # nvidia-smi, not torch

    declared = gpu or os.environ.get(GPU_ENV) or None
    return local_gpus(cat, () if declared else detect_gpus(), declared, declared_by="--gpu" if gpu else GPU_ENV,
                      today=today)
