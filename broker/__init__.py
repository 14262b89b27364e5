"""ftbroker: plan, price and run LLM fine-tuning through one job interface.

The SDK face. Names are imported on first use so that ``import ftbroker`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]

# --- spine: the job interface (Broker, JobSpec, Job, Result), imported on first use ---
_LAZY = {"Broker": "ftbroker.broker", "JobSpec": "ftbroker.spec", "load_spec": "ftbroker.spec",
         "Job": "ftbroker.jobs", "JobStatus": "ftbroker.jobs", "Result": "ftbroker.jobs"}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ftbroker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
# --- end of spine block ---
