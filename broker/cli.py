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


# --- estimate area: the dataset-free calculator --------------------------------------------------------------
@cli.command("estimate")
@click.argument("model")
@click.option("--method", required=True, type=click.Choice(["full", "lora", "qlora"]), help="Fine-tuning method.")
@click.option("--seq-len", default=2048, show_default=True, type=click.IntRange(min=1), help="Tokens per sequence.")
@click.option("--batch", "micro_batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Micro-batch per GPU.")
@click.option("--lora-r", default=16, show_default=True, type=click.IntRange(min=1), help="LoRA rank.")
@click.option("--targets", multiple=True, default=("all-linear",), show_default=True,
              help="LoRA target modules: q_proj,v_proj ... or all-linear / attention / mlp (repeatable).")
@click.option("--gpu", default=None, metavar="NAME[:COUNT]", help="GPU from the catalog, optionally with a count.")
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=True, show_default=True)
@click.option("--optimizer", default="adamw", show_default=True,
              help="adamw, adamw_torch, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit, adamw_4bit, sgd.")
@click.option("--precision", default="bf16", show_default=True, type=click.Choice(["bf16", "amp", "fp32", "mixed"]),
              help="bf16: model loaded in bf16; amp: fp32 weights + autocast; mixed: 16-bit + fp32 master.")
@click.option("--sharding", default=None, type=click.Choice(["none", "ddp", "zero1", "zero2", "zero3", "fsdp"]),
              help="Multi-GPU strategy (default: ddp for LoRA/QLoRA, fsdp for full).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option("--explain", is_flag=True, help="Show every term with its formula and numbers.")
def estimate_command(model, method, seq_len, micro_batch, lora_r, targets, gpu, grad_checkpointing, optimizer,
                     precision, sharding, as_json, explain):
    """Peak VRAM, fit and tokens/s of fine-tuning MODEL (catalog name, model folder or config.json)."""
    import json

    from ftbroker.estimate import estimate

    result = estimate(model, method=method, gpu=gpu, seq_len=seq_len, micro_batch=micro_batch, lora_r=lora_r,
                      targets=targets, grad_checkpointing=grad_checkpointing, optimizer=optimizer,
                      precision=precision, sharding=sharding)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif explain:
        click.echo(result.explain())
    else:
        _print_estimate(result)


def _print_estimate(result) -> None:
    from rich.console import Console
    from rich.table import Table

    data = result.to_json()
    table = Table(title=f"{data['model']} {data['method']}: peak memory per GPU (GiB)", show_header=False)
    for name, gib in result.memory.components().items():
        if gib:
            table.add_row(name.replace("_", " "), f"{gib:.2f}")
    table.add_row("[bold]total[/bold]", f"[bold]{result.memory.total:.2f}[/bold]")
    console = Console()
    console.print(table)
    if result.gpu is not None:
        console.print(f"{'fits' if result.fits else '[red]does not fit[/red]'} on {result.setup.n_gpus} x "
                      f"{result.gpu.name} ({result.gpu.memory_gib:g} GiB); largest micro-batch at "
                      f"{result.setup.seq_len} tokens: {result.max_micro_batch}; longest sequence at micro-batch "
                      f"{result.setup.micro_batch}: {result.max_seq_len}")
        tps = data["tokens_per_s"]
        console.print(f"tokens/s: {tps['low']:,.0f} - {tps['high']:,.0f} (expected {tps['expected']:,.0f})" if tps
                      else f"tokens/s: unknown ({result.throughput.reason})")
    console.print("run with --explain for the derivation")


def main() -> None:
    cli(prog_name="ftbroker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
