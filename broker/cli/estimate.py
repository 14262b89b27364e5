"""``ftbroker estimate``: the dataset-free calculator (peak VRAM, fit and tokens/s of one model, method and stack)."""

from __future__ import annotations

import click

from ftbroker.cli.output import console, print_json
from ftbroker.cli.params import STACK_NAMES, Bounded
from ftbroker.vocabulary import METHODS


@click.command("estimate")
@click.argument("model")
@click.option("--method", required=True, type=click.Choice(METHODS), help="Fine-tuning method.")
@click.option("--stack", default="ftbroker", show_default=True, type=click.Choice(STACK_NAMES),
              help="The trainer that runs it: how it stores tensors (loss, attention, kernels, optimizer) and its "
                   "defaults for every setting not given. ftbroker: `ftbroker run --backend local`.")
@click.option("--seq-len", type=Bounded("seq_len"), help="Tokens per sequence (default: the stack's, 2048).")
@click.option("--batch", "micro_batch", type=Bounded("micro_batch"),
              help="Micro-batch per GPU (default: the stack's; ftbroker 4).")
@click.option("--grad-accum", "grad_accumulation", default=1, show_default=True, type=Bounded("grad_accum"),
              help="Micro-batches per optimizer step (accumulating keeps the gradients alive during backward).")
@click.option("--lora-r", type=Bounded("lora_r"), help="LoRA rank (default: the stack's; ftbroker 16).")
@click.option("--targets", multiple=True,
              help="LoRA target modules: q_proj,v_proj ... or all-linear / attention / mlp (repeatable; default: "
                   "the stack's; ftbroker all-linear).")
@click.option("--gpu", default=None, metavar="NAME[:COUNT]",
              help="GPU from the catalog, e.g. RTX-4090 or H100:8. Without it: the memory alone, no fit or tokens/s.")
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None,
              help="Recompute activations in the backward pass: less memory, more compute (default: the stack's).")
@click.option("--optimizer", default=None,  # estimate.setup.OPTIMIZERS (a test keeps them equal)
              help="adamw, adamw_torch, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit, adamw_4bit, sgd "
                   "(default: the stack's).")
@click.option("--precision", default=None, type=click.Choice(["bf16", "amp", "fp32", "mixed"]),
              help="bf16: weights held in bf16; amp: fp32 weights under bf16 autocast; fp32: no autocast; mixed: "
                   "16-bit weights + fp32 master (default: the stack's; ftbroker: amp for full, bf16 for LoRA/QLoRA).")
@click.option("--sharding", default=None, type=click.Choice(["none", "ddp", "zero1", "zero2", "zero3", "fsdp"]),
              help="Multi-GPU strategy (default: none on one GPU; ddp for LoRA/QLoRA, fsdp for full).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
@click.option("--explain", is_flag=True, help="Show every term with its formula and numbers.")
def estimate_command(model, method, stack, seq_len, micro_batch, grad_accumulation, lora_r, targets, gpu,
                     grad_checkpointing, optimizer, precision, sharding, as_json, explain):
    """Peak VRAM, fit and tokens/s of fine-tuning MODEL, without data.

    MODEL is a catalog name, a local model folder or a config.json. Settings left out are those of the stack's
    trainer: with the default stack, what `ftbroker run --backend local` would give its trainer, so the peak is
    the one `ftbroker plan` and `ftbroker run` show for the same settings. Figures for a GPU, method and stack you
    have measured runs of are corrected by them, and say so (`ftbroker catalog calibration`). --explain shows
    every term.

    \b
    Examples:
      ftbroker estimate Llama-3.1-8B --method qlora --seq-len 2048 --batch 4 --gpu RTX-4090
      ftbroker estimate Llama-3.1-8B --method qlora --gpu RTX-4090 --stack unsloth
    """
    if as_json and explain:
        raise click.UsageError("--json and --explain cannot be combined")
    from ftbroker.estimate import estimate
    from ftbroker.pricing.catalog import load_catalog
    from ftbroker.your_runs import corrections

    catalog = load_catalog()
    result = estimate(model, method=method, gpu=gpu, stack=stack, seq_len=seq_len, micro_batch=micro_batch,
                      grad_accumulation=grad_accumulation, lora_r=lora_r, targets=targets or None,
                      grad_checkpointing=grad_checkpointing, optimizer=optimizer, precision=precision,
                      sharding=sharding, catalog=catalog, corrections=corrections(catalog))
    if as_json:
        print_json(result.to_json())
    elif explain:
        from ftbroker.cli.tables import hanging

        out = console()  # wrapped for a terminal; whole lines into a pipe or file, for grep
        click.echo(hanging(result.explain(), out.width) if out.is_terminal else result.explain())
    else:
        print_estimate(result, stack)


def print_estimate(result, stack: str) -> None:
    """The setup, the peak's terms, the fit on the GPU and the tokens/s, for people."""
    from rich import box
    from rich.table import Table

    from ftbroker.estimate.summary import check_text

    data = result.to_json()
    out = console()
    s = result.setup
    out.print(f"[bold]{data['model']} {data['method']}[/bold] ({stack} stack): micro-batch {s.micro_batch} x "
              f"{s.seq_len} tokens, {s.precision}, {s.optimizer_kind.name}"
              f"{', checkpointing' if s.grad_checkpointing else ''}"
              f"{f', accumulating {s.grad_accumulation}' if s.grad_accumulation > 1 else ''}", highlight=False)
    out.print(f"peak memory per GPU (during the {result.memory.phase})", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("term")
    table.add_column("GiB", justify="right")
    for name, gib in result.memory.components().items():
        if gib:
            table.add_row(name.replace("_", " "), f"{gib:.2f}")
    table.add_row("[bold]total[/bold]", f"[bold]{result.memory.total:.2f}[/bold]")
    out.print(table)
    if result.gpu is not None:
        out.print(f"{'fits' if result.fits else '[red]does not fit[/red]'} on {result.setup.n_gpus} x "
                  f"{result.gpu.name} ({result.gpu.memory_gib:g} GiB); largest micro-batch at "
                  f"{result.setup.seq_len} tokens: {result.max_micro_batch}; longest sequence at micro-batch "
                  f"{result.setup.micro_batch}: {result.max_seq_len}")
        tps = data["tokens_per_s"]
        out.print(f"tokens/s: {tps['low']:,.0f} - {tps['high']:,.0f} (expected {tps['expected']:,.0f})" if tps
                  else f"tokens/s: unknown ({result.throughput.reason})")
    if result.calibration.your_runs:
        out.print(f"{result.calibration.your_runs} (ftbroker catalog calibration)")
    checked = check_text(result.check, stack)
    out.print(f"[yellow]{checked}[/yellow]" if result.check is None or result.check.mostly_under else checked,
              highlight=False)
    out.print("run with --explain for the derivation")
