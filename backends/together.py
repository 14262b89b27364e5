"""Together AI fine-tuning through the official ``together`` SDK (3.x).

Facts behind this module (the 3-step upload, what ``fine_tuning.create`` sends, job, event and metrics
shapes, statuses, data formats and the legacy SDK's full local checks): Together's OpenAPI spec
(github.com/togethercomputer/openapi, openapi.yaml), the ``together`` 3.x SDK (PyPI), the legacy SDK
(togethercomputer/together-python, src/together/utils/files.py) and docs.together.ai/docs/fine-tuning;
each fact's source is in a comment where it is used.

This part is pure translation (no SDK, no I/O): the status table, events and metrics, the
``fine_tuning.create`` arguments and their check against the model's limits, the conversion of a
dataset (checked by ``ftbroker.data``, with Together's line rules from ``ftbroker.backends.declared.together``) into
Together's formats, and the catalog names of a Together model id (so a job is priced by the catalog row or size
tier).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from ftbroker import progress
from ftbroker.backends.base import Capabilities, Quote, Update, Verdict
from ftbroker.backends.declared import together as declared
from ftbroker.errors import BackendAuthError, BudgetExceededError, ProviderAPIError, SpecError
from ftbroker.jobs import Artifact, Event, Job, JobStatus, MetricPoint, Progress, Result
from ftbroker.redact import scrub

from ._managed import (
    ManagedBackend,
    Upload,
    WandbOptions,
    check_range,
    plain,
    provider_tag,
    wandb_run,
)
from .managed_files import ConvertedFile, Converter, with_system_message

NAME = "together"

# FinetuneJobStatus of the OpenAPI spec and the SDK's types/finetune_response.py; user_error only in the SDK's
# lib enum (together/lib/types/fine_tuning.py)
STATUS: Mapping[str, JobStatus] = {
    "pending": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "compressing": JobStatus.RUNNING,
    "uploading": JobStatus.RUNNING,
    "cancel_requested": JobStatus.RUNNING,
    "cancelled": JobStatus.CANCELLED,
    "error": JobStatus.FAILED,
    "user_error": JobStatus.FAILED,
    "completed": JobStatus.SUCCEEDED,
}

SUFFIX_MAX = 40  # together 3.1.1 fine_tuning.create docstring: "Up to 40 character suffix"
# FileResponse.processing_status (together 3.1.1 types/file_response.py): validated, usable; uploaded, not processed
FILE_READY, FILE_UNPROCESSED = "COMPLETED", "PENDING"
NANODOLLARS = Decimal(1_000_000_000)  # total_price unit: together/lib/utils/tools.py finetune_price_to_dollars
# the keys of a message (docs.together.ai/docs/fine-tuning/data-preparation; together-python utils/files.py)
MESSAGE_KEYS = ("role", "content", "weight", "tool_calls", "tool_call_id", "name")
SERVING_SUFFIX = "-Reference"  # Together's id of the unquantized weights it fine-tunes (its OpenAPI spec's example)

_EVENT_KINDS = {"job_error": "error", "warning": "warning", "billing_limit": "warning", "refund": "warning",
                "checkpoint_save": "checkpoint", "early_stopped": "warning"}


def price_usd(total_price: int | float | None) -> Decimal | None:
    """A job's ``total_price`` (nanodollars) in dollars."""
    return None if total_price is None else Decimal(int(total_price)) / NANODOLLARS


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(by_alias=True) if hasattr(obj, "model_dump") else dict(obj)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))  # Python 3.11 reads a trailing Z as UTC


# -- events and metrics ------------------------------------------------------------------------------
def normalize_events(raw_events: Iterable[Any]) -> list[Event]:
    """Together fine-tune events as normalized Events, oldest first. They carry no losses (FineTuneEvent in the
    OpenAPI spec)."""
    events = []
    for raw in (_dump(e) for e in raw_events):
        level = raw.get("level") or "info"
        level = "warning" if "warn" in level else "error" if "error" in level else "info"
        kind = _EVENT_KINDS.get(raw.get("type") or "", {"error": "error", "warning": "warning"}.get(level, "log"))
        data = {k: raw[k] for k in ("type", "step", "total_steps", "checkpoint_path", "model_path", "wandb_url")
                if raw.get(k) not in (None, "")}
        events.append(Event(time=_parse_time(raw["created_at"]), kind=kind, message=raw.get("message") or "",
                            level=level, data=data))
    return sorted(events, key=lambda e: e.time)


def normalize_metrics(rows: Iterable[Mapping[str, float]]) -> list[MetricPoint]:
    """``/fine-tunes/{id}/metrics`` rows (flat ``train/loss``-style keys, the OpenAPI spec) as points.

    The spec documents ``train/loss``, ``train/learning_rate`` and ``train/global_step``; an
    ``eval/``, ``valid/`` or ``validation/`` prefix is read as evaluation.
    """
    points = []
    for row in rows:
        step = next((row[k] for k in ("train/global_step", "eval/global_step", "global_step") if k in row), None)
        if step is None:
            continue
        for key, value in row.items():
            if "/" not in key or key.endswith("global_step") or value is None:
                continue
            prefix, name = key.split("/", 1)
            prefix = "eval" if prefix in ("eval", "valid", "validation") else prefix
            points.append(MetricPoint(step=int(step), name=f"{prefix}_{name.replace('/', '_')}", value=float(value)))
    return sorted(points, key=lambda p: (p.step, p.name))


# -- the create call ---------------------------------------------------------------------------------
def create_arguments(*, model: str, training_file: str, validation_file: str | None, tag: str, method: str,
                     dpo: bool, epochs: int | None, batch_size: int | None, learning_rate: float | None,
                     lora_r: int | None, lora_alpha: int | None, lora_dropout: float | None,
                     lora_targets: str | None, max_seq_len: int | None, seed: int | None, n_evals: int,
                     options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``client.fine_tuning.create`` (the SDK turns them into the REST body:
    ``training_type`` {Lora, r, alpha, ...} or {Full}, ``training_method`` {sft|dpo}: POST /fine-tunes in the
    OpenAPI spec)."""
    kwargs: dict[str, Any] = {"model": model, "training_file": training_file, "suffix": tag,
                              "lora": method != "full", "training_method": "dpo" if dpo else "sft"}
    if not dpo:
        kwargs["train_on_inputs"] = options.get("train_on_inputs", "auto")
    optional = {"validation_file": validation_file, "n_epochs": epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "max_seq_length": max_seq_len, "random_seed": seed}
    if method != "full":
        optional |= {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                     "lora_trainable_modules": lora_targets}
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    if validation_file:
        kwargs["n_evals"] = n_evals
    for key in ("n_checkpoints", "warmup_ratio", "weight_decay", "packing", "dpo_beta"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    return kwargs


def check_against_limits(limits: Mapping[str, Any], *, method: str, dpo: bool, epochs: int | None,
                         batch_size: int | None, learning_rate: float | None, lora_r: int | None,
                         max_seq_len: int | None) -> list[str]:
    """Every value outside the model's limits (``GET /fine-tunes/models/limits``, which the SDK calls first)."""
    problems: list[str] = []
    src = f"limits of {limits.get('model_name', 'the model')}"
    if method == "full" and not limits.get("supports_full_training"):
        problems.append(f"method: full fine-tuning is not offered for {limits.get('model_name')}; use lora")
    block = limits.get("full_training" if method == "full" else "lora_training") or {}
    if block:
        top = block.get("max_batch_size_dpo" if dpo else "max_batch_size")
        check_range(problems, "batch size", batch_size, block.get("min_batch_size", 1), top or float("inf"), source=src)
    if method != "full" and limits.get("lora_training"):
        check_range(problems, "lora r", lora_r, 1, limits["lora_training"]["max_rank"], source=src)
    check_range(problems, "epochs", epochs, 1, limits.get("max_num_epochs") or float("inf"), source=src)
    check_range(problems, "learning rate", learning_rate, limits.get("min_learning_rate") or 0,
                limits.get("max_learning_rate") or float("inf"), source=src)
    top_len = limits.get("max_seq_length_dpo" if dpo else "max_seq_length_sft")
    check_range(problems, "max sequence length", max_seq_len, limits.get("min_max_seq_length") or 1,
                top_len or float("inf"), source=src)
    return problems


# -- dataset conversion ------------------------------------------------------------------------------
def convert(example: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """One example (checked by ``ftbroker.data``) in Together's format for its kind (docs.together.ai
    data-preparation), with only the keys of that format (Together refuses others: together-python
    utils/files.py); a top-level system prompt becomes the first
    message."""
    if fmt == "chat":
        line: dict[str, Any] = {"messages": [{k: m[k] for k in MESSAGE_KEYS if k in m}
                                             for m in with_system_message(example)]}
        if "tools" in example:
            line["tools"] = example["tools"]
        return line
    if fmt == "preference":
        return {"input": {"messages": example["input"]["messages"]}, "preferred_output": example["preferred_output"],
                "non_preferred_output": example["non_preferred_output"]}
    if fmt == "text":
        return {"text": example["text"]}
    return {"prompt": example["prompt"], "completion": example["completion"]}


PROVIDER_ESTIMATE_NOTE = ("Together's own price estimate (its estimate-price endpoint) is asked for once the data is "
                          "uploaded, before the job is created, and recorded beside this one; a --max-cost applies to "
                          "it too")


def price_estimate_arguments(create: Mapping[str, Any]) -> dict[str, Any]:
    """The body of POST /fine-tunes/estimate-price (Together OpenAPI spec) for the job ``create_arguments``
    describes: the same files, model, epochs and evaluations, training type and method."""
    if create.get("lora"):
        lora = {"lora_r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
                "lora_trainable_modules": "lora_trainable_modules"}
        training_type: dict[str, Any] = {"type": "Lora", **{k: create[v] for k, v in lora.items() if v in create}}
    else:
        training_type = {"type": "Full"}
    if create.get("training_method") == "dpo":
        method: dict[str, Any] = {"method": "dpo", **({"dpo_beta": create["dpo_beta"]} if "dpo_beta" in create else {})}
    else:
        method = {"method": "sft", "train_on_inputs": create.get("train_on_inputs", "auto")}
    body = {"training_file": create["training_file"], "model": create["model"], "training_type": training_type,
            "training_method": method, "n_epochs": create.get("n_epochs", 1), "n_evals": create.get("n_evals", 0)}
    if create.get("validation_file"):
        body["validation_file"] = create["validation_file"]
    return body


def _usd(amount: Decimal | None) -> str:
    return "unknown" if amount is None else f"${amount:.4f}"


def _float(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def catalog_names(model_id: str) -> tuple[str, ...]:
    """Names to look a Together model id up by in the catalog, most specific first: the id (a per-model row's
    Hugging Face repo), then without the serving suffix, then the bare names, which a catalog model's name or
    alias matches (``meta-llama/Meta-Llama-3.1-8B-Instruct-Reference`` -> ``Meta-Llama-3.1-8B-Instruct``: the
    Llama-3.1-8B architecture, priced by the size tier its parameter count falls in)."""
    names = [model_id, model_id.removesuffix(SERVING_SUFFIX)]
    names += [n.rsplit("/", 1)[-1] for n in names]
    return tuple(dict.fromkeys(names))


# -- the backend -------------------------------------------------------------------------------------
class TogetherOptions(WandbOptions):
    base_url: str | None = Field(None, description="default: TOGETHER_BASE_URL, else https://api.together.ai")
    n_evals: int | None = Field(None, ge=0, description="evaluations over the validation set (default 1 with one)")
    n_checkpoints: int | None = Field(None, ge=1)
    warmup_ratio: float | None = Field(None, ge=0, le=1)
    weight_decay: float | None = Field(None, ge=0)
    train_on_inputs: bool | Literal["auto"] | None = Field(None, description="train on user turns / prompts too")
    dpo_beta: float | None = Field(None, gt=0, description="DPO beta (preference data)")


class TogetherBackend(ManagedBackend):
    """Together fine-tuning jobs. Credentials: ``TOGETHER_API_KEY``."""

    name = NAME
    sdk_package = "together"
    extra = "together"
    status_table = STATUS
    line_rules = declared.line_rules  # the objects the data layer and redact read from the declared module
    key_shapes = declared.key_shapes
    Options = TogetherOptions
    capabilities = Capabilities(
        requires={sdk_package: extra},
        providers=frozenset({"together"}),  # the catalog's together offers are its routes
        methods=frozenset({"lora", "full"}),
        data_formats=frozenset({"chat", "prompt_completion", "preference", "text"}),
        managed=True,
        poll_interval_s=30.0,
        unsupported={
            "method.qlora": "Together trains LoRA adapters on 16-bit weights; QLoRA is not offered",
            "hyperparameters.gradient_checkpointing": "Together runs the training hardware; not a setting",
            "resume": "continuing from a checkpoint (from_checkpoint) is not driven by ftbroker yet",
            "export": "the model is served (and downloadable) on Together: use its output_model name",
        },
    )

    def __init__(self, options: TogetherOptions, **kwargs: Any):
        super().__init__(options, **kwargs)
        self._limits: dict[str, Any] = {}  # model -> its limits, read once (create needs them too)

    # -- set-up -------------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        sdk = self.sdk()
        try:
            return sdk.Together(base_url=self.options.base_url, max_retries=self.options.max_retries,
                                timeout=self.options.request_timeout_s)
        except sdk.TogetherError as exc:
            raise BackendAuthError("no credentials: set TOGETHER_API_KEY", backend=self.name) from exc

    def _sdk_errors(self) -> tuple[type[BaseException], ...]:
        import httpx  # the upload's PUT goes through the SDK's raw httpx client, unwrapped

        return (self.sdk().TogetherError, httpx.HTTPError)

    def _spec_problems(self, spec: Any) -> list[str]:
        if spec.hyperparameters.early_stopping_patience and not spec.validation:
            return ["hyperparameters.early_stopping_patience: Together's early stopping needs a validation file"]
        return []

    def _converter(self, spec: Any) -> Converter:
        return convert

    def _catalog_names(self, model: str) -> tuple[str, ...]:
        return catalog_names(model)

    def _plan_options(self, spec: Any) -> dict[str, Any]:
        return {"n_evals": self._n_evals(spec)}

    @classmethod
    def _route_options(cls, route: Any) -> dict[str, Any]:
        return {"n_evals": route.breakdown.get("n_evals")}  # the evaluations its validation tokens were billed for

    def _n_evals(self, spec: Any) -> int:
        """Evaluations over the validation set the job asks for (each one billed): the option, else one with a
        validation file; early stopping needs at least patience + 2."""
        if not spec.validation:
            return 0
        n_evals = self.options.n_evals if self.options.n_evals is not None else 1
        patience = spec.hyperparameters.early_stopping_patience
        return max(n_evals, patience + 2) if patience else n_evals

    def quote(self, spec: Any, dataset: Any, env: Any) -> Quote:
        """The catalog's price (no network: a budget is checked before anything is sent); Together's own estimate
        needs the uploaded data, so it is asked after the upload and before the job is created, beside it."""
        quote = super().quote(spec, dataset, env)
        if quote.verdict is not Verdict.OK:
            return quote
        return dataclasses.replace(quote, warnings=(*quote.warnings, PROVIDER_ESTIMATE_NOTE))

    # -- submit -------------------------------------------------------------------------------------
    def _provider_find(self, job: Job) -> Mapping[str, Any] | None:
        known = job.remote.get("job_id")
        if known:
            return self._retrieve(known)
        tag = provider_tag(job.id, SUFFIX_MAX)
        listed = self.call("looking for a job already created for this id", self.client.fine_tuning.list)
        for remote in listed.data:
            record = plain(remote)
            if record.get("suffix") == tag or f"-{tag}-" in (record.get("model_output_name") or ""):
                return record
        return None

    def _provider_preflight(self, job: Job) -> None:
        spec, hp = job.spec, job.spec.hyperparameters
        limits = self._limits.get(spec.model)
        if limits is None:
            limits = self._limits[spec.model] = self.call(
                "reading the model's limits", self.client.fine_tuning.model_limits, model_name=spec.model)
        problems = check_against_limits(plain(limits), method=spec.method, dpo=False, epochs=hp.epochs,
                                        batch_size=hp.micro_batch_size, learning_rate=hp.learning_rate,
                                        lora_r=spec.lora.r, max_seq_len=hp.max_seq_len)
        if problems:
            raise SpecError(problems)

    def _provider_find_upload(self, converted: ConvertedFile) -> str | None:
        """A file of the same content that Together reports ready (``COMPLETED``). One whose upload broke after its
        bytes arrived (``PENDING``: the PUT answered an error, or the upload's last call, preprocess, never ran) is
        finished here; any other (failed, still being processed) is left alone and the data are uploaded afresh."""
        listed = self.call("looking for the data already uploaded", self.client.files.list)
        same = [f for f in listed.data if f.filename == converted.upload_name and f.bytes == converted.size_bytes]
        ready = next((f.id for f in same if f.processing_status == FILE_READY), None)
        if ready is not None:
            return ready
        for file in (f for f in same if f.processing_status == FILE_UNPROCESSED):
            try:
                processed = self.call("finishing an earlier upload of the data", self._writes().post,
                                      f"/v1/files/{file.id}/preprocess", cast_to=self.sdk().types.FileResponse)
            except ProviderAPIError:  # refused (e.g. its bytes never arrived after all): not this file
                continue
            if processed.processing_status == FILE_READY:
                return file.id
        return None

    def _provider_upload(self, converted: ConvertedFile) -> str:
        client = self._writes().with_options(timeout=self.options.upload_timeout_s)
        with progress.task(f"uploading {converted.upload_name} to Together", total=converted.size_bytes) as sent:
            return self.call("uploading the data", client.files.upload, converted.path, purpose="fine-tune",
                             progress_callback=lambda p: sent.update(completed=p.uploaded_bytes)).id

    def _create_arguments(self, job: Job, uploads: list[Upload]) -> dict[str, Any]:
        spec, hp = job.spec, job.spec.hyperparameters
        by_role = {u.role: u for u in uploads}
        dpo = by_role["training"].file.fmt == "preference"
        targets = spec.lora.target_modules
        options = self.options.model_dump(exclude_none=True)
        kwargs = create_arguments(
            model=spec.model, training_file=by_role["training"].remote_id,
            validation_file=by_role["validation"].remote_id if "validation" in by_role else None,
            tag=provider_tag(job.id, SUFFIX_MAX), method=spec.method, dpo=dpo, epochs=hp.epochs,
            batch_size=hp.micro_batch_size, learning_rate=hp.learning_rate, lora_r=spec.lora.r,
            lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
            lora_targets=",".join(targets) if isinstance(targets, list) else targets, max_seq_len=hp.max_seq_len,
            seed=hp.seed, n_evals=self._n_evals(spec), options=options)
        extra = {"gradient_accumulation_steps": hp.gradient_accumulation_steps, "packing": hp.packing}
        kwargs |= {k: v for k, v in extra.items() if v is not None}
        if hp.early_stopping_patience:
            kwargs |= {"early_stopping_enabled": True, "early_stopping_patience": hp.early_stopping_patience}
        return kwargs | self._wandb_arguments(job)

    def check_credentials(self) -> None:
        super().check_credentials()
        if "wandb" in self.options.report_to and not os.environ.get("WANDB_API_KEY"):
            raise BackendAuthError("report_to=wandb: Together logs to W&B with your key; set WANDB_API_KEY",
                                   backend=self.name)

    def _wandb_arguments(self, job: Job) -> dict[str, Any]:
        """Together logs to W&B with the user's key, sent with the job (``wandb_api_key``, from WANDB_API_KEY, checked
        by ``check_credentials``; never stored: the ledger keeps the project and run name, or the run's page)."""
        run = self.options.wandb(job.id)
        if run is None:
            return {}
        arguments = {"wandb_api_key": os.environ["WANDB_API_KEY"], "wandb_project_name": run["project"], "wandb_name": run["name"],
                     "wandb_entity": run.get("entity"), "wandb_base_url": os.environ.get("WANDB_BASE_URL")}
        return {k: v for k, v in arguments.items() if v}

    def _provider_price_check(self, job: Job, uploads: list[Upload], tracker: Any) -> None:
        """Together's own estimate (POST /fine-tunes/estimate-price) of the job as it will be created, recorded
        beside the catalog's; over the job's budget, or past the account's credit, nothing is created."""
        arguments = price_estimate_arguments(self._create_arguments(job, uploads))
        answer = plain(self.call("asking Together for its price estimate", self.client.fine_tuning.estimate_price,
                                 **arguments))
        catalog = job.estimated_cost_usd
        if answer.get("estimation_available") is False or answer.get("estimated_total_price") is None:
            tracker.event(f"Together gave no price estimate ({answer.get('unavailable_reason') or 'no reason'});"
                          f" the catalog's stands: {_usd(catalog)}", kind="warning", level="warning")
            return
        usd = Decimal(str(answer["estimated_total_price"])).quantize(Decimal("0.0001"))
        tracker.event(f"Together's own price estimate: {_usd(usd)} for {answer.get('estimated_train_token_count')} "
                      f"training + {answer.get('estimated_eval_token_count') or 0} evaluation tokens (the "
                      f"catalog's: {_usd(catalog)})", data={"provider_estimated_cost_usd": float(usd),
                                                           "catalog_estimated_cost_usd": _float(catalog)})
        budget = job.spec.budget.max_cost_usd
        if budget is not None and usd > budget:
            raise BudgetExceededError(f"Together estimates this job at {_usd(usd)}, over --max-cost ${budget} "
                                      f"(the catalog's estimate was {_usd(catalog)}); nothing was created")
        if answer.get("allowed_to_proceed") is False:
            raise BudgetExceededError(f"Together will not start this job: its estimate {_usd(usd)} is over the "
                                      f"account's limit (${answer.get('user_limit')}); nothing was created")

    def _provider_create(self, job: Job, uploads: list[Upload]) -> Mapping[str, Any]:
        kwargs = self._create_arguments(job, uploads)
        try:
            created = self.call("creating the fine-tuning job", self._writes().fine_tuning.create,
                                model_limits=self._limits.get(job.spec.model), **kwargs)
        except ValueError as exc:  # the SDK's own argument checks
            raise SpecError([f"{self.name}: {exc}"]) from exc
        return plain(created)

    # -- track --------------------------------------------------------------------------------------
    def _retrieve(self, job_id: str) -> dict[str, Any]:
        return plain(self.call("reading the job", self.client.fine_tuning.retrieve, job_id))

    def _handles(self, raw: Mapping[str, Any]) -> dict[str, str]:
        return {**super()._handles(raw), **wandb_run(raw.get("wandb_project_name"), raw.get("wandb_name"),
                                                     url=raw.get("wandb_url"))}

    def _provider_fetch(self, job: Job) -> dict[str, Any]:
        return self._retrieve(job.remote["job_id"])

    def _provider_cancel(self, job: Job) -> Mapping[str, Any]:
        return plain(self.call("cancelling the job", self.client.fine_tuning.cancel, job.remote["job_id"]))

    def _events(self, job: Job) -> list[dict[str, Any]]:
        listed = self.call("reading the job's events", self.client.fine_tuning.list_events, job.remote["job_id"])
        return [plain(e) for e in listed.data]

    def _metrics(self, job: Job, after_step: int = 0) -> list[dict[str, float]]:
        """The job's metric rows after ``after_step``; none when the call fails (optional data: the next poll asks
        again from the same step)."""
        listed = self.optional("reading the job's metrics", self.client.fine_tuning.list_metrics,
                               job.remote["job_id"], global_step_from=after_step + 1)
        return list(listed.metrics or []) if listed is not None else []

    @staticmethod
    def _error(events: list[dict[str, Any]]) -> str | None:
        """Together jobs carry no error field: the last error event says what went wrong."""
        errors = [e for e in events if e.get("type") == "job_error" or "error" in (e.get("level") or "")]
        return scrub(errors[-1]["message"]) if errors else None

    def poll(self, job: Job) -> Update:
        raw = self._provider_fetch(job)
        status, detail = self._provider_status(raw)
        cursor = json.loads(job.cursor) if job.cursor else {"events": 0, "step": 0}
        events = self._events(job)
        points = [p for p in normalize_metrics(self._metrics(job, cursor["step"])) if p.step > cursor["step"]]
        fresh = events[cursor["events"]:]
        progress = job.progress
        if points:
            last_step = max(p.step for p in points)
            losses = {p.name: p.value for p in points if p.step == last_step}
            total = next((e.get("total_steps") for e in reversed(events) if e.get("total_steps")), None)
            progress = Progress(step=last_step, total_steps=total, loss=losses.get("train_loss"),
                                eval_loss=losses.get("eval_loss"), epoch=raw.get("epochs_completed"))
        new_cursor = {"events": len(events), "step": max([cursor["step"], *(p.step for p in points)])}
        done = status.terminal
        return Update(status=status, detail=detail, events=normalize_events(fresh), metrics=points,
                      progress=progress, cursor=json.dumps(new_cursor), next_poll_s=self.options.poll_interval_s,
                      error=self._error(events) if status is JobStatus.FAILED else None,
                      trained_tokens=raw.get("token_count") if done else None,
                      actual_cost_usd=price_usd(raw.get("total_price")) if done else None,
                      output_model=raw.get("model_output_name") if status is JobStatus.SUCCEEDED else None)

    def result(self, job: Job) -> Result:
        raw = self._provider_fetch(job)
        status, _ = self._provider_status(raw)
        events = self._events(job)
        artifacts = []
        output = raw.get("model_output_name") if status is JobStatus.SUCCEEDED else None
        if output:
            artifacts.append(Artifact(kind="provider_model", uri=output, description="call it by this name"))
            listed = self.call("listing checkpoints", self.client.fine_tuning.list_checkpoints, job.remote["job_id"])
            artifacts += [Artifact(kind="checkpoint", uri=c.path, description=f"{c.checkpoint_type} (step {c.step})")
                          for c in listed.data]
        return Result(id=job.id, backend=self.name, status=status, model=job.spec.model, output_model=output,
                      metrics=normalize_metrics(self._metrics(job)), trained_tokens=raw.get("token_count"),
                      estimated_cost_usd=job.estimated_cost_usd, actual_cost_usd=price_usd(raw.get("total_price")),
                      started_at=_parse_time(raw["started_at"]) if raw.get("started_at") else None,
                      finished_at=_parse_time(raw["updated_at"]) if status.terminal and raw.get("updated_at") else None,
                      artifacts=artifacts, error=self._error(events) if status is JobStatus.FAILED else None, raw=raw)
