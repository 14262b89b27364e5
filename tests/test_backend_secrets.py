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
from fakes import Outcome
from fakes.harnesses import PROVIDERS, loopback
from fakes.support import FAST, write_chat
from ftbroker.cli import cli

pytestmark = pytest.mark.usefixtures("catalog_day")  # the OpenAI routes are open on it


@pytest.mark.parametrize("name", loopback())
def test_the_key_never_leaks(name, tmp_path, monkeypatch):
    provider = PROVIDERS[name]
    model = provider.model
    canary = provider.key_prefix + secrets.token_hex(16)
    home = Path(os.environ["FTBROKER_HOME"])
    data = write_chat(tmp_path / "data.jsonl")
    outputs = []

    def ftb(*args):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        outputs.extend([result.stdout, result.stderr, repr(result.exception)])
        return result

    with provider.fake(advance_on_poll=True) as fake:
        provider.credentials(fake, canary, monkeypatch, tmp_path)
        options = [f"--option={k}={v}" for k, v in {**FAST, **provider.options(fake)}.items()]
        run = ["run", data, "--backend", name, "--model", model, "--epochs", 1, "--yes", *options]
        assert ftb(*run).exit_code == 0
        fake.next_outcome(Outcome.failure(f"invalid request: the key {canary} may not train {model}", at_step=1))
        failed = ftb(*run)
        assert failed.exit_code == 1 and "may not train" in failed.stderr
        fake.rejected_keys.add(canary)  # the fake echoes a rejected key in full in its 401 message
        refused = ftb(*run)
        assert refused.exit_code == 1 and provider.refusal in refused.stderr, refused.output
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
