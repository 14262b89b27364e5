"""``ftbroker run`` and ``ftbroker resume``: the commands that start a job (through ``Broker``, the one flow for
every backend) and follow it; ``run --route N`` builds the job from a plan's route (``ftbroker.route_jobs``)."""

from __future__ import annotations

import sys

import click

from ftbroker.cli.output import print_json, stderr_console
from ftbroker.cli.params import job_command, json_option, option_values

# run's flags -> JobSpec field paths. Numbers arrive as text so that every bad value is reported at once, with
# its field, by the spec's own validation (a click type would stop at the first).
RUN_FIELDS = {
    "backend": ("backend", "--backend"),
    "model": ("model", "--model"),
    "method": ("method", "--method"),
    "validation": ("validation", "--validation"),
    "name": ("name", "--name"),
    "epochs": ("hyperparameters.epochs", "--epochs"),
    "learning_rate": ("hyperparameters.learning_rate", "--learning-rate"),
    "micro_batch": ("hyperparameters.micro_batch_size", "--micro-batch"),
    "grad_accum": ("hyperparameters.gradient_accumulation_steps", "--grad-accum"),
    "max_seq_len": ("hyperparameters.max_seq_len", "--max-seq-len"),
    "packing": ("hyperparameters.packing", "--packing"),
    "grad_checkpointing": ("hyperparameters.gradient_checkpointing", "--grad-checkpointing"),
    "seed": ("hyperparameters.seed", "--seed"),
    "early_stopping_patience": ("hyperparameters.early_stopping_patience", "--early-stopping-patience"),
    "lora_r": ("lora.r", "--lora-r"),
    "lora_alpha": ("lora.alpha", "--lora-alpha"),
    "lora_dropout": ("lora.dropout", "--lora-dropout"),
    "target_modules": ("lora.target_modules", "--target-modules"),
    "max_cost": ("budget.max_cost_usd", "--max-cost"),
    "gpu": ("backend_options.gpu", "--gpu"),
    "max_hours": ("backend_options.max_hours", "--max-hours"),
}


def _run_overrides(data: str | None, params: dict, options: tuple[str, ...]) -> tuple[dict, list[str]]:
    """run's flags as JobSpec overrides, and the problems of the flags that cannot even be read."""
    overrides = {"dataset": data}
    for param, (path, _flag) in RUN_FIELDS.items():
        value = params[param]
        if param == "target_modules" and value is not None and value != "all-linear":
            value = [m.strip() for m in value.split(",")]
        overrides[path] = value
    values, problems = option_values(options)
    overrides.update({f"backend_options.{key}": value for key, value in values.items()})
    return overrides, problems


def _confirm(ask_user: bool):
    """Shows the quote (on stderr); then, unless --yes, asks, refusing without a terminal to ask on."""

    def ask(prepared) -> bool:
        from ftbroker.cli.job_view import quote_summary
        from ftbroker.errors import NotConfirmedError

        console = stderr_console()
        console.print(quote_summary(prepared))
        if not ask_user:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmedError("not started: confirmation needs a terminal; pass --yes to start without it")
        return click.confirm("Start this job?", default=False, err=True)

    return ask


def _follow(broker, job_id: str):
    """Follow a job with the live display (stderr); Ctrl-C stops watching, never the job."""
    from ftbroker.cli.job_view import FollowView

    console = stderr_console()
    try:
        with FollowView(console) as view:
            return broker.follow(job_id, on_update=view)
    except KeyboardInterrupt:
        console.print(f"stopped following; {job_id} keeps running. `ftbroker status {job_id}` or "
                      f"`ftbroker logs {job_id} --follow` to look again.")
        raise click.exceptions.Exit(130) from None


def _finish(broker, job, *, detach: bool, json_mode: bool) -> None:
    """Shared end of run and resume: report the detached job, or follow it and report its result."""
    from ftbroker.cli.job_view import result_details
    from ftbroker.errors import JobError, JobFailedError
    from ftbroker.jobs import JobStatus

    if detach:
        if json_mode:
            print_json({"job": job.to_json(), "result": None})
        else:
            click.echo(f"{job.id} {job.status.value} on {job.backend}. `ftbroker status {job.id}`, "
                       f"`ftbroker logs {job.id} --follow`")
        return
    result = _follow(broker, job.id)
    if json_mode:
        print_json({"job": broker.job(job.id).to_json(), "result": result.to_json()})
    else:
        stderr_console().print(result_details(result))
    if result.status is JobStatus.FAILED:
        raise JobFailedError(job.id, result.error or "see `ftbroker logs`")
    if result.status is JobStatus.CANCELLED:
        raise JobError(f"job {job.id} was cancelled")


@click.command()
@click.argument("data", required=False)
@click.option("--route", "route_number", type=click.IntRange(min=1), metavar="N",
              help="Run route N of the last plan (`ftbroker plan` keeps the plan it prints) or of --from-plan: its "
                   "dataset, backend, model, method, settings and backend options; other flags override them.")
@click.option("--from-plan", metavar="PLAN.json", help="The plan --route takes route N from: a file written by "
              "`ftbroker plan DATA --json > PLAN.json` (default: the last plan).")
@click.option("--config", type=click.Path(dir_okay=False), help="A job file (YAML, TOML or JSON); flags override it.")
@click.option("--backend", metavar="NAME", help="Where to train: local, ec2, skypilot, openai, together, fireworks, "
              "vertex, bedrock, or a plug-in (default: local).")
@click.option("--model", metavar="NAME", help="Base model: a catalog name (the local trainer loads its Hugging Face "
              "repo), a Hugging Face repo id, a local model folder, or a provider's model id.")
@click.option("--method", metavar="METHOD", help="full, lora or qlora (default: lora).")
@click.option("--validation", metavar="FILE", help="A validation set (same format as DATA).")
@click.option("--name", help="A label for the job.")
# Settings left unset are the backend's own defaults; the local trainer's are named (a test keeps them equal).
@click.option("--epochs", metavar="N", help="Passes over the data (local default: 3).")
@click.option("--learning-rate", "--lr", "learning_rate", metavar="LR",
              help="Peak learning rate (local default: 2e-4).")
@click.option("--micro-batch", metavar="N", help="Examples per device per step (local default: 4).")
@click.option("--grad-accum", metavar="N", help="Micro-batches per optimizer step (local default: 1).")
@click.option("--max-seq-len", metavar="N", help="Tokens per example; longer ones are cut (local default: 2048).")
@click.option("--packing/--no-packing", default=None, help="Pack several examples into each sequence.")
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None,
              help="Recompute activations in the backward pass: less memory, more compute (local default: on).")
@click.option("--seed", metavar="N", help="Seed of the held-out split, the adapter's start and the data order.")
@click.option("--early-stopping-patience", metavar="N", help="Evaluations without improvement before stopping.")
@click.option("--lora-r", metavar="N", help="LoRA rank (local default: 16).")
@click.option("--lora-alpha", metavar="N", help="LoRA alpha (local default: 32).")
@click.option("--lora-dropout", metavar="P", help="LoRA dropout (local default: 0.05).")
@click.option("--target-modules", metavar="NAMES", help="Comma-separated module names, or all-linear (the default).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A backend option, e.g. gpus=2, merge=true, report_to=mlflow,tensorboard (the trainer's "
                   "experiment trackers; OpenAI and Together: report_to=wandb), base_url=... (repeatable).")
@click.option("--max-cost", metavar="USD", help="Refuse to start if the estimated cost (USD) is higher "
              "(local: the electricity, high end of the estimate); a cost that cannot be estimated is refused.")
@click.option("--gpu", metavar="NAME[:COUNT]", help="Local backend: plan for this catalog GPU instead of the GPUs "
              "nvidia-smi reports (default: FTBROKER_GPU); the trainer uses whatever torch finds.")
@click.option("--max-hours", metavar="H", help="ec2: the instance's hard runtime cap (default: the estimate x "
              "safety_factor); it powers itself off (and terminates) then.")
@click.option("--yes", "-y", is_flag=True, help="Start without the confirmation prompt.")
@click.option("--detach", is_flag=True, help="Return the job id at once instead of following the job.")
@click.option("--force", is_flag=True, help="Start even if the job is estimated not to fit the GPU.")
@json_option
def run(data, route_number, from_plan, config, options, yes, detach, force, json_mode, **params):
    """Train a model on DATA through one backend, and follow the job.

    Checks the data, prices the job (the quote goes to stderr), refuses (exit 3) what does not fit the GPU (unless
    --force) or would cost more than --max-cost, asks for confirmation (unless --yes), records the job in the
    ledger, starts it and follows it; Ctrl-C stops following, never the job. Flags override the --config file.

    --route N runs route N of a plan as the plan priced it. The route fixes the dataset, the backend, the method and
    the GPU (DATA, --config, --backend, --method, --validation and --gpu are refused beside it: pick another route,
    or plan again); any other flag overrides what the route sets (--model, --epochs, --micro-batch, --option ...),
    and the job is then quoted as it will run. A route no backend runs yet, one that is out or closed, and a
    dataset changed since the plan are refused with the reason.

    \b
    Examples:
      ftbroker run data.jsonl --model Llama-3.1-8B --method qlora --gpu RTX-4090
      ftbroker run --config examples/jobs/local-qlora.yaml --epochs 1 --yes --detach
      ftbroker plan data.jsonl --model Llama-3.1-8B && ftbroker run --route 6
      ftbroker run --from-plan plan.json --route 6 --max-cost 5
      ftbroker run data.jsonl --backend ec2 --model Llama-3.1-8B --method qlora --option s3_uri=s3://bucket/ftb
    """
    from ftbroker.broker import Broker
    from ftbroker.spec import load_spec

    overrides, problems = _run_overrides(data, params, options)
    flag_names = {path: flag for path, flag in RUN_FIELDS.values()}
    if route_number is not None or from_plan is not None:
        overrides, flag_names = _route_overrides(route_number, from_plan, data, config, params, overrides, flag_names)
    spec = load_spec(config, overrides, flag_names=flag_names, problems=problems)
    with Broker() as broker:
        job = broker.submit(spec, confirm=_confirm(ask_user=not yes), force=force)
        _finish(broker, job, detach=detach, json_mode=json_mode)


# What a plan's route fixes: the flags that would choose another route are refused beside --route.
_ROUTE_FIXES = {"data": "DATA", "config": "--config", "backend": "--backend", "method": "--method",
                "validation": "--validation", "gpu": "--gpu"}


def _route_overrides(number, from_plan, data, config, params, overrides, flag_names):
    """The JobSpec fields of the plan's route ``number``, then run's own flags over them (see ``run``)."""
    from ftbroker.ledger import default_home
    from ftbroker.route_jobs import load_plan, route_fields

    if number is None:
        raise click.UsageError("--from-plan needs --route N: the number of the route to run, as the plan shows it")
    given = {"data": data, "config": config, **params}
    clash = [flag for name, flag in _ROUTE_FIXES.items() if given.get(name) is not None]
    if clash:
        raise click.UsageError(f"--route runs the plan's dataset on the route's backend, method and GPU: "
                               f"{', '.join(clash)} cannot be given with it (pick another route, or plan again)")
    doc, where = load_plan(from_plan, default_home())
    fields, route = route_fields(doc, number, where)
    click.echo(f"route #{number} of {where}: {route['id']}", err=True)
    flags = {path: value for path, value in overrides.items() if value is not None}
    return {**fields, **flags}, {**flag_names, **{p: f"--route {number}" for p in fields if p not in flags}}


@job_command
@click.option("--detach", is_flag=True, help="Return at once instead of following the job.")
def resume(job_id, detach, json_mode):
    """Continue a failed or cancelled job from its last checkpoint.

    A job that was recorded but never confirmed submitted (the CLI died, the provider did not answer) is submitted
    instead, exactly once: the backend looks for the remote job before it creates one. While another process acts on
    the job (run, resume, cancel), this one does nothing and exits 3, saying who does.
    """
    from ftbroker.broker import Broker

    with Broker() as broker:
        job = broker.resume(job_id)
        _finish(broker, job, detach=detach, json_mode=json_mode)
