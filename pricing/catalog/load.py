"""Loading the catalog: the files in force, each validated, merged into one ``Catalog``.

Every row carries ``source`` (where the fact comes from) and ``as_of`` (the date it held), so a plan
can say where each number came from and how old it is.

What is in force, in order (a later file adds rows or replaces the fields it gives of a row with the same key):

1. the shipped files in ``pricing/data/`` (``gpus.csv``, ``instances.csv``, ``managed.toml``, ``models.toml``), or
   the same four files in the folder ``FTBROKER_CATALOG_DIR`` names, when it is set: a catalog pinned as a whole
   (the tests' frozen fixture, a reviewed copy that a refresh of the package must not move);
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

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftbroker.errors import CatalogError
from ftbroker.pricing.catalog.fields import SPECS, Key, R, RowError
from ftbroker.pricing.catalog.lookup import Catalog, gpu_key
from ftbroker.pricing.catalog.parse import parse_file
from ftbroker.pricing.catalog.sanity import price_sanity
from ftbroker.pricing.catalog.schema import CloudInstance, GpuSpec, ManagedOffer, ModelArch, Row

DATA_DIR = Path(__file__).parents[1] / "data"
SHIPPED_FILES = ("gpus.csv", "instances.csv", "managed.toml", "models.toml")
OVERRIDE_FILE_NAME = "catalog.toml"
CATALOG_DIR_ENV = "FTBROKER_CATALOG_DIR"


def base_catalog_dir() -> Path:
    """The folder of the base files (see the module docstring): ``FTBROKER_CATALOG_DIR``, else the package's."""
    given = os.environ.get(CATALOG_DIR_ENV)
    if not given:
        return DATA_DIR
    folder = Path(given)
    if not folder.is_dir():
        raise CatalogError(f"{CATALOG_DIR_ENV}={given}: not a folder (it names one that holds "
                           f"{', '.join(SHIPPED_FILES)}, laid out like the shipped catalog)")
    return folder


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


def load_catalog(extra: Sequence[str | os.PathLike[str]] = (), *, data_dir: Path | None = None) -> Catalog:
    """The base files (``data_dir``, else ``base_catalog_dir()``) + the prices ``ftbroker catalog update`` refreshed
    (``user_catalog_dir()/*.csv``) + the user's override file (if any) + ``extra`` files, validated and merged."""
    builder = _Builder()
    base = data_dir or base_catalog_dir()
    for name in SHIPPED_FILES:
        builder.add_file(base / name, base=True)
    refreshed = user_catalog_dir()
    if refreshed.is_dir():
        for path in sorted(refreshed.glob("*.csv")):
            builder.add_file(path)
    override = user_override_path()
    if override.is_file():
        builder.add_file(override)
    for given in extra:
        builder.add_file(Path(given))
    return builder.build()


class _Builder:
    def __init__(self) -> None:
        self.rows: dict[str, dict[Key, Row]] = {"gpu": {}, "instance": {}, "offer": {}, "model": {}}
        self.lines: dict[tuple[str, Key], str] = {}  # (kind, key) -> "FILE:LINE" of the row, for cross checks
        self.files: list[str] = []
        self.digest = hashlib.sha256()

    def add_file(self, path: Path, base: bool = False) -> None:
        """``base``: one of the four files every row starts from (its rows complete, none a partial override)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read catalog file: {exc.strerror or exc}") from exc
        self.files.append(f"{path.name} (shipped)" if path.parent == DATA_DIR else str(path))
        self.digest.update(path.name.encode() + b"\0" + data + b"\0")
        problems: list[str] = []
        parsed = parse_file(path, data, problems)
        for kind, where, fields in parsed:
            self._merge(kind, where, fields, problems, partial_allowed=not base)
        if problems:
            raise CatalogError(_problem_text(path, problems))

    def _merge(self, kind: str, where: str, fields: dict[str, Any], problems: list[str],
               partial_allowed: bool) -> None:
        spec = SPECS[kind]
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
                        raise RowError(required, "an override row must give its own source and as_of")
                # the key's spelling stays the catalog's ("llama-3.1-8b" updates "Llama-3.1-8B")
                row = spec.build({k: v for k, v in fields.items() if k not in spec.key_fields}, existing)
            else:
                row = spec.build(fields)
            spec.check(row)
        except RowError as exc:
            problems.append(f"{where}: {exc.field}: {exc.message}")
            return
        except TypeError as exc:  # a required field is missing
            missing = re.findall(r"'(\w+)'", str(exc))
            problems.append(f"{where}: {', '.join(missing) or kind}: required field missing")
            return
        self.rows[kind][key] = row
        self.lines[(kind, key)] = where

    def _of(self, kind: str, cls: type[R]) -> dict[Key, R]:
        """The rows of one kind by key (every one a ``cls``: ``SPECS[kind]`` built it)."""
        return {key: row for key, row in self.rows[kind].items() if isinstance(row, cls)}

    def build(self) -> Catalog:
        gpus = {g.name: g for g in self._of("gpu", GpuSpec).values()}
        models = {m.name: m for m in self._of("model", ModelArch).values()}
        instances, offers = self._of("instance", CloudInstance), self._of("offer", ManagedOffer)
        problems = []
        aliases: dict[str, str] = {}
        for g in gpus.values():
            for n in (g.name, *g.aliases):
                other = aliases.setdefault(gpu_key(n), g.name)
                if other != g.name:
                    problems.append(f"{self.lines[('gpu', g.name.lower())]}: aliases: {n!r} also names {other}")
        for key, inst in instances.items():
            if inst.gpu not in gpus:
                problems.append(f"{self.lines[('instance', key)]}: gpu: unknown GPU {inst.gpu!r} (not in gpus)")
        for key, offer in offers.items():
            ref = offer.reference_model
            if ref and ref not in models:
                problems.append(f"{self.lines[('offer', key)]}: reference_model: unknown model {ref!r}")
            elif ref and not offer.covers_size(models[ref].size_b):
                problems.append(f"{self.lines[('offer', key)]}: reference_model: {ref} ({models[ref].size_b}B) "
                                f"is outside the tier {offer.tier}")
        if problems:
            raise CatalogError("catalog cross-check failed:\n" + "\n".join(f"  {p}" for p in problems))
        return Catalog(models=models, gpus=gpus, instances=price_sanity(instances.values(), gpus),
                       managed=list(offers.values()), files=self.files,
                       version=self.digest.hexdigest()[:12])


def _problem_text(path: Path, problems: list[str]) -> str:
    shown = problems[:20]
    more = len(problems) - len(shown)
    text = f"invalid catalog file {path}:\n" + "\n".join(f"  {p}" for p in shown)
    return text + (f"\n  ... and {more} more" if more > 0 else "")


def _key_text(key: Any) -> str:
    return " / ".join(str(k) for k in key) if isinstance(key, tuple) else repr(key)
