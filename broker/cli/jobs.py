"""The commands about jobs already started: ``jobs`` lists them; ``status``, ``logs``, ``result``, ``cancel`` and
``export`` act on one (``ftbroker run`` and ``resume`` start them: ``ftbroker.cli.run``)."""

from __future__ import annotations

import click

from ftbroker.cli.output import console, print_json, show
from ftbroker.cli.params import job_command, json_option


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many jobs to list.")
@click.option("--backend", metavar="NAME", help="Only this backend's jobs.")
# JobStatus's values, spelt out so that --help need not import the job records (a test keeps them equal).
@click.option("--status", type=click.Choice(["queued", "validating", "running", "succeeded", "failed", "cancelled"]),
              help="Only jobs in this status.")
@json_option
def jobs(limit, backend, status, json_mode):
    """List jobs, newest first."""
    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import jobs_table
    from ftbroker.errors import LedgerDamagedError
    from ftbroker.evaluation.store import latest_scores
    from ftbroker.jobs import JobStatus

    damaged = None
    with Broker() as broker:
        try:
            found = broker.jobs(limit=limit, backend=backend, status=JobStatus(status) if status else None)
        except LedgerDamagedError as exc:  # one bad row: the others are still shown, then the bad one named
            found, damaged = exc.readable, exc
        scores = latest_scores(broker.ledger, [j.id for j in found])
    show(json_mode, {"jobs": [j.to_json() for j in found]},
          jobs_table(found, scores) if found else "no jobs yet (`ftbroker run` starts one)")
    if damaged is not None:
        raise damaged


@job_command
def status(job_id, json_mode):
    """Show a job, after asking its backend for news.

    JOB is a job id or a unique prefix of one (`ftbroker jobs` lists them), e.g. `ftbroker status ftb-3k`.
    """
    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import job_details

    with Broker() as broker:
        job = broker.refresh(job_id)
    show(json_mode, job.to_json(), job_details(job))


@job_command
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the job ends.")
def logs(job_id, follow, json_mode):
    """Print a job's events (--json: one JSON object per line).

    Example: ftbroker logs ftb-3k --follow
    """
    import json as jsonlib

    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import event_json, event_line

    out = console()

    with Broker() as broker:
        try:
            for seq, event in broker.tail(job_id, follow=follow):
                if json_mode:
                    click.echo(jsonlib.dumps(event_json(seq, event)))
                else:
                    out.print(event_line(event))
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@job_command
def cancel(job_id, json_mode):
    """Stop a job (a local trainer saves a checkpoint first).

    A job that has already ended is left as it is (exit status 0).
    """
    from ftbroker.broker import Broker

    with Broker() as broker:
        before = broker.job(job_id)
        job = broker.cancel(job_id)
    if json_mode:
        print_json(job.to_json())
    elif before.status.terminal:
        click.echo(f"{job.id} had already ended: {job.status.value}")
    else:
        click.echo(f"{job.id} {job.status.value}" + (f" ({job.status_detail})" if job.status_detail else ""))


@job_command
def result(job_id, json_mode):
    """Show the normalized result of a finished job.

    The same shape whatever the backend: status, output model, loss curves, tokens, estimated and actual cost,
    artifacts, and the provider's own record (--json: under "raw"); then the latest `ftbroker eval` of the job, if
    it has one (--json: under "evaluation").
    """
    from rich.console import Group

    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import result_details
    from ftbroker.evaluation.render import table
    from ftbroker.evaluation.store import latest_evaluation

    with Broker() as broker:
        res = broker.result(job_id)
        evaluation = latest_evaluation(broker.ledger, res.id)
    views = [result_details(res)] + ([table(evaluation)] if evaluation else [])
    evaluated = {"evaluation": evaluation.model_dump(mode="json")} if evaluation else {}
    show(json_mode, {**res.to_json(), **evaluated}, Group(*views))


@job_command
@click.option("--format", "fmt", type=click.Choice(["ollama", "merged"]), required=True,
              help="ollama: a Modelfile and the merged model; merged: a Hugging Face folder.")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Folder to write (default: ./JOB-FORMAT).")
def export(job_id, fmt, output, json_mode):
    """Export a succeeded job's model: Ollama, or a merged HF folder.

    ollama: a Modelfile whose TEMPLATE and stop tokens match the model's own chat template, FROM the merged model;
    merged: a plain Hugging Face folder with the adapter merged in.

    \b
    Example:
      ftbroker export ftb-3k --format ollama -o ./ollama
      ollama create my-model -f ./ollama/Modelfile
    """
    from ftbroker.broker import Broker
    from ftbroker.cli.job_view import artifact_json

    with Broker() as broker:
        job = broker.job(job_id)
        artifacts = broker.export(job.id, fmt, output or f"{job.id}-{fmt}")
    if json_mode:
        print_json({"artifacts": [artifact_json(a) for a in artifacts]})
    else:
        for artifact in artifacts:
            click.echo(f"{artifact.kind}: {artifact.uri}")

