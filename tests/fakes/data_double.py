"""A stand-in for the data area's ``ftbroker.data`` until it is merged: REMOVE AT INTEGRATION.

The managed backends read datasets through ``ftbroker.data`` (``analyze``, ``read_examples``). While that
module is not in this branch, ``install()`` puts a minimal one in its place: JSON lines, the format taken
from the keys of the first line, no token counts. A no-op once the real module exists.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

from ftbroker.errors import DataIssue, DatasetError


def _format(example: dict) -> str:
    if "messages" in example:
        return "chat"
    if "preferred_output" in example:
        return "preference"
    if "prompt" in example:
        return "prompt_completion"
    return "text"


class _Report(types.SimpleNamespace):
    def __init__(self, path: str, fmt: str, examples: int):
        super().__init__(path=path, format=fmt, examples=examples, errors=[], warnings=[], tokens={},
                         provider_issues={})

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DatasetError(self.errors)


def install() -> None:
    """Install (or complete the spine tests' own double of) ``ftbroker.data`` and ``ftbroker.tokens``."""
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
        report = _Report(str(path), _format(examples[0]) if examples else "chat", len(examples))
        report.errors = [DataIssue(str(path), n, "not a JSON object") for n, e in parsed(path)
                         if not isinstance(e, dict)]
        return report

    import ftbroker

    data = sys.modules.setdefault("ftbroker.data", types.ModuleType("ftbroker.data"))
    data.analyze, data.read_examples = analyze, read_examples
    tokens = sys.modules.setdefault("ftbroker.tokens", types.ModuleType("ftbroker.tokens"))
    if not hasattr(tokens, "resolve"):
        tokens.resolve = lambda tokenizer=None, **kw: types.SimpleNamespace(key="double", name="double", exact=False)
    ftbroker.data, ftbroker.tokens = data, tokens
