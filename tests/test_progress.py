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
from ftbroker.data import analyze
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
