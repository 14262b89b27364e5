"""A canary API key goes through whole CLI runs (success, a provider failure that echoes the key, a rejected key,
then jobs/status/logs/result) and must appear nowhere: not in the ledger, not under FTBROKER_HOME, not in any
output. It must have reached the provider, or the test would prove nothing."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeFireworks, FakeOpenAI, FakeTogether, FakeVertex, Outcome
from fakes.support import FAST, write_chat
from ftbroker.cli import cli

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it


def _key(variable):
    """A key read from ``variable``: (set it to the canary, the backend options, the refusal's masked words)."""
    def setup(fake, canary, monkeypatch, tmp_path):
        monkeypatch.setenv(variable, canary)
        return {"base_url": fake.base_url}, "Incorrect API key provided: ***"
    return setup


def _fireworks(fake, canary, monkeypatch, tmp_path):
    options, refusal = _key("FIREWORKS_API_KEY")(fake, canary, monkeypatch, tmp_path)
    return {**options, "account_id": fake.account}, refusal


def _vertex(fake, canary, monkeypatch, tmp_path):
    """Google credentials: the canary is the access token the fake's token endpoint issues."""
    fake.access_token = canary
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.write_credentials(tmp_path / "adc.json")))
    return fake.options(), "Permission denied for token ***"


# backend -> (fake, set-up, canary prefix, model)
CASES = {
    "openai": (FakeOpenAI, _key("OPENAI_API_KEY"), "sk-canary-", "gpt-4o-mini-2024-07-18"),
    "together": (FakeTogether, _key("TOGETHER_API_KEY"), "tgp_v1_canary",
                 "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"),
    "fireworks": (FakeFireworks, _fireworks, "fw_canary", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
    "vertex": (FakeVertex, _vertex, "ya29.canary", "gemini-3.5-flash"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_key_never_leaks(name, tmp_path, monkeypatch):
    fake_class, setup, prefix, model = CASES[name]
    canary = prefix + secrets.token_hex(16)
    home = Path(os.environ["FTBROKER_HOME"])
    data = write_chat(tmp_path / "data.jsonl")
    outputs = []

    def ftb(*args):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        outputs.extend([result.stdout, result.stderr, repr(result.exception)])
        return result

    with fake_class(advance_on_poll=True) as fake:
        backend_options, refusal = setup(fake, canary, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **backend_options}.items()]
        run = ["run", data, "--backend", name, "--model", model, "--epochs", 1, "--yes", *options]
        assert ftb(*run).exit_code == 0
        fake.next_outcome(Outcome.failure(f"invalid request: the key {canary} may not train {model}", at_step=1))
        failed = ftb(*run)
        assert failed.exit_code == 1 and "may not train" in failed.stderr
        fake.rejected_keys.add(canary)  # the fake echoes a rejected key in full in its 401 message
        refused = ftb(*run)
        assert refused.exit_code == 1 and refusal in refused.stderr, refused.output
        fake.rejected_keys.clear()
        assert ftb("jobs").exit_code == 0
        job_ids = [job["id"] for job in json.loads(ftb("jobs", "--json").stdout)["jobs"]]
        assert len(job_ids) == 3
        for job_id in job_ids:
            for command in ("status", "logs", "result"):
                ftb(command, job_id, "--json")
                ftb(command, job_id)
        assert any(r.headers.get("authorization") == f"Bearer {canary}" for r in fake.requests)

    leaks = [str(p) for p in home.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()]
    assert leaks == []
    assert [o for o in outputs if canary in o] == []
    assert any((home / "uploads").rglob("*.jsonl")) and list(home.glob("ledger.sqlite3*"))
