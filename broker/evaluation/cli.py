"""``ftbroker eval``: the command (registered by ``ftbroker.cli``). Imports only click at load time."""

from __future__ import annotations

import sys

import click


def _options(pairs: tuple[str, ...]) -> dict:
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE", param_hint="--option")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _confirm(ask_user: bool):
    """Shows the quote on stderr; then, unless --yes, asks (refusing without a terminal to ask on)."""

    def ask(prepared) -> bool:
        from rich.console import Console

        from ftbroker.errors import NotConfirmedError
        from ftbroker.evaluation.render import quote_table

        Console(stderr=True).print(quote_table(prepared))
        if not ask_user:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmedError("not started: this evaluation may cost money and confirmation needs a terminal; "
                                    "pass --yes to start it without asking")
        return click.confirm("Start this evaluation?", default=False, err=True)

    return ask


@click.command("eval")
@click.argument("job_id", metavar="JOB")
@click.option("--test", metavar="FILE", help="Held-out examples (any format `validate` accepts). Default: the job's "
              "own held-out split (local jobs: exactly what the trainer held out), else its validation file.")
@click.option("--judge", metavar="MODEL", help="Also compare the answers pairwise and blind with this LLM, e.g. "
              "claude-haiku-5-5, gpt-4.1, anthropic.claude-sonnet-5-5 (Claude on Bedrock).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the first N held-out examples.")
@click.option("--max-cost", metavar="USD", help="Refuse to start if the quote's high end (answers, paid deployment "
              "hours, judge) is above USD; a cost that cannot be estimated is refused.")
@click.option("--schema", metavar="FILE", help="A JSON schema every answer must match (scored as 'matches --schema').")
@click.option("--rubric", metavar="FILE", help="The judge's rubric (default: correctness, completeness, format).")
@click.option("--no-capability", is_flag=True, help="Skip the built-in general-capability set.")
@click.option("--regression-threshold", type=click.FloatRange(0, 1), default=0.10, show_default=True, metavar="FRACTION",
              help="Flag a regression when the fine-tuned model's general capability falls more than this.")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N", help="Seed of the judge's answer order.")
@click.option("--chart", metavar="FILE.png", help="Also write a PNG chart (needs matplotlib: the local extra).")
@click.option("--option", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Timings and endpoints, e.g. deployment_hours=2, max_new_tokens=128, region=us-west-2, "
                   "runtime_endpoint_url=..., project_id=... (repeatable).")
@click.option("--yes", "-y", is_flag=True, help="Start a paid evaluation without the confirmation prompt.")
@click.option("--json", "json_mode", is_flag=True, help="Print only JSON on stdout (the whole evaluation).")
def eval_command(job_id, test, judge, limit, max_cost, schema, rubric, no_capability, regression_threshold, seed,
                 chart, pairs, yes, json_mode):
    """Compare a fine-tuned model with its base model on held-out data.

    Both models answer the held-out examples with the settings a fine-tune is served with (greedy, the chat
    template's stop tokens); scores per example and overall: exact match, token F1, length ratio, format checks;
    with --judge, the win rate with a 95% Wilson interval; a built-in general-capability set flags a fine-tune that
    lost general skills. Paid calls and deployments (a Together dedicated endpoint, Bedrock Provisioned
    Throughput) are quoted on stderr first and held to --max-cost; deployments are always deleted. Answers and
    verdicts are cached: a rerun pays only for what is new. The ledger keeps every evaluation
    (`ftbroker result JOB` shows the latest).

    \b
    Examples:
      ftbroker eval ftb-3k7x --chart eval.png
      ftbroker eval ftb-9qm2 --judge claude-haiku-5-5 --limit 100 --max-cost 2
    """
    from decimal import Decimal, InvalidOperation

    from ftbroker.evaluation import evaluate

    try:
        budget = Decimal(max_cost) if max_cost is not None else None
    except InvalidOperation:
        raise click.BadParameter(f"{max_cost!r} is not a number of USD", param_hint="--max-cost") from None
    if budget is not None and (not budget.is_finite() or budget < 0):
        raise click.BadParameter(f"{max_cost!r} must be a number of USD >= 0", param_hint="--max-cost")
    try:
        evaluation = evaluate(job_id, test=test, judge=judge, limit=limit, max_cost=budget, schema=schema,
                              rubric=rubric, capability=not no_capability, regression_threshold=regression_threshold,
                              seed=seed, chart=chart, options=_options(pairs), confirm=_confirm(ask_user=not yes))
    except KeyboardInterrupt:  # the evaluation's finally has already deleted its deployments
        click.echo("stopped; any paid deployment it created was deleted (the answers paid for are cached)", err=True)
        raise click.exceptions.Exit(130) from None
    if json_mode:
        click.echo(evaluation.model_dump_json(indent=2))
    else:
        from rich.console import Console

        from ftbroker.evaluation.render import table

        Console(highlight=False).print(table(evaluation))
