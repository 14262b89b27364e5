"""The local trainer: supervised fine-tuning (full, LoRA, QLoRA) of a causal LM with transformers + peft + trl.

    python -m ftbroker.backends.local.train RUN_DIR [--resume]
    accelerate launch -m ftbroker.backends.local.train RUN_DIR [--resume]     (several GPUs)

It reads ``RUN_DIR/config.json`` and writes everything it produces into RUN_DIR. torch, transformers, peft,
trl and bitsandbytes (the ``local`` extra) are imported only inside this process.

config.json
-----------
One JSON object; unknown fields are an error; relative paths are taken from RUN_DIR. Validated by
``ftbroker.backends.local.config.TrainConfig`` (importable without torch). What it loads is ``loading.py``'s, the
examples it trains on ``train_data.py``'s; this module runs the training and writes what it produces.

=========================== ========================= ==========================================================
field                       default                   meaning
=========================== ========================= ==========================================================
job_id                      RUN_DIR's name            the ftbroker job id, copied into result.json ``id``
model                       (required)                base model: a local folder or a Hugging Face hub id
dataset                     (required)                training JSONL: chat lines ``{"messages": [...],
                                                      "tools"?: [...]}`` (OpenAI format; an assistant message
                                                      with ``"weight": 0`` is context, not trained),
                                                      ``{"prompt", "completion"}`` or ``{"text"}``
validation_dataset          null                      held-out JSONL; when null, ``eval_fraction`` of the
                                                      training lines is held out (shuffled with ``seed``)
eval_fraction               0.1                       0 to 0.5; 0 with no validation_dataset: no evaluation
eval_at_start               true                      evaluate once before the first step (the curve's origin)
method                      "lora"                    "full" | "lora" | "qlora" (4-bit NF4, double quantization)
lora.r                      16                        LoRA rank
lora.alpha                  32                        LoRA alpha
lora.dropout                0.05                      LoRA dropout
lora.target_modules         "all-linear"              "all-linear" or a list of module names ("q_proj", ...)
epochs                      3                         training epochs (a float is allowed)
learning_rate               2e-4                      peak learning rate
lr_scheduler                "linear"                  "linear" | "cosine" | "constant" | "constant_with_warmup"
warmup_ratio                0.0                       share of the steps spent warming up, in [0, 1)
weight_decay                0.0                       AdamW weight decay
micro_batch_size            4                         examples (or packed rows) per device per step
gradient_accumulation_steps 1                         micro-batches per optimizer step
max_seq_len                 2048                      tokens per example (longer ones are cut from the end) or
                                                      per packed row
packing                     false                     pack examples into rows of max_seq_len (best-fit
                                                      decreasing, padding-free attention)
padding_free                false                     without packing: concatenate each batch, no padding
gradient_checkpointing      true                      recompute activations in the backward pass (less memory,
                                                      about a third more compute)
seed                        42                        seeds the split, the adapter init and the data order
early_stopping_patience     null                      stop after this many evaluations without a better eval
                                                      loss (evaluation runs at the end of every epoch)
save_steps                  0                         checkpoint every N optimizer steps; 0: every epoch
save_total_limit            2                         checkpoints kept (the oldest are deleted)
logging_steps               10                        a progress event every N steps
merge                       false                     also write the adapter merged into the base model
                                                      (QLoRA: merged into the unquantized base); no-op for full
chat_template               null                      a .jinja file replacing the tokenizer's chat template
use_unsloth                 false                     load and wrap the model with Unsloth (must be installed)
use_liger                   false                     Liger kernels (``use_liger_kernel``; CUDA; must be installed)
precision                   "auto"                    "auto" (bf16 on GPUs that have it, else fp16; fp32 on CPU)
                                                      | "fp32" | "bf16" | "fp16" (GPU only)
device                      "auto"                    "auto" | "cpu" | "cuda"
report_to                   []                        experiment trackers: "wandb", "mlflow", "tensorboard"
                                                      (transformers' integrations; TensorBoard writes to
                                                      RUN_DIR/tensorboard)
tracker_project             null                      the W&B project and MLflow experiment (else WANDB_PROJECT,
                                                      MLFLOW_EXPERIMENT_NAME, else "ftbroker")
tracking_uri                null                      MLflow's tracking URI (else MLFLOW_TRACKING_URI)
=========================== ========================= ==========================================================

Loss: on assistant turns only (chat), the completion (prompt/completion), everything (text); see
``masking.py``. This works with chat templates that have no ``{% generation %}`` markers.

What it writes
--------------
- ``events.jsonl``: one JSON object per line, appended (a resumed run continues the same file). Every line has
  ``time`` (ISO 8601, UTC), ``kind``, ``step``, ``total_steps``, ``epoch``, ``loss``, ``eval_loss``,
  ``tokens_per_s``, ``eta_s``, ``message`` (null when not known). Kinds: ``started`` (the process is up),
  ``warning``, ``running`` (the training loop starts or resumes), ``progress`` (every logging_steps: loss,
  tokens_per_s of this process so far, eta_s), ``eval``, ``checkpoint`` (message: its folder), and exactly one
  final line: ``done`` (succeeded), ``error`` (failed; message: the error), ``cancelled`` (SIGTERM), with the run's
  tokens_per_s (result.json's). Throughput counts the seconds spent training, evaluations and saves left out.
- ``checkpoints/checkpoint-STEP/``: the last ``save_total_limit`` checkpoints (model or adapter, optimizer,
  scheduler, RNG states, trainer_state.json). ``--resume`` continues from the newest complete one with the same
  data order and step count (a checkpoint cut short by kill -9 is skipped and removed; with no complete
  checkpoint it starts from scratch). Without ``--resume``, existing checkpoints are an error (exit 2).
- ``output/adapter/`` (lora, qlora) or ``output/model/`` (full), with the tokenizer; ``output/merged/`` when
  ``merge`` is true.
- ``metrics.jsonl``: one ``ftbroker.jobs.MetricPoint`` per line (train_loss, eval_loss, eval_token_accuracy).
- ``loss.png``: train and eval loss by step.
- ``result.json``: an ``ftbroker.jobs.Result`` (backend "local"); ``raw.measured`` holds the measured
  ``peak_memory_bytes`` (CUDA max_memory_allocated on a GPU, peak RSS on the CPU), ``cuda_max_reserved_bytes``,
  ``tokens_per_s`` and ``train_seconds`` of this process, ``device`` and ``precision``. ``trained_tokens``
  counts the tokens the loss was taken on, times the epochs run.

Exit status: 0 succeeded; 1 failed; 2 bad config or data (the error names the field, or FILE:LINE); 75 another
trainer is running in RUN_DIR (nothing written: one trainer per run folder, see ``runlock``); 143 stopped by SIGTERM
(after saving a checkpoint when training had started). Under several processes only the main one writes events and
results. The main process holds RUN_DIR's lock for its life (``trainer.pid`` names it), unless the local backend
started it holding the lock already.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftbroker.backends.local import noise, runlock
from ftbroker.backends.local.config import CONFIG_NAME, TrainConfig, load_config
from ftbroker.backends.local.loading import (check_installed, concatenates, device_and_precision, load_model,
                                             load_tokenizer, lora_config, tracker_environment)
from ftbroker.backends.local.outputs import (
    CHECKPOINTS_DIR,
    EVENTS_NAME,
    OUTPUT_DIR,
    EventLog,
    metric_points,
    now,
    plot_loss,
    write_metrics,
    write_result,
)
from ftbroker.backends.local.train_data import TrainData, prepare_data, to_dataset
from ftbroker.errors import FtBrokerError, InputError
from ftbroker.jobs import Artifact, JobStatus

EXIT_CANCELLED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
EXIT_BUSY = 75  # EX_TEMPFAIL (sysexits.h): another trainer holds the run folder
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


class _Cancelled(BaseException):
    """SIGTERM outside the training loop: nothing to save, stop at once (BaseException so no library
    ``except Exception`` swallows it)."""


class _StopSignal:
    """SIGTERM inside the training loop sets ``requested`` (the loop saves and stops at the next step);
    elsewhere it cancels at once."""

    def __init__(self):
        self.requested = False
        self.deferred = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if not self.deferred:
            raise _Cancelled


@dataclass
class _Outcome:
    status: JobStatus
    message: str
    trainer: Any = None
    output_model: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    trained_tokens: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftbroker.backends.local.train",
                                     description="Fine-tune a model as described by RUN_DIR/config.json.")
    parser.add_argument("run_dir", type=Path, help="the run folder holding config.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / CONFIG_NAME).is_file():
        print(f"error: {run_dir / CONFIG_NAME} does not exist", file=sys.stderr)
        return 2

    is_main = int(os.environ.get("RANK", "0")) == 0  # set by accelerate/torchrun; read before torch loads
    if is_main and runlock.LOCK_FD_ENV not in os.environ:  # started by hand: hold the run folder ourselves
        lock = runlock.take(run_dir)
        if lock is None:  # before any event: the trainer running there owns events.jsonl
            noted = runlock.noted(run_dir)
            print(f"error: another trainer{f' (pid {noted[0]})' if noted else ''} is running in {run_dir}; "
                  "one trainer per run folder", file=sys.stderr)
            return EXIT_BUSY
        runlock.note(lock, os.getpid())  # held until this process ends: the descriptor is never closed
    events = EventLog(run_dir / EVENTS_NAME, enabled=is_main)
    started_at = (events.first_time() if args.resume else None) or now()
    stop = _StopSignal()
    stop.install()
    events.emit("started", "resuming" if args.resume else "starting")

    config: TrainConfig | None = None
    started: dict[str, Any] = {}  # holds the trainer once built, so a failed run still leaves its curve
    try:
        config = load_config(run_dir / CONFIG_NAME)
        outcome = _train(config, run_dir, args.resume, events, stop, started)
    except _Cancelled:
        when = "while writing the output (the last checkpoint holds the training)" if started \
            else "before training started"
        outcome = _Outcome(JobStatus.CANCELLED, f"cancelled by SIGTERM {when}", started.get("trainer"))
    except FtBrokerError as exc:
        outcome = _Outcome(JobStatus.FAILED, str(exc), started.get("trainer"), raw={"exit_code": exc.exit_code})
    except Exception as exc:  # noqa: BLE001 - the process boundary: every failure ends as an error event
        traceback.print_exc()  # to the process's stderr (the backend's log file), never to the user
        outcome = _Outcome(JobStatus.FAILED, f"{type(exc).__name__}: {exc}", started.get("trainer"),
                           raw={"exit_code": 1})

    stop.deferred = True  # a late SIGTERM must not cut the final files short
    if is_main:
        _finish(run_dir, config, started_at, outcome, events)
    if outcome.status is JobStatus.CANCELLED:
        return EXIT_CANCELLED
    return outcome.raw.get("exit_code", 1) if outcome.status is JobStatus.FAILED else 0


def _finish(run_dir: Path, config: TrainConfig | None, started_at, outcome: _Outcome, events: EventLog) -> None:
    points = metric_points(outcome.trainer.state.log_history) if outcome.trainer else []
    artifacts = list(outcome.artifacts)
    if points:
        write_metrics(run_dir, points)
        artifacts.append(Artifact(kind="metrics", uri=str(run_dir / "metrics.jsonl")))
        plot = plot_loss(run_dir, points)
        if plot:
            artifacts.append(Artifact(kind="plot", uri=str(plot), description="train and eval loss by step"))
    state = outcome.trainer.state if outcome.trainer else None
    write_result(run_dir, job_id=(config and config.job_id) or run_dir.name, status=outcome.status,
                 model=config.model if config else "", started_at=started_at, output_model=outcome.output_model,
                 metrics=points, trained_tokens=outcome.trained_tokens, artifacts=artifacts,
                 error=outcome.message if outcome.status is JobStatus.FAILED else None, raw=outcome.raw)
    kind = {JobStatus.SUCCEEDED: "done", JobStatus.FAILED: "error", JobStatus.CANCELLED: "cancelled"}
    events.emit(kind[outcome.status], outcome.message,  # the run's own throughput, as result.json has it
                step=state.global_step if state else None, total_steps=state.max_steps if state else None,
                epoch=state.epoch if state else None,
                tokens_per_s=outcome.raw.get("measured", {}).get("tokens_per_s"))


# ---- the recipe ---------------------------------------------------------------------------------------------

def _train(config: TrainConfig, run_dir: Path, resume: bool, events: EventLog, stop: _StopSignal,
           started: dict[str, Any]) -> _Outcome:
    check_installed(config)
    noise.to_log(sys.stderr)  # trainer.log: the libraries' warnings as DEBUG lines, no progress bars
    if config.use_unsloth:
        import unsloth  # noqa: F401 - must be imported before transformers to patch it
    import torch

    from ftbroker.backends.local import callbacks, export

    device, precision = device_and_precision(config, torch)

    checkpoint = _resume_point(run_dir / CHECKPOINTS_DIR, resume, remove_incomplete=events.enabled)
    tokenizer = load_tokenizer(config)
    data = prepare_data(config, tokenizer)  # bad data fails before the (slow) model load
    for warning in data.warnings:
        events.emit("warning", warning)

    early = callbacks.EarlyStopping(config.early_stopping_patience) if config.early_stopping_patience else None
    if config.report_to:
        tracker_environment(config, run_dir)
    reporter = callbacks.Reporter(events)
    gradient_guard = callbacks.GradientGuard(quantized=config.method == "qlora", adapter=config.uses_adapter)
    extra_callbacks = [reporter, callbacks.StopOnRequest(lambda: stop.requested), gradient_guard,
                       *([callbacks.TrackerNote(events)] if config.report_to else [])]
    trainer = build_trainer(config, tokenizer, data, run_dir, device, precision,
                            callbacks=extra_callbacks + ([early] if early else []), fresh=checkpoint is None)
    if concatenates(config) and "flash" not in str(trainer.model.config._attn_implementation):
        events.emit("warning", "packing/padding_free without a FlashAttention kernel: attention runs over each "
                    "whole concatenated batch with a block-diagonal mask, which can be slower than padding "
                    "(bench/train_throughput.py measures it); install flash-attn on a CUDA machine")
    started["trainer"] = trainer
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    stop.deferred = True
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    stop.deferred = False
    state = trainer.state
    trained_tokens = round(data.trained_tokens_per_epoch * (state.epoch or 0))
    raw = {
        "measured": _measured(torch, device, precision, reporter),
        "global_step": state.global_step,
        "total_steps": state.max_steps,
        "epochs_run": state.epoch,
        "examples": {"train": len(data.train), "eval": len(data.eval)},
        "early_stopped": bool(early and early.stopped),
        "gradient_checks": gradient_guard.passed,
        "final_eval_loss": next((e["eval_loss"] for e in reversed(state.log_history) if "eval_loss" in e), None),
    }
    last = _resume_point(run_dir / CHECKPOINTS_DIR, True, remove_incomplete=False)
    artifacts = [Artifact(kind="checkpoint", uri=str(last))] if last else []
    if stop.requested:
        return _Outcome(JobStatus.CANCELLED, f"stopped by SIGTERM at step {state.global_step}; "
                        f"checkpoint {last}", trainer, None, artifacts, trained_tokens, raw)

    output = run_dir / OUTPUT_DIR / ("adapter" if config.uses_adapter else "model")
    trainer.save_model(str(output))
    output_model = output
    if trainer.is_world_process_zero():
        if not config.uses_adapter:
            export.set_stop_tokens(output, tokenizer)
        artifacts.append(Artifact(kind="adapter" if config.uses_adapter else "merged_model", uri=str(output)))
        if config.merge and config.uses_adapter:
            merged = run_dir / OUTPUT_DIR / "merged"
            shutil.rmtree(merged, ignore_errors=True)  # an earlier attempt's, in the run folder ftbroker made
            output_model = export.merge_adapter(config.model, output, merged)
            artifacts.append(Artifact(kind="merged_model", uri=str(output_model),
                                      description="adapter merged into the unquantized base model"))
    stopped = f", stopped early after epoch {state.epoch:g}" if raw["early_stopped"] else ""
    return _Outcome(JobStatus.SUCCEEDED, f"trained {state.global_step} steps{stopped}; output in {output_model}",
                    trainer, str(output_model), artifacts, trained_tokens, raw)


def build_trainer(config: TrainConfig, tokenizer, data: TrainData, run_dir: Path, device: str, precision: str, *,
                  callbacks=(), fresh: bool = True, **sft_overrides):
    """The run's SFTTrainer: the model loaded as the method needs (``load_model``; 4-bit layers kept in their
    trainable layout, see guards.py), the LoRA config, the SFT arguments and the datasets. The recipe builds it
    here, and so do the benchmarks that must measure exactly what a run does. ``sft_overrides`` replace or add
    SFTConfig arguments (bench/gpu_calibrate.py: an 8-bit optimizer, no checkpoint saving)."""
    import datasets
    import torch
    from ftbroker.backends.local import guards
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    model = load_model(config, device, precision, torch)
    if config.method == "qlora":
        guards.disable_cpu_weight_repacking(model)  # before any evaluation; see guards.py
    has_eval = bool(data.eval)
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(config, run_dir, device, precision, has_eval, fresh=fresh, **sft_overrides),
        train_dataset=to_dataset(data.train, datasets),
        eval_dataset=to_dataset(data.eval, datasets) if has_eval else None,
        processing_class=tokenizer,
        peft_config=lora_config(config) if config.uses_adapter and not config.use_unsloth else None,
        callbacks=list(callbacks),
    )
    # Without tqdm the Trainer prints every log dict to stdout (trainer.log): the progress events say it already
    trainer.remove_callback(PrinterCallback)
    return trainer


def _resume_point(folder: Path, resume: bool, remove_incomplete: bool) -> Path | None:
    """The newest complete checkpoint. trainer_state.json is written last, so a checkpoint whose state file
    is missing or unreadable was cut short (kill -9 while saving); those are removed."""
    found = sorted(((int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                    if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))), reverse=True)
    if found and not resume:
        raise InputError(f"{folder} already holds checkpoints: pass --resume to continue that run, "
                         "or start in a new run folder")
    for _, path in found:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
            return path
        except (OSError, ValueError, KeyError):
            if remove_incomplete:
                shutil.rmtree(path, ignore_errors=True)
    return None


def _sft_config(config: TrainConfig, run_dir: Path, device: str, precision: str, has_eval: bool, fresh: bool,
                **overrides):
    from trl import SFTConfig

    by_epoch = config.save_steps == 0
    arguments = dict(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # Examples are already cut to max_seq_len; trl needs the length only to pack.
        max_length=config.max_seq_len if config.packing else None,
        packing=config.packing,
        padding_free=config.padding_free,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="epoch" if has_eval else "no",
        eval_on_start=has_eval and config.eval_at_start and fresh,
        save_strategy="epoch" if by_epoch else "steps",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_liger_kernel=config.use_liger,
        dataloader_pin_memory=device == "cuda",
        report_to=config.report_to or "none",
        run_name=config.job_id,  # the trackers' run name: the ftbroker job
        disable_tqdm=True,
    )
    return SFTConfig(**(arguments | overrides))


def _measured(torch, device: str, precision: str, reporter) -> dict[str, Any]:
    measured: dict[str, Any] = {"device": device, "precision": precision, "tokens_per_s": reporter.tokens_per_s,
                                "train_seconds": reporter.seconds}
    if device == "cuda":
        measured |= {"peak_memory_bytes": torch.cuda.max_memory_allocated(),
                     "peak_memory_kind": "cuda_max_memory_allocated",
                     "cuda_max_reserved_bytes": torch.cuda.max_memory_reserved(),
                     "gpu": torch.cuda.get_device_name()}
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        measured |= {"peak_memory_bytes": peak if sys.platform == "darwin" else peak * 1024,
                     "peak_memory_kind": "peak_rss"}
    return measured


if __name__ == "__main__":
    sys.exit(main())
