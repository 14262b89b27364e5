"""Trainer callbacks of the local trainer: progress events, early stopping, clean stop, gradient guards.

Imported only inside the trainer process (it needs transformers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ftbroker.backends.local import guards
from ftbroker.backends.local.outputs import EventLog
from transformers import TrainerCallback


class Reporter(TrainerCallback):
    """Writes progress, eval and checkpoint events, and measures this process's training throughput.

    Throughput is one figure everywhere (progress events, result.json ``raw.measured``, the ledger's
    ``measured_tokens_per_s``): the non-padding tokens trained over the seconds spent training, evaluations and
    checkpoint saves left out. That is what the estimator's ``estimated_tokens_per_s`` predicts; the ETA and
    ``train_seconds`` keep the whole time, evaluations and saves included (they recur until the end).
    """

    def __init__(self, events: EventLog, *, monotonic: Callable[[], float] = time.monotonic):
        """``monotonic``: the seconds it measures by (a test gives its own)."""
        self.events, self._monotonic = events, monotonic
        self.started = self.finished = None
        self.start_step = self.start_tokens = self.end_tokens = 0
        self.paused = 0.0  # seconds spent evaluating and saving checkpoints (between two steps)
        self._between_from = 0.0  # when the last step ended (or training began)
        self._pausing = False  # an evaluation or a save happened since then

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self._between_from = self._monotonic()
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen
        resumed = f" (resumed at step {state.global_step})" if state.global_step else ""
        self.events.emit("running", f"training{resumed}", step=state.global_step, total_steps=state.max_steps,
                         epoch=state.epoch)

    def on_step_begin(self, args, state, control, **kwargs):
        self._resume_counting()

    def on_step_end(self, args, state, control, **kwargs):
        self._between_from = self._monotonic()

    def on_evaluate(self, args, state, control, **kwargs):
        self._pausing = True

    def on_train_end(self, args, state, control, **kwargs):
        self._resume_counting()
        self.finished, self.end_tokens = self._monotonic(), state.num_input_tokens_seen

    def _resume_counting(self) -> None:
        if self._pausing:
            self.paused += self._monotonic() - self._between_from
            self._pausing = False

    @property
    def seconds(self) -> float | None:
        """The whole time of this process's training, evaluations and saves included."""
        return None if self.started is None else (self.finished or self._monotonic()) - self.started

    def _tokens_per_s(self, tokens: int) -> float | None:
        training = (self.seconds or 0.0) - self.paused
        return tokens / training if training > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        """Non-padding tokens trained per second of training (evaluations and saves left out)."""
        return self._tokens_per_s(self.end_tokens - self.start_tokens) if self.finished else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        common = {"step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch}
        if "loss" in logs:
            done = state.global_step - self.start_step
            eta = self.seconds / done * (state.max_steps - state.global_step) if done else None
            self.events.emit("progress", loss=logs["loss"], eta_s=eta, **common,
                             tokens_per_s=self._tokens_per_s(state.num_input_tokens_seen - self.start_tokens))
        if "eval_loss" in logs:
            self.events.emit("eval", eval_loss=logs["eval_loss"], **common)

    def on_save(self, args, state, control, **kwargs):
        self._pausing = True
        self.events.emit("checkpoint", f"{args.output_dir}/checkpoint-{state.global_step}",
                         step=state.global_step, total_steps=state.max_steps, epoch=state.epoch)


class TrackerNote(TrainerCallback):
    """Says where the run's experiment trackers keep it (an event of kind ``tracker``; the backend records it in
    the ledger, ``ftbroker status`` shows it): the MLflow run, the W&B run's page, the TensorBoard log folder.
    Runs after transformers' tracker callbacks (the Trainer puts the integrations first), which have then started
    their runs."""

    def __init__(self, events: EventLog):
        self.events = events

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for name in args.report_to:
            where = _tracker_location(name)
            if where:
                self.events.emit("tracker", f"{name}: {where}", tracker={name: where})


def _tracker_location(name: str) -> str | None:
    if name == "tensorboard":
        return os.environ.get("TENSORBOARD_LOGGING_DIR")
    if name == "mlflow":
        import mlflow

        run = mlflow.active_run()
        return (f"{mlflow.get_tracking_uri()}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                if run else None)
    if name == "wandb":
        import wandb

        return getattr(wandb.run, "url", None) if wandb.run is not None else None
    return None


class EarlyStopping(TrainerCallback):
    """Stops when eval loss has not improved for ``patience`` evaluations (the start-of-training one counts
    as the first reference). Rebuilt from the log history on resume, so a resumed run stops where an
    uninterrupted one would."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best, self.waited, self.stopped = None, 0, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.best, self.waited = None, 0
        for entry in state.log_history:
            if "eval_loss" in entry:
                self._update(entry["eval_loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics and self._update(metrics["eval_loss"]):
            self.stopped = control.should_training_stop = True

    def _update(self, loss: float) -> bool:
        if self.best is None or loss < self.best:
            self.best, self.waited = loss, 0
        else:
            self.waited += 1
        return self.waited >= self.patience


class StopOnRequest(TrainerCallback):
    """Turns a stop request (SIGTERM) into a checkpoint and the end of training at the next step.

    Under several processes every rank must stop at the same step (the checkpoint is collective), so the
    request is reduced across ranks."""

    def __init__(self, requested):
        self.requested = requested  # () -> bool

    def _check(self, args, control):
        if _any_rank(self.requested(), args.device):
            control.should_save = control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        self._check(args, control)

    def on_evaluate(self, args, state, control, **kwargs):
        self._check(args, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopping ends the epoch loop early, and the Trainer then runs the epoch's evaluation and saves again.
        # The checkpoint was written at the step: an evaluation of a partial epoch would add a point the
        # uninterrupted run does not have (and count towards early stopping), and delay the stop.
        if state.epoch is not None and state.epoch % 1 and _any_rank(self.requested(), args.device):
            control.should_evaluate = control.should_save = False


def _any_rank(flag: bool, device) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class GradientGuard(TrainerCallback):
    """Runs the gradient checks: the 4-bit probe before the first step and after every evaluation (an
    evaluation is what sets off the CPU trap), and the adapter-gradient check at the first optimizer step."""

    def __init__(self, quantized: bool, adapter: bool):
        self.quantized = quantized
        self.probe_due, self.first_step = quantized, adapter
        self.passed = {"4bit_input_gradients": 0, "adapter_gradients": 0}

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.probe_due:
            guards.check_4bit_input_gradients(model)
            self.probe_due = False
            self.passed["4bit_input_gradients"] += 1

    def on_evaluate(self, args, state, control, **kwargs):
        self.probe_due = self.quantized

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # Sharded gradients (FSDP, DeepSpeed) are not whole on any one rank: nothing to check there.
        if self.first_step and not (args.fsdp or args.deepspeed):
            guards.check_adapter_gradients(model)
            self.passed["adapter_gradients"] += 1
        self.first_step = False
