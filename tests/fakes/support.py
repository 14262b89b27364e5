"""Small things the providers' tests share: fast backend options and a dataset writer."""

from __future__ import annotations

import json
from pathlib import Path

#: backend_options that make a managed backend quick under test: no real waiting, no SDK retries. Timeouts keep their
#: defaults: a faulted call times out because the fake holds its answer (``Fault.timed_out``), never by the clock.
FAST = {"poll_interval_s": 0.01, "retry_initial_s": 0.001, "retry_max_s": 0.01, "max_retries": 0}

def write_chat(path: Path, n: int = 12, start: int = 0) -> Path:
    """A small chat dataset: ``n`` single-turn arithmetic examples."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                              {"role": "assistant", "content": str(2 * i)}]}) + "\n")
    return path
