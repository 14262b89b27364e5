"""What the backends declare for the modules below them, which may not import a backend.

A backend class declares its provider's dataset line rules (``line_rules``, read by ``ftbroker.data.providers``)
and the shapes of its credentials (``key_shapes``, read by ``ftbroker.redact``). The backend registry collects them
from every registered backend, built-ins and plug-ins (``ftbroker.backends.base.declarations``); ``ftbroker``'s
``__init__`` wires that in (``collect_with``) when the package is first imported, so a core module asks
``by_backends(name)`` and adding a provider edits no core module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_collector: Callable[[str], tuple[Any, ...]] | None = None
_found: dict[str, tuple[Any, ...]] = {}
_collecting = threading.local()
_lock = threading.RLock()


def collect_with(collector: Callable[[str], tuple[Any, ...]]) -> None:
    """Sets what reads a declaration from every registered backend (once, by the package)."""
    global _collector
    _collector = collector


def by_backends(name: str) -> tuple[Any, ...]:
    """Every registered backend's declaration ``name`` that it makes, collected once per process. Asked again
    while the backends load (a backend module that masks a secret as it is imported), it answers nothing yet."""
    if name in _found:
        return _found[name]
    with _lock:
        if name in _found or _collector is None or getattr(_collecting, "busy", False):
            return _found.get(name, ())
        _collecting.busy = True
        try:
            _found[name] = _collector(name)
        finally:
            _collecting.busy = False
    return _found[name]
