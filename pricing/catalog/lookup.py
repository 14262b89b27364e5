"""The rows in force, with the lookups the planner, the estimator and the CLI use. Built by ``load.load_catalog``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path

from ftbroker.errors import InputError, UnknownNameError
from ftbroker.pricing.catalog.hf_config import model_from_config
from ftbroker.pricing.catalog.schema import (STALE_AFTER_DAYS, CloudInstance, GpuSpec, ManagedOffer, ModelArch, Row,
                                            is_stale)


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
        self._gpu_index = {gpu_key(n): g for g in self.gpus.values() for n in (g.name, *g.aliases)}

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
        found = self._gpu_index.get(gpu_key(name))
        if found is None:
            raise UnknownNameError("GPU", name, [n for g in self.gpus.values() for n in (g.name, *g.aliases)],
                                   hint="`ftbroker catalog show --kind gpus` lists them")
        return found

    def stale_rows(self, today: date, max_age_days: int = STALE_AFTER_DAYS) -> list[CloudInstance | ManagedOffer]:
        """Priced rows not checked against their source for ``max_age_days`` (hardware specs and architectures do
        not go stale)."""
        priced: tuple[CloudInstance | ManagedOffer, ...] = (*self.instances, *self.managed)
        return [r for r in priced if is_stale(r, today, max_age_days)]

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


def gpu_key(name: str) -> str:
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
