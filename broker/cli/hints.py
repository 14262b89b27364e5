"""How to change what a note says, on the command line. Computation states facts (``ftbroker.routes.Note``: the
fact and the setting that changes it, so an SDK user is never told to pass a flag); the CLI adds its flag."""

from __future__ import annotations

from collections.abc import Mapping

# a Note's setting -> what to do about it, on the command that shows the note
PLAN_HINTS = {"epochs": "--epochs prices it", "models": "--model prices another model", "n_evals": "--n-evals sets it"}
RUN_HINTS = {**PLAN_HINTS, "n_evals": "--option n_evals=N sets it"}  # run gives Together's evaluations as an option


def worded(note: str, hints: Mapping[str, str] = PLAN_HINTS) -> str:
    """The note as the CLI says it: the fact, then the flag that changes it (a note no setting changes: as it is)."""
    hint = hints.get(getattr(note, "setting", ""))
    return f"{note}; {hint}" if hint else note
