"""Secrets on the CLI's side: a URL's user:password never reaches the ledger or any output (run, jobs --json),
and --debug tracebacks are masked as messages are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeOpenAI
from fakes.support import FAST, write_chat

from ftbroker.cli import cli
from ftbroker.ledger import Ledger

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it

PASSWORD = "pw-canary-7c1e5a"


def ftb(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def home_bytes() -> bytes:
    home = Path(os.environ["FTBROKER_HOME"])
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_a_password_in_base_url_is_stripped_before_the_spec_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    data = write_chat(tmp_path / "data.jsonl")
    with FakeOpenAI(advance_on_poll=True) as fake:
        url = fake.base_url.replace("://", f"://alice:{PASSWORD}@")
        options = [f"--option={k}={v}" for k, v in {**FAST, "base_url": url}.items()]
        run = ftb("run", data, "--backend", "openai", "--model", "gpt-4o-mini-2024-07-18", "--yes", "--json", *options)
        assert run.exit_code == 0, run.output
        listed = ftb("jobs", "--json")
        assert json.loads(listed.stdout)["jobs"][0]["spec"]["backend_options"]["base_url"] == fake.base_url
        assert fake.requests and all("authorization" not in r.headers or PASSWORD not in r.headers["authorization"]
                                     for r in fake.requests)
    for text in (run.stdout, run.stderr, listed.stdout):
        assert PASSWORD not in text
    assert PASSWORD.encode() not in home_bytes()


def test_a_password_already_in_a_stored_spec_is_not_shown(tmp_path):
    data = write_chat(tmp_path / "data.jsonl")
    ftb("run", data, "--model", "m", "--option", "trainer=/bin/true", "--yes", "--detach")
    with Ledger() as ledger:  # a row written before userinfo was stripped
        job = ledger.list()[0]
        spec = {**job.spec.to_json(), "backend_options": {"base_url": f"http://bob:{PASSWORD}@host/v1"}}
        ledger._db.execute("UPDATE jobs SET spec = ?", (json.dumps(spec),))
    out = ftb("jobs", "--json").stdout
    assert json.loads(out)["jobs"][0]["spec"]["backend_options"] == {"base_url": "http://host/v1"}
    assert PASSWORD not in out


def test_debug_tracebacks_are_masked_like_messages(monkeypatch):
    from ftbroker.broker import Broker

    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "canary0123456789abcdefgh")

    def broken(self, **kwargs):
        raise RuntimeError(f"cannot reach http://alice:{PASSWORD}@host with {os.environ['OPENAI_API_KEY']}")

    monkeypatch.setattr(Broker, "jobs", broken)
    plain, debug = ftb("jobs"), ftb("--debug", "jobs")
    assert plain.exit_code == debug.exit_code == 1
    assert "internal error: RuntimeError: cannot reach http://***@host with ***" in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "in broken" in debug.stderr
    assert "RuntimeError: cannot reach http://***@host with ***" in debug.stderr
    for text in (plain.output, debug.output):
        assert PASSWORD not in text and "canary0123" not in text
