"""The ``ftbroker`` command line.

This module is the only place where errors become messages and exit codes (see ``ftbroker.errors``):
0 success, 1 the operation failed, 2 bad input or usage, 3 refused by a guard. Heavy modules are
imported inside the commands so that ``ftbroker --help`` and ``ftbroker plan`` start fast.
"""

from __future__ import annotations

import os
import sys

import click

from ftbroker import __version__


class _Bounded(click.ParamType):
    """A whole number held to its plausibility bound (``ftbroker.bounds``); a refusal says why (exit 2)."""

    name = "integer"

    def __init__(self, bound: str):
        self.bound = bound

    def convert(self, value, param, ctx):
        from ftbroker import bounds

        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        why = bounds.problem(self.bound, number)
        if why is not None:
            self.fail(f"{number}: {why}", param, ctx)
        return number


class _Amount(click.ParamType):
    """A positive amount (dollars, hours): a refusal says why (exit 2)."""

    name = "number"

    def __init__(self, flag: str):
        self.flag = flag

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(str(value).strip().removeprefix("$"))
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not 0 < number < math.inf:
            self.fail(f"{value}: must be more than 0", param, ctx)
        return number


class _Root(click.Group):
    """Runs a command and renders any ftbroker error as one message with its exit code."""

    # --help lists the commands in the order a newcomer meets them: check and price, run and follow, the catalog.
    ORDER = ("validate", "plan", "estimate", "run", "jobs", "status", "logs", "result", "eval", "cancel", "resume",
             "export", "gc", "catalog", "ledger")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands, key=lambda name: (self.ORDER.index(name) if name in self.ORDER
                                                       else len(self.ORDER), name))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do (and rich does)
            _drop_stdout()
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            from ftbroker.errors import FtBrokerError
            from ftbroker.redact import scrub

            code = exc.exit_code if isinstance(exc, FtBrokerError) else 1
            if ctx.meta.get("ftbroker.debug"):  # the traceback, masked as every message is
                import traceback

                click.echo(scrub("".join(traceback.format_exception(exc))).rstrip(), err=True)
            elif isinstance(exc, FtBrokerError):
                click.echo(scrub(f"error: {exc}"), err=True)
            else:
                click.echo(scrub(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                                 "traceback)"), err=True)
            ctx.exit(code)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail on the broken pipe again (the recipe
    of Python's signal module documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (tests capture output)
        pass


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftbroker")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of short error messages.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Plan, price and run LLM fine-tuning on your GPU, rented GPUs and managed APIs.

    \b
    Examples:
      ftbroker plan examples/data/support_chats.jsonl
      ftbroker run data.jsonl --model Llama-3.1-8B --method qlora --max-cost 5
      ftbroker COMMAND --help      (a command's options, with an example)
    """
    ctx.meta["ftbroker.debug"] = debug


# --- the job commands: run, jobs, status, logs, cancel, result, resume, export ------------------------------

# run's flags -> JobSpec field paths. Numbers arrive as text so that every bad value is reported at once, with
# its field, by the spec's own validation (a click type would stop at the first).
_RUN_FIELDS = {
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


def _stderr():
    return _console(stderr=True)


def _print_json(data) -> None:
    import json

    click.echo(json.dumps(data, indent=2))


def _show(json_mode: bool, data, view) -> None:
    """``data`` as JSON on stdout with --json, else ``view`` (a rich renderable) for people."""
    if json_mode:
        _print_json(data)
    else:
        _console().print(view)


def _run_overrides(data: str | None, params: dict, options: tuple[str, ...]) -> tuple[dict, list[str]]:
    """run's flags as JobSpec overrides, and the problems of the flags that cannot even be read."""
    overrides = {"dataset": data}
    for param, (path, _flag) in _RUN_FIELDS.items():
        value = params[param]
        if param == "target_modules" and value is not None and value != "all-linear":
            value = [m.strip() for m in value.split(",")]
        overrides[path] = value
    values, problems = _option_values(options)
    overrides.update({f"backend_options.{key}": value for key, value in values.items()})
    return overrides, problems


def _option_values(options: tuple[str, ...]) -> tuple[dict, list[str]]:
    """``--option KEY=VALUE`` flags as {key: value} (YAML scalars: "2" -> 2, "true" -> True), and the problems."""
    import yaml

    from ftbroker.spec import load_yaml

    values, problems = {}, []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            problems.append(f"--option {option!r}: write KEY=VALUE")
            continue
        try:
            values[key.strip()] = load_yaml(value)  # "2" -> 2, "true" -> True
        except yaml.YAMLError:
            values[key.strip()] = value
    return values, problems


def _confirm(ask_user: bool):
    """Shows the quote (on stderr); then, unless --yes, asks, refusing without a terminal to ask on."""

    def ask(prepared) -> bool:
        from ftbroker.errors import NotConfirmedError
        from ftbroker.render_jobs import quote_summary

        console = _stderr()
        console.print(quote_summary(prepared))
        if not ask_user:
            return True
        if not sys.stdin.isatty():
            raise NotConfirmedError("not started: confirmation needs a terminal; pass --yes to start without it")
        return click.confirm("Start this job?", default=False, err=True)

    return ask


def _follow(broker, job_id: str):
    """Follow a job with the live display (stderr); Ctrl-C stops watching, never the job."""
    from ftbroker.render_jobs import FollowView

    console = _stderr()
    try:
        with FollowView(console) as view:
            return broker.follow(job_id, on_update=view)
    except KeyboardInterrupt:
        console.print(f"stopped following; {job_id} keeps running. `ftbroker status {job_id}` or "
                      f"`ftbroker logs {job_id} --follow` to look again.")
        raise click.exceptions.Exit(130) from None


def _finish(broker, job, *, detach: bool, json_mode: bool) -> None:
    """Shared end of run and resume: report the detached job, or follow it and report its result."""
    from ftbroker.errors import JobError, JobFailedError
    from ftbroker.jobs import JobStatus
    from ftbroker.render_jobs import job_json, result_details, result_json

    if detach:
        if json_mode:
            _print_json({"job": job_json(job), "result": None})
        else:
            click.echo(f"{job.id} {job.status.value} on {job.backend}. `ftbroker status {job.id}`, "
                       f"`ftbroker logs {job.id} --follow`")
        return
    result = _follow(broker, job.id)
    if json_mode:
        _print_json({"job": job_json(broker.job(job.id)), "result": result_json(result)})
    else:
        _stderr().print(result_details(result))
    if result.status is JobStatus.FAILED:
        raise JobFailedError(job.id, result.error or "see `ftbroker logs`")
    if result.status is JobStatus.CANCELLED:
        raise JobError(f"job {job.id} was cancelled")


def _json_option(f):
    return click.option("--json", "json_mode", is_flag=True, help="Print only JSON on stdout.")(f)


def _job_command(f):
    """A command about one job: JOB (an id, or a unique prefix of one) and --json."""
    return cli.command()(click.argument("job_id", metavar="JOB")(_json_option(f)))


@cli.command()
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
              help="A backend option, e.g. gpus=2, merge=true, base_url=... (repeatable).")
@click.option("--max-cost", metavar="USD", help="Refuse to start if the estimated cost (USD) is higher "
              "(local: the electricity, high end of the estimate); a cost that cannot be estimated is refused.")
@click.option("--gpu", metavar="NAME[:COUNT]", help="Local backend: plan for this catalog GPU instead of the GPUs "
              "nvidia-smi reports (default: FTBROKER_GPU); the trainer uses whatever torch finds.")
@click.option("--max-hours", metavar="H", help="ec2: the instance's hard runtime cap (default: the estimate x "
              "safety_factor); it powers itself off (and terminates) then.")
@click.option("--yes", "-y", is_flag=True, help="Start without the confirmation prompt.")
@click.option("--detach", is_flag=True, help="Return the job id at once instead of following the job.")
@click.option("--force", is_flag=True, help="Start even if the job is estimated not to fit the GPU.")
@_json_option
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
    flag_names = {path: flag for path, flag in _RUN_FIELDS.values()}
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


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many jobs to list.")
@click.option("--backend", metavar="NAME", help="Only this backend's jobs.")
# JobStatus's values, spelt out so that --help need not import the job records (a test keeps them equal).
@click.option("--status", type=click.Choice(["queued", "validating", "running", "succeeded", "failed", "cancelled"]),
              help="Only jobs in this status.")
@_json_option
def jobs(limit, backend, status, json_mode):
    """List jobs, newest first."""
    from ftbroker.broker import Broker
    from ftbroker.errors import LedgerDamagedError
    from ftbroker.evaluation.store import latest_scores
    from ftbroker.jobs import JobStatus
    from ftbroker.render_jobs import job_json, jobs_table

    damaged = None
    with Broker() as broker:
        try:
            found = broker.jobs(limit=limit, backend=backend, status=JobStatus(status) if status else None)
        except LedgerDamagedError as exc:  # one bad row: the others are still shown, then the bad one named
            found, damaged = exc.readable, exc
        scores = latest_scores(broker.ledger, [j.id for j in found])
    _show(json_mode, {"jobs": [job_json(j) for j in found]},
          jobs_table(found, scores) if found else "no jobs yet (`ftbroker run` starts one)")
    if damaged is not None:
        raise damaged


@_job_command
def status(job_id, json_mode):
    """Show a job, after asking its backend for news.

    JOB is a job id or a unique prefix of one (`ftbroker jobs` lists them), e.g. `ftbroker status ftb-3k`.
    """
    from ftbroker.broker import Broker
    from ftbroker.render_jobs import job_details, job_json

    with Broker() as broker:
        job = broker.refresh(job_id)
    _show(json_mode, job_json(job), job_details(job))


@_job_command
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the job ends.")
def logs(job_id, follow, json_mode):
    """Print a job's events (--json: one JSON object per line).

    Example: ftbroker logs ftb-3k --follow
    """
    import json as jsonlib

    from ftbroker.broker import Broker
    from ftbroker.render_jobs import event_json, event_line

    console = _console()

    with Broker() as broker:
        try:
            for seq, event in broker.tail(job_id, follow=follow):
                if json_mode:
                    click.echo(jsonlib.dumps(event_json(seq, event)))
                else:
                    console.print(event_line(event))
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@_job_command
def cancel(job_id, json_mode):
    """Stop a job (a local trainer saves a checkpoint first).

    A job that has already ended is left as it is (exit status 0).
    """
    from ftbroker.broker import Broker
    from ftbroker.render_jobs import job_json

    with Broker() as broker:
        before = broker.job(job_id)
        job = broker.cancel(job_id)
    if json_mode:
        _print_json(job_json(job))
    elif before.status.terminal:
        click.echo(f"{job.id} had already ended: {job.status.value}")
    else:
        click.echo(f"{job.id} {job.status.value}" + (f" ({job.status_detail})" if job.status_detail else ""))


@_job_command
def result(job_id, json_mode):
    """Show the normalized result of a finished job.

    The same shape whatever the backend: status, output model, loss curves, tokens, estimated and actual cost,
    artifacts, and the provider's own record (--json: under "raw"); then the latest `ftbroker eval` of the job, if
    it has one (--json: under "evaluation").
    """
    from rich.console import Group

    from ftbroker.broker import Broker
    from ftbroker.evaluation.render import table
    from ftbroker.evaluation.store import latest_evaluation
    from ftbroker.render_jobs import result_details, result_json

    with Broker() as broker:
        res = broker.result(job_id)
        evaluation = latest_evaluation(broker.ledger, res.id)
    views = [result_details(res)] + ([table(evaluation)] if evaluation else [])
    evaluated = {"evaluation": evaluation.model_dump(mode="json")} if evaluation else {}
    _show(json_mode, {**result_json(res), **evaluated}, Group(*views))


@_job_command
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


@_job_command
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
    from ftbroker.render_jobs import artifact_json

    with Broker() as broker:
        job = broker.job(job_id)
        artifacts = broker.export(job.id, fmt, output or f"{job.id}-{fmt}")
    if json_mode:
        _print_json({"artifacts": [artifact_json(a) for a in artifacts]})
    else:
        for artifact in artifacts:
            click.echo(f"{artifact.kind}: {artifact.uri}")


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Stop what should go (without it: a dry run that only lists).")
@click.option("--backend", metavar="NAME", help="Also look where this backend's --option settings point (e.g. ec2 in "
              "a region the ledger's jobs never used).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A backend option for --backend, e.g. "
              "region=us-west-2 (repeatable).")
@_json_option
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
    from ftbroker.errors import FtBrokerError
    from ftbroker.render_jobs import leftovers_json, leftovers_view

    values, problems = _option_values(options)
    if problems:
        raise click.UsageError("; ".join(problems))
    if options and not backend:
        raise click.UsageError("--option needs --backend")
    extra = [(backend, values)] if backend else []
    with Broker() as broker:
        rows = broker.gc(apply=yes, extra=extra)
    _show(json_mode, leftovers_json(rows, applied=yes), leftovers_view(rows, applied=yes))
    failed = [f"{lo.resource}: {done}" for lo, done in rows if done and done.startswith("failed")]
    if failed:
        raise FtBrokerError(f"gc: {len(failed)} could not be stopped (run it again): {'; '.join(failed)}")


@cli.group()
def ledger():
    """Look after the job ledger (FTBROKER_HOME/ledger.sqlite3)."""


@ledger.command("rebuild")
@_json_option
def ledger_rebuild(json_mode):
    """Re-create the entries of local jobs from their run folders.

    For a ledger that was lost, emptied or moved aside (damaged) while FTBROKER_HOME/runs still holds the run
    folders: each job missing from the ledger is recorded again under its own id, with the spec its trainer's
    config.json gives, and its status, events and result read from its folder. Managed jobs (OpenAI, Together,
    Bedrock) have no run folder and cannot be recovered this way.
    """
    from ftbroker.broker import Broker
    from ftbroker.render_jobs import job_json

    with Broker(rebuilding=True) as broker:
        restored, skipped = broker.rebuild()
    if json_mode:
        _print_json({"restored": [job_json(j) for j in restored], "skipped": skipped})
    else:
        for job in restored:
            click.echo(f"{job.id} {job.status.value}: {job.model} ({job.method})")
        click.echo(f"{len(restored)} job{'s' if len(restored) != 1 else ''} restored from their run folders")
    for reason in skipped:
        click.echo(f"skipped: {reason}", err=True)


# --- estimate: the dataset-free calculator ------------------------------------------------------------------

_STACK_NAMES = ("ftbroker", "hf", "unsloth", "axolotl", "llamafactory", "litgpt", "torchtune")  # estimate.stacks.STACKS


@cli.command("estimate")
@click.argument("model")
@click.option("--method", required=True, type=click.Choice(["full", "lora", "qlora"]), help="Fine-tuning method.")
@click.option("--stack", default="ftbroker", show_default=True, type=click.Choice(_STACK_NAMES),
              help="The trainer that runs it: how it stores tensors (loss, attention, kernels, optimizer) and its "
                   "defaults for every setting not given. ftbroker: `ftbroker run --backend local`.")
@click.option("--seq-len", type=_Bounded("seq_len"), help="Tokens per sequence (default: the stack's, 2048).")
@click.option("--batch", "micro_batch", type=_Bounded("micro_batch"),
              help="Micro-batch per GPU (default: the stack's; ftbroker 4).")
@click.option("--grad-accum", "grad_accumulation", default=1, show_default=True, type=_Bounded("grad_accum"),
              help="Micro-batches per optimizer step (accumulating keeps the gradients alive during backward).")
@click.option("--lora-r", type=_Bounded("lora_r"), help="LoRA rank (default: the stack's; ftbroker 16).")
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
    import json

    from ftbroker.estimate import estimate

    from ftbroker.pricing.catalog import load_catalog
    from ftbroker.your_runs import corrections

    catalog = load_catalog()
    result = estimate(model, method=method, gpu=gpu, stack=stack, seq_len=seq_len, micro_batch=micro_batch,
                      grad_accumulation=grad_accumulation, lora_r=lora_r, targets=targets or None,
                      grad_checkpointing=grad_checkpointing, optimizer=optimizer, precision=precision,
                      sharding=sharding, catalog=catalog, corrections=corrections(catalog))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif explain:
        from ftbroker.tables import hanging

        console = _console()  # wrapped for a terminal; whole lines into a pipe or file, for grep
        click.echo(hanging(result.explain(), console.width) if console.is_terminal else result.explain())
    else:
        _print_estimate(result, stack)


def _print_estimate(result, stack: str) -> None:
    from rich import box
    from rich.table import Table

    data = result.to_json()
    console = _console()
    s = result.setup
    console.print(f"[bold]{data['model']} {data['method']}[/bold] ({stack} stack): micro-batch {s.micro_batch} x "
                  f"{s.seq_len} tokens, {s.precision}, {s.optimizer_kind.name}"
                  f"{', checkpointing' if s.grad_checkpointing else ''}"
                  f"{f', accumulating {s.grad_accumulation}' if s.grad_accumulation > 1 else ''}", highlight=False)
    console.print(f"peak memory per GPU (during the {result.memory.phase})", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("term")
    table.add_column("GiB", justify="right")
    for name, gib in result.memory.components().items():
        if gib:
            table.add_row(name.replace("_", " "), f"{gib:.2f}")
    table.add_row("[bold]total[/bold]", f"[bold]{result.memory.total:.2f}[/bold]")
    console.print(table)
    if result.gpu is not None:
        console.print(f"{'fits' if result.fits else '[red]does not fit[/red]'} on {result.setup.n_gpus} x "
                      f"{result.gpu.name} ({result.gpu.memory_gib:g} GiB); largest micro-batch at "
                      f"{result.setup.seq_len} tokens: {result.max_micro_batch}; longest sequence at micro-batch "
                      f"{result.setup.micro_batch}: {result.max_seq_len}")
        tps = data["tokens_per_s"]
        console.print(f"tokens/s: {tps['low']:,.0f} - {tps['high']:,.0f} (expected {tps['expected']:,.0f})" if tps
                      else f"tokens/s: unknown ({result.throughput.reason})")
    if result.calibration.your_runs:
        console.print(f"{result.calibration.your_runs} (ftbroker catalog calibration)")
    console.print("run with --explain for the derivation")


# --- plan and catalog (rendering in ftbroker.render; the work in ftbroker.planning, planner, catalog) ---------

@cli.command()
@click.argument("data")  # no click.Path check: the data layer says precisely what is wrong with the file
@click.option("--model", "models", multiple=True, metavar="M",
              help="Model to plan for (repeatable): catalog name, HF repo id, local model folder, config.json, "
                   "or a managed model (gpt-4o-mini). Default: every managed offer; GPU routes for Llama-3.1-8B "
                   "and Qwen2.5-7B.")
@click.option("--method", type=click.Choice(["full", "lora", "qlora"]), help="Training method. Default: all.")
@click.option("--epochs", type=_Bounded("epochs"),
              help="Passes over the data, the same for every route. Default: the number the plan recommends for the "
                   "dataset's size (OpenAI's auto rule: 3, more for 25 examples or fewer, fewer for over 8,333); "
                   "a provider's own default is a note.")
@click.option("--n-evals", type=_Bounded("n_evals"),
              help="Evaluations over the validation file (providers that bill validation tokens per evaluation).")
@click.option("--max-seq-len", type=_Bounded("max_seq_len"),
              help="Longest training sequence, in tokens; longer examples are cut (GPU routes; default 2048).")
@click.option("--tokenizer", metavar="NAME",
              help="Count the open-model routes' tokens with this tokenizer: o200k_base, cl100k_base or a local "
                   "tokenizer folder (default: each model's own, else a labelled estimate).")
@click.option("--gpu", metavar="NAME[:COUNT]",
              help="Your GPU for the local routes, from the catalog, e.g. RTX-4090 or H100:8. Default: FTBROKER_GPU, "
                   "else the GPUs nvidia-smi reports; none: no local routes.")
@click.option("--lora-r", type=_Bounded("lora_r"), help="LoRA rank.")
@click.option("--validation-file", metavar="FILE", help="A held-out JSONL file (default on GPU routes: 10% of DATA).")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file (.toml or .csv) that adds or replaces rows (repeatable).")
@click.option("--all", "all_instances", is_flag=True,
              help="Every route in the tables, and every cloud instance type (not only the cheapest per GPU type and "
                   "cloud).")
@click.option("--stack", default="ftbroker", show_default=True, type=click.Choice(_STACK_NAMES),
              help="The trainer the GPU routes' figures are for (how it stores tensors, its defaults); another than "
                   "ftbroker prices your own trainer, which `ftbroker run` does not run.")
@click.option("--max-cost", type=_Amount("--max-cost"), metavar="USD",
              help="Your budget: routes over it are marked and never a best route.")
@click.option("--deadline", "deadline_hours", type=_Amount("--deadline"), metavar="HOURS",
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
    from ftbroker.planning import plan as make_plan

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
    from ftbroker import render

    doc = result.to_json()
    _keep_plan(doc)
    if as_json:
        click.echo(render.to_json_text(doc))
    elif as_csv:
        click.echo(render.plan_csv(result), nl=False)
    else:
        render.print_plan(result, _console(), all_routes=all_instances, verbose=verbose)
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


@cli.group()
def catalog():
    """Show or check the prices, GPUs and models in force.

    The shipped catalog, your override file ($FTBROKER_HOME/catalog.toml, else catalog.toml in your config
    folder) and any --catalog files: a row with an existing key replaces the fields it gives, a new key adds one.
    """


@catalog.command("show")
@click.option("--kind", type=click.Choice(["gpus", "instances", "managed", "models"]), help="Only this kind of row.")
@click.option("--catalog", "catalog_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="Extra catalog file to merge (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_show(kind, catalog_files, as_json):
    """Show the catalog rows in force, their sources and age.

    Prices not checked against their source for 90 days are flagged (!). Example: ftbroker catalog show --kind gpus
    """
    from ftbroker import clock, render
    from ftbroker.pricing.catalog import load_catalog

    cat = load_catalog(catalog_files)
    kinds = (kind,) if kind else render.CATALOG_KINDS
    if as_json:
        click.echo(render.to_json_text(render.catalog_json(cat, kinds, clock.today())))
    else:
        render.print_catalog(cat, kinds, clock.today(), _console())


@catalog.command("update")
@click.option("--cloud", "clouds", multiple=True, metavar="CLOUD",
              help="Only this cloud (repeatable): aws, gcp, lambda, nebius, vast, fluidstack, cudo. Default: all.")
@click.option("--mirror", metavar="URL", help="Fetch through a mirror that answers GitHub's API and raw-file paths.")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_update(clouds, mirror, as_json):
    """Refresh cloud GPU prices from SkyPilot's published catalogs.

    Reads each cloud's vms.csv at its newest commit in github.com/skypilot-org/skypilot-catalog (over the network),
    keeps the cheapest region of each GPU instance type, and writes the rows with that commit and its date to your
    catalog folder (catalog/ beside your override file), where every plan reads them. Prints what changed. Nothing
    is written unless every cloud asked for was read and validates.

    \b
    Example:
      ftbroker catalog update --cloud aws --cloud gcp
    """
    from ftbroker import clock, render
    from ftbroker.errors import InputError
    from ftbroker.pricing import refresh
    from ftbroker.pricing.catalog import load_catalog

    unknown = sorted(set(clouds) - set(refresh.CLOUDS))
    if unknown:
        raise InputError(f"--cloud {', '.join(unknown)}: SkyPilot's current catalog has no such cloud "
                         f"(valid: {', '.join(refresh.CLOUDS)})")
    today = clock.today()
    before = load_catalog()
    updates = []
    for cloud in clouds or refresh.CLOUDS:
        fetched = refresh.fetch(cloud, mirror=mirror)
        rows, skipped = refresh.parse_vms(fetched, before, today)
        updates.append(refresh.Update(fetched, rows, skipped, refresh.changes(cloud, before.instances, rows)))
    written = refresh.install(updates)
    if as_json:
        click.echo(render.to_json_text({"today": today.isoformat(), "written": [str(p) for p in written],
                                        "clouds": [u.to_json() for u in updates]}))
    else:
        render.print_catalog_update(updates, written, _console())


@catalog.command("calibration")
@click.option("--json", "as_json", is_flag=True, help="Print only JSON on stdout.")
def catalog_calibration(as_json):
    """Show how your own runs correct the estimates: per GPU, method and stack.

    Every succeeded job whose trainer measured it on the GPU it was estimated for (peak VRAM, tokens/s) keeps the
    estimate beside the measurement in the ledger; `ftbroker estimate`, `plan` and `run` scale their figures for
    that GPU, method and stack by the median measured/estimated ratio, shrunk toward 1 as if 2 more runs had
    matched the estimate, at most halved or doubled. Example: ftbroker catalog calibration --json
    """
    from ftbroker import render
    from ftbroker.estimate import measured
    from ftbroker.pricing.catalog import load_catalog
    from ftbroker.your_runs import corrections

    found = corrections(load_catalog())
    if as_json:
        click.echo(render.to_json_text({"rule": {"prior_runs": measured.PRIOR_RUNS, "max_factor": measured.MAX_FACTOR},
                                        "corrections": found.to_json()}))
    else:
        render.print_calibration(found, _console())


@catalog.command("validate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
def catalog_validate(file):
    """Check the catalog in force, or FILE merged over it.

    Exit status 2 with FILE:LINE: field: problem for each bad row. Example: ftbroker catalog validate my.toml
    """
    from ftbroker import clock
    from ftbroker.pricing.catalog import load_catalog, user_override_path

    cat = load_catalog([file] if file else ())
    checked = file or (user_override_path() if user_override_path().is_file() else "shipped catalog")
    click.echo(f"ok: {checked}: {len(cat.gpus)} GPUs, {len(cat.instances)} instances, {len(cat.managed)} managed "
               f"offers, {len(cat.models)} models in force (catalog {cat.version})")
    stale = cat.stale_rows(clock.today())
    if stale:
        click.echo(f"warning: {len(stale)} priced row(s) not checked against their source for 90 days (ftbroker "
                   "catalog show; ftbroker catalog update refreshes the cloud prices)", err=True)


_WHOLE_LINES = 1_000_000  # "columns" of a pipe or a file: nothing is ever cut to fit


def _console(*, stderr: bool = False):
    """A console for people: fitted to the terminal's width; into a pipe or a file (grep, scripts, a log), whole
    lines, with no name cut and no column left out, unless COLUMNS asks for a width (rich's rule)."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = _WHOLE_LINES
    return console


# --- validate: one dataset file against every provider's rules ---------------------------------------------

@cli.command()
@click.argument("data")
@click.option("--tokenizer", default="cl100k_base", show_default=True, metavar="NAME",
              help="o200k_base, cl100k_base, an OpenAI model name, or a local tokenizer or model folder.")
@click.option("--max-seq-len", type=_Bounded("seq_len"), metavar="N",
              help="Count the examples longer than N tokens (a trainer would cut them).")
@click.option("--json", "json_mode", is_flag=True, help="Print the report as JSON (only JSON on stdout).")
def validate(data: str, tokenizer: str, max_seq_len: int | None, json_mode: bool) -> None:
    """Check a JSONL dataset against provider rules; count its tokens.

    Exit status 2 when the file has errors (printed as FILE:LINE: message); warnings, rules that only rule out one
    provider, and advice do not fail it.

    \b
    Example:
      ftbroker validate examples/data/support_chats.jsonl --tokenizer o200k_base
    """
    import json

    from ftbroker.data import analyze
    from ftbroker.tokens import resolve

    counter = resolve(tokenizer)
    report = analyze(data, counters=[counter], limits={counter.key: max_seq_len} if max_seq_len else {})
    if json_mode:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif report.examples or not report.errors:  # a file that could not be read at all: only its error
        click.echo(_dataset_text(report))
    report.raise_for_errors()


def _dataset_text(report) -> str:
    plural = "s" if report.examples != 1 else ""
    lines = [f"{report.path}: {report.format}, {report.examples:,} valid example{plural}, "
             f"{report.size_bytes:,} bytes"]
    if report.messages_per_example:
        m = report.messages_per_example
        lines.append(f"messages per example: mean {m.mean:g}, p50 {m.p50:g}, min {m.min:g}, max {m.max:g}")
    for stats in report.tokens.values():
        s = stats.per_example
        lines.append(f"tokens ({stats.tokenizer}{', exact' if stats.exact else ''}): {stats.total:,} in all, "
                     f"{stats.trained:,} trained; per example min {s.min:g}, mean {s.mean:g}, p50 {s.p50:g}, "
                     f"p95 {s.p95:g}, max {s.max:g}"
                     + (f"; {stats.over_limit:,} over {stats.limit:,}" if stats.limit else ""))
    for title, issues in [("warnings", report.warnings)] + [
            (f"{provider} rules (they rule {provider} out)", issues)
            for provider, issues in report.provider_issues.items()]:
        if issues:
            lines.append(f"{title}:")
            lines += [f"  {issue}" for issue in issues]
    if report.advice:
        lines.append("advice:")
        lines += [f"  {a.message}: {a.reason}; {a.suggestion}" for a in report.advice]
    return "\n".join(lines)


# ftbroker eval lives with the rest of the evaluation (ftbroker.evaluation); its module imports only click.
from ftbroker.evaluation.cli import eval_command

cli.add_command(eval_command)


def main() -> None:
    cli(prog_name="ftbroker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
