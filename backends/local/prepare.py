"""A job as the local trainer runs it: the one mapping from a JobSpec to the trainer's ``TrainConfig``
(``train_config``), and the job prepared once (``TrainerJob``: its model resolved once, its config built once) that
``LocalBackend.prepare`` keeps for the job's validate, quote and submit, and the cloud backends stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftbroker.backends.local.config import TrainConfig
from ftbroker.routes import ModelRequest
from ftbroker.spec import JobSpec

if TYPE_CHECKING:
    from ftbroker.backends.local.backend import LocalOptions

@dataclass(frozen=True)
class TrainerJob:
    """A job as the local trainer runs it, prepared once per job (``LocalBackend.prepare``): its model resolved once
    and the trainer's config built once (its ``model`` what the trainer loads). ``validate`` counts with the model's
    tokenizer, ``quote`` prices the config, ``submit`` writes it with the job's id; a cloud backend stages it."""

    model: ModelRequest
    config: TrainConfig


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
