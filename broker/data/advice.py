"""The advice a dataset and its training set-up call for: never an error, a common mistake they are open to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftbroker.data.report import DatasetReport


@dataclass(frozen=True)
class Advice:
    """Never an error: a common mistake this dataset or set-up is open to."""

    message: str
    reason: str
    suggestion: str



def advise(
    report: DatasetReport,
    *,
    lora_r: int | None = None,
    epochs: float | None = None,
    has_validation: bool | None = None,
) -> list[Advice]:
    """Advice lines for a dataset and the training set-up (None: not known, no advice on it). Pure."""
    n = report.examples
    out = []
    if 0 < n < 200:
        out.append(
            Advice(
                f"{n} example{'s' if n != 1 else ''} is a small set",
                "under ~200 examples a model tends to memorise the examples rather than learn the pattern",
                "collect a few hundred varied examples; meanwhile train 1-3 epochs with a low LoRA rank",
            )
        )
    if lora_r is not None and lora_r >= 64 and 0 < n < 10_000:
        out.append(
            Advice(
                f"LoRA rank {lora_r} on {n:,} examples",
                "a rank of 64 or more has far more capacity than under 10K examples need, and overfits",
                "use r=8 to 16 (alpha 2r)",
            )
        )
    if epochs is not None and 0 < n and (epochs > 5 or (epochs > 3 and n < 1_000)):
        out.append(
            Advice(
                f"{epochs:g} epochs on {n:,} examples",
                "every example is seen many times: the training loss keeps falling while the model overfits",
                "train 2-3 epochs with a validation split and stop when the validation loss stops falling",
            )
        )
    if has_validation is False:
        out.append(
            Advice(
                "no validation split",
                "without held-out examples overfitting goes unseen",
                "hold out 5-10% of the examples (at least 20) as a validation file",
            )
        )
    return out
