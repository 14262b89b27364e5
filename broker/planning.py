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

from ftbroker import planner
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate import parse_gpu_count
from ftbroker.pricing.catalog import Catalog, load_catalog


def plan(path: str | os.PathLike, *, models: Sequence[str] = (), method: str | None = None,
         epochs: int | None = None, n_evals: int | None = None, max_seq_len: int | None = None,
         tokenizer: str | None = None, gpu: str | None = None, lora_r: int | None = None,
         validation_file: str | os.PathLike | None = None, catalog: Sequence[str | os.PathLike] = (),
         all_instances: bool = False, today: date | None = None) -> planner.Plan:
    """Plan every route for the dataset at ``path``; the same Plan ``ftbroker plan`` renders.

    ``models``: catalog names, HF repo ids, local model folders or config.json paths, or managed model names
    (``gpt-4o-mini``); empty: every managed offer, and GPU routes for ``planner.DEFAULT_GPU_MODELS``.
    ``gpu``: the local GPU, ``NAME[:COUNT]``; None: the GPUs ``nvidia-smi`` reports, if any. ``catalog``: extra
    catalog files. ``all_instances``: a cloud route for every instance type, not only the cheapest per GPU type
    and cloud. Dataset problems do not raise: they are in ``plan.dataset.errors``
    (``plan.dataset.raise_for_errors()``).
    """
    from ftbroker import data, tokens  # the data area's modules; light (no torch)

    if method not in (None, "full", "lora", "qlora"):
        raise InputError(f"method must be full, lora or qlora, not {method!r}")
    for name, value, low in (("epochs", epochs, 1), ("n_evals", n_evals, 0), ("max_seq_len", max_seq_len, 1),
                             ("lora_r", lora_r, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise InputError(f"{name} must be an integer >= {low}, not {value!r}")
    cat = load_catalog(catalog)
    gpu_name, gpu_count, gpu_source, gpu_note = local_gpu(cat, gpu)
    options = planner.PlanOptions(models=tuple(resolve_model(cat, m) for m in models), method=method,
                                  epochs=epochs, n_evals=n_evals, max_seq_len=max_seq_len, tokenizer=tokenizer,
                                  gpu=gpu_name, gpu_count=gpu_count, gpu_source=gpu_source, gpu_note=gpu_note,
                                  lora_r=lora_r, all_instances=all_instances)
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
                                counter_keys={spec: c.key for spec, c in counters.items()},
                                today=today or date.today())
    return planner.build_plan(inputs)


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
        raise UnknownNameError("model", name, known,
                               hint="a catalog or managed model, a local model folder or a config.json") from None


def local_gpu(cat: Catalog, spec: str | None) -> tuple[str | None, int, str, str]:
    """(catalog GPU name, count, "--gpu" | "detected", why there is none) for the local routes: ``spec``
    (``NAME[:COUNT]``), else the GPUs ``nvidia-smi`` reports (the first one's type, and how many of it)."""
    if spec:
        name, count = parse_gpu_count(spec)
        return cat.gpu(name).name, count, "--gpu", ""
    from ftbroker.backends.base import detect_gpus  # nvidia-smi, not torch

    found = detect_gpus()
    if not found:
        return None, 1, "", "local GPU: none detected (nvidia-smi) and none named (--gpu NAME[:COUNT]), so no local routes"
    first = found[0]
    try:
        known = cat.gpu(first.name)
    except UnknownNameError:
        return None, 1, "", (f"local GPU: detected {first.name} ({first.memory_gib:g} GiB), which the catalog does "
                             "not know: name a catalog GPU with --gpu NAME[:COUNT], or add it to the catalog")
    return known.name, sum(1 for g in found if g.name == first.name), "detected", ""
