"""What each built-in backend declares for the layers below it, one light module per provider: its dataset line
rules (``line_rules``, ``ftbroker.data.providers``) and the shapes of its keys (``key_shapes``, ``ftbroker.redact``),
the names a plug-in sets on its class. The registry (``ftbroker.backends.registry``) reads them without importing
the backend module, so ``ftbroker validate`` loads no backend, SDK or pydantic model; the backend class sets the
same objects. A module here imports ``ftbroker.data.providers`` and the standard library only (an import-linter
contract in pyproject.toml holds it to that)."""
