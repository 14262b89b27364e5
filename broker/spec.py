"""JobSpec: what to train, on what, how, where, and for how much, loaded from a job file and CLI flags.

A job file (``--config job.yaml`` or ``job.toml``) holds the same fields as the flags; flags override it::

    dataset: data/support.jsonl          # relative paths are taken from the job file's folder
    model: Qwen2.5-0.5B-Instruct
    method: qlora                        # full | lora | qlora
    backend: local
    hyperparameters: {epochs: 3, learning_rate: 2e-4, micro_batch_size: 4, max_seq_len: 2048}
    lora: {r: 16, alpha: 32, target_modules: all-linear}
    budget: {max_cost_usd: 5}
    backend_options: {gpus: 1}

Every problem is reported at once, one line per field, as a ``SpecError`` (exit 2). A spec is stored in the
ledger, so it never holds a secret: keys or values that look like credentials are refused with a pointer to
where credentials belong (the environment, or the provider SDK's usual configuration).
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftbroker import bounds
from ftbroker.errors import FtBrokerError, SpecError
from ftbroker.redact import looks_like_key, without_userinfo
from ftbroker.vocabulary import Method


def _Bounded(name: str):  # a type, named as one
    """An optional integer held to its plausibility bound (ftbroker.bounds), which says why when refused."""
    return Annotated[int | None, AfterValidator(bounds.validator(name))]


class _Part(BaseModel):
    # hide_input_in_errors: a ValidationError's text must never echo a value that may be a credential.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Hyperparameters(_Part):
    """Training settings. ``None`` means "the backend's default" (each backend documents its own)."""

    epochs: _Bounded("epochs") = None
    learning_rate: float | None = Field(None, gt=0, lt=1)
    micro_batch_size: _Bounded("micro_batch") = None
    gradient_accumulation_steps: _Bounded("grad_accum") = None
    max_seq_len: _Bounded("max_seq_len") = None
    packing: bool | None = None
    gradient_checkpointing: bool | None = None
    seed: _Bounded("seed") = None
    early_stopping_patience: _Bounded("early_stopping_patience") = None


class LoraSettings(_Part):
    """LoRA / QLoRA adapter shape; ignored by full fine-tuning. The one class from the job to the trainer: ``None``
    is the backend's default (the local trainer fills in ``backends.local.config.LORA_DEFAULTS``)."""

    r: _Bounded("lora_r") = None
    alpha: _Bounded("lora_alpha") = None
    dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = None

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and (not value or not all(m.strip() for m in value)):
            raise ValueError("give module names (e.g. q_proj, v_proj) or 'all-linear'")
        return value


class Budget(_Part):
    max_cost_usd: Decimal | None = Field(None, ge=0)


class JobSpec(_Part):
    """One fine-tuning job, whatever the backend."""

    dataset: str
    validation: str | None = None
    model: str = Field(min_length=1)
    method: Method = "lora"
    backend: str = "local"
    name: str | None = Field(None, max_length=64)
    hyperparameters: Hyperparameters = Hyperparameters()
    lora: LoraSettings = LoraSettings()
    budget: Budget = Budget()
    backend_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend_options")
    @classmethod
    def _no_secrets(cls, options: dict[str, Any]) -> dict[str, Any]:
        options = _without_userinfo(options)  # a URL's user:password is never stored (nor read back)
        found = _secret_paths(options, "backend_options")
        if found:
            raise ValueError(f"{', '.join(found)} {'looks' if len(found) == 1 else 'look'} like a secret; "
                             f"{_SECRET_ADVICE}")
        return options

    def set_fields(self) -> set[str]:
        """Dotted paths of the fields the user gave a value to (what a backend must honour or refuse)."""
        dumped = self.model_dump(exclude_defaults=True, exclude={"backend_options"})
        return set(_flatten(dumped))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- secrets ---------------------------------------------------------------------------------------------------

_SECRET_ADVICE = (
    "a job spec is stored in the ledger, so credentials never go in it. They come from the "
    "environment (OPENAI_API_KEY, TOGETHER_API_KEY, AWS_PROFILE, ...) or the provider SDK's usual configuration"
)
_SECRET_KEY_PARTS = ("apikey", "secret", "password", "passwd", "accesskey", "privatekey", "credential", "bearer")


def _looks_secret_key(key: str) -> bool:
    squashed = re.sub(r"[^a-z0-9]", "", key.lower())
    return any(part in squashed for part in _SECRET_KEY_PARTS) or squashed.endswith("token")


def _without_userinfo(value: Any) -> Any:
    """``value`` with the user name and password removed from every URL in its strings."""
    if isinstance(value, str):
        return without_userinfo(value)
    if isinstance(value, Mapping):
        return {key: _without_userinfo(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_userinfo(item) for item in value]
    return value


def _secret_paths(value: Any, path: str) -> list[str]:
    """Paths under ``value`` whose key or string value looks like a credential (never the value itself)."""
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            sub = f"{path}.{key}"
            found.extend([sub] if _looks_secret_key(str(key)) else _secret_paths(item, sub))
        return found
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in _secret_paths(item, f"{path}[{i}]")]
    if isinstance(value, str) and looks_like_key(value):
        return [path]
    return []


# --- loading ---------------------------------------------------------------------------------------------------

# Fields holding file paths: resolved against the job file's folder (file values) or the working folder (flags).
_PATH_FIELDS = ("dataset", "validation")


def load_spec(config: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
              *, flag_names: Mapping[str, str] | None = None, problems: Sequence[str] = ()) -> JobSpec:
    """Build a JobSpec from a job file (YAML, TOML or JSON) and dotted-path overrides (the CLI flags).

    ``overrides`` maps dotted field paths (``"hyperparameters.epochs"``) to values; ``None`` values are
    ignored. ``flag_names`` maps the same paths to the flag that set them, so an error can name the flag.
    ``problems`` found earlier (a malformed flag) are reported together with the rest.
    Raises SpecError listing every problem: the file's syntax, each invalid field, a missing dataset file,
    an unknown backend, backend options the backend does not take, and settings the backend cannot honour.
    """
    source = str(config) if config is not None else None
    raw: dict[str, Any] = _read_job_file(Path(config)) if config is not None else {}
    base = Path(config).resolve().parent if config is not None else Path.cwd()
    for key in _PATH_FIELDS:
        if isinstance(raw.get(key), str):
            raw[key] = _absolute(raw[key], base)
    if isinstance(raw.get("model"), str):
        raw["model"] = _local_model(raw["model"], base)
    from_flags: dict[str, str] = {}
    for path, value in (overrides or {}).items():
        if value is None:
            continue
        if path in _PATH_FIELDS and isinstance(value, str):
            value = _absolute(value, Path.cwd())
        elif path == "model" and isinstance(value, str):
            value = _local_model(value, Path.cwd())
        _set_dotted(raw, path, value)
        from_flags[path] = (flag_names or {}).get(path, path)

    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:  # from None: the pydantic error may hold a secret's value
        raise SpecError([*problems, *_problems(exc, from_flags)], source) from None
    problems = [*problems, *_check_files(spec), *_check_backend(spec)]
    if problems:
        raise SpecError(problems, source)
    return spec


def _absolute(path: str, base: Path) -> str:
    """``path`` made absolute from ``base``, its links resolved where they resolve (a loop is reported by
    ``_check_files``)."""
    absolute = base / Path(path).expanduser()
    try:
        return str(absolute.resolve())
    except (RuntimeError, OSError):  # a loop of symbolic links (RuntimeError before Python 3.13)
        return str(absolute.absolute())


def _local_model(model: str, base: Path) -> str:
    """A model that names an existing local folder or config.json, as an absolute path (the trainer runs in its
    own folder); a catalog name or hub id unchanged."""
    local = base / Path(model).expanduser()
    return str(local.resolve()) if model.strip() and local.exists() else model


# A job file holds a few hundred bytes; anything near this is not one (and /dev/zero would never end).
MAX_JOB_FILE_BYTES = 1 << 20


def _read_job_file(path: Path) -> dict[str, Any]:
    text = _job_file_text(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = load_yaml(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SpecError([f"{path}: a job file ends in .yaml, .yml, .toml or .json"])
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - yaml, toml and json each raise their own syntax errors
        raise SpecError([_syntax_problem(path, exc)], str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([f"{path}: the top level must be a mapping of fields, not {type(data).__name__}"])
    return data


def _job_file_text(path: Path) -> str:
    """The text of a job file: a regular file of at most MAX_JOB_FILE_BYTES, in UTF-8. Opened without waiting, so
    a FIFO is refused instead of hanging until something writes to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError([f"no such job file: {path}"]) from None
    except OSError as exc:
        why = "a loop of symbolic links" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise SpecError([f"cannot read the job file {path}: {why}"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError([f"{path}: a job file must be a regular file (not a folder, device, pipe or socket)"])
    with os.fdopen(fd, "rb") as fh:
        try:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
        except OSError as exc:
            raise SpecError([f"cannot read the job file {path}: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise SpecError([f"{path}: over {MAX_JOB_FILE_BYTES >> 20} MiB, too large for a job file"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"]) from None


def load_yaml(text: str) -> Any:
    """YAML without anchors and aliases: a job file never needs them, and a few nested aliases ("billion laughs")
    expand into a structure too large to check. Refused at the first one, before anything is built."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not accepted",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # a SafeLoader


def _syntax_problem(path: Path, exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        return f"{path}:{mark.line + 1}: {getattr(exc, 'problem', None) or exc}"
    lineno = getattr(exc, "lineno", None)  # json.JSONDecodeError (tomllib puts the line in its message)
    return f"{path}:{lineno}: {exc.msg}" if lineno else f"{path}: {exc}"


def _set_dotted(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[leaf] = value


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(_flatten(item, f"{path}."))
        else:
            flat[path] = item
    return flat


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid field names at ``loc`` (for "did you mean" on a misspelt key)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# Names other tools use for our fields, for "did you mean" where spelling distance cannot tell.
_ALIASES = {"lr": "learning_rate", "n_epochs": "epochs", "num_epochs": "epochs", "num_train_epochs": "epochs",
            "batch_size": "micro_batch_size", "per_device_train_batch_size": "micro_batch_size",
            "gradient_accumulation": "gradient_accumulation_steps", "max_length": "max_seq_len",
            "max_seq_length": "max_seq_len", "rank": "r", "lora_r": "r", "lora_alpha": "alpha",
            "lora_dropout": "dropout", "validation_file": "validation", "training_file": "dataset",
            "base_model": "model", "max_cost": "max_cost_usd"}


def _problems(exc: ValidationError, from_flags: Mapping[str, str]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-after", "literal[", "list[")))
        path = ".".join(str(p) for p in loc) or "(job file)"
        if err["type"] == "extra_forbidden":
            valid = _field_names(JobSpec, loc[:-1])
            alias = _ALIASES.get(str(loc[-1]).lower())
            close = [alias] if alias in valid else difflib.get_close_matches(str(loc[-1]), valid, n=1)
            msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if path.startswith("backend_options"):
                pass  # never echo a value that may be a credential
            elif err["type"] == "missing":
                msg = "required"
            elif isinstance(err.get("input"), str):
                msg += f" (got {err['input'][:60]!r})"
            elif isinstance(err.get("input"), int | float):
                msg += f" (got {err['input']})"
        flag = from_flags.get(path)
        problems.append(f"{path}: {msg}" + (f" (from {flag})" if flag and flag != path else ""))
    return list(dict.fromkeys(problems))  # a union type reports one problem per branch


def _check_files(spec: JobSpec) -> list[str]:
    from ftbroker.data.reader import name_problem

    problems = []
    for key in _PATH_FIELDS:
        value = getattr(spec, key)
        if value is None:
            continue
        unnamed = name_problem(value)
        if unnamed:
            problems.append(f"{key}: {unnamed}")
            continue
        try:
            regular = stat.S_ISREG(os.stat(value).st_mode)
        except OSError as exc:
            why = "a loop of symbolic links" if exc.errno == errno.ELOOP else "no such file"
            problems.append(f"{key}: {why}: {value}")
            continue
        if not regular:
            problems.append(f"{key}: not a regular file: {value}")
    return problems


def _check_backend(spec: JobSpec) -> list[str]:
    """The backend must exist, take these options, and be able to honour every setting the spec makes."""
    from ftbroker.backends import base

    try:
        cls = base.backend_class(spec.backend)
    except FtBrokerError as exc:
        return [f"backend: {exc}"]
    problems = base.option_problems(cls, spec.backend_options)
    problems += cls.capabilities.problems(spec, cls.name)
    return problems
