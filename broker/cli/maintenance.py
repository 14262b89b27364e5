"""Looking after what jobs leave: ``gc`` (paid instances and deployments left behind) and ``ledger rebuild`` (a lost
ledger's local jobs, from their run folders)."""

from __future__ import annotations

import click

from ftbroker.cli.output import print_json, show
from ftbroker.cli.params import json_option, option_values


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Stop what should go (without it: a dry run that only lists).")
@click.option("--backend", metavar="NAME", help="Also look where this backend's --option settings point (e.g. ec2 in "
              "a region the ledger's jobs never used).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A backend option for --backend, e.g. "
              "region=us-west-2 (repeatable).")
@json_option
def gc(yes, backend, options, json_mode):
    """Find paid instances and deployments left behind; --yes stops them.

    Looks in every region and account the ledger's jobs used (and where --backend/--option point): an ftbroker EC2
    instance goes when its job is finished, unknown to this ledger, or past its runtime cap; another ledger's
    instance only past its cap. A paid deployment `ftbroker eval` recorded goes when no evaluation of its job is
    running. Says what it did and what each had cost. A dry run without --yes; exit 1 if one could not be stopped.

    \b
    Examples:
      ftbroker gc
      ftbroker gc --yes --backend ec2 --option region=us-west-2
    """
    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import leftovers_json, leftovers_view
    from ftbroker.errors import FtBrokerError

    values, problems = option_values(options)
    if problems:
        raise click.UsageError("; ".join(problems))
    if options and not backend:
        raise click.UsageError("--option needs --backend")
    extra = [(backend, values)] if backend else []
    with Broker() as broker:
        rows = broker.gc(apply=yes, extra=extra)
    show(json_mode, leftovers_json(rows, applied=yes), leftovers_view(rows, applied=yes))
    failed = [f"{lo.resource}: {done}" for lo, done in rows if done and done.startswith("failed")]
    if failed:
        raise FtBrokerError(f"gc: {len(failed)} could not be stopped (run it again): {'; '.join(failed)}")


@click.group()
def ledger():
    """Look after the job ledger (FTBROKER_HOME/ledger.sqlite3)."""


@ledger.command("rebuild")
@json_option
def ledger_rebuild(json_mode):
    """Re-create the entries of local jobs from their run folders.

    For a ledger that was lost, emptied or moved aside (damaged) while FTBROKER_HOME/runs still holds the run
    folders: each job missing from the ledger is recorded again under its own id, with the spec its trainer's
    config.json gives, and its status, events and result read from its folder. Managed jobs (OpenAI, Together,
    Bedrock) have no run folder and cannot be recovered this way.
    """
    from ftbroker.broker import Broker
    with Broker(rebuilding=True) as broker:
        restored, skipped = broker.rebuild()
    if json_mode:
        print_json({"restored": [j.to_json() for j in restored], "skipped": skipped})
    else:
        for job in restored:
            click.echo(f"{job.id} {job.status.value}: {job.model} ({job.method})")
        click.echo(f"{len(restored)} job{'s' if len(restored) != 1 else ''} restored from their run folders")
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)

