"""Progress of long work: drawn on stderr when it is a terminal (a real pseudo-terminal here, ``pty``), absent when
stderr is a pipe, never in stdout's JSON; what the core reports (bytes read, bytes uploaded through the real SDK to
its fake) whoever draws it."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import threading

import pytest
from fakes import FakeOpenAI
from fakes.support import FAST, write_chat

from ftbroker import progress
from ftbroker.broker import Broker
from ftbroker.data.analysis import analyze
from ftbroker.spec import JobSpec


class Recorder:
    """A Reporter that keeps every task and the updates it got."""

    def __init__(self):
        self.tasks: list[dict] = []

    @contextlib.contextmanager
    def task(self, description, *, total=None, unit="bytes"):
        record = {"description": description, "total": total, "unit": unit, "completed": 0, "fields": {},
                  "done": False}
        self.tasks.append(record)
        recorder = self

        class _Task:
            def advance(self, amount):
                record["completed"] += amount

            def update(self, *, completed=None, total=None, description=None, **fields):
                record.update({k: v for k, v in (("completed", completed), ("total", total)) if v is not None})
                record["fields"].update(fields)

        yield _Task()
        record["done"] = True
        assert recorder is self


def plan_through_a_terminal(home, data, *args) -> tuple[str, bytes, int]:
    """``ftbroker plan`` with stderr a pseudo-terminal and stdout a pipe: (stdout, what the terminal got, exit)."""
    master, slave = pty.openpty()
    drawn = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "FTBROKER_HOME": str(home), "COLUMNS": "120", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    try:
        done = subprocess.run([sys.executable, "-m", "ftbroker.cli", "plan", str(data), *args], stdout=subprocess.PIPE,
                              stderr=slave, env=env, text=True, timeout=300)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return done.stdout, bytes(drawn), done.returncode


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """About 40 MB: over the size analyze() shares out to worker processes, long enough to be drawn."""
    path = tmp_path_factory.mktemp("progress") / "chats.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "Where is my order? " * 20},
                                    {"role": "assistant", "content": "It ships tomorrow. " * 40}]}) + "\n"
    path.write_text(line * (40_000_000 // len(line)))
    return path


def test_plan_draws_its_reading_on_a_terminal_and_keeps_stdout_json(tmp_path, dataset):
    out, drawn, code = plan_through_a_terminal(tmp_path, dataset, "--json", "--tokenizer", "cl100k_base")
    assert code == 0
    assert json.loads(out)["dataset"]["examples"] > 0  # stdout: the JSON alone
    text = drawn.decode("utf-8", "replace")
    assert f"reading {dataset.name}" in text
    assert "/40.0 MB" in text and "MB/s" in text and "examples" in text  # bytes, rate, what was read
    assert "\x1b[" in text  # drawn in place, with the terminal's control sequences


def test_no_progress_when_stderr_is_a_pipe(tmp_path, dataset):
    done = subprocess.run([sys.executable, "-m", "ftbroker.cli", "plan", str(dataset), "--json", "--tokenizer",
                           "cl100k_base"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FTBROKER_HOME": str(tmp_path)})
    assert done.returncode == 0 and json.loads(done.stdout)
    assert "reading" not in done.stderr and "MB/s" not in done.stderr and "\x1b[" not in done.stderr


def test_reading_reports_every_byte_once(tmp_path):
    path = write_chat(tmp_path / "d.jsonl", n=300)
    recorder = Recorder()
    with progress.reporting(recorder):
        report = analyze(path)
    assert report.examples == 300
    [reading] = recorder.tasks
    assert reading["description"] == "reading d.jsonl" and reading["unit"] == "bytes" and reading["done"]
    assert reading["completed"] == reading["total"] == path.stat().st_size
    assert reading["fields"]["examples"] == 300
    assert analyze(path).examples == 300 and len(recorder.tasks) == 1  # outside the block: nobody is told


@pytest.mark.usefixtures("catalog_day")
def test_an_upload_reports_the_bytes_the_sdk_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    recorder = Recorder()
    with FakeOpenAI(advance_on_poll=True) as fake, Broker(tmp_path / "home", sleep=lambda s: None) as broker:
        spec = JobSpec(dataset=str(write_chat(tmp_path / "data.jsonl")), model="gpt-4o-mini-2024-07-18",
                       backend="openai", backend_options={**FAST, "base_url": fake.base_url})
        with progress.reporting(recorder):
            broker.submit(spec)
        sent = fake.calls("files.create")[0]
    upload = next(t for t in recorder.tasks if t["description"].startswith("uploading"))
    assert upload["description"].endswith("to OpenAI") and upload["done"]
    assert 0 < upload["total"] == upload["completed"] < len(sent.body)  # the file's bytes, in the multipart body


def test_the_default_reporter_is_silent():
    assert progress.current() is progress.SILENT
    with progress.task("nothing", total=3) as task:
        task.advance(3)
        task.update(completed=1, anything="at all")


def test_the_view_draws_amounts_rates_and_fields():
    import io

    from rich.console import Console

    from ftbroker.cli.progress_view import ProgressView

    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    view = ProgressView(console)
    with view.task("uploading d.jsonl to OpenAI", total=2_000_000) as upload:
        upload.advance(1_000_000)
        upload.update(examples=12)
    with view.task("ftb-1 running", total=100, unit="steps") as steps:
        steps.update(completed=40, eta="5m00s", loss="0.5000")
    drawn = console.file.getvalue()
    assert "uploading d.jsonl to OpenAI" in drawn and "1.0/2.0 MB" in drawn and "examples 12" in drawn
    assert "40/100 steps" in drawn and "ETA 5m00s" in drawn and "loss 0.5000" in drawn


def test_a_followed_job_shows_its_steps_loss_elapsed_and_cost_so_far(monkeypatch):
    import io
    from datetime import UTC, datetime
    from decimal import Decimal

    from rich.console import Console

    from ftbroker.cli.job_view import FollowView
    from ftbroker.jobs import Job, JobStatus, Progress

    monkeypatch.setenv("FTBROKER_NOW", "2026-01-01T12:10:00+00:00")
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    job = Job(id="ftb-1", spec=JobSpec(backend="openai", model="m", dataset="d.jsonl"), status=JobStatus.RUNNING,
              created_at=start, updated_at=start, submitted_at=start, started_at=start,
              estimated_cost_usd=Decimal("4.00"),
              progress=Progress(step=25, total_steps=100, loss=1.23456, eta_s=1800))
    recorder, console = Recorder(), Console(file=io.StringIO())
    with progress.reporting(recorder), FollowView(console) as view:
        view(job, None)
        view(job.model_copy(update={"actual_cost_usd": Decimal("1.5")}), None)
    [task] = recorder.tasks
    assert task["unit"] == "steps" and task["completed"] == 25 and task["total"] == 100 and task["done"]
    assert task["fields"] == {"eta": "30m00s", "loss": "1.2346", "elapsed": "10m00s", "cost": "$1.50"}
    assert console.file.getvalue().count("ftb-1 running") == 1  # the status, once, in the scrollback
