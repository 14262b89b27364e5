"""Private by default (ftbroker.private): the ledger, run folders, the trainer's log and files, and upload copies
(a full copy of the training data) are 0600 / 0700 whatever the umask; ones an earlier version left readable are
narrowed where ftbroker opens them. And an export into a folder ftbroker cannot write is a clear exit 2."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeOpenAI
from fakes.support import FAST
from jobsupport import SCRIPTED_TRAINER, write_chat

from ftbroker.cli import cli
from ftbroker.ledger import Ledger


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # what most systems give: new files 0644, folders 0755
    yield
    os.umask(old)


def ftb(*args, ok=(0,)):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in ok, (result.exit_code, result.output, result.exception)
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def home() -> Path:
    return Path(os.environ["FTBROKER_HOME"])


def test_the_ledger_and_a_local_run_are_private(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    out = ftb("run", data, "--model", "tiny", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes", "--json")
    job_id = json.loads(out.stdout)["job"]["id"]
    run_dir = home() / "runs" / job_id
    ledger_files = [p for p in home().iterdir() if p.name.startswith("ledger.sqlite3")]
    assert {p.name: mode(p) for p in ledger_files}["ledger.sqlite3"] == 0o600
    assert all(mode(p) == 0o600 for p in ledger_files)  # -wal and -shm too
    assert mode(home()) == mode(home() / "runs") == mode(run_dir) == 0o700
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"config.json", "trainer.log", "events.jsonl", "result.json"} <= {p.name for p in files}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o600) for p in files}
    assert all(mode(p) == 0o700 for p in run_dir.rglob("*") if p.is_dir())


def test_folders_and_files_left_readable_are_narrowed_when_opened(tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_STEPS", "3000")  # a trainer that runs until it is cancelled
    data = write_chat(tmp_path / "data.jsonl")
    job_id = json.loads(ftb("run", data, "--model", "tiny", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes",
                            "--detach", "--json").stdout)["job"]["id"]
    ftb("cancel", job_id)
    run_dir = home() / "runs" / job_id
    for path, wide in ((home() / "ledger.sqlite3", 0o644), (run_dir, 0o755), (run_dir / "trainer.log", 0o644)):
        path.chmod(wide)  # as an earlier version left them
    ftb("jobs")
    assert mode(home() / "ledger.sqlite3") == 0o600
    ftb("resume", job_id, "--detach")
    try:
        assert mode(run_dir) == 0o700 and mode(run_dir / "trainer.log") == 0o600
    finally:
        ftb("cancel", job_id)


@pytest.mark.usefixtures("catalog_day")
def test_upload_copies_of_the_training_data_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    data = write_chat(tmp_path / "data.jsonl")
    with FakeOpenAI(advance_on_poll=True) as fake:
        options = [f"--option={k}={v}" for k, v in {**FAST, "base_url": fake.base_url}.items()]
        ftb("run", data, "--backend", "openai", "--model", "gpt-4o-mini-2024-07-18", "--yes", *options)
    uploads = home() / "uploads"
    copies = list(uploads.rglob("*.jsonl"))
    assert copies and all(mode(p) == 0o600 for p in copies)
    assert mode(uploads) == mode(uploads / "openai") == 0o700


def test_an_export_to_a_folder_that_cannot_be_written_is_exit_2(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    job_id = json.loads(ftb("run", data, "--model", "tiny", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes",
                            "--json").stdout)["job"]["id"]
    result = ftb("export", job_id, "--format", "merged", "-o", "/proc/x", ok=(2,))
    assert "error: cannot write /proc/x:" in result.stderr
    with Ledger() as ledger:
        assert ledger.artifacts(job_id) == []
