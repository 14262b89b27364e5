"""Small things the providers' tests share: fast backend options, a dataset writer, and the stand-ins for the
areas not merged yet."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

from . import data_double

#: backend_options that make a managed backend quick under test (no real waiting, short timeouts, no SDK retries)
FAST = {"poll_interval_s": 0.01, "retry_initial_s": 0.001, "retry_max_s": 0.01, "request_timeout_s": 0.5,
        "max_retries": 0}

# Until the pricing area's catalog is merged, the Broker's catalog is an empty one: quotes then say the cost
# is unknown. REMOVE AT INTEGRATION (with the data double).
EMPTY_CATALOG = types.SimpleNamespace(managed=())


def use_stand_ins(monkeypatch: Any) -> None:
    """The data double and the empty catalog, for the Broker to prepare managed jobs with."""
    import ftbroker.broker

    data_double.install()
    monkeypatch.setattr(ftbroker.broker, "_load_catalog", lambda: EMPTY_CATALOG)


def write_chat(path: Path, n: int = 12, start: int = 0) -> Path:
    """A small chat dataset: ``n`` single-turn arithmetic examples."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                              {"role": "assistant", "content": str(2 * i)}]}) + "\n")
    return path
