"""Inputs that used to end in "internal error" (exit 1) get a clear message and exit 2: odd file names, a loop of
links, a result of a job refused before it was created, a damaged or emptied ledger (with `ftbroker ledger rebuild`
from the run folders); and a reader that goes away (`| head -1`) ends the command quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeOpenAI
from fakes.support import FAST
from jobsupport import SCRIPTED_TRAINER, write_chat

from ftbroker.cli import cli
from ftbroker.jobs import Event, JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

EXAMPLE = Path(__file__).parents[1] / "examples" / "data" / "support_chats.jsonl"


def ftb(*args, ok=(0,)):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in ok, (result.exit_code, result.output, result.exception)
    assert "internal error" not in result.output and "Traceback" not in result.output
    return result


def local_job(data) -> str:
    out = ftb("run", data, "--model", "tiny", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes", "--json")
    return json.loads(out.stdout)["job"]["id"]


def test_a_file_name_that_is_not_utf8_is_exit_2_in_plan_and_run(tmp_path):
    data = write_chat(tmp_path / os.fsdecode(b"caf\xe9.jsonl"))  # Latin-1, as a Windows share may give it
    for args in (["plan", data, "--model", "Llama-3.1-8B", "--gpu", "RTX-4090"],
                 ["run", data, "--model", "tiny", "--yes"]):
        result = ftb(*args, ok=(2,))
        assert "caf\\xe9.jsonl: the file name is not valid UTF-8" in result.stderr
    assert Ledger().list() == []


def test_a_loop_of_symbolic_links_is_exit_2(tmp_path):
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    assert "a.jsonl: is a loop of symbolic links" in ftb("plan", tmp_path / "a.jsonl", ok=(2,)).stderr
    result = ftb("run", tmp_path / "a.jsonl", "--model", "tiny", "--yes", ok=(2,))
    assert f"dataset: a loop of symbolic links: {tmp_path / 'a.jsonl'}" in result.stderr


@pytest.mark.usefixtures("catalog_day")
def test_the_result_of_a_managed_job_refused_before_it_was_created(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-rejected-key-0123456789")
    data = write_chat(tmp_path / "data.jsonl")
    with FakeOpenAI() as fake:
        fake.rejected_keys.add("sk-test-rejected-key-0123456789")
        options = [f"--option={k}={v}" for k, v in {**FAST, "base_url": fake.base_url}.items()]
        ftb("run", data, "--backend", "openai", "--model", "gpt-4o-mini-2024-07-18", "--yes", *options, ok=(1,))
    job = Ledger().list()[0]
    assert job.status is JobStatus.FAILED and "remote" not in job.remote and job.submitted_at is None
    result = json.loads(ftb("result", job.id, "--json").stdout)
    assert result["status"] == "failed" and "Incorrect API key" in result["error"]
    assert "failed" in ftb("result", job.id).stdout


def test_one_damaged_row_does_not_hide_the_other_jobs(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    ids = [local_job(data) for _ in range(3)]
    with Ledger() as ledger:
        ledger._db.execute("UPDATE jobs SET spec = '{not json' WHERE id = ?", (ids[1],))
    listed = ftb("jobs", "--json", ok=(2,))
    assert {j["id"] for j in json.loads(listed.stdout)["jobs"]} == {ids[0], ids[2]}
    assert f"1 job in the job ledger {Ledger().path} cannot be read: {ids[1]} (" in listed.stderr
    table = ftb("jobs", ok=(2,))
    assert ids[0] in table.stdout and ids[2] in table.stdout and ids[1] in table.stderr
    assert f"job {ids[1]} cannot be read from the job ledger" in ftb("status", ids[1], ok=(2,)).stderr
    assert ftb("status", ids[0]).exit_code == 0


def test_a_corrupted_ledger_page_says_how_to_recover(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    for _ in range(3):
        local_job(data)
    path = Ledger().path
    with path.open("r+b") as fh:  # every page after the first (the schema) overwritten
        fh.seek(4096)
        fh.write(b"\xa5" * (path.stat().st_size - 4096))
    result = ftb("jobs", ok=(2,))
    assert f"the job ledger {path} is damaged (database disk image is malformed)" in result.stderr
    assert "ftbroker ledger rebuild" in result.stderr


def test_an_emptied_ledger_is_said_and_rebuilt_from_the_run_folders(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    done = local_job(data)
    path = Ledger().path
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (path.parent / name).unlink(missing_ok=True)
    path.write_bytes(b"")  # a zero-length ledger: SQLite takes it for a new, empty one
    refused = ftb("jobs", ok=(2,))
    assert "holds no jobs, but" in refused.stderr and "run folders of 1 local job" in refused.stderr
    assert "`ftbroker ledger rebuild`" in refused.stderr
    rebuilt = json.loads(ftb("ledger", "rebuild", "--json").stdout)
    assert [j["id"] for j in rebuilt["restored"]] == [done] and rebuilt["skipped"] == []
    job = json.loads(ftb("status", done, "--json").stdout)
    assert job["status"] == "succeeded" and job["spec"]["dataset"] == str(data)
    assert json.loads(ftb("result", done, "--json").stdout)["trained_tokens"] == 200
    assert any("trained 2 steps" in line for line in ftb("logs", done).stdout.splitlines())
    again = json.loads(ftb("ledger", "rebuild", "--json").stdout)
    assert again["restored"] == []  # nothing is recorded twice


def _first_line_then_close(args, env) -> tuple[int, bytes]:
    """Runs ``ftbroker ARGS`` into a pipe, reads one line and closes the pipe, as `| head -1` does."""
    proc = subprocess.Popen([sys.executable, "-m", "ftbroker.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    with proc:
        assert proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        return proc.wait(timeout=120), stderr


def test_a_closed_pipe_ends_the_output_quietly(tmp_path):
    with Ledger() as ledger:  # more events than a pipe holds, so the writer meets the closed pipe
        job = ledger.create(JobSpec(dataset=str(write_chat(tmp_path / "d.jsonl")), model="tiny"))
        ledger.update(job.id, events=[Event(time=job.created_at, kind="log", message=f"event {i} " + "x" * 200)
                                      for i in range(2000)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (["logs", job.id, "--json"], ["plan", EXAMPLE, "--all", "--gpu", "RTX-4090"]):
        code, stderr = _first_line_then_close(args, env)
        assert (code, stderr) == (1, b""), args
