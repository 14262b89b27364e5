"""The local backend: trains on this machine by running the trainer recipe as its own process.

The trainer (``python -m ftbroker.backends.local.train RUN_DIR [--resume]``) runs detached, in its own session,
so closing the terminal, Ctrl-C or a crash of the CLI does not stop it. Its run folder is
``FTBROKER_HOME/runs/<job id>``: ``config.json`` (written here), ``events.jsonl`` (appended by the trainer),
``trainer.log`` (its stdout and stderr), ``checkpoints/``, ``output/`` and finally ``result.json``.

``train_config`` is the one mapping from a JobSpec to the trainer's ``TrainConfig``: a setting the spec leaves
unset is left to the trainer's default. ``prepare`` resolves the job's model once (``routes.model_request``) and
builds its config once (``TrainerJob``): ``validate`` counts with that model's tokenizer, ``quote`` (the pre-flight,
``preflight.py``) estimates that very config, ``submit`` writes it, with the job's id, as the run folder's
config.json, which every launch of the job then runs. A catalog model name reaches the trainer as the model's
Hugging Face repo (``ModelRequest.load_id``); the job keeps both (``spec.model`` and ``remote["base_model"]``). The trainer's events become the job's events
(its final ``done`` / ``error`` / ``cancelled`` line decides the status), its ``result.json`` the job's Result,
and ``raw.measured`` (peak memory, tokens/s) the measured resources the ledger keeps beside the estimate.

The ledger keeps the trainer's pid with the process's start time, so a pid reused by another program is never
mistaken for the trainer. A trainer that vanished without a final event (kill -9, out of memory) is reported
failed with its last event and the tail of its log; ``resume`` relaunches it with ``--resume``.

One trainer per run folder (``runlock``): the launch takes the folder's lock and hands it to the trainer, which
holds it for its life; a second launch on the folder is refused before it starts anything. ``trainer.pid`` names the
trainer holding it, so a trainer the ledger does not know of (started by a CLI killed before the ledger learnt its
pid, or by hand) is still seen: ``find`` adopts it for a job never confirmed submitted, ``poll`` and ``cancel``
see it beside the recorded one.

On more than one GPU the trainer is started through ``accelerate launch`` with a config written to the run folder:
DDP for LoRA / QLoRA (each GPU holds the model), FSDP (or DeepSpeed ZeRO-3, if asked) for full fine-tuning.
POSIX only (sessions and process groups).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftbroker import bounds, clock
from ftbroker.backends.base import (GPU_ENV, Capabilities, Environment, Gpu, Quote, Submission, Tracker, Update,
                                    detect_gpus, split_list)
from ftbroker.backends.local import noise, runlock
from ftbroker.backends.local.config import (CONFIG_NAME, RUNS_DIR, TRACKER_PACKAGES, TRAINER_PACKAGES, TrainConfig,
                                            TrackerName, launch_strategy)
from ftbroker.backends.local.outputs import (CHECKPOINTS_DIR, EVENT_FIELDS, EVENTS_NAME, FINAL_KINDS, RESULT_NAME,
                                             write_atomic)
from ftbroker.errors import DatasetError, ExtraNotInstalledError, FtBrokerError, InputError, JobError, UnknownNameError
from ftbroker.estimate.stacks import FTBROKER
from ftbroker.jobs import TRACKER_PREFIX, Artifact, Event, Job, JobStatus, MetricPoint, Progress, Result
from ftbroker.routes import ModelRequest, model_request
from ftbroker.private import private_file, private_folder
from ftbroker.spec import JobSpec
from ftbroker.vocabulary import METHODS

TRAINER_MODULE = "ftbroker.backends.local.train"
EXPORT_LOG = "export.log"  # in the run folder: what the libraries say while a model is merged and written
_LOG_TAIL_LINES = 5

# The detacher: takes the run folder's lock (``runlock``; "busy" when a trainer holds it), starts the trainer in a new
# session holding it, with its output in trainer.log, notes the trainer's pid in trainer.pid (found again if the CLI
# dies before the ledger has it), prints the pid and exits, so the trainer is nobody's child here (no zombie, no
# wait) and outlives the CLI.
_DETACH = (
    "import os, subprocess, sys\n"
    "from ftbroker.backends.local import runlock\n"
    "os.umask(0o077)\n"  # private by default: the trainer's files are 0600, its folders 0700 (ftbroker.private)
    "lock = runlock.take('.')\n"
    "if lock is None:\n"
    "    print('busy')\n"
    "    sys.exit()\n"
    "log = open('trainer.log', 'ab')\n"
    "os.fchmod(log.fileno(), 0o600)\n"  # a log an earlier version left readable
    "proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,"
    " start_new_session=True, pass_fds=(lock,), env=runlock.handed_down(lock))\n"
    "runlock.note(lock, proc.pid)\n"
    "print(proc.pid)\n"
)
# How long a launch waits while the run folder is held by no trainer it can name: one that has just taken the lock
# and not yet noted its pid, or the threads of a trainer killed a moment ago, still ending (its pid already a zombie).
_HELD_WAIT_S = 60.0
MLRUNS_DIR = "mlruns"  # FTBROKER_HOME/mlruns: the MLflow file store of report_to=mlflow when none is named


class TrackerOptions(BaseModel):
    """The experiment trackers of the local trainer: options of every backend that runs it (local, and the clouds
    that run it remotely, which pass ``trackers()`` on to their ``LocalOptions``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    report_to: list[TrackerName] = Field(default_factory=list, description="experiment trackers the trainer logs to: "
                                     "wandb, mlflow, tensorboard (a list, or comma-separated)")
    tracker_project: str | None = Field(None, min_length=1, description="the W&B project / MLflow experiment "
                                        "(default: WANDB_PROJECT, MLFLOW_EXPERIMENT_NAME, else ftbroker)")
    tracking_uri: str | None = Field(None, min_length=1, description="MLflow's tracking URI (default: "
                                     "MLFLOW_TRACKING_URI, else FTBROKER_HOME/mlruns on this machine)")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        return split_list(value)

    def trackers(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TrackerOptions.model_fields}


class LocalOptions(TrackerOptions):
    """``backend_options`` of the local backend."""

    gpus: int | None = Field(None, ge=0, le=bounds.BOUNDS["gpus"].high,
                             description="GPUs to train on; default: every GPU found (0: CPU)")
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="multi-GPU strategy; auto: DDP for LoRA/QLoRA, FSDP for full fine-tuning")
    python: str | None = Field(None, description="interpreter for the trainer (e.g. a venv with CUDA torch)")
    trainer: str | None = Field(None, description="your own recipe script speaking the trainer contract")
    merge: bool = Field(False, description="also write a merged model (LoRA / QLoRA) after training")
    cancel_grace_s: float = Field(120.0, gt=0, description="how long cancel waits for a clean stop")
    gpu: str | None = Field(None, description="the GPU to plan for, NAME[:COUNT] from the catalog, instead of "
                                              "the GPUs found (also FTBROKER_GPU); the trainer uses what torch finds")
    @field_validator("gpu")
    @classmethod
    def _gpu_form(cls, value: str | None) -> str | None:
        from ftbroker.estimate import parse_gpu_count

        if value is not None:
            try:
                parse_gpu_count(value)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclass(frozen=True)
class TrainerJob:
    """A job as the local trainer runs it, prepared once per job (``LocalBackend.prepare``): its model resolved once
    and the trainer's config built once (its ``model`` what the trainer loads). ``validate`` counts with the model's
    tokenizer, ``quote`` prices the config, ``submit`` writes it with the job's id; a cloud backend stages it."""

    model: ModelRequest
    config: TrainConfig


class LocalBackend:
    """Training on this machine (GPU, or CPU for tiny models) with transformers + peft + trl."""

    name = "local"
    capabilities = Capabilities(
        methods=frozenset(METHODS),
        data_formats=frozenset({"chat", "prompt_completion", "text"}),
        unsupported={"format.preference": "the local trainer does supervised fine-tuning only (no DPO yet)"},
        managed=False,
        poll_interval_s=1.0,
        # the trainer's packages, and psutil to watch its process from here
        requires={package: "local" for package in (*TRAINER_PACKAGES, "psutil")},
    )
    Options = LocalOptions

    # --- its routes in a plan (ftbroker.routes.RouteSource): the user's GPU ---

    @classmethod
    def token_needs(cls, catalog: Any, options: Any) -> list[Any]:
        from ftbroker.backends import gpu_routes

        return gpu_routes.token_needs(catalog, options)

    @classmethod
    def routes(cls, context: Any) -> list[Any]:
        from ftbroker.backends import gpu_routes

        return gpu_routes.local_routes(context)

    @classmethod
    def plan_notes(cls, context: Any) -> list[str]:
        from ftbroker.backends import gpu_routes

        return gpu_routes.gpu_notes(context, local=True)

    def __init__(self, options: LocalOptions, *, home: Path):
        self.options = options
        self.runs = home / RUNS_DIR
        self._validation_stats: dict[str, Any] = {}  # spec -> its validation file's TokenStats (validate, for quote)
        self._prepared: dict[str, TrainerJob] = {}  # spec -> the job as the trainer runs it (``prepare``)

    # --- before submission ---

    def prepare(self, spec: JobSpec, catalog: Any = None) -> TrainerJob:
        """The job as the trainer runs it, made once per spec: its model resolved (a catalog row without a repo to
        load is refused here, before anything runs) and the trainer's config built."""
        key = spec.model_dump_json()
        if key not in self._prepared:
            if catalog is None:
                from ftbroker.pricing.catalog import load_catalog

                catalog = load_catalog()
            model = model_request(catalog, spec.model)
            self._prepared[key] = TrainerJob(model, train_config(spec, self.options, base_model=model.trainer_model()))
        return self._prepared[key]

    def _check_trackers(self) -> None:
        """A tracker's package missing from this interpreter (the trainer's, unless ``python`` names another) is
        refused before the job starts, not when the trainer reaches it."""
        if self.options.python is not None:
            return  # the trainer checks its own interpreter
        for tracker in self.options.report_to:
            if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
                raise ExtraNotInstalledError(TRACKER_PACKAGES[tracker], "track" if tracker != "wandb" else "wandb",
                                             f"report_to={tracker}")

    def validate(self, spec: JobSpec):
        """Check the dataset (and the validation set), counted with the tokenizer ``ftbroker plan`` counts the
        model's tokens with (``routes.model_tokenizer``: its local folder, else its cached or estimated hub
        tokenizer), so the quote and the plan read the same lengths."""
        from ftbroker.data.analysis import analyze
        from ftbroker.tokens.resolve import resolve

        job = self.prepare(spec)
        self._check_trackers()
        need = job.model.tokenizer()  # a hub id the catalog lacks: its repo's; a folder it cannot read: the folder's
        counter = resolve(need.tokenizer, hf_repo=need.hf_repo, family=need.family)
        limits = {counter.key: job.config.max_seq_len}
        report = analyze(spec.dataset, counters=[counter], limits=limits, rules=())  # no provider's rules
        issues = list(report.errors)
        if spec.validation is not None:
            validation = analyze(spec.validation, counters=[counter], rules=())
            issues += validation.errors
            self._validation_stats[spec.model_dump_json()] = validation.tokens.get(counter.key)
        if issues:
            raise DatasetError(issues)
        return report

    def validation_stats(self, spec: JobSpec) -> Any:
        """The validation file's TokenStats that ``validate`` counted for ``spec`` (None: no file, or not yet)."""
        return self._validation_stats.get(spec.model_dump_json())

    def quote(self, spec: JobSpec, dataset, env: Environment) -> Quote:
        """The estimator's peak VRAM, time and electricity cost for the config the trainer will get, on the GPUs
        declared (``gpu`` option, FTBROKER_GPU) or found (``preflight.local_gpus``, as ``ftbroker plan``); the CPU
        when there are none."""
        from ftbroker.backends.local.preflight import local_gpus, local_quote

        if env.catalog is None:
            raise FtBrokerError("no catalog is at hand to look the GPUs and the model up with")
        job = self.prepare(spec, env.catalog)
        gpus = local_gpus(env.catalog, env.gpus, self.options.gpu or env.declared_gpu, use=self.options.gpus,
                          today=env.today, declared_by="--gpu" if self.options.gpu else GPU_ENV)
        notes: list[str] = []
        arch = None
        if gpus:
            try:
                arch = job.model.need_arch()
            except UnknownNameError as exc:  # a hub id the catalog lacks: the trainer can still download it
                notes.append(f"no memory, time or cost estimate: {exc}")
        stats = next(iter(getattr(dataset, "tokens", {}).values()), None)
        # the user's own recipe is another trainer: its measurements must not correct estimates of this one
        stack = "own recipe" if self.options.trainer else FTBROKER.name
        return local_quote(job.config, arch, gpus, stats, self.validation_stats(spec),
                           distributed=self.options.distributed, notes=notes, corrections=env.corrections,
                           stack=stack)

    # --- the process ---

    def find(self, job: Job) -> Submission | None:
        """The trainer an interrupted submission already started in the job's run folder (``trainer.pid``), running
        or ended: adopted, never started twice; its events then say how it went."""
        trainer = _trainer_noted(self.run_dir(job.id), ended_too=True)
        return Submission(remote=trainer, status=JobStatus.RUNNING, reused=True) if trainer else None

    def submit(self, job: Job, tracker: Tracker) -> Submission:
        found = self.find(job)
        if found is not None:
            return found
        run_dir = self.run_dir(job.id)
        private_folder(self.runs)
        private_folder(run_dir)
        config = self.prepare(job.spec).config.model_copy(update={"job_id": job.id})
        if "mlflow" in config.report_to and config.tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow's own default is a database in the working folder (the run folder): one store for every job
            config = config.model_copy(update={"tracking_uri": (self.runs.parent / MLRUNS_DIR).as_uri()})
        write_atomic(run_dir / CONFIG_NAME, config.model_dump_json(indent=2) + "\n")
        # A launch that got as far as a checkpoint before the CLI crashed continues from it.
        resume = any((run_dir / CHECKPOINTS_DIR).glob("*"))
        return self._launch(job, run_dir, tracker, resume=resume)

    def resume(self, job: Job, tracker: Tracker) -> Submission:
        running = job.remote if _alive(job.remote) else _trainer_noted(self.run_dir(job.id))
        if running:
            raise JobError(f"job {job.id} is still running (pid {running['pid']})")
        run_dir = self._existing_run_dir(job, "resumed")
        (run_dir / RESULT_NAME).unlink(missing_ok=True)  # the ended attempt's; the new one writes its own
        return self._launch(job, run_dir, tracker, resume=True)

    def _launch(self, job: Job, run_dir: Path, tracker: Tracker, *, resume: bool) -> Submission:
        """Start the trainer on the config the run folder holds (``submit`` wrote it: every launch runs the same)."""
        config = TrainConfig.model_validate_json((run_dir / CONFIG_NAME).read_text())
        command = self.command(config, run_dir, resume=resume, gpu_count=len(self._use_gpus(detect_gpus())))
        deadline = time.monotonic() + _HELD_WAIT_S
        while (pid := _detach(command, run_dir)) is None:  # the run folder is held
            holder = _trainer_noted(run_dir)
            if holder is not None:  # a trainer runs there already (started by hand, or by another launch)
                tracker.remember(**holder)
                if resume:
                    raise JobError(f"job {job.id} is still running: a trainer (pid {holder['pid']}) holds {run_dir}")
                return Submission(remote=holder, status=JobStatus.RUNNING, reused=True)
            if time.monotonic() > deadline:
                raise JobError(f"{run_dir} is still held (the lock on its {runlock.PID_NAME}) by a process that is not "
                               "its trainer, e.g. the last trainer's, still ending; try again in a moment")
            time.sleep(0.1)  # a trainer that took it has yet to note its pid, or the last one's threads are ending
        remote = {"pid": str(pid), "pid_started": _start_time(pid), **_run_handles(run_dir), "cancel_requested": ""}
        tracker.remember(**remote)
        tracker.event(f"trainer started (pid {pid}){' from the last checkpoint' if resume else ''}",
                      kind="status", data={"command": command})
        return Submission(remote=remote, status=JobStatus.RUNNING)

    def command(self, config: TrainConfig, run_dir: Path, *, resume: bool, gpu_count: int) -> list[str]:
        """The trainer's command line for ``config``: plain Python on one device, ``accelerate launch`` on several
        GPUs."""
        return run_command(self.options.python or sys.executable, config, run_dir,
                           resume=resume, gpu_count=gpu_count, distributed=self.options.distributed,
                           script=str(Path(self.options.trainer).expanduser().resolve()) if self.options.trainer
                           else None)

    def run_dir(self, job_id: str) -> Path:
        return self.runs / job_id

    def _existing_run_dir(self, job: Job, purpose: str) -> Path:
        run_dir = self.run_dir(job.id)
        if not (run_dir / CONFIG_NAME).is_file():
            raise JobError(f"job {job.id} has no run folder at {run_dir} (deleted, or FTBROKER_HOME has moved); "
                           f"it cannot be {purpose}")
        return private_folder(run_dir)  # one an earlier version left readable

    def _use_gpus(self, found: Sequence[Gpu]) -> list[Gpu]:
        wanted = self.options.gpus
        return list(found) if wanted is None else list(found)[:wanted]

    # --- following ---

    def poll(self, job: Job) -> Update:
        """The trainer's new events; once its process is gone, the status its final event gives (``done``,
        ``error``, ``cancelled``), or failed with the last event and the log's tail if it wrote none."""
        run_dir = self.run_dir(job.id)
        # before reading, so every event of a trainer that just ended is read
        alive = _alive(job.remote)
        unknown = None if alive else _trainer_noted(run_dir)  # one the ledger does not know of: adopted
        offset = int(job.cursor or 0)
        events, offset = read_events(run_dir / EVENTS_NAME, offset)
        trackers = tracker_records(events)
        found = {**trainer_records(events, job.progress), "cursor": str(offset), "remote": trackers}
        if alive or unknown:
            return Update(status=JobStatus.RUNNING, **{**found, "remote": {**trackers, **(unknown or {})}})
        if not job.remote.get("pid"):  # recorded, never launched (the CLI died before the launch)
            return Update(status=job.status, cursor=found["cursor"])
        last = _last_event(run_dir / EVENTS_NAME, events)
        final = FINAL_KINDS.get(last.get("kind")) if last else None
        if final is None and job.remote.get("cancel_requested"):
            final = JobStatus.CANCELLED  # killed after the grace period: it never wrote its final line
        if final is None:
            return Update(status=JobStatus.FAILED, error=_failure(run_dir, last), **found)
        result = _read_json(run_dir / RESULT_NAME) or {}
        return Update(status=final, error=str(last.get("message") or "the trainer failed")
                      if final is JobStatus.FAILED else None,
                      output_model=result.get("output_model"), trained_tokens=result.get("trained_tokens"),
                      resources=measured_resources(result), **found)

    def cancel(self, job: Job) -> Update:
        """SIGTERM to every trainer of the job (the recorded one, and one holding its run folder that the ledger does
        not know of): it checkpoints and exits; SIGKILL after the grace period."""
        trainers = [t for t in (job.remote, _trainer_noted(self.run_dir(job.id))) if t and _alive(t)]
        trainers = list({t["pid"]: t for t in trainers}.values())
        for trainer in trainers:
            _signal(int(trainer["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + self.options.cancel_grace_s
        while any(_alive(t) for t in trainers) and time.monotonic() < deadline:
            time.sleep(0.2)
        for trainer in trainers:
            if _alive(trainer):
                _signal(int(trainer["pid"]), signal.SIGKILL)
        while any(_alive(t) for t in trainers):
            time.sleep(0.05)
        update = self.poll(job.model_copy(update={"remote": {**job.remote, "cancel_requested": "1"}}))
        if update.status is JobStatus.SUCCEEDED:  # it finished before the signal landed
            return update
        return replace(update, status=JobStatus.CANCELLED, remote={"cancel_requested": "1"}, error=None)

    def result(self, job: Job) -> Result:
        return run_result(self.run_dir(job.id), job)

    def export(self, job: Job, fmt: str, dest: Path) -> list[Artifact]:
        """Write the trained model as an Ollama Modelfile folder (FROM a merged folder) or a merged Hugging Face
        folder; the ExportError of a chat format Ollama cannot be given is a bad-input error."""
        from ftbroker.backends.local import export

        run_dir = self._existing_run_dir(job, "exported")
        for package in ("torch", "transformers", "peft"):  # merging loads the model
            try:
                importlib.import_module(package)
            except ImportError as exc:
                raise ExtraNotInstalledError(package, "local", "exporting a local job's model") from exc
        if fmt not in ("merged", "ollama"):
            raise InputError(f"unknown export format {fmt!r}: ollama or merged")
        with noise.kept_in(private_file(run_dir / EXPORT_LOG)):  # the terminal keeps ftbroker's messages only
            written = export.export_merged(run_dir, dest) if fmt == "merged" else export.export_ollama(run_dir, dest)
        if fmt == "merged":
            return [Artifact(kind="merged_model", uri=str(written), description="merged Hugging Face folder")]
        merged = Path(dest) / "model"
        return ([Artifact(kind="merged_model", uri=str(merged), description="merged model for Ollama")]
                if merged.is_dir() else []) + [
            Artifact(kind="file", uri=str(written), description=f"Ollama Modelfile: ollama create NAME -f {written}")]


# --- the run folder's files -----------------------------------------------------------------------------------

def train_config(spec: JobSpec, options: LocalOptions, base_model: str | None = None) -> TrainConfig:
    """The trainer's config for ``spec``: the one mapping from JobSpec to TrainConfig (``LocalBackend.prepare``
    calls it once per job; a plan once per model and method). A setting the spec leaves unset (None) is left out,
    so the trainer's default applies and the quote estimates what will really run. ``base_model``: what the trainer
    loads (``ModelRequest.load_id``), when it is not ``spec.model`` itself."""
    hp, lora = spec.hyperparameters, spec.lora
    fields = {"model": base_model or spec.model, "dataset": spec.dataset,
              "validation_dataset": spec.validation, "method": spec.method, "epochs": hp.epochs,
              "learning_rate": hp.learning_rate, "micro_batch_size": hp.micro_batch_size,
              "gradient_accumulation_steps": hp.gradient_accumulation_steps, "max_seq_len": hp.max_seq_len,
              "packing": hp.packing,
              "gradient_checkpointing": hp.gradient_checkpointing, "seed": hp.seed,
              "early_stopping_patience": hp.early_stopping_patience, "merge": options.merge,
              "device": "cpu" if options.gpus == 0 else None,
              "report_to": list(options.report_to) or None, "tracker_project": options.tracker_project,
              "tracking_uri": options.tracking_uri,
              "lora": {k: v for k, v in lora.model_dump().items() if v is not None}}
    return TrainConfig.model_validate({k: v for k, v in fields.items() if v is not None})


def run_command(python: str, config: TrainConfig, run_dir: Path, *, resume: bool, gpu_count: int,
                distributed: str = "auto", script: str | None = None) -> list[str]:
    """The command that trains ``run_dir`` (its config.json is ``config``) on this machine: plain Python on one
    device, ``accelerate launch`` with a config written to the run folder on several GPUs. ``--backend local`` and
    the EC2 instance's agent start the same command."""
    tail = [str(run_dir), *(["--resume"] if resume else [])]
    if gpu_count <= 1:
        return trainer_command(python, tail, script=script)
    path = run_dir / "accelerate.yaml"
    import yaml

    write_atomic(path, yaml.safe_dump(accelerate_config(config, gpu_count, distributed), sort_keys=False))
    return trainer_command(python, tail, script=script, launch=["--config_file", str(path)])


def trainer_command(python: str, tail: Sequence[str], *, script: str | None = None,
                    launch: Sequence[str] = ()) -> list[str]:
    """The trainer's command line: ``python -m TRAINER`` (or a recipe script speaking its contract) with ``tail``
    (the run folder, ``--resume``); with ``launch`` (``accelerate launch``'s own arguments: its config file, and on
    several machines their count, this one's rank and the head's address) under ``accelerate launch``."""
    target = [script] if script else ["-m", TRAINER_MODULE]
    if not launch:
        return [python, *target, *tail]
    return [python, "-m", "accelerate.commands.launch", *launch, *target, *tail]


def accelerate_config(config: TrainConfig, gpu_count: int, distributed: str = "auto", *,
                      machines: int = 1) -> dict[str, Any]:
    """An ``accelerate launch`` config for training ``config`` on ``gpu_count`` GPUs of each of ``machines``
    machines (this one alone by default; on several, each launch adds its rank and the head's address).

    LoRA and QLoRA replicate the (small, or 4-bit) base model on every GPU: DDP. Full fine-tuning shards
    weights, gradients and optimizer states: FSDP2 by default, DeepSpeed ZeRO-3 when asked for.
    """
    processes = gpu_count * machines
    strategy = launch_strategy(config.method, processes, distributed)
    launch: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[strategy],
        "num_machines": machines,
        "machine_rank": 0,
        "num_processes": processes,
        "gpu_ids": "all",
        "mixed_precision": "no",  # the trainer sets its own precision (bf16 where the GPU has it)
        "rdzv_backend": "static",
        "same_network": True,  # one machine, or the nodes of one cluster: a master address and port
        "use_cpu": False,
    }
    if strategy == "fsdp":
        launch["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # the output folder must load as a plain HF model
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            # FSDP2 checkpoints activations itself; the model's own gradient checkpointing must then be off.
            "fsdp_activation_checkpointing": config.gradient_checkpointing,
        }
    elif strategy == "deepspeed":
        launch["deepspeed_config"] = {
            "zero_stage": 3,
            "zero3_init_flag": True,
            "zero3_save_16bit_model": True,
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        }
    return launch


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of ``path`` from byte ``offset``, and the offset after the last complete one."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    events, used = event_lines(chunk)
    return events, offset + used


def event_lines(chunk: bytes) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of ``chunk`` (a piece of events.jsonl), and how many bytes they take.

    A line the trainer is still writing (no newline yet) is left for the next read; a line that is not a JSON
    object becomes a ``log`` event rather than being lost.
    """
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        events.append(obj if isinstance(obj, dict) else {"kind": "log", "message": line.decode(errors="replace")})
    return events, end



def run_result(run_dir: Path, job: Job, **raw: Any) -> Result:
    """The trainer's result.json in ``run_dir`` (itself a Result, its ``raw`` the trainer's own record: measured
    resources, steps, gradient checks), with the ledger's view where the trainer wrote none (killed, never
    started); ``raw`` adds the backend's own record."""
    data = _read_json(run_dir / RESULT_NAME) or {}
    base = {"status": job.status, "model": job.model, "output_model": job.output_model,
            "started_at": job.started_at, "finished_at": job.finished_at, "error": job.error,
            "trained_tokens": job.trained_tokens}
    written = {k: v for k, v in data.items() if k in Result.model_fields and v is not None}
    if raw:
        written["raw"] = {**(written.get("raw") or {}), **raw}
    # The ledger's status, id and model name are the job's; the trainer knows the model as a resolved path.
    return Result.model_validate({**base, **written, "id": job.id, "backend": job.backend,
                                  "status": job.status, "model": job.model})


def tracker_records(events: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Where the run's experiment trackers keep it, from the trainer's ``tracker`` events, as ``job.remote`` keys."""
    return {f"{TRACKER_PREFIX}{name}": str(where) for e in events if isinstance(e.get("tracker"), dict)
            for name, where in e["tracker"].items()}


def trainer_records(events: Sequence[Mapping[str, Any]], progress: Progress | None) -> dict[str, Any]:
    """The trainer's event lines as the job's events, metrics and progress (carried over from ``progress``)."""
    return {"events": [_event(e) for e in events], "metrics": [m for e in events for m in _metrics(e)],
            "progress": _progress(events, progress)}


def _last_event(path: Path, fresh: list[dict[str, Any]]) -> dict[str, Any] | None:
    if fresh:
        return fresh[-1]
    events, _ = read_events(path, max(0, _size(path) - 65536))  # the tail is enough to find the last line
    return events[-1] if events else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return clock.now()


_EVENT_FIELDS = tuple(f for f in EVENT_FIELDS if f not in ("time", "kind", "message", "tracker"))  # the numbers


def _event(raw: Mapping[str, Any]) -> Event:
    kind = str(raw.get("kind") or "log")
    data = {k: v for k, v in raw.items() if k not in ("time", "kind", "message") and v is not None}
    message = raw.get("message") or ", ".join(
        f"{k} {data[k]:.4g}" if isinstance(data[k], float) else f"{k} {data[k]}"
        for k in _EVENT_FIELDS if k in data) or kind
    level = "error" if kind == "error" else "warning" if kind == "warning" else "info"
    return Event(time=_time(raw.get("time")), kind=kind, message=str(message), level=level, data=data)


def _metrics(raw: Mapping[str, Any]) -> list[MetricPoint]:
    step = raw.get("step")
    if not isinstance(step, int):
        return []
    epoch = raw.get("epoch") if isinstance(raw.get("epoch"), int | float) else None
    return [MetricPoint(step=step, name=name, value=float(raw[key]), epoch=epoch)
            for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss"))
            if isinstance(raw.get(key), int | float)]


_LIVE_FIELDS = ("tokens_per_s", "eta_s")  # how a running trainer goes: over when it ends


def _progress(events: Sequence[Mapping[str, Any]], previous: Progress | None) -> Progress | None:
    """The latest known value of each progress field, carried over from the previous poll. A final event ends the
    live ones: no ETA after the end, and the throughput is the run's own (the final event's, as result.json has it),
    not the last progress event's."""
    fields = previous.model_dump() if previous else {}
    for raw in events:
        if raw.get("kind") in FINAL_KINDS:
            fields.update(dict.fromkeys(_LIVE_FIELDS))
        fields.update({k: raw[k] for k in _EVENT_FIELDS if isinstance(raw.get(k), int | float)})
    return Progress.model_validate(fields) if fields else None


_GIB = 2**30


def measured_resources(result: Mapping[str, Any]) -> dict[str, float | str]:
    """What the trainer measured (result.json ``raw.measured``), named to sit beside the estimate in the ledger:
    on a GPU the peak allocated VRAM (what the estimator's ``allocated`` predicts) and reserved VRAM, on the CPU
    the peak resident memory; the non-padding tokens/s and the seconds of this process's training."""
    measured = (result.get("raw") or {}).get("measured")
    if not isinstance(measured, Mapping):
        return {}
    numbers = {k: float(v) for k, v in measured.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out: dict[str, float | str] = {}
    if "peak_memory_bytes" in numbers:
        kind = "peak_vram_allocated" if measured.get("device") == "cuda" else "peak_rss"
        out[f"measured_{kind}_gib"] = round(numbers["peak_memory_bytes"] / _GIB, 3)
    if "cuda_max_reserved_bytes" in numbers:
        out["measured_peak_vram_reserved_gib"] = round(numbers["cuda_max_reserved_bytes"] / _GIB, 3)
    for key in ("tokens_per_s", "train_seconds"):
        if key in numbers:
            out[f"measured_{key}"] = round(numbers[key], 3)
    if measured.get("device") == "cuda" and isinstance(measured.get("gpu"), str):
        out["measured_gpu"] = measured["gpu"]  # torch's name of the card, to check it is the one estimated for
    return out


def _failure(run_dir: Path, last: Mapping[str, Any] | None) -> str:
    """Why a trainer that ended without a final event failed: its last event and the tail of its log."""
    described = f"last event: {last.get('kind')}: {_event(last).message}" if last else "no event was written"
    tail = _log_tail(run_dir / "trainer.log")
    return (f"the trainer process ended without finishing (killed, or out of memory?); {described}"
            + (f"; end of {run_dir / 'trainer.log'}:\n{tail}" if tail else ""))


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, _size(path) - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


# --- processes ------------------------------------------------------------------------------------------------

def _psutil():
    try:
        import psutil
    except ImportError as exc:
        raise ExtraNotInstalledError("psutil", "local", "tracking the local trainer process") from exc
    return psutil


def _start_time(pid: int) -> str:
    """The process's start time (what tells it apart from a later process given the same pid); '' if gone."""
    psutil = _psutil()
    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return ""


def _alive(remote: Mapping[str, str]) -> bool:
    """Whether the trainer recorded in ``remote`` is still running (same pid *and* same start time)."""
    pid, started = remote.get("pid"), remote.get("pid_started")
    if not pid or not started:
        return False
    psutil = _psutil()
    try:
        proc = psutil.Process(int(pid))
        return (abs(proc.create_time() - float(started)) < 0.01
                and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD))
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or another user's process under a reused pid
        return False


def _trainer_noted(run_dir: Path, *, ended_too: bool = False) -> dict[str, str] | None:
    """The trainer ``trainer.pid`` names (the one holding the run folder), as ``job.remote`` keeps it, if that process
    is alive and is the one noted: started before the note was written (a second's slack for the clock), so not a
    later program given its pid. With ``ended_too``, also the last trainer of the folder once it has ended (its pid
    without a start time)."""
    noted = runlock.noted(run_dir)
    if noted is None:
        return None
    pid, noted_at = noted
    handles = {"pid": str(pid), "pid_started": "", **_run_handles(run_dir), "cancel_requested": ""}
    psutil = _psutil()
    try:
        proc = psutil.Process(pid)
        if proc.create_time() <= noted_at + 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
            return {**handles, "pid_started": repr(proc.create_time())}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return handles if ended_too else None


def _detach(command: list[str], run_dir: Path) -> int | None:
    """Start ``command`` detached in ``run_dir`` holding the folder's lock (``_DETACH``): its pid, None when the
    folder is held."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        out = subprocess.run([sys.executable, "-c", _DETACH, *command], cwd=run_dir, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        return None if out == "busy" else int(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise FtBrokerError(f"could not start the trainer ({' '.join(command)}): {exc}") from exc


def recover_job(run_dir: Path) -> tuple[JobSpec, dict[str, str] | None]:
    """What a run folder tells of its job, for ``ftbroker ledger rebuild``: the spec, rebuilt from the trainer's
    config.json (its model is the one the trainer loads: a catalog name's repo), and the handles of its trainer
    (None: never launched). The status is then what ``poll`` reads from the folder, as for any job. A folder
    another backend keeps (``OWNER_NAME``) is refused (InputError), saying where that job's state lives."""
    from pydantic import ValidationError

    from ftbroker.backends.local.config import OWNER_NAME, load_config

    owner = _read_json(run_dir / OWNER_NAME)
    if owner is not None:  # another backend's job: its state is not in this folder
        raise InputError(f"not a local job: the run folder of {owner.get('backend')} job {run_dir.name}, "
                         f"{owner.get('state') or 'whose state is elsewhere'}")
    config = load_config(run_dir / CONFIG_NAME)
    hyper = {"epochs": math.ceil(config.epochs), "learning_rate": config.learning_rate,
             "micro_batch_size": config.micro_batch_size,
             "gradient_accumulation_steps": config.gradient_accumulation_steps,
             "max_seq_len": config.max_seq_len, "packing": config.packing,
             "gradient_checkpointing": config.gradient_checkpointing, "seed": config.seed,
             "early_stopping_patience": config.early_stopping_patience}
    lora = {"r": config.lora.r, "alpha": math.ceil(config.lora.alpha), "dropout": config.lora.dropout,
            "target_modules": config.lora.target_modules}
    try:
        spec = JobSpec(dataset=config.dataset, validation=config.validation_dataset, model=config.model,
                       method=config.method, backend="local", hyperparameters=hyper, lora=lora,
                       backend_options={"merge": True} if config.merge else {})
    except ValidationError as exc:
        raise InputError(f"{run_dir / CONFIG_NAME} does not make a job spec: {exc}") from None
    return spec, _trainer_noted(run_dir, ended_too=True)


def _run_handles(run_dir: Path) -> dict[str, str]:
    """The run folder, and the model its trainer loads (config.json's: a catalog name's Hugging Face repo)."""
    return {"run_dir": str(run_dir), "base_model": str((_read_json(run_dir / CONFIG_NAME) or {}).get("model", ""))}


def _signal(pid: int, sig: signal.Signals) -> None:
    """To the trainer's process group when it leads one (started detached: accelerate's workers too), else to the
    process alone (a trainer started by hand shares its shell's group)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
