"""A managed provider's dataset file: parsed examples converted into the provider's JSONL in constant memory, hashed
as it is written (the same bytes always get the same upload name, the key an upload is reused by), with the lines a
provider's format cannot hold (``Rejected``) reported as ``DataIssue``s, never dropped silently."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftbroker.errors import DataIssue


class Rejected(Exception):
    """A dataset line the model's target format cannot hold; the message says why (the caller adds FILE:LINE)."""


@dataclass(frozen=True)
class ConvertedFile:
    """The provider-format file written by ``convert_file``, with the lines it could not convert."""

    path: Path
    fmt: str  # the source format it was converted from
    examples: int
    size_bytes: int
    sha256: str
    errors: tuple[DataIssue, ...] = ()

    @property
    def upload_name(self) -> str:
        """A file name that names the content: the same bytes always get the same name (reuse key)."""
        return f"ftbroker-{self.sha256[:32]}.jsonl"


Converter = Callable[[Mapping[str, Any], str], dict[str, Any]]


def convert_file(examples: Iterable[tuple[int, Mapping[str, Any]]], *, source: str, fmt: str,
                 convert: Converter, out: Path) -> ConvertedFile:
    """Convert parsed ``(line, example)`` pairs of ``source`` (checked by ``ftbroker.data.analysis.analyze``) into
    ``out`` (JSONL), in constant memory. ``convert(example, fmt)`` returns the provider's record or raises
    ``Rejected``."""
    errors: list[DataIssue] = []
    digest = hashlib.sha256()
    count = size = 0
    with open(out, "wb") as fh:
        for line, example in examples:
            try:
                record = convert(example, fmt)
            except Rejected as why:
                errors.append(DataIssue(source, line, str(why)))
                continue
            data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            fh.write(data)
            digest.update(data)
            count, size = count + 1, size + len(data)
    return ConvertedFile(out, fmt, count, size, digest.hexdigest(), tuple(errors))


def with_system_message(example: Mapping[str, Any]) -> list[Any]:
    """A chat example's messages, its top-level ``system`` prompt (Bedrock's shape) made the first message."""
    messages = list(example["messages"])
    if isinstance(example.get("system"), str):
        messages.insert(0, {"role": "system", "content": example["system"]})
    return messages
