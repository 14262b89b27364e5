"""The job ledger: every job ftbroker ever started, in one SQLite file under ``FTBROKER_HOME``.

A job is written here before any side effect (upload, remote create, process launch), so a crash never
loses one. Several CLI processes may use the ledger at once: WAL journaling lets readers run beside a
writer, every write is one ``BEGIN IMMEDIATE`` transaction (so two writers queue instead of failing), and a
busy timeout absorbs the wait. The schema carries a version (``PRAGMA user_version``) and is migrated forward
on open, inside a transaction; a ledger written by a newer ftbroker is refused rather than damaged.

Secrets never reach the file: text going in is scrubbed of the values of credential-like environment
variables (a last line of defence; backends must not emit them in the first place).

Leases: one process at a time may act on a job (submit it, resume it, cancel it: anything that spends money or
starts a process). It takes the job's lease (``claim``) in one write transaction, so of several processes that try
at once exactly one gets it; the others get ``JobBusyError`` saying who holds it. A holder renews its lease while it
works (``LeaseKeeper``); a lease whose holder died is taken over once it runs out, or at once when the holder was a
process of this machine that is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

from ftbroker import clock
from ftbroker.errors import InputError, JobBusyError, JobNotFoundError, LedgerDamagedError, LedgerError
from ftbroker.jobs import Artifact, Event, Job, JobStatus, MetricPoint, Progress, Result
from ftbroker.ledger_schema import MIGRATIONS, SCHEMA_VERSION
from ftbroker.private import FOLDER_MODE, narrow, private_file
from ftbroker.redact import scrub
from ftbroker.spec import JobSpec

ID_PREFIX = "ftb-"
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: ids are read aloud and typed
_ID_LENGTH = 8  # 32**8 ~ 1.1e12: collisions are retried, not assumed away
BUSY_TIMEOUT_MS = 30_000
_SQLITE_INT_MAX = 2**63 - 1
LEASE_TTL_S = 60.0  # a holder renews its lease every quarter of this; a dead holder's lease runs out after it
LEDGER_NAME = "ledger.sqlite3"  # in FTBROKER_HOME


def default_home() -> Path:
    """ftbroker's data folder: ``$FTBROKER_HOME``, else the user's data folder (platformdirs)."""
    env = os.environ.get("FTBROKER_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("ftbroker", appauthor=False))


def _now() -> datetime:
    return clock.now()


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _money(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _json(value: Any) -> str:
    return scrub(json.dumps(value, default=str, sort_keys=True))


# --- leases ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """This process's claim to act alone on a job: what it does (said to whoever finds the job busy), how long the
    lease lasts without renewal, and who it is."""

    purpose: str  # what it does to the job, for whoever finds it busy: "submitting", "resuming", "ftbroker eval"
    ttl_s: float = LEASE_TTL_S
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True)
class Lease:
    """A job's lease as the ledger holds it."""

    job_id: str
    purpose: str
    pid: int
    host: str
    since: datetime
    expires_at: datetime

    def lapsed(self, now: datetime) -> bool:
        """Run out, or held by a process of this machine that is gone (killed, crashed)."""
        return now >= self.expires_at or (self.host == socket.gethostname() and _process_gone(self.pid))

    def busy_error(self) -> JobBusyError:
        since = self.since.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        until = self.expires_at.astimezone().strftime("%H:%M:%S")
        return JobBusyError(
            f"job {self.job_id} is busy: another ftbroker process is at it ({self.purpose}; pid {self.pid} on "
            f"{self.host}, since {since}); nothing was done. Try again when it has finished (should that process "
            f"have died on another machine, its lease runs out at {until})", holder=self)


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs here (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(job_id=row["job_id"], purpose=row["purpose"], pid=row["pid"], host=row["host"],
                 since=_dt(row["since"]), expires_at=_dt(row["expires_at"]))


class LeaseKeeper:
    """Renews a lease every quarter of its lifetime from a thread (and a connection) of its own, while the act it
    covers runs (an upload may take many minutes). ``lost``: another process took the lease over meanwhile (this one
    stalled past the lease's lifetime)."""

    def __init__(self, path: Path, job_id: str, claim: Claim):
        self.path, self.job_id, self.claim = path, job_id, claim
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {job_id}", daemon=True)

    def _run(self) -> None:
        ledger = None
        try:
            while not self._stop.wait(self.claim.ttl_s / 4):
                try:
                    ledger = ledger or Ledger(self.path)
                    if not ledger.renew(self.job_id, self.claim):
                        self.lost = True
                        return
                except LedgerError:  # locked for longer than the busy timeout: try again at the next turn
                    continue
        finally:
            if ledger is not None:
                ledger.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


# --- the ledger -----------------------------------------------------------------------------------------------

class Ledger:
    """The job ledger. One instance per process and thread; open, use, close (or use as a context manager)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_home() / LEDGER_NAME
        try:
            self.path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            for path in (self.path, *(self.path.with_name(self.path.name + end) for end in ("-wal", "-shm"))):
                narrow(path)  # SQLite makes its -wal and -shm files with the ledger's own permissions
            private_file(self.path)
        except OSError as exc:
            raise LedgerError(f"cannot make the job ledger {self.path}: {exc.strerror or exc} "
                              "(FTBROKER_HOME must name a folder)") from exc
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._use_wal()
            # WAL + NORMAL: a commit survives the process dying (kill -9, a crash) and the file never corrupts;
            # only an OS crash or power cut can drop the last commits. FULL would fsync every one (0.3-1.2 ms
            # each here, some 15-60x slower), and every poll of every job commits.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise self._failure(exc, "open") from exc

    def _use_wal(self) -> None:
        """Switch to write-ahead logging. The switch needs the file to itself for a moment and SQLite answers
        "database is locked" at once instead of waiting (no busy handler), e.g. while another process creates the
        ledger: retry until the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front so concurrent writers queue."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"the job ledger {self.path} is locked or unwritable: {exc}") from exc
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback()
            raise self._failure(exc, "write") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the job ledger {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:  # the failure already ended the transaction
            pass

    def _failure(self, exc: sqlite3.Error, doing: str) -> LedgerError:
        """The LedgerError for a failed SQLite call: a damaged file says how to recover."""
        if any(word in str(exc) for word in ("malformed", "not a database", "corrupt")):
            return LedgerDamagedError(f"the job ledger {self.path} is damaged ({exc}): {RECOVERY}")
        return LedgerError(f"cannot {doing} the job ledger {self.path}: {exc} (set FTBROKER_HOME to use another "
                           "folder)")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(exc, "read") from exc

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the job ledger {self.path} has schema version {version}, newer than this "
                              f"ftbroker understands ({SCHEMA_VERSION}); upgrade ftbroker")
        if version == SCHEMA_VERSION:
            return
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the ledger, for the tables other modules keep in it (evaluations, deployments):
        the same queueing of concurrent writers as the job writes."""
        with self._write() as db:
            yield db

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query (for the tables other modules keep in the ledger)."""
        return self._rows(sql, tuple(args))

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    # --- writing ---

    def create(self, spec: JobSpec, *, estimated_cost_usd: Decimal | None = None,
               resources: Mapping[str, float | str] | None = None, claim: Claim | None = None) -> Job:
        """Record a new job as an intent (status ``queued``, not yet submitted) and return it with its id; with
        ``claim``, its lease is taken in the same transaction (no other process can act on it first)."""
        moment = _now()
        now = _ts(moment)
        with self._write() as db:
            for _ in range(10):
                job_id = ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
                try:
                    db.execute(
                        "INSERT INTO jobs (id, backend, model, method, status, spec, created_at, updated_at,"
                        " estimated_cost_usd, resources) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (job_id, spec.backend, spec.model, spec.method, JobStatus.QUEUED.value,
                         _json(spec.to_json()), now, now, _money(estimated_cost_usd), _json(dict(resources or {}))))
                    break
                except sqlite3.IntegrityError:
                    continue
            else:  # pragma: no cover - ten collisions in a 1e12 space
                raise LedgerError("could not allocate a unique job id")
            db.execute("INSERT INTO status_history (job_id, time, status, detail) VALUES (?, ?, ?, ?)",
                       (job_id, now, JobStatus.QUEUED.value, "recorded"))
            if claim is not None:
                self._take(db, job_id, claim, moment)
        return self.get(job_id)

    def claim(self, job_id: str, claim: Claim) -> None:
        """Take the job's lease, or raise JobBusyError naming the process that holds it. Atomic across processes."""
        with self._write() as db:
            row = db.execute("SELECT * FROM leases WHERE job_id = ?", (job_id,)).fetchone()
            now = _now()
            if row is not None and row["token"] != claim.token and not _lease(row).lapsed(now):
                raise _lease(row).busy_error()
            self._take(db, job_id, claim, now)

    @staticmethod
    def _take(db: sqlite3.Connection, job_id: str, claim: Claim, now: datetime) -> None:
        db.execute("INSERT OR REPLACE INTO leases (job_id, token, purpose, pid, host, since, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (job_id, claim.token, claim.purpose, claim.pid, claim.host, _ts(now),
                    _ts(now + timedelta(seconds=claim.ttl_s))))

    def renew(self, job_id: str, claim: Claim) -> bool:
        """Push the lease's end ``claim.ttl_s`` ahead; False when it is no longer this claim's (taken over)."""
        with self._write() as db:
            cursor = db.execute("UPDATE leases SET expires_at = ? WHERE job_id = ? AND token = ?",
                                (_ts(_now() + timedelta(seconds=claim.ttl_s)), job_id, claim.token))
            return cursor.rowcount == 1

    def release(self, job_id: str, claim: Claim) -> None:
        """Give the lease back (a lease taken over by another process is left to it)."""
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE job_id = ? AND token = ?", (job_id, claim.token))

    @contextmanager
    def exclusive(self, job_id: str, purpose: str, ttl_s: float = LEASE_TTL_S) -> Iterator[LeaseKeeper]:
        """Hold the job's lease while the block runs (``claim``, then ``kept``). The Broker's ``exclusive`` is this,
        for backends; a part of ftbroker that holds a Ledger and no Broker (an evaluation) takes it here."""
        claim = Claim(purpose, ttl_s)
        self.claim(job_id, claim)
        with self.kept(job_id, claim) as keeper:
            yield keeper

    @contextmanager
    def kept(self, job_id: str, claim: Claim) -> Iterator[LeaseKeeper]:
        """Renew a lease already taken while the block runs, and give it back after."""
        keeper = LeaseKeeper(self.path, job_id, claim)
        try:
            with keeper:
                yield keeper
        finally:
            self.release(job_id, claim)

    def held(self, job_id: str) -> bool:
        """Whether a process holds the job's lease now (one that lapsed does not count)."""
        lease = self.lease(job_id)
        return lease is not None and not lease.lapsed(_now())

    def lease(self, job_id: str) -> Lease | None:
        """Who holds the job's lease now, if anyone does (a lapsed lease is reported as it is)."""
        rows = self._rows("SELECT * FROM leases WHERE job_id = ?", (job_id,))
        return _lease(rows[0]) if rows else None

    def update(self, job_id: str, *, status: JobStatus | None = None, detail: str | None = None,
               remote: Mapping[str, str] | None = None, cursor: str | None = None,
               progress: Progress | None = None, submitted: bool = False, error: str | None = None,
               trained_tokens: int | None = None, actual_cost_usd: Decimal | None = None,
               output_model: str | None = None, resources: Mapping[str, float | str] | None = None,
               events: Sequence[Event] = (), metrics: Sequence[MetricPoint] = (),
               artifacts: Sequence[Artifact] = (), result: Result | None = None) -> Job:
        """Apply everything one step learnt about a job, atomically. ``None`` leaves a field as it is;
        ``remote`` and ``resources`` are merged key by key; a status change is added to the history and sets
        ``started_at`` / ``finished_at`` the first time the job runs / ends; a job that leaves a final status
        (resumed) loses its old error and result."""
        now = _now()
        with self._write() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job {job_id} in the ledger {self.path}")
            sets: dict[str, Any] = {"updated_at": _ts(now)}
            if status is not None and (status.value != row["status"] or detail != row["status_detail"]):
                sets["status"], sets["status_detail"] = status.value, detail
                db.execute("INSERT INTO status_history (job_id, time, status, detail) VALUES (?, ?, ?, ?)",
                           (job_id, _ts(now), status.value, detail))
                if status is JobStatus.RUNNING and row["started_at"] is None:
                    sets["started_at"] = _ts(now)
                if status.terminal:
                    sets["finished_at"] = _ts(now)
                elif JobStatus(row["status"]).terminal:  # resumed: the old ending no longer holds
                    sets.update(finished_at=None, error=None, result=None)
            if remote:
                sets["remote"] = _json({**json.loads(row["remote"]), **remote})
            if resources:
                sets["resources"] = _json({**json.loads(row["resources"]), **resources})
            if submitted and row["submitted_at"] is None:
                sets["submitted_at"] = _ts(now)
            for column, value in (("cursor", cursor), ("trained_tokens", trained_tokens),
                                  ("output_model", output_model)):
                if value is not None:
                    sets[column] = value
            if error is not None:
                sets["error"] = scrub(error)
            if actual_cost_usd is not None:
                sets["actual_cost_usd"] = _money(actual_cost_usd)
            if progress is not None:
                sets["progress"] = _json(progress.model_dump(mode="json", exclude_none=True))
            if result is not None:
                sets["result"] = _json(result.model_dump(mode="json"))
            db.execute(f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
                       (*sets.values(), job_id))
            db.executemany(
                "INSERT INTO events (job_id, time, kind, level, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, _ts(e.time), e.kind, e.level, scrub(e.message), _json(e.data)) for e in events])
            db.executemany(
                "INSERT OR REPLACE INTO metrics (job_id, name, step, value, epoch, tokens_seen)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, m.name, m.step, m.value, m.epoch, m.tokens_seen) for m in metrics])
            db.executemany(
                "INSERT OR REPLACE INTO artifacts (job_id, kind, uri, description) VALUES (?, ?, ?, ?)",
                [(job_id, a.kind, scrub(a.uri), scrub(a.description)) for a in artifacts])
        return self.get(job_id)

    # --- reading ---

    def resolve(self, ref: str) -> str:
        """The full id for a job id or a unique prefix of one, with or without ``ftb-``; a start of ``ftb-`` itself
        ("ftb") that no id continues (no "ftb-ftb...") is taken as it is: the start of every id."""
        given = ref.strip()
        if not given:
            raise InputError("give a job id (`ftbroker jobs` lists them)")
        starts = [given] if given.startswith(ID_PREFIX) else [ID_PREFIX + given]
        if ID_PREFIX.startswith(given):
            starts.append(given)
        for start in starts:
            ids = self._ids_starting(start)
            if ids:
                break
        if start in ids:
            return start
        if len(ids) == 1:
            return ids[0]
        if not ids:
            looked_for = given if len(starts) > 1 else start  # "ftb-3k" for "3k"; "ftb" as it is
            raise JobNotFoundError(f"no job {looked_for} in the ledger {self.path} (`ftbroker jobs` lists them)")
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise InputError(f"job id prefix {given!r} is ambiguous: it matches {shown}; give more characters")

    def _ids_starting(self, start: str) -> list[str]:
        """Up to 11 ids starting with ``start`` (taken literally: no LIKE wildcards)."""
        pattern = start.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [r[0] for r in self._rows("SELECT id FROM jobs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 11",
                                         (pattern,))]

    def get(self, ref: str) -> Job:
        """The job with this id or unique id prefix."""
        row = self._rows("SELECT * FROM jobs WHERE id = ?", (self.resolve(ref),))[0]
        try:
            return _job(row)
        except _BAD_ROW as exc:
            raise LedgerDamagedError(f"job {row['id']} cannot be read from the job ledger {self.path}: "
                                     f"{_first_line(exc)}") from exc

    def list(self, *, limit: int | None = None, backend: str | None = None,
             status: JobStatus | None = None) -> list[Job]:
        """Jobs, newest first. A row that cannot be read raises LedgerDamagedError naming it, after every other
        row was read (its ``readable``): one damaged row does not hide the rest."""
        where, args = [], []
        if backend is not None:
            where.append("backend = ?")
            args.append(backend)
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(min(int(limit), _SQLITE_INT_MAX))  # more than the ledger can hold: all of them
        jobs, bad = [], []
        for row in self._rows(sql, args):
            try:
                jobs.append(_job(row))
            except _BAD_ROW as exc:
                bad.append(f"{row['id']} ({_first_line(exc)})")
        if bad:
            raise LedgerDamagedError(f"{len(bad)} job{'s' if len(bad) > 1 else ''} in the job ledger {self.path} "
                                     f"cannot be read: {'; '.join(bad)}", readable=jobs)
        return jobs

    def has_jobs(self) -> bool:
        return bool(self._rows("SELECT 1 FROM jobs LIMIT 1"))

    def restore(self, job_id: str, spec: JobSpec, *, status: JobStatus, created_at: datetime,
                remote: Mapping[str, str], submitted: bool, note: str) -> bool:
        """Record a job under the id it already has (``ftbroker ledger rebuild``); False if the id is taken."""
        created = _ts(created_at)
        with self._write() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO jobs (id, backend, model, method, status, spec, remote, created_at, updated_at,"
                " submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, spec.backend, spec.model, spec.method, status.value, _json(spec.to_json()),
                 _json(dict(remote)), created, _ts(_now()), created if submitted else None)).rowcount
            if inserted:
                db.execute("INSERT INTO status_history (job_id, time, status, detail) VALUES (?, ?, ?, ?)",
                           (job_id, _ts(_now()), status.value, note))
                db.execute("INSERT INTO events (job_id, time, kind, level, message) VALUES (?, ?, ?, ?, ?)",
                           (job_id, _ts(_now()), "status", "warning", note))
        return bool(inserted)

    def events(self, job_id: str, *, after: int = 0) -> list[tuple[int, Event]]:
        """(sequence number, event) pairs after ``after``, oldest first: follow by passing the last number."""
        rows = self._rows("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after))
        return [(r["seq"], Event(time=_dt(r["time"]), kind=r["kind"], level=r["level"], message=r["message"],
                                 data=json.loads(r["data"]))) for r in rows]

    def metrics(self, job_id: str) -> list[MetricPoint]:
        rows = self._rows("SELECT * FROM metrics WHERE job_id = ? ORDER BY name, step", (job_id,))
        return [MetricPoint(step=r["step"], name=r["name"], value=r["value"], epoch=r["epoch"],
                            tokens_seen=r["tokens_seen"]) for r in rows]

    def artifacts(self, job_id: str) -> list[Artifact]:
        rows = self._rows("SELECT * FROM artifacts WHERE job_id = ? ORDER BY kind, uri", (job_id,))
        return [Artifact(kind=r["kind"], uri=r["uri"], description=r["description"]) for r in rows]

    def history(self, job_id: str) -> list[tuple[datetime, JobStatus, str | None]]:
        rows = self._rows("SELECT * FROM status_history WHERE job_id = ? ORDER BY seq", (job_id,))
        return [(_dt(r["time"]), JobStatus(r["status"]), r["detail"]) for r in rows]

    def stored_result(self, job_id: str) -> Result | None:
        rows = self._rows("SELECT result FROM jobs WHERE id = ?", (job_id,))
        return Result.model_validate_json(rows[0]["result"]) if rows and rows[0]["result"] else None


# What reading a damaged row raises: bad JSON or a bad field (ValueError, pydantic's ValidationError), a bad
# amount (decimal's InvalidOperation), a NULL where text belongs (TypeError)
_BAD_ROW = (ValueError, TypeError, ArithmeticError)
RECOVERY = ("move the file aside (`sqlite3 FILE .recover` may save its rows), then `ftbroker ledger rebuild` "
            "re-creates the entries of the local jobs from their run folders")


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], spec=JobSpec.model_validate_json(row["spec"]), status=JobStatus(row["status"]),
        status_detail=row["status_detail"], remote=json.loads(row["remote"]), cursor=row["cursor"],
        progress=Progress.model_validate_json(row["progress"]) if row["progress"] else None,
        created_at=_dt(row["created_at"]), updated_at=_dt(row["updated_at"]),
        submitted_at=_dt(row["submitted_at"]), started_at=_dt(row["started_at"]),
        finished_at=_dt(row["finished_at"]),
        estimated_cost_usd=Decimal(row["estimated_cost_usd"]) if row["estimated_cost_usd"] else None,
        actual_cost_usd=Decimal(row["actual_cost_usd"]) if row["actual_cost_usd"] else None,
        trained_tokens=row["trained_tokens"], output_model=row["output_model"], error=row["error"],
        resources=json.loads(row["resources"]))
