"""``ftbroker catalog update``'s I/O: SkyPilot's published vms.csv of each cloud fetched at its newest commit, and the
rows ``ftbroker.pricing.refresh`` makes of them written into the user's catalog folder, all or none.

Fetching is the only network I/O of ftbroker's core and happens only on the user's command (tests point it at a
loopback server: ``mirror``).
"""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path

from ftbroker.errors import CatalogFetchError
from ftbroker.pricing.catalog import load_catalog, user_catalog_dir
from ftbroker.pricing.refresh import CLOUDS, FIELDS, REPO, SCHEMA, Fetched, Update, changes, parse_vms

GITHUB_API = "https://api.github.com"
GITHUB_RAW = "https://raw.githubusercontent.com"


def update(clouds: Sequence[str], today: date, *, mirror: str | None = None) -> tuple[list[Update], list[Path]]:
    """Read every cloud asked for (all of them: none named), then install their rows: nothing is written unless
    every cloud was read and its rows validate. Returns the updates and the files written."""
    before = load_catalog()
    updates = []
    for cloud in clouds or CLOUDS:
        fetched = fetch(cloud, mirror=mirror)
        rows, skipped = parse_vms(fetched, before, today)
        updates.append(Update(fetched, rows, skipped, changes(cloud, before.instances, rows)))
    return updates, install(updates)


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "ftbroker catalog update",
                                                   "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: bytes = answer.read()
            return body
    except urllib.error.HTTPError as exc:
        raise CatalogFetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CatalogFetchError(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def fetch(cloud: str, *, mirror: str | None = None, schema: str = SCHEMA, timeout: float = 60.0) -> Fetched:
    """The newest commit of ``cloud``'s vms.csv and the file at that commit. ``mirror``: a server that answers both
    GitHub's API paths and its raw-file paths (a proxy, or a test's loopback server)."""
    api, raw = (mirror.rstrip("/"),) * 2 if mirror else (GITHUB_API, GITHUB_RAW)
    path = f"catalogs/{schema}/{cloud}/vms.csv"
    url = f"{api}/repos/{REPO}/commits?path={path}&per_page=1"
    try:
        newest = json.loads(_get(url, timeout))[0]
        sha, when = newest["sha"], newest["commit"]["committer"]["date"]
        day = date.fromisoformat(when[:10])
    except (ValueError, LookupError, TypeError) as exc:
        raise CatalogFetchError(f"{url}: no commit of {path} in the answer") from exc
    data = _get(f"{raw}/{REPO}/{sha}/{path}", timeout)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogFetchError(f"{REPO}@{sha[:8]} {path}: not UTF-8 text") from exc
    return Fetched(cloud, sha, day, path, text)


def _write(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def install(updates: Sequence[Update], folder: Path | None = None) -> list[Path]:
    """Write every update's ``instances-<cloud>.csv`` into the user's catalog folder, all or none: the files are
    written aside, checked by the catalog loader over the catalog in force, then renamed into place."""
    folder = folder or user_catalog_dir()
    staging = folder / ".update"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        staged = []
        for update in updates:
            path = staging / f"instances-{update.fetched.cloud}.csv"
            _write(path, update.rows)
            staged.append(path)
        load_catalog(staged)  # a CatalogError names the file and line; nothing is in place yet
        installed = []
        for path in staged:
            path.replace(folder / path.name)
            installed.append(folder / path.name)
        return installed
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
