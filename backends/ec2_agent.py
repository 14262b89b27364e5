"""The instance's side of an EC2 job: ``python -m ftbroker.backends.ec2_agent run ...``.

The bootstrap (``ec2_bootstrap.sh``, the instance's user data) sets the hard runtime cap, installs this very
ftbroker from the wheel the broker staged, then starts this agent, which:

1. fetches the job's inputs (``input/``: config.json, data, a local model folder) and what an earlier attempt left
   (``run/``: events, checkpoints) from S3 into ``WORK/run``;
2. runs the SAME trainer as ``--backend local`` (``run_command``; the user's own recipe when one was staged),
   with ``--resume`` when a checkpoint came back;
3. while it runs: writes ``heartbeat.json`` every ``--heartbeat-s`` seconds (its own thread, so a long upload never
   delays it), syncs the run folder to ``run/`` (a checkpoint once complete, events.jsonl last, so what the broker
   reads never runs ahead of the files it names), turns the ``cancel`` marker the broker writes into SIGTERM for the
   trainer (which saves a checkpoint and stops), and does the same on a spot interruption notice (instance metadata,
   polled every 5 s as AWS recommends:
   https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html);
4. after a last sync, writes the final heartbeat (phase ``finished``, the trainer's outcome), and exits; the
   bootstrap's EXIT trap then powers the machine off, which terminates it.

S3 layout, under ``s3_uri/JOB_ID/`` (the names both sides use are the constants below)::

    input/config.json  input/data/*.jsonl  input/model/...     staged by the broker (input/trainer.py: the user's
                                                              own recipe, the ``trainer`` option)
    run/events.jsonl  run/metrics.jsonl  run/trainer.log  run/checkpoints/...  run/output/...  run/result.json
    heartbeat.json                                            {"time", "attempt", "phase", "outcome", ...}
    cancel                                                    written by `ftbroker cancel`

boto3 takes its endpoint and credentials from the environment (the instance profile on EC2; AWS_ENDPOINT_URL in the
tests, which point it at moto).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ftbroker import clock

INPUT = "input/"
RUN = "run/"
HEARTBEAT = "heartbeat.json"
CANCEL = "cancel"
TRAINER_SCRIPT = "trainer.py"  # the user's own recipe (the ``trainer`` option), run instead of ftbroker's trainer
INPUT_NAMES = ("config.json", "data", "model", TRAINER_SCRIPT)  # what input/ holds, in the run folder (never synced)
PHASES = ("fetching", "training", "finished")

IMDS_ENV = "FTB_IMDS_URL"  # instance metadata; "" turns the spot watch off (a machine that is no EC2 instance)
IMDS_DEFAULT = "http://169.254.169.254"
SPOT_CHECK_S = 5.0
SYNC_S = 30.0


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at the ends) of ``s3://bucket/prefix``."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.strip("/")


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class JobStore:
    """One job's S3 prefix: small reads and writes, folder downloads and uploads."""

    def __init__(self, uri: str, region: str | None = None, client: Any = None):
        import boto3

        self.bucket, self.prefix = split_s3(uri)
        self.s3 = client or boto3.client("s3", region_name=region)

    def key(self, name: str) -> str:
        return join_key(self.prefix, name)

    def put_json(self, name: str, data: Any) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(name), Body=json.dumps(data).encode())

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def keys(self, name: str) -> list[str]:
        """Every key under ``name`` (relative to it)."""
        base = self.key(name) + "/"
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            found += [obj["Key"][len(base):] for obj in page.get("Contents", [])]
        return found

    def download(self, name: str, dest: Path, *, skip: tuple[str, ...] = ()) -> list[str]:
        """Everything under ``name`` into ``dest`` (keys starting with one of ``skip`` left out); the relative paths."""
        got = []
        for rel in self.keys(name):
            if rel.startswith(skip):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, join_key(self.key(name), rel), str(target))
            got.append(rel)
        return got

    def upload(self, path: Path, name: str) -> None:
        self.s3.upload_file(str(path), self.bucket, self.key(name))

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(name))


# --- the run folder, kept in step with S3 ------------------------------------------------------------------------

class Syncer:
    """Uploads what changed in the run folder since the last sync. A checkpoint is uploaded only once complete
    (the trainer writes its trainer_state.json last), that file last; events.jsonl goes last of all; checkpoints the
    trainer rotated away are deleted from S3 too."""

    def __init__(self, store: JobStore, run_dir: Path):
        self.store, self.run_dir = store, run_dir
        self.seen: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime) when last uploaded or fetched

    def mark(self, rels: list[str]) -> None:
        for rel in rels:
            stat = (self.run_dir / rel).stat()
            self.seen[rel] = (stat.st_size, stat.st_mtime_ns)

    def _changed(self) -> list[str]:
        found = []
        for path in sorted(self.run_dir.rglob("*")):
            rel = path.relative_to(self.run_dir).as_posix()
            if not path.is_file() or rel.startswith(INPUT_NAMES) or rel.endswith((".partial", ".pid")):
                continue
            parts = rel.split("/")
            if parts[0] == "checkpoints" and len(parts) > 2 and \
                    not (self.run_dir / parts[0] / parts[1] / "trainer_state.json").is_file():
                continue  # still being written
            stat = path.stat()
            if self.seen.get(rel) != (stat.st_size, stat.st_mtime_ns):
                found.append(rel)
        return sorted(found, key=lambda r: (r == "events.jsonl", r.endswith("trainer_state.json"), r))

    def sync(self) -> None:
        for rel in self._changed():
            stat = (self.run_dir / rel).stat()
            self.store.upload(self.run_dir / rel, RUN + rel)
            self.seen[rel] = (stat.st_size, stat.st_mtime_ns)
        for rel in self.store.keys(RUN + "checkpoints"):
            if not (self.run_dir / "checkpoints" / rel).exists():
                self.store.delete(join_key(RUN, "checkpoints", rel))
                self.seen.pop(f"checkpoints/{rel}", None)


class Heartbeat(threading.Thread):
    """Writes heartbeat.json every ``interval`` seconds, and at once when the phase changes."""

    def __init__(self, store: JobStore, attempt: int, run_dir: Path, interval: float):
        super().__init__(daemon=True)
        self.store, self.interval = store, interval
        self.state: dict[str, Any] = {"attempt": attempt, "phase": "fetching", "run_dir": str(run_dir),
                                      "outcome": None, "message": None, "interrupted": False}
        self.wake = threading.Event()
        self.lock = threading.Lock()

    def set(self, **fields: Any) -> None:
        with self.lock:
            self.state.update(fields)
        self.beat()

    def beat(self) -> None:
        with self.lock:
            body = {**self.state, "time": clock.now().isoformat()}
        self.store.put_json(HEARTBEAT, body)

    def run(self) -> None:
        while not self.wake.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the broker judges staleness
                print(f"heartbeat failed: {exc}", file=sys.stderr)


def spot_notice(base_url: str) -> dict[str, Any] | None:
    """The spot interruption notice (``{"action", "time"}``) when one is scheduled, through IMDSv2; None otherwise."""
    if not base_url:
        return None
    try:
        token_request = urllib.request.Request(f"{base_url}/latest/api/token", method="PUT",
                                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(token_request, timeout=2) as response:
            token = response.read().decode()
        request = urllib.request.Request(f"{base_url}/latest/meta-data/spot/instance-action",
                                         headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(request, timeout=2) as response:
            notice = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):  # 404: nothing scheduled
        return None
    return notice if isinstance(notice, dict) else None


# --- the run -------------------------------------------------------------------------------------------------------

def fetch(store: JobStore, run_dir: Path, syncer: Syncer) -> bool:
    """Inputs and an earlier attempt's run folder into ``run_dir``; whether a checkpoint came back (resume)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store.download(INPUT.rstrip("/"), run_dir)
    earlier = store.download(RUN.rstrip("/"), run_dir, skip=("result.json", "output/"))
    events = run_dir / "events.jsonl"
    if events.is_file():  # an attempt cut short may have left half a line: the trainer appends after it
        text = events.read_bytes()
        events.write_bytes(text[: text.rfind(b"\n") + 1])
    syncer.mark([rel for rel in earlier if (run_dir / rel).is_file()])
    return any((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def last_event(run_dir: Path) -> dict[str, Any]:
    from ftbroker.backends.local.results import read_events

    path = run_dir / "events.jsonl"
    size = path.stat().st_size if path.is_file() else 0
    events, _ = read_events(path, max(0, size - 65536))
    return events[-1] if events else {}


def start_trainer(run_dir: Path, resume: bool) -> subprocess.Popen:
    from ftbroker.backends.base import detect_gpus
    from ftbroker.backends.local.process import run_command
    from ftbroker.backends.local.config import CONFIG_NAME, load_config

    script = run_dir / TRAINER_SCRIPT
    command = run_command(sys.executable, load_config(run_dir / CONFIG_NAME), run_dir, resume=resume,
                          gpu_count=len(detect_gpus()), script=str(script) if script.is_file() else None)
    log = (run_dir / "trainer.log").open("ab")
    proc = subprocess.Popen(command, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    (run_dir / "trainer.pid").write_text(str(proc.pid))
    return proc


def watch(proc: subprocess.Popen, store: JobStore, syncer: Syncer, beat: Heartbeat, sync_s: float) -> bool:
    """Sync, and stop the trainer (SIGTERM: it checkpoints) on a cancel request or a spot notice, until it exits.
    Whether a spot notice came."""
    from ftbroker.backends.local.outputs import EventLog

    imds = os.environ.get(IMDS_ENV, IMDS_DEFAULT)
    stopped = interrupted = False
    last_sync = time.monotonic()
    while proc.poll() is None:
        time.sleep(min(SPOT_CHECK_S, sync_s))
        notice = None if stopped else spot_notice(imds)
        if notice is not None:
            EventLog(syncer.run_dir / "events.jsonl").emit(
                "warning", f"spot interruption notice: {notice.get('action')} at {notice.get('time')}; "
                           "checkpointing")
            interrupted = True
        try:
            if notice is not None:
                beat.set(interrupted=True)
            if notice is not None or (not stopped and store.exists(CANCEL)):
                proc.send_signal(signal.SIGTERM)
                stopped = True
            if notice is not None or time.monotonic() - last_sync >= sync_s:
                syncer.sync()
                last_sync = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - S3 down for a moment must not stop the training; tried again
            print(f"sync failed, retrying: {exc}", file=sys.stderr)
    return interrupted


def run(args: argparse.Namespace) -> int:
    store = JobStore(args.s3, args.region)
    run_dir = Path(args.work).resolve() / "run"
    syncer = Syncer(store, run_dir)
    beat = Heartbeat(store, args.attempt, run_dir, args.heartbeat_s)
    beat.beat()
    beat.start()
    resume = fetch(store, run_dir, syncer)
    (run_dir / "result.json").unlink(missing_ok=True)  # an earlier attempt's; this one writes its own
    proc = start_trainer(run_dir, resume)
    beat.set(phase="training", resumed=resume)
    interrupted = watch(proc, store, syncer, beat, args.sync_s)
    syncer.sync()
    last = last_event(run_dir)
    beat.set(phase="finished", outcome=last.get("kind"), message=last.get("message"), exit_code=proc.returncode,
             interrupted=interrupted)
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftbroker.backends.ec2_agent",
                                     description="Run an ftbroker job on this EC2 instance (started by its user data).")
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="fetch the inputs, train, sync to S3 until the trainer ends")
    go.add_argument("--s3", required=True, help="the job's S3 prefix, s3://bucket/prefix/JOB_ID")
    go.add_argument("--attempt", type=int, required=True)
    go.add_argument("--region", default=None)
    go.add_argument("--work", default="/opt/ftbroker", help="where the run folder goes")
    go.add_argument("--heartbeat-s", type=float, default=60.0)
    go.add_argument("--sync-s", type=float, default=SYNC_S)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
