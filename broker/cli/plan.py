"""``ftbroker plan``: price every route for a dataset (the work: ``ftbroker.plan_io``; the table:
``ftbroker.cli.plan_table``), and keep the plan for ``ftbroker run --route N``."""

from __future__ import annotations

import click

from ftbroker.cli.output import console, json_text
from ftbroker.cli.params import STACK_NAMES, Amount, Bounded
from ftbroker.vocabulary import METHODS


@click.command()
@click.argument("data")  # no click.Path check: the data layer says precisely what is wrong with the file
@click.option("--model", "models", multiple=True, metavar="M",
              help="Model to plan for (repeatable): catalog name, HF repo id, local model folder, config.json, "
                   "or a managed model (gpt-4o-mini). Default: every managed offer; GPU routes for Llama-3.1-8B "
                   "and Qwen2.5-7B.")
@click.option("--method", type=click.Choice(METHODS), help="Training method. Default: all.")
@click.option("--epochs", type=Bounded("epochs"),
              help="Passes over the data, the same for every route. Default: the number the plan recommends for the "
                   "dataset's size (OpenAI's auto rule: 3, more for 25 examples or fewer, fewer for over 8,333); "
                   "a provider's own default is a note.")
@click.option("--n-evals", type=Bounded("n_evals"),
              help="Evaluations over the validation file (providers that bill validation tokens per evaluation).")
@click.option("--max-seq-len", type=Bounded("max_seq_len"),
              help="Longest training sequence, in tokens; longer examples are cut (GPU routes; default 2048).")
@click.option("--tokenizer", metavar="NAME",
              help="Count the open-model routes' tokens with this tokenizer: o200k_base, cl100k_base or a local "
                   "tokenizer folder (default: each model's own, else a labelled estimate).")
@click.option("--gpu", metavar="NAME[:COUNT]",
              help="Your GPU for the local routes, from the catalog, e.g. RTX-4090 or H100:8. Default: FTBROKER_GPU, "
                   "else the GPUs nvidia-smi reports; none: no local routes.")
@click.option("--lora-r", type=Bounded("lora_r"), help="LoRA rank.")
@click.option("--validation-file", metavar="FILE", help="A held-out JSONL file (default on GPU routes: 10% of DATA).")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file (.toml or .csv) that adds or replaces rows (repeatable).")
@click.option("--all", "all_instances", is_flag=True,
              help="Every route in the tables, and every cloud instance type (not only the cheapest per GPU type and "
                   "cloud).")
@click.option("--stack", default="ftbroker", show_default=True, type=click.Choice(STACK_NAMES),
              help="The trainer the GPU routes' figures are for (how it stores tensors, its defaults); another than "
                   "ftbroker prices your own trainer, which `ftbroker run` does not run.")
@click.option("--max-cost", type=Amount("--max-cost"), metavar="USD",
              help="Your budget: routes over it are marked and never a best route.")
@click.option("--deadline", "deadline_hours", type=Amount("--deadline"), metavar="HOURS",
              help="Your deadline: routes that take longer (or whose time is not published) are marked and never a "
                   "best route.")
@click.option("--chart", metavar="FILE.png", help="Also draw cost against hours for every route, with the best "
              "routes and your --max-cost and --deadline, into FILE.png (needs the chart extra: matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per route on stdout.")
@click.option("--verbose", "-v", is_flag=True,
              help="Every note of every listed route, and notes, reasons and sources in full (not cut to fit).")
def plan(data, models, method, epochs, n_evals, max_seq_len, tokenizer, gpu, lora_r, validation_file,
         catalog_files, all_instances, stack, max_cost, deadline_hours, chart, as_json, as_csv, verbose):
    """Price every route: managed APIs, your GPU and cloud GPUs.

    Reads DATA (JSONL) once, counts its tokens the way each route bills or trains them, and lists the routes side
    by side with peak VRAM, hours and cost (cloud: on-demand and spot), and why a route is out. Every route trains
    the same number of epochs (said at the top). The best routes are the cheapest, the fastest and the knees
    between among the routes whose price the plan trusts, each with what it trades. GPU routes are corrected by
    your own measured runs (`ftbroker catalog calibration`). Each route has a number, the same in every view:
    `ftbroker run --route N` runs route N of the last plan (kept in FTBROKER_HOME), as it was priced. Exit status 2
    when the dataset has errors (FILE:LINE: message on stderr); --json still prints the plan unless no example
    could be read at all.

    \b
    Example:
      ftbroker plan examples/data/support_chats.jsonl --model Llama-3.1-8B --gpu RTX-4090
      ftbroker plan data.jsonl --max-cost 5 --deadline 2 --chart plan.png
      ftbroker run --route 6
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be combined")
    from ftbroker.errors import DatasetError
    from ftbroker.plan_io import plan as make_plan

    if chart:
        from ftbroker.chart import check_chart_extra

        check_chart_extra()  # before the work, not after it
    result = make_plan(data, models=models, method=method, epochs=epochs, n_evals=n_evals, max_seq_len=max_seq_len,
                       tokenizer=tokenizer, gpu=gpu, lora_r=lora_r, validation_file=validation_file,
                       catalog=catalog_files, all_instances=all_instances, stack=stack, max_cost=max_cost,
                       deadline_hours=deadline_hours)
    errors = [*result.dataset.errors, *(result.validation.errors if result.validation else ())]
    unreadable = [r for r in (result.dataset, result.validation) if r is not None and r.errors and not r.examples]
    if unreadable:  # a missing, empty or unreadable file: its error alone, no plan of nothing
        raise DatasetError(errors)
    from ftbroker.cli.plan_table import plan_csv, print_plan

    doc = result.to_json()
    _keep_plan(doc)
    if as_json:
        click.echo(json_text(doc))
    elif as_csv:
        click.echo(plan_csv(result), nl=False)
    else:
        print_plan(result, console(), all_routes=all_instances, verbose=verbose)
    if chart:
        from ftbroker.chart import plan_chart

        written = plan_chart(result, chart)
        click.echo(f"chart: {written}", err=as_json or as_csv)  # stdout stays JSON or CSV alone
    if errors:
        raise DatasetError(errors)


def _keep_plan(doc) -> None:
    """The plan as the last plan (``ftbroker run --route N`` runs its routes); a home that cannot be written to
    costs only that, said on stderr."""
    from ftbroker.ledger import default_home
    from ftbroker.route_jobs import save_last_plan

    try:
        save_last_plan(doc, default_home())
    except OSError as exc:
        click.echo(f"warning: the plan was not kept for `ftbroker run --route` ({exc})", err=True)

