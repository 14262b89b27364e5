"""A plan's route as a job: ``ftbroker run --route N [--from-plan PLAN.json]``.

``ftbroker plan`` keeps the plan it printed, as ``plan --json`` prints it, in ``FTBROKER_HOME/last-plan.json``.
``run --route N`` takes route N from it, or from ``--from-plan`` (a file ``plan --json`` wrote), and builds the job
from the route's ``job`` (its backend, model, method, and the settings and backend options it was priced with) and
the plan's files, so the backend quotes the job as the plan priced the route. Refused, with the reason: a route no
backend runs yet, one that is out or closed, a file changed since the plan read it, a plan of another format.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftbroker.errors import DoesNotFitError, InputError, RouteUnavailableError
from ftbroker.private import private_folder

LAST_PLAN = "last-plan.json"


def save_last_plan(doc: Mapping[str, Any], home: Path) -> Path:
    """Keep ``doc`` (a plan's JSON) as the last plan, private to the user (it names their files and quotes their
    data's problems), replacing the one before at once: never half written."""
    private_folder(home)
    fd, partial = tempfile.mkstemp(dir=home, prefix=f".{LAST_PLAN}.")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
        os.replace(partial, home / LAST_PLAN)
    finally:
        Path(partial).unlink(missing_ok=True)
    return home / LAST_PLAN


def load_plan(source: str | os.PathLike | None, home: Path) -> tuple[dict[str, Any], str]:
    """(the plan's JSON, what to call it in messages): ``source``, else the last plan ``ftbroker plan`` kept."""
    path = Path(source) if source is not None else home / LAST_PLAN
    where = str(source) if source is not None else f"the last plan ({path})"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if source is not None:
            raise InputError(f"{source}: no such plan file") from None
        raise InputError("no plan to take a route from: `ftbroker plan DATA` keeps the plan it prints; or give "
                         "--from-plan PLAN.json (written by `ftbroker plan DATA --json`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not a plan `ftbroker plan --json` wrote: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("routes"), list) or "files" not in doc:
        raise InputError(f"{where}: not a plan this ftbroker wrote (`ftbroker plan --json`): plan again")
    return doc, where


def route_fields(doc: Mapping[str, Any], number: int, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JobSpec fields of route ``number``, as dotted paths; the route): what runs it as the plan priced it.

    Raises InputError (exit 2) for a route ftbroker cannot run or files changed since the plan; the guards' errors
    (exit 3) for a closed route or one that does not fit."""
    route = next((r for r in doc["routes"] if r.get("number") == number), None)
    if route is None:
        raise InputError(f"{where} has no route #{number} (it has #1-#{len(doc['routes'])})")
    label = f"route #{number} ({route.get('id')})"
    if route.get("backend") is None or route.get("job") is None:
        raise InputError(f"{label} cannot be run by ftbroker: {route.get('not_runnable') or 'no backend runs it'}")
    if route.get("closed"):
        raise RouteUnavailableError(f"{label}: {route.get('reason')}")
    if not route.get("feasible"):
        refusal = InputError if route.get("kind") == "managed" else DoesNotFitError
        raise refusal(f"{label} is not available: {route.get('reason')}")
    files = doc["files"]
    if "dataset" not in files:
        raise InputError(f"{where} read no dataset: plan again")
    for role, seen in files.items():
        _check_unchanged(role, seen)
    fields = {"dataset": files["dataset"]["path"]}
    if "validation" in files:
        fields["validation"] = files["validation"]["path"]
    fields.update(_dotted(route["job"]))
    return fields, route


def _check_unchanged(role: str, seen: Mapping[str, Any]) -> None:
    path = seen["path"]
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: the plan's {role} file cannot be read now ({exc.strerror}): plan again") from None
    if (stat.st_size, stat.st_mtime_ns) != (seen["size_bytes"], seen["mtime_ns"]):
        raise InputError(f"{path} has changed since the plan read it (then {seen['size_bytes']:,} bytes, now "
                         f"{stat.st_size:,}; or modified since): its routes are priced for the old data, plan again")


def _dotted(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"hyperparameters": {"epochs": 3}}`` -> ``{"hyperparameters.epochs": 3}`` (the form flags override in)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Mapping):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
