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

from ftbroker.errors import DatasetError


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
    if "ftbroker.data" in sys.modules or importlib.util.find_spec("ftbroker.data") is not None:
        return

    def read_examples(path):
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                yield number, json.loads(line)

    def analyze(path, *, counters=(), limits=None):
        examples = [example for _, example in read_examples(path)]
        return _Report(str(path), _format(examples[0]) if examples else "chat", len(examples))

    data = types.ModuleType("ftbroker.data")
    data.analyze, data.read_examples = analyze, read_examples
    sys.modules["ftbroker.data"] = data
    import ftbroker

    ftbroker.data = data
