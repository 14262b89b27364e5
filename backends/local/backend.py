"""The local backend: trains on this machine by running the trainer recipe as its own process.

The trainer (``python -m ftbroker.backends.local.train RUN_DIR [--resume]``) runs detached, in its own session,
so closing the terminal, Ctrl-C or a crash of the CLI does not stop it (``process.py``). Its run folder is
``FTBROKER_HOME/runs/<job id>``: ``config.json`` (written here), ``events.jsonl`` (appended by the trainer),
``trainer.log`` (its stdout and stderr), ``checkpoints/``, ``output/`` and finally ``result.json``.

``train_config`` is the one mapping from a JobSpec to the trainer's ``TrainConfig``: a setting the spec leaves
unset is left to the trainer's default. ``prepare`` resolves the job's model once (``routes.model_request``) and
builds its config once (``TrainerJob``): ``validate`` counts with that model's tokenizer, ``quote`` (the pre-flight,
``preflight.py``) estimates that very config, ``submit`` writes it, with the job's id, as the run folder's
config.json, which every launch of the job then runs. A catalog model name reaches the trainer as the model's
Hugging Face repo (``ModelRequest.load_id``); the job keeps both (``spec.model`` and ``remote["base_model"]``).
The trainer's events become the job's events (its final ``done`` / ``error`` / ``cancelled`` line decides the
status), its ``result.json`` the job's Result, and ``raw.measured`` (peak memory, tokens/s) the measured resources
the ledger keeps beside the estimate (``results.py``).

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
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftbroker import bounds
from ftbroker.backends.base import (GPU_ENV, Capabilities, Environment, Gpu, Quote, Submission, Tracker, Update,
                                    detect_gpus, split_list)
from ftbroker.backends.local import noise, process, runlock
from ftbroker.backends.local.config import (CONFIG_NAME, RUNS_DIR, TRACKER_PACKAGES, TRAINER_PACKAGES, TrainConfig,
                                            TrackerName)
from ftbroker.backends.local.outputs import (CHECKPOINTS_DIR, EVENTS_NAME, FINAL_KINDS, RESULT_NAME, read_json,
                                             write_atomic)
from ftbroker.backends.local.prepare import TrainerJob, train_config
from ftbroker.backends.local.process import run_command
from ftbroker.backends.local.results import (failure, last_event, measured_resources, read_events, run_result,
                                             tracker_records, trainer_records)
from ftbroker.errors import DatasetError, ExtraNotInstalledError, FtBrokerError, InputError, JobError, UnknownNameError
from ftbroker.estimate.stacks import FTBROKER
from ftbroker.jobs import Artifact, Job, JobStatus, Result
from ftbroker.private import private_file, private_folder
from ftbroker.routes import model_request
from ftbroker.spec import JobSpec
from ftbroker.vocabulary import METHODS

EXPORT_LOG = "export.log"  # in the run folder: what the libraries say while a model is merged and written

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
        trainer = process.trainer_noted(self.run_dir(job.id), ended_too=True)
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
        running = job.remote if process.alive(job.remote) else process.trainer_noted(self.run_dir(job.id))
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
        while (pid := process.detach(command, run_dir)) is None:  # the run folder is held
            holder = process.trainer_noted(run_dir)
            if holder is not None:  # a trainer runs there already (started by hand, or by another launch)
                tracker.remember(**holder)
                if resume:
                    raise JobError(f"job {job.id} is still running: a trainer (pid {holder['pid']}) holds {run_dir}")
                return Submission(remote=holder, status=JobStatus.RUNNING, reused=True)
            if time.monotonic() > deadline:
                raise JobError(f"{run_dir} is still held (the lock on its {runlock.PID_NAME}) by a process that is not "
                               "its trainer, e.g. the last trainer's, still ending; try again in a moment")
            time.sleep(0.1)  # a trainer that took it has yet to note its pid, or the last one's threads are ending
        remote = {"pid": str(pid), "pid_started": process.start_time(pid), **process.run_handles(run_dir),
                  "cancel_requested": ""}
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
        alive = process.alive(job.remote)
        unknown = None if alive else process.trainer_noted(run_dir)  # one the ledger does not know of: adopted
        offset = int(job.cursor or 0)
        events, offset = read_events(run_dir / EVENTS_NAME, offset)
        trackers = tracker_records(events)
        found = {**trainer_records(events, job.progress), "cursor": str(offset), "remote": trackers}
        if alive or unknown:
            return Update(status=JobStatus.RUNNING, **{**found, "remote": {**trackers, **(unknown or {})}})
        if not job.remote.get("pid"):  # recorded, never launched (the CLI died before the launch)
            return Update(status=job.status, cursor=found["cursor"])
        last = last_event(run_dir / EVENTS_NAME, events)
        final = FINAL_KINDS.get(last.get("kind")) if last else None
        if final is None and job.remote.get("cancel_requested"):
            final = JobStatus.CANCELLED  # killed after the grace period: it never wrote its final line
        if final is None:
            return Update(status=JobStatus.FAILED, error=failure(run_dir, last), **found)
        result = read_json(run_dir / RESULT_NAME) or {}
        return Update(status=final, error=str(last.get("message") or "the trainer failed")
                      if final is JobStatus.FAILED else None,
                      output_model=result.get("output_model"), trained_tokens=result.get("trained_tokens"),
                      resources=measured_resources(result), **found)

    def cancel(self, job: Job) -> Update:
        """SIGTERM to every trainer of the job (the recorded one, and one holding its run folder that the ledger does
        not know of): it checkpoints and exits; SIGKILL after the grace period."""
        trainers = [t for t in (job.remote, process.trainer_noted(self.run_dir(job.id))) if t and process.alive(t)]
        trainers = list({t["pid"]: t for t in trainers}.values())
        for trainer in trainers:
            process.signal_trainer(int(trainer["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + self.options.cancel_grace_s
        while any(process.alive(t) for t in trainers) and time.monotonic() < deadline:
            time.sleep(0.2)
        for trainer in trainers:
            if process.alive(trainer):
                process.signal_trainer(int(trainer["pid"]), signal.SIGKILL)
        while any(process.alive(t) for t in trainers):
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

