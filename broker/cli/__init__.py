"""The ``ftbroker`` command line: the only layer that turns errors into text and exit codes, and the only one that
imports click and rich (the rest returns data and raises the ``ftbroker.errors`` tree).

- ``root``: the ``ftbroker`` group (errors -> messages and exit codes, progress on a terminal, the commands' order);
  ``params``: what the flags share; ``output``: consoles and JSON.
- A module per command family: ``validate``, ``plan``, ``estimate``, ``run`` (run, resume), ``jobs`` (jobs, status,
  logs, result, cancel, export), ``maintenance`` (gc, ledger), ``catalog``, ``report``; ``ftbroker eval`` is
  ``ftbroker.evaluation.cli``.
- The views: ``plan_table`` (with ``dataset_view``), ``catalog_view``, ``job_view``, ``progress_view``; ``layout``
  and ``tables`` fit them to the terminal; ``hints`` adds to a note the flag that changes it.

Heavy modules are imported inside the commands, so that ``ftbroker --help`` and ``ftbroker plan`` start fast.
"""

from __future__ import annotations

from ftbroker.cli import catalog, estimate, jobs, maintenance, plan, report, run, validate
from ftbroker.cli.root import cli, main
from ftbroker.evaluation.cli import eval_command

__all__ = ["cli", "main"]

for _command in (validate.validate, plan.plan, estimate.estimate_command, run.run, run.resume, jobs.jobs,
                 jobs.status, jobs.logs, jobs.result, jobs.cancel, jobs.export, maintenance.gc, maintenance.ledger,
                 catalog.catalog, report.report_command, eval_command):
    cli.add_command(_command)
