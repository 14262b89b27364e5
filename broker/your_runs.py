"""The user's own runs, read from the ledger: every succeeded job whose trainer measured what was estimated for it,
as the estimator's corrections (``ftbroker.estimate.measured``, where the rule is). The shell of that pure rule:
``ftbroker plan``, ``ftbroker estimate``, ``ftbroker run`` (its quote) and ``ftbroker catalog calibration`` read
them here and pass them on as data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftbroker.errors import LedgerDamagedError, UnknownNameError
from ftbroker.estimate.measured import Corrections, MeasuredRun, measured_run
from ftbroker.jobs import JobStatus
from ftbroker.ledger import LEDGER_NAME, Ledger, default_home


def corrections(catalog: Any, home: Path | None = None) -> Corrections:
    """The corrections the ledger in ``home`` (default FTBROKER_HOME) holds; none without a ledger (a plan makes
    no ledger of its own)."""
    path = (home if home is not None else default_home()) / LEDGER_NAME
    if not path.is_file():
        return Corrections()
    with Ledger(path) as ledger:
        return Corrections.from_runs(measured_runs(ledger, catalog))


def measured_runs(ledger: Ledger, catalog: Any) -> list[MeasuredRun]:
    """The succeeded jobs of ``ledger`` that measured their estimate (a damaged row is skipped: the rest count)."""
    try:
        jobs = ledger.list(status=JobStatus.SUCCEEDED)
    except LedgerDamagedError as exc:
        jobs = exc.readable
    runs = (measured_run(job.id, job.spec.method, job.resources, _card(catalog, job.resources.get("measured_gpu")))
            for job in jobs)
    return [run for run in runs if run is not None]


def _card(catalog: Any, name: Any) -> str | None:
    """The catalog's name of the card the trainer saw (torch names it as nvidia-smi does), else that name."""
    if not isinstance(name, str):
        return None
    try:
        return catalog.gpu(name).name
    except UnknownNameError:
        return name
