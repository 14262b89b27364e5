"""The evaluation cache: every answer and every judge verdict, keyed by (model, prompt, settings), so that a rerun,
a second judge or an evaluation stopped half-way never pays for the same call twice.

A SQLite file of its own beside the ledger (``FTBROKER_HOME/eval-cache.sqlite3``): the cache is not the job record,
so filling it is not a change to the ledger, and deleting it loses nothing but money. Writes are single statements
(INSERT OR REPLACE), safe from several processes under WAL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftbroker import clock
from ftbroker.errors import LedgerError
from ftbroker.private import narrow, private_file, private_folder
from ftbroker.redact import scrub

CACHE_NAME = "eval-cache.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


def key(kind: str, identity: str, prompt: Any, settings: Mapping[str, Any]) -> str:
    """The cache key of a call: what was called (``identity``: the model and where it lives), with what, how."""
    text = json.dumps({"kind": kind, "model": identity, "prompt": prompt, "settings": settings}, sort_keys=True,
                      default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    def __init__(self, home: Path):
        self.path = home / CACHE_NAME
        try:  # private, as the ledger: it holds every prompt and answer (the held-out data, the models' replies)
            private_folder(home)
            for path in (self.path, *(self.path.with_name(self.path.name + end) for end in ("-wal", "-shm"))):
                narrow(path)
            private_file(self.path)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the evaluation cache {self.path}: {exc} (delete it to start a new "
                              "one: it only saves repeated calls)") from exc

    def get(self, cache_key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM entries WHERE key = ?", (cache_key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, cache_key: str, kind: str, value: Mapping[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO entries (key, kind, value, created_at) VALUES (?, ?, ?, ?)",
                         (cache_key, kind, scrub(json.dumps(value, ensure_ascii=False)), clock.now().isoformat()))

    def close(self) -> None:
        self._db.close()
