"""What the ledger keeps for evaluations (schema v3 in ``ftbroker.ledger``): each evaluation of a job, and each
paid deployment an evaluation creates, recorded BEFORE the provider is asked to create it and kept until it is
deleted, so that no crash, Ctrl-C or second process can lose one (``live_deployments`` lists what is still up)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from ftbroker import clock
from ftbroker.evaluation.records import Evaluation
from ftbroker.ledger import Ledger
from ftbroker.redact import scrub

# deployment states: intent (recorded, not yet asked for) -> creating -> live -> deleting -> deleted; failed
ACTIVE = ("intent", "creating", "live", "deleting", "failed")


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# --- evaluations ---------------------------------------------------------------------------------------------

def save_evaluation(ledger: Ledger, evaluation: Evaluation) -> None:
    win = evaluation.win_rate.rate if evaluation.win_rate else None
    regression = bool(evaluation.capability and evaluation.capability.regression)
    total = evaluation.costs.total_usd
    with ledger.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO evaluations (id, job_id, created_at, status, judge, examples, base_score,"
            " tuned_score, win_rate, regression, cost_usd, error, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?)",
            (evaluation.id, evaluation.job_id, _ts(evaluation.created_at), evaluation.status,
             evaluation.win_rate.judge if evaluation.win_rate else None, evaluation.examples,
             evaluation.score("base"), evaluation.score("tuned"), win, int(regression),
             str(Decimal(str(total))) if total is not None else None, evaluation.error,
             scrub(evaluation.model_dump_json())))


def latest_evaluation(ledger: Ledger, job_id: str) -> Evaluation | None:
    """The job's newest completed evaluation."""
    rows = ledger.read("SELECT summary FROM evaluations WHERE job_id = ? AND status = 'completed'"
                       " ORDER BY created_at DESC, rowid DESC LIMIT 1", (job_id,))
    return Evaluation.model_validate_json(rows[0]["summary"]) if rows else None


def evaluations(ledger: Ledger, job_id: str) -> list[Evaluation]:
    rows = ledger.read("SELECT summary FROM evaluations WHERE job_id = ? ORDER BY created_at, rowid", (job_id,))
    return [Evaluation.model_validate_json(r["summary"]) for r in rows]


@dataclass(frozen=True)
class Score:
    """The headline of a job's latest evaluation, for ``ftbroker jobs``."""

    base: float | None
    tuned: float | None
    win_rate: float | None
    regression: bool


def latest_scores(ledger: Ledger, job_ids: Sequence[str]) -> dict[str, Score]:
    if not job_ids:
        return {}
    marks = ", ".join("?" for _ in job_ids)
    rows = ledger.read(
        f"SELECT job_id, base_score, tuned_score, win_rate, regression FROM evaluations WHERE job_id IN ({marks})"
        " AND status = 'completed' ORDER BY created_at, rowid", job_ids)
    return {r["job_id"]: Score(r["base_score"], r["tuned_score"], r["win_rate"], bool(r["regression"])) for r in rows}


# --- deployments -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploymentRecord:
    """A paid deployment as the ledger knows it. ``remote``: the provider's handles (endpoint and deployment ids,
    an ARN, the name to call) and the settings to reach it again (region, base URL), never a secret."""

    id: str  # also its name at the provider (and Bedrock's idempotency token)
    job_id: str
    provider: str
    model: str  # what it serves
    state: str
    remote: Mapping[str, str] = field(default_factory=dict)
    usd_per_hour: Decimal | None = None
    created_at: datetime | None = None
    live_at: datetime | None = None
    deleted_at: datetime | None = None
    detail: str | None = None
    in_use: bool = False  # an evaluation (or a clean-up) of its job holds the job's lock now

    def hours(self, until: datetime | None = None) -> float:
        """How long it has existed (from the create call to its deletion, or ``until``)."""
        end = self.deleted_at or until or clock.now()
        return max(0.0, (end - self.created_at).total_seconds() / 3600) if self.created_at else 0.0


def _record(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"], job_id=row["job_id"], provider=row["provider"], model=row["model"], state=row["state"],
        remote=json.loads(row["remote"]), usd_per_hour=Decimal(row["usd_per_hour"]) if row["usd_per_hour"] else None,
        created_at=_dt(row["created_at"]), live_at=_dt(row["live_at"]), deleted_at=_dt(row["deleted_at"]),
        detail=row["detail"])


def record_intent(ledger: Ledger, record: DeploymentRecord) -> DeploymentRecord:
    """Write a deployment before it is created (an existing row of this id is kept as it is)."""
    now = _ts(clock.now())
    with ledger.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO deployments (id, job_id, provider, model, state, remote, usd_per_hour,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'intent', ?, ?, ?, ?)",
            (record.id, record.job_id, record.provider, record.model, scrub(json.dumps(dict(record.remote))),
             str(record.usd_per_hour) if record.usd_per_hour is not None else None, now, now))
    return get_deployment(ledger, record.id)


def update_deployment(ledger: Ledger, deployment_id: str, *, state: str | None = None,
                      remote: Mapping[str, str] | None = None, detail: str | None = None) -> DeploymentRecord:
    """Merge ``remote`` into the record's handles and move it to ``state`` (live and deleted get their time)."""
    now = _ts(clock.now())
    with ledger.transaction() as db:
        row = db.execute("SELECT remote FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        sets: dict[str, Any] = {"updated_at": now}
        if remote:
            sets["remote"] = scrub(json.dumps({**json.loads(row["remote"]), **remote}))
        if state is not None:
            sets["state"] = state
            if state == "live":
                sets["live_at"] = now
            if state == "deleted":
                sets["deleted_at"] = now
            if state == "creating":  # billing starts with the create call
                sets["created_at"] = now
        if detail is not None:
            sets["detail"] = scrub(detail)
        db.execute(f"UPDATE deployments SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                   (*sets.values(), deployment_id))
    return get_deployment(ledger, deployment_id)


def get_deployment(ledger: Ledger, deployment_id: str) -> DeploymentRecord:
    rows = ledger.read("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
    if not rows:
        from ftbroker.errors import InputError

        raise InputError(f"no deployment {deployment_id} in the ledger {ledger.path}")
    return _record(rows[0])


def active_deployments(ledger: Ledger, job_id: str | None = None) -> list[DeploymentRecord]:
    """Every deployment not yet deleted (of one job, or of all), oldest first."""
    marks = ", ".join("?" for _ in ACTIVE)
    where, args = f"state IN ({marks})", list(ACTIVE)
    if job_id is not None:
        where += " AND job_id = ?"
        args.append(job_id)
    return [_record(r) for r in ledger.read(f"SELECT * FROM deployments WHERE {where} ORDER BY created_at", args)]


def deployments_of(ledger: Ledger, job_id: str, prefix: str) -> list[DeploymentRecord]:
    rows = ledger.read("SELECT * FROM deployments WHERE job_id = ? AND id LIKE ? ORDER BY created_at",
                       (job_id, prefix + "%"))
    return [_record(r) for r in rows]


def mark_in_use(records: Sequence[DeploymentRecord], busy: Mapping[str, bool]) -> list[DeploymentRecord]:
    return [replace(r, in_use=busy.get(r.job_id, False)) for r in records]
