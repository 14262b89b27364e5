"""What the backends declare for the modules below them, which may not import a backend.

A backend declares its provider's dataset line rules (``line_rules``, read by ``ftbroker.data.providers``) and the
shapes of its credentials (``key_shapes``, read by ``ftbroker.redact``): a built-in in a light module of its own
(``ftbroker.backends.declared.<provider>``, whose objects its class sets too), a plug-in on its class. The backend
registry collects them from every registered backend, built-ins then plug-ins
(``ftbroker.backends.registry.declarations``, which imports no built-in backend module); ``ftbroker``'s ``__init__``
wires that in (``collect_with``) when the package is first imported, so a core module asks ``by_backends(name)`` and
adding a provider edits no core module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_collector: Callable[[str], tuple[Any, ...]] | None = None
_found: dict[str, tuple[Any, ...]] = {}
_collecting = threading.local()


def collect_with(collector: Callable[[str], tuple[Any, ...]]) -> None:
    """Sets what reads a declaration from every registered backend (once, by the package)."""
    global _collector
    _collector = collector


def by_backends(name: str) -> tuple[Any, ...]:
    """Every registered backend's declaration ``name`` that it makes, collected once per process. Asked again
    while the backends load (a backend module that masks a secret as it is imported), it answers nothing yet.
    No lock: two threads asking at once collect the same thing twice, where a lock held across the backends'
    imports could wait on a thread that holds an import lock."""
    found = _found.get(name)
    if found is not None:
        return found
    if _collector is None or getattr(_collecting, "busy", False):
        return ()
    _collecting.busy = True
    try:
        return _found.setdefault(name, _collector(name))
    finally:
        _collecting.busy = False
