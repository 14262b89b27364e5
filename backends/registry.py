"""The backend registry: the built-in backends and the installed plug-ins, by name, and what each declares for the
layers below it.

Light on purpose: ``ftbroker validate`` asks it for every provider's dataset line rules (and the CLI for the shapes
of every provider's keys, to mask them in a message) through ``ftbroker.declared``. A built-in backend declares
those in a module of its own under ``ftbroker.backends.declared``, which imports no backend module, SDK or pydantic
model, so reading them loads only that; the backend class sets the very same objects (``line_rules``,
``key_shapes``) and checks its file at submit time with them. A plug-in declares them on its class, which its entry
point loads. The backend module itself is imported only to plan or run (``backend_class``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any, NamedTuple

from ftbroker.errors import FtBrokerError, UnknownNameError

if TYPE_CHECKING:
    from ftbroker.backends.base import Backend

ENTRY_POINT_GROUP = "ftbroker.backends"


class Builtin(NamedTuple):
    backend: str  # "module:Class", imported only when used, so a backend's SDK is never loaded for another's job
    declared: str = ""  # the light module of what it declares for the layers below (line_rules, key_shapes), if any


BUILTIN_BACKENDS: dict[str, Builtin] = {
    "local": Builtin("ftbroker.backends.local.backend:LocalBackend"),
    "openai": Builtin("ftbroker.backends.openai:OpenAIBackend", "ftbroker.backends.declared.openai"),
    "together": Builtin("ftbroker.backends.together:TogetherBackend", "ftbroker.backends.declared.together"),
    "bedrock": Builtin("ftbroker.backends.bedrock:BedrockBackend", "ftbroker.backends.declared.bedrock"),
    "ec2": Builtin("ftbroker.backends.ec2:Ec2Backend"),
    "skypilot": Builtin("ftbroker.backends.skypilot.backend:SkyPilotBackend"),
    "fireworks": Builtin("ftbroker.backends.fireworks:FireworksBackend", "ftbroker.backends.declared.fireworks"),
    "vertex": Builtin("ftbroker.backends.vertex:VertexBackend", "ftbroker.backends.declared.vertex"),
}


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every backend that can be named: the built-ins and the installed plug-ins."""
    return sorted(set(BUILTIN_BACKENDS) | set(_plugins()))


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``. A built-in wins over a plug-in of the same name."""
    builtin = BUILTIN_BACKENDS.get(name)
    try:
        if builtin is not None:
            module, _, attr = builtin.backend.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            plugin = _plugins().get(name)
            if plugin is None:
                choices = backend_names()
                raise UnknownNameError("backend", name, choices, hint=f"valid: {', '.join(choices)}")
            cls = plugin.load()
    except ImportError as exc:
        raise FtBrokerError(f"backend {name!r} failed to load: {exc}") from exc
    missing = [a for a in ("name", "capabilities", "Options", "validate", "quote", "submit", "poll", "cancel",
                           "result") if not hasattr(cls, a)]
    if missing:
        raise FtBrokerError(f"backend {name!r} ({cls!r}) does not implement {', '.join(missing)}")
    return cls


def declarations(name: str) -> tuple[Any, ...]:
    """What each registered backend (built-ins, then plug-ins) declares for the layers below it under ``name``
    (``line_rules``, ``key_shapes``), where it declares one: a built-in's from its ``declared`` module, importing no
    backend module; a plug-in's from its class. A plug-in that cannot be loaded declares nothing (the planning
    shell notes it). ``ftbroker.declared`` collects them."""
    found = [getattr(importlib.import_module(b.declared), name, None) for b in BUILTIN_BACKENDS.values() if b.declared]
    for plugin in sorted(set(_plugins()) - set(BUILTIN_BACKENDS)):
        try:
            found.append(getattr(backend_class(plugin), name, None))
        except FtBrokerError:
            continue
    return tuple(value for value in found if value)
