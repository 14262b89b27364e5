"""``ftbroker eval`` on the command line: bad input is exit 2 with a specific message, a guard's refusal exit 3, and
nothing in the ledger changes when an evaluation is refused."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from evalsupport import ledger_snapshot, succeeded_job, write_sums

from ftbroker.cli import cli
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec


@pytest.fixture
def job(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FTBROKER_HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-cli")
    spec = JobSpec(dataset=str(write_sums(tmp_path / "train.jsonl", 12)), model="gpt-4o-mini-2024-07-18",
                   backend="openai", validation=str(write_sums(tmp_path / "valid.jsonl", 3, start=40)))
    return home, succeeded_job(home, spec, "ft:gpt-4o-mini-2024-07-18:org::abc123")


def refused(home, *args, code: int = 2) -> str:
    before = ledger_snapshot(home)
    done = CliRunner().invoke(cli, ["eval", *map(str, args)])
    assert done.exit_code == code, (done.exit_code, done.output, done.exception)
    assert "Traceback" not in done.output
    assert ledger_snapshot(home) == before  # a refused evaluation changes nothing in the ledger
    return done.output


def test_a_test_file_in_the_wrong_format(job, tmp_path):
    home, job_id = job
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "a plain text line"}\n{"text": "another"}\n')
    assert "plain text data has no prompt and reference answer" in refused(home, job_id, "--test", text)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion"\n')
    assert f"{broken}:2:" in refused(home, job_id, "--test", broken)
    assert "missing.jsonl: no such file" in refused(home, job_id, "--test", tmp_path / "missing.jsonl")


def test_a_job_that_has_not_succeeded(job, tmp_path):
    home, _ = job
    with Ledger(home / "ledger.sqlite3") as ledger:
        running = ledger.create(JobSpec(dataset=str(tmp_path / "train.jsonl"), model="m", backend="openai"))
        ledger.update(running.id, status=JobStatus.RUNNING, submitted=True)
    out = refused(home, running.id)
    assert f"job {running.id} is running; only a succeeded job can be evaluated" in out and "--follow" in out
    assert "no job ftb-nosuchjob" in refused(home, "ftb-nosuchjob")


def test_an_unknown_judge_model(job):
    home, job_id = job
    out = refused(home, job_id, "--judge", "claude-haiku-55")
    assert "unknown judge model 'claude-haiku-55'; did you mean 'claude-haiku-5-5'" in out


def test_bad_flags(job, tmp_path):
    home, job_id = job
    assert "is not a number of USD" in refused(home, job_id, "--max-cost", "five")
    assert "write KEY=VALUE" in refused(home, job_id, "--option", "deployment_hours")
    assert "option deployment_hours" in refused(home, job_id, "--option", "deployment_hours=-1")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "objekt"}')
    assert "not a usable JSON schema" in refused(home, job_id, "--schema", schema)


def test_refused_by_the_guards(job):
    home, job_id = job
    out = refused(home, job_id, "--judge", "claude-opus-5-5", "--max-cost", "0.0001", code=3)
    assert "over --max-cost $0.0001" in out
    out = refused(home, job_id, code=3)  # paid, no terminal to ask on, no --yes
    assert "confirmation needs a terminal; pass --yes" in out and "the quote, before anything is spent" in out


def test_help_names_the_flags():
    out = CliRunner().invoke(cli, ["eval", "--help"]).output
    for flag in ("--test", "--judge", "--limit", "--max-cost", "--json", "--chart", "--yes", "--schema"):
        assert flag in out
    assert "eval" in CliRunner().invoke(cli, ["--help"]).output


def test_the_sdk_takes_the_same(job, monkeypatch):
    import ftbroker
    from ftbroker.errors import UnknownNameError

    home, job_id = job
    with pytest.raises(UnknownNameError):
        ftbroker.evaluate(job_id, judge="gpt-5-judge", home=home)
    assert ftbroker.Evaluation.model_json_schema()["title"] == "Evaluation"
