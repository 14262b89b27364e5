"""ftbroker: plan, price and run LLM fine-tuning through one job interface.

The SDK face. Names are imported on first use so that ``import ftbroker`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__", "estimate"]


# --- estimate area: ftbroker.estimate(...) is the ftbroker.estimate package, made callable (see its docstring)
def __getattr__(name: str):
    if name == "estimate":
        import importlib

        return importlib.import_module("ftbroker.estimate")
    raise AttributeError(f"module 'ftbroker' has no attribute {name!r}")
