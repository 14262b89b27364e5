"""Catalog files read into rows of typed fields: CSV (``gpus.csv``, ``instances.csv`` and files shaped like them)
and TOML (``[[gpu]]``, ``[[instance]]``, ``[[model]]``, ``[[offer]]``, ``[provider.NAME]`` defaults), each row with
the ``FILE:LINE`` it came from. Problems are collected for the caller to report together, not raised one by one."""

from __future__ import annotations

import csv
import io
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from ftbroker.errors import CatalogError
from ftbroker.pricing.catalog.fields import SPECS

_CSV_KINDS = {"gpus.csv": "gpu", "instances.csv": "instance"}


def parse_file(path: Path, data: bytes, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, "FILE:LINE", typed fields) for every row of a catalog file; problems collected, not raised."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if path.suffix.lower() == ".csv":
        return _parse_csv(path, text, problems)
    if path.suffix.lower() == ".toml":
        return _parse_toml(path, text, problems)
    raise CatalogError(f"{path}: a catalog file must be .toml or .csv")


def _parse_csv(path: Path, text: str, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = set(reader.fieldnames or ())
    kind = _CSV_KINDS.get(path.name) or next(
        (k for k in ("gpu", "instance") if SPECS[k].required <= header), None)
    if kind is None:
        raise CatalogError(f"{path}:1: header matches neither gpus.csv nor instances.csv "
                           f"(columns: {', '.join(sorted(header)) or 'none'})")
    spec = SPECS[kind]
    unknown = header - spec.fields.keys()
    if unknown:
        raise CatalogError(f"{path}:1: unknown column(s) {', '.join(sorted(unknown))}")
    missing = spec.required - header
    if missing:
        raise CatalogError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
    rows = []
    start = 2
    for raw in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if None in raw:
            problems.append(f"{where}: more values than columns")
            continue
        fields = spec.coerce(raw, where, problems)
        if fields is not None:
            rows.append((kind, where, fields))
    return rows


_TOML_TABLES = {"gpu": "gpu", "instance": "instance", "offer": "offer", "model": "model"}


def _parse_toml(path: Path, text: str, problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(doc) - set(_TOML_TABLES) - {"provider"}
    if unknown:
        raise CatalogError(f"{path}: unknown table(s) {', '.join(sorted(unknown))} "
                           f"(expected [[gpu]], [[instance]], [[model]], [[offer]], [provider.NAME])")
    lines = text.splitlines()
    providers = doc.get("provider", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise CatalogError(f"{path}: [provider.NAME] tables expected")
    headers: dict[str, list[int]] = {}  # table name -> line numbers of its [[table]] headers, in order
    for number, text_line in enumerate(lines, 1):
        if text_line.lstrip().startswith("[["):
            headers.setdefault(text_line.strip().strip("[]").strip(), []).append(number)
    rows = []
    for table, kind in _TOML_TABLES.items():
        entries = doc.get(table, [])
        if not isinstance(entries, list):
            raise CatalogError(f"{path}: use [[{table}]] (an array of tables)")
        header_lines = headers.get(table, [])
        for index, entry in enumerate(entries):
            line = header_lines[index] if index < len(header_lines) else 0
            if kind == "offer":
                provider = entry.get("provider")
                entry = {**providers.get(provider, {}), **entry} if isinstance(provider, str) else entry
                for expanded in _expand_prices(entry):
                    rows.extend(_toml_row(kind, path, lines, line, expanded, problems))
            else:
                rows.extend(_toml_row(kind, path, lines, line, entry, problems))
    return rows


def _toml_row(kind: str, path: Path, lines: list[str], line: int, entry: dict[str, Any],
              problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    def where_of(name: str | None) -> str:
        return f"{path}:{_field_line(lines, line, name) if name else line}"

    fields = SPECS[kind].coerce(entry, where_of, problems)
    return [] if fields is None else [(kind, where_of(None), fields)]


def _field_line(lines: list[str], header: int, name: str) -> int:
    """The line of ``name = ...`` in the table whose header is on line ``header`` (else the header line)."""
    for i in range(header, len(lines)):  # lines[header] is the line after the header
        if re.match(r"\s*\[", lines[i]):
            break
        if re.match(rf"\s*{re.escape(name)}\s*=", lines[i]):
            return i + 1
    return header


def _expand_prices(entry: dict[str, Any]) -> list[dict[str, Any]]:
    prices = entry.get("prices")
    if prices is None:
        return [entry]
    base = {k: v for k, v in entry.items() if k != "prices"}
    if not isinstance(prices, dict) or not prices:
        return [{**base, "prices": prices}]  # let coercion report it
    out = []
    for combo, price in prices.items():
        method, _, objective = str(combo).partition("_")
        out.append({**base, "method": method, "objective": objective, "usd_per_m_tokens": price})
    return out
