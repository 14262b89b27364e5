"""One trainer per run folder, enforced by the operating system.

The trainer process holds an exclusive lock (``flock``) on ``RUN_DIR/trainer.pid`` for its whole life, and that
file names its pid. The kernel releases the lock when the process ends, however it ends (kill -9 included), so a
dead trainer never blocks the next one, and a second trainer on the same folder is refused before it writes
anything. The local backend takes the lock before it starts a trainer and hands it down (the trainer inherits the
open file, and ``LOCK_FD_ENV`` tells it so: whatever trainer script it runs holds the lock); the trainer run by hand
takes it itself.

Light to import (the detacher that starts the trainer imports it): the standard library only. POSIX only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

PID_NAME = "trainer.pid"
LOCK_FD_ENV = "FTBROKER_RUN_LOCK_FD"  # set for a trainer started holding the lock (the descriptor it inherits)


def take(run_dir: str | Path) -> int | None:
    """The run folder's lock as an open file descriptor (keep it open: closing it gives the lock up), or None when
    another process holds it."""
    fd = os.open(Path(run_dir) / PID_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def note(fd: int, pid: int) -> None:
    """Name the process that holds the lock ``fd`` in the lock's file."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(pid).encode(), 0)


def handed_down(fd: int) -> dict[str, str]:
    """The environment of a trainer started holding the lock ``fd`` (inherited: pass it in ``pass_fds``)."""
    return {**os.environ, LOCK_FD_ENV: str(fd)}


def noted(run_dir: str | Path) -> tuple[int, float] | None:
    """(pid, when it was noted, as a Unix time) of the trainer the lock's file names: the one running, or the last."""
    path = Path(run_dir) / PID_NAME
    try:
        return int(path.read_text()), path.stat().st_mtime
    except (OSError, ValueError):
        return None
