"""ftbroker: plan, price and run LLM fine-tuning through one job interface.

The SDK face. Names are imported on first use so that ``import ftbroker`` stays light.
"""

from __future__ import annotations

from ftbroker import declared

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]

# Names imported on first use, so that `import ftbroker` stays light: name -> module (a name that is the
# module itself, like `estimate`, maps to that module).
_LAZY = {"Broker": "ftbroker.broker", "JobSpec": "ftbroker.spec", "load_spec": "ftbroker.spec",
         "Job": "ftbroker.jobs", "JobStatus": "ftbroker.jobs", "Result": "ftbroker.jobs",
         "estimate": "ftbroker.estimate", "evaluate": "ftbroker.evaluation", "Evaluation": "ftbroker.evaluation",
         "plan": "ftbroker.plan_io", "Plan": "ftbroker.planner", "Route": "ftbroker.routes",
         "plan_chart": "ftbroker.chart", "report": "ftbroker.reporting"}
__all__ += sorted(_LAZY)


def _declared_by_backends(name: str) -> tuple:
    """What the backends declare for the core modules below them (``ftbroker.declared``), read from the registry
    (light: a built-in's declarations are in a module of their own, read without its backend module)."""
    from ftbroker.backends.registry import declarations

    return declarations(name)


declared.collect_with(_declared_by_backends)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ftbroker' has no attribute {name!r}")
    import importlib

    imported = importlib.import_module(module)
    value = imported if module.rpartition(".")[2] == name else getattr(imported, name)
    globals()[name] = value
    return value
