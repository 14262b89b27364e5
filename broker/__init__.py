"""ftbroker: plan, price and run LLM fine-tuning through one job interface.

The SDK face. Names are imported on first use so that ``import ftbroker`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__", "plan", "Plan", "Route"]


def __getattr__(name: str):
    # pricing area: plan() and its result types, imported on first use
    if name == "plan":
        from ftbroker.planning import plan

        return plan
    if name in ("Plan", "Route"):
        from ftbroker import planner

        return getattr(planner, name)
    raise AttributeError(f"module 'ftbroker' has no attribute {name!r}")
