"""``ftbroker report``: a job or a plan as one HTML file (the SDK's ``ftbroker.report``, ``ftbroker.reporting``,
does the work)."""

from __future__ import annotations

import click

from ftbroker.reporting import LAST_PLAN, report


@click.command("report")
@click.argument("job", required=False)
@click.option("--plan", "plan_file", is_flag=False, flag_value=LAST_PLAN, metavar="PLAN.json",
              help="Report a plan instead: a file `ftbroker plan --json` wrote; without a file, the last plan.")
@click.option("--output", "-o", metavar="FILE.html", help="Where to write the report (default: JOB.html, plan.html).")
def report_command(job, plan_file, output):
    """Write a job's or a plan's report as one HTML file.

    A job's report: its loss curves (train and eval), the estimated beside the measured VRAM, time and cost, its
    latest evaluation, and its timeline; a plan's: cost against hours of every route with the best routes, the
    cheapest routes of each kind, and each price's source and date. The file is self-contained (no script, no
    network), fits a phone and prints. Read from the ledger alone: `ftbroker status JOB` first asks the provider
    for news.

    \b
    Example:
      ftbroker report ftb-3k -o report.html
      ftbroker plan data.jsonl --json > plan.json && ftbroker report --plan plan.json -o plan.html
    """
    if job is not None and plan_file is not None:
        raise click.UsageError("give JOB or --plan, not both")
    if job is None and plan_file is None:
        raise click.UsageError("give a JOB (`ftbroker jobs` lists them) or --plan PLAN.json")
    written = report(job, output, plan=plan_file)
    click.echo(f"report: {written}")
