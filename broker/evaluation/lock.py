"""One spending step per job at a time, across processes: the job's lease in the ledger.

An evaluation that may create a paid deployment holds it from the quote to the teardown, and so does a clean-up
(``delete_deployment``) of that job's deployments, so two terminals, a cron job and a retry script never create,
use and delete the same deployment at once. It is the lease ``run``, ``resume`` and ``cancel`` hold
(``Ledger.exclusive``, ``Broker.exclusive``): one process acts on a job at a time, whatever it does; a second is
refused at once (JobBusyError, exit 3), told who holds it; a holder that died leaves no stale lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftbroker.errors import JobBusyError
from ftbroker.ledger import Ledger

__all__ = ["JobBusyError", "job_lock", "locked"]


@contextmanager
def job_lock(home: Path, job_id: str, purpose: str) -> Iterator[None]:
    with Ledger(home / "ledger.sqlite3") as ledger, ledger.exclusive(job_id, purpose):
        yield


def locked(home: Path, job_id: str) -> bool:
    """Whether some process holds the job's lease now."""
    with Ledger(home / "ledger.sqlite3") as ledger:
        return ledger.held(job_id)
