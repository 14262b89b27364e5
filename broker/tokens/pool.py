"""The threads that encode texts: tiktoken releases the GIL while it encodes, so big batches use every core."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Executor

_pool: Executor | None = None
_in_a_worker = False  # a forked child shares the cores with its sibling workers (ftbroker.data.analysis forks them)


def encoder_pool() -> Executor | None:
    """The encoding threads; None in a forked worker process, which encodes in its own thread."""
    global _pool
    if _in_a_worker:
        return None
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="ftbroker-encode")
    return _pool


def _forked() -> None:
    global _pool, _in_a_worker
    _pool = None  # a forked child has none of its parent's threads
    _in_a_worker = True


os.register_at_fork(after_in_child=_forked)
