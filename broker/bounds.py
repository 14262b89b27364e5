"""The plausibility bounds of the counts and lengths a user gives (GPUs, tokens, batch, epochs, rank), each with
why: the one place ``plan``, ``estimate`` and ``run`` take them from (click options, the JobSpec, the estimator).

A value past a bound is a typo, never a job: ``--gpu H100:99999999999999999999`` was quoted at $2.9 trillion and
``estimate --seq-len 1e20`` answered 2.6e16 GiB. Such a value is refused (exit 2) saying what exists. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftbroker.errors import InputError

_LONGEST_CONTEXT = ("longer than any model's context: the catalog's longest is 131,072 tokens, the longest open models "
                    "read about 1M")


@dataclass(frozen=True)
class Bound:
    low: int
    high: int
    unit: str
    why: str  # why nothing above ``high`` exists (said when a value is refused)

    def problem(self, value: int) -> str | None:
        """What is wrong with ``value``, or None."""
        if value < self.low:
            return f"must be at least {self.low:,}"
        if value > self.high:
            return f"at most {self.high:,} {self.unit}: {self.why}"
        return None


BOUNDS: dict[str, Bound] = {
    "gpus": Bound(1, 64, "GPUs per job", "a job trains on one machine (the local trainer does not span machines), "
                                         "and the largest servers hold 8 to 16"),
    "seq_len": Bound(1, 1 << 20, "tokens", _LONGEST_CONTEXT),
    "max_seq_len": Bound(16, 1 << 20, "tokens", _LONGEST_CONTEXT),
    "micro_batch": Bound(1, 4096, "sequences", "more than any GPU holds in one step (fine-tuning runs use 1 to 64)"),
    "grad_accum": Bound(1, 4096, "micro-batches", "effective batches of fine-tuning runs are in the tens to hundreds"),
    "epochs": Bound(1, 100, "epochs", "a fine-tune overfits long before (OpenAI takes at most 50)"),
    "n_evals": Bound(0, 1000, "evaluations", "more evaluations than a run needs (providers cap them per model)"),
    "lora_r": Bound(1, 1024, "(LoRA rank)", "ranks past a few hundred approach full fine-tuning's cost with none "
                                            "of its gain (the LoRA paper used 1 to 64)"),
    "lora_alpha": Bound(1, 4096, "(LoRA alpha)", "alpha is a scale of about 1 to 2 times the rank"),
    "seed": Bound(0, 2**31 - 1, "(seed)", "the seeds numpy and torch take are 32-bit"),
    "early_stopping_patience": Bound(1, 100, "evaluations", "no more evaluations than that are made"),
}


def problem(name: str, value: int) -> str | None:
    return BOUNDS[name].problem(value)


def check(name: str, value: int, label: str) -> int:
    """``value``, or an InputError naming ``label`` (the flag or field) and why."""
    why = problem(name, value)
    if why is not None:
        raise InputError(f"{label} {value}: {why}")
    return value


def validator(name: str):
    """A pydantic after-validator holding a field to its bound (None passes: "the backend's default")."""

    def validate(value: Any) -> Any:
        why = problem(name, value) if value is not None else None
        if why is not None:
            raise ValueError(why)
        return value

    return validate
