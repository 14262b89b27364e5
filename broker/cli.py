"""The ``ftbroker`` command line.

This module is the only place where errors become messages and exit codes (see ``ftbroker.errors``):
0 success, 1 the operation failed, 2 bad input or usage, 3 refused by a guard. Heavy modules are
imported inside the commands so that ``ftbroker --help`` and ``ftbroker plan`` start fast.
"""

from __future__ import annotations

import sys

import click

from ftbroker import __version__


class _Root(click.Group):
    """Runs a command and renders any ftbroker error as one message with its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            if ctx.meta.get("ftbroker.debug"):
                raise
            from ftbroker.errors import FtBrokerError

            if isinstance(exc, FtBrokerError):
                click.echo(f"error: {exc}", err=True)
                ctx.exit(exc.exit_code)
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
            ctx.exit(1)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftbroker")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of short error messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan, price and run LLM fine-tuning on your GPU, rented GPUs and managed APIs."""
    ctx.meta["ftbroker.debug"] = debug


# --- pricing: `plan` and `catalog` (rendering in ftbroker.render; the work in ftbroker.planning, planner, catalog) ---

@cli.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "models", multiple=True, metavar="M",
              help="Model to plan for (repeatable): catalog name, HF repo id, local model folder, config.json, "
                   "or a managed model (gpt-4o-mini). Default: every managed offer.")
@click.option("--method", type=click.Choice(["full", "lora", "qlora"]), help="Training method. Default: all.")
@click.option("--epochs", type=click.IntRange(1, 100), help="Epochs. Default: each provider's own default.")
@click.option("--n-evals", type=click.IntRange(0, 1000),
              help="Evaluations over the validation file (providers that bill validation tokens per evaluation).")
@click.option("--max-seq-len", type=click.IntRange(1), help="Longest training sequence, in tokens.")
@click.option("--tokenizer", metavar="NAME",
              help="Count open-model routes with this tokenizer (tiktoken encoding or local tokenizer folder).")
@click.option("--gpu", metavar="NAME[:COUNT]", help="Your GPU, e.g. RTX-4090 or H100:8.")
@click.option("--lora-r", type=click.IntRange(1, 4096), help="LoRA rank.")
@click.option("--validation-file", type=click.Path(exists=True, dir_okay=False), help="A held-out JSONL file.")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file (.toml or .csv) that adds or replaces rows (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per route on stdout.")
def plan(data, models, method, epochs, n_evals, max_seq_len, tokenizer, gpu, lora_r, validation_file,
         catalog_files, as_json, as_csv):
    """Read DATA once and price every route: managed APIs now, your GPU and cloud GPUs as they are estimated.

    Exit status 2 when the dataset has errors (FILE:LINE: message on stderr); --json still prints the plan.
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be combined")
    from ftbroker.errors import DatasetError
    from ftbroker.planning import plan as make_plan

    result = make_plan(data, models=models, method=method, epochs=epochs, n_evals=n_evals, max_seq_len=max_seq_len,
                       tokenizer=tokenizer, gpu=gpu, lora_r=lora_r, validation_file=validation_file,
                       catalog=catalog_files)
    from ftbroker import render

    if as_json:
        click.echo(render.to_json_text(result.to_json()))
    elif as_csv:
        click.echo(render.plan_csv(result), nl=False)
    else:
        render.print_plan(result, _console())
    errors = [*result.dataset.errors, *(result.validation.errors if result.validation else ())]
    if errors:
        raise DatasetError(errors)


@cli.group()
def catalog():
    """The prices, GPUs, instances and model architectures in force (shipped data + your overrides)."""


@catalog.command("show")
@click.option("--kind", type=click.Choice(["gpus", "instances", "managed", "models"]), help="Only this kind of row.")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file to merge (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_show(kind, catalog_files, as_json):
    """Show the catalog rows in force, their sources and age; rows older than 90 days are flagged."""
    from datetime import date

    from ftbroker import render
    from ftbroker.pricing.catalog import load_catalog

    cat = load_catalog(catalog_files)
    kinds = (kind,) if kind else render.CATALOG_KINDS
    if as_json:
        click.echo(render.to_json_text(render.catalog_json(cat, kinds, date.today())))
    else:
        render.print_catalog(cat, kinds, date.today(), _console())


@catalog.command("validate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def catalog_validate(file):
    """Check the catalog in force, or FILE merged over it; exit 2 with FILE:LINE: field: problem if bad."""
    from datetime import date

    from ftbroker.pricing.catalog import load_catalog, user_override_path

    cat = load_catalog([file] if file else ())
    checked = file or (user_override_path() if user_override_path().is_file() else "shipped catalog")
    click.echo(f"ok: {checked}: {len(cat.gpus)} GPUs, {len(cat.instances)} instances, {len(cat.managed)} managed "
               f"offers, {len(cat.models)} models in force (catalog {cat.version})")
    stale = cat.stale_rows(date.today())
    if stale:
        click.echo(f"warning: {len(stale)} priced row(s) are older than 90 days (ftbroker catalog show)", err=True)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)

# --- end of pricing block ---


def main() -> None:
    cli(prog_name="ftbroker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
