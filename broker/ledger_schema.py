"""The ledger's SQLite schema, as the migrations that build it: a ledger at version n (``PRAGMA user_version``) has
run the first n of them. ``ftbroker.ledger`` runs the ones a ledger lacks when it opens it."""

_V1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL,
    status_detail TEXT,
    spec TEXT NOT NULL,
    remote TEXT NOT NULL DEFAULT '{}',
    cursor TEXT,
    progress TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    submitted_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    estimated_cost_usd TEXT,
    actual_cost_usd TEXT,
    trained_tokens INTEGER,
    output_model TEXT,
    error TEXT,
    result TEXT
);
CREATE INDEX jobs_by_created ON jobs (created_at);
CREATE TABLE status_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    time TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX status_history_by_job ON status_history (job_id, seq);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_job ON events (job_id, seq);
CREATE TABLE metrics (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    epoch REAL,
    tokens_seen INTEGER,
    PRIMARY KEY (job_id, name, step)
);
CREATE TABLE artifacts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    kind TEXT NOT NULL,
    uri TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, uri)
);
"""

# v2: estimated vs measured resources per job (peak memory, tokens/s): the estimator's calibration data.
_V2 = "ALTER TABLE jobs ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';"

# v3: evaluations of a job (``ftbroker eval``), and the paid deployments an evaluation creates (a dedicated endpoint,
# Provisioned Throughput), recorded before they are created so that no process can lose one (ftbroker.evaluation).
_V3 = """
CREATE TABLE evaluations (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    judge TEXT,
    examples INTEGER NOT NULL,
    base_score REAL,
    tuned_score REAL,
    win_rate REAL,
    regression INTEGER NOT NULL DEFAULT 0,
    cost_usd TEXT,
    error TEXT,
    summary TEXT NOT NULL
);
CREATE INDEX evaluations_by_job ON evaluations (job_id, created_at);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    remote TEXT NOT NULL DEFAULT '{}',
    usd_per_hour TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    live_at TEXT,
    deleted_at TEXT,
    detail TEXT
);
CREATE INDEX deployments_by_state ON deployments (state);
"""

# v4: who acts on a job right now (see Leases above): at most one row per job, deleted when the act ends.
_V4 = """
CREATE TABLE leases (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    token TEXT NOT NULL,
    purpose TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    since TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
"""

# Migration n brings a ledger from version n-1 to n. Append only; never edit a released step.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)
