"""Managed jobs reported to Weights & Biases through the provider's own integration (OpenAI's ``integrations``,
Together's ``wandb_*`` arguments), through the real SDKs against the fakes: what is sent, where the ledger says the
run is, and that the W&B key (Together's takes it with the job) is never stored nor shown."""

from __future__ import annotations

import pytest
from fakes import FakeOpenAI, FakeTogether
from fakes.support import FAST, write_chat

from ftbroker.broker import Broker
from ftbroker.errors import BackendAuthError, SpecError
from ftbroker.redact import scrub
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-test-together-key")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    with Broker(tmp_path / "home", sleep=lambda s: None) as b:
        yield b


def spec(backend, model, fake, data, **options):
    return JobSpec(dataset=str(data), model=model, backend=backend,
                   backend_options={**FAST, "base_url": fake.base_url, **options})


def test_openai_logs_to_the_wandb_project_and_the_ledger_says_where(broker, tmp_path):
    with FakeOpenAI(advance_on_poll=True) as fake:
        job = broker.submit(spec("openai", "gpt-4o-mini-2024-07-18", fake, write_chat(tmp_path / "d.jsonl"),
                                 report_to="wandb", tracker_project="support-bot", wandb_entity="acme"))
        body = fake.calls("jobs.create")[0].json()
    assert body["integrations"] == [{"type": "wandb", "wandb": {"project": "support-bot", "name": job.id,
                                                                "entity": "acme"}}]
    assert job.trackers == {"wandb": f"W&B project acme/support-bot, run {job.id}"}
    assert broker.job(job.id).trackers == job.trackers


def test_openai_without_report_to_sends_no_integration(broker, tmp_path):
    with FakeOpenAI(advance_on_poll=True) as fake:
        job = broker.submit(spec("openai", "gpt-4o-mini-2024-07-18", fake, write_chat(tmp_path / "d.jsonl")))
        assert "integrations" not in fake.calls("jobs.create")[0].json()
    assert job.trackers == {}


def test_together_sends_the_key_with_the_job_and_keeps_only_the_run(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("WANDB_PROJECT", "from-the-environment")
    with FakeTogether(advance_on_poll=True) as fake:
        job = broker.submit(spec("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", fake,
                                 write_chat(tmp_path / "d.jsonl"), report_to="wandb"))
        body = fake.calls("jobs.create")[0].json()
        broker.follow(job.id)
    assert body["wandb_key"] == WANDB_KEY  # Together's API takes it with the job
    assert body["wandb_project_name"] == "from-the-environment" and body["wandb_name"] == job.id
    assert job.trackers == {"wandb": f"https://wandb.ai/fake-entity/from-the-environment/runs/{job.remote['job_id']}"}
    stored = b"".join(p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file())
    assert WANDB_KEY.encode() not in stored
    assert WANDB_KEY not in scrub(f"Together said: bad wandb_key {WANDB_KEY}")


def test_together_refuses_report_to_wandb_without_a_key_before_recording(broker, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with FakeTogether() as fake, pytest.raises(BackendAuthError, match="set WANDB_API_KEY"):
        broker.submit(spec("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", fake,
                           write_chat(tmp_path / "d.jsonl"), report_to="wandb"))
    assert broker.jobs() == []


def test_a_provider_takes_only_its_own_tracker(broker, tmp_path):
    with FakeOpenAI() as fake, pytest.raises(SpecError, match="report_to"):
        broker.submit(spec("openai", "gpt-4o-mini-2024-07-18", fake, write_chat(tmp_path / "d.jsonl"),
                           report_to="mlflow"))
