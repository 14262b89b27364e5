"""One spending step per job at a time, across processes: an exclusive lock file per job.

An evaluation that may create a paid deployment holds it from the quote to the teardown, and so does a clean-up
(``delete_deployment``) of that job's deployments, so two terminals, a cron job and a retry script never create,
use and delete the same deployment at once. An advisory ``flock`` (released by the OS when the process dies, so a
crash leaves no stale lock), non-blocking: a second process is refused at once, told who holds it. Kept to one
small function so it can become the ledger's lease on submissions.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftbroker.errors import GuardError
from ftbroker.private import private_file, private_folder


class JobBusyError(GuardError):
    """Another process holds the job's spending lock."""


@contextmanager
def job_lock(home: Path, job_id: str, purpose: str) -> Iterator[None]:
    path = private_file(private_folder(home / "locks") / f"{job_id}.lock")
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise JobBusyError(f"job {job_id} is busy: {holder} holds its lock ({path}); wait for it to end") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{purpose} (pid {os.getpid()})")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def locked(home: Path, job_id: str) -> bool:
    """Whether some process holds the job's lock now (checked by taking and releasing it)."""
    path = home / "locks" / f"{job_id}.lock"
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
