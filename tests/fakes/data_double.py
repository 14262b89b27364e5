"""A stand-in for the data area's ``ftbroker.data`` until it is merged: REMOVE AT INTEGRATION.

The managed backends read datasets through ``ftbroker.data`` (``analyze``, ``read_examples``; ``advise`` for the
planner's shell). While that module is not in this branch, ``install()`` puts a minimal one in its place: JSON
lines, the format taken from the keys of the first line, no token counts (so quotes have no cost). A no-op once
the real module exists.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftbroker.errors import DataIssue, DatasetError


def _format(example: dict) -> str:
    if "messages" in example:
        return "chat"
    if "preferred_output" in example:
        return "preference"
    if "prompt" in example:
        return "prompt_completion"
    return "text"


@dataclass(frozen=True)
class _Report:
    path: str
    format: str
    examples: int
    size_bytes: int
    errors: list[Any] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)
    tokens: dict[str, Any] = field(default_factory=dict)
    provider_issues: dict[str, Any] = field(default_factory=dict)
    advice: tuple[Any, ...] = ()

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DatasetError(self.errors)


def install(monkeypatch: Any) -> None:
    """Install (or complete the spine tests' own double of) ``ftbroker.data`` and ``ftbroker.tokens`` for one test:
    ``monkeypatch`` takes them away again, so no other test sees them."""
    loaded = sys.modules.get("ftbroker.data")
    if loaded is not None and loaded.__spec__ is not None or loaded is None and importlib.util.find_spec(
            "ftbroker.data") is not None:
        return  # the real module

    def parsed(path):
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                try:
                    example = json.loads(line)
                except ValueError:
                    example = None
                yield number, example

    def read_examples(path):
        return ((n, e) for n, e in parsed(path) if isinstance(e, dict))

    def analyze(path, *, counters=(), limits=None):
        examples = [e for _, e in read_examples(path)]
        errors = [DataIssue(str(path), n, "not a JSON object") for n, e in parsed(path) if not isinstance(e, dict)]
        return _Report(str(path), _format(examples[0]) if examples else "chat", len(examples),
                       Path(path).stat().st_size, errors)

    import ftbroker

    data = sys.modules.get("ftbroker.data") or types.ModuleType("ftbroker.data")
    tokens = sys.modules.get("ftbroker.tokens") or types.ModuleType("ftbroker.tokens")
    for module, name in ((data, "ftbroker.data"), (tokens, "ftbroker.tokens")):
        monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(ftbroker, name.rpartition(".")[2], module, raising=False)
    monkeypatch.setattr(data, "analyze", analyze, raising=False)
    monkeypatch.setattr(data, "read_examples", read_examples, raising=False)
    monkeypatch.setattr(data, "advise", lambda report, **kw: [], raising=False)
    if not hasattr(tokens, "resolve"):
        monkeypatch.setattr(tokens, "resolve", lambda tokenizer=None, **kw: types.SimpleNamespace(
            key="double", name="double", exact=False), raising=False)
