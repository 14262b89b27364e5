"""Exactly once under faults: 50 jobs through the Broker while 30% of all provider calls fail in every way
(429 with Retry-After, 500, 503, dropped connections, answers slower than the client waits, and creates or
uploads that succeed on the server but answer 500 or drop the connection). Every job must exist remotely
exactly once and end in the ledger with its final status. The figures are printed in the run's summary.

Run on the OpenAI, Fireworks and Vertex AI fakes: the three ways a managed backend finds the job an earlier attempt
may have created (OpenAI: its metadata, listed; Fireworks: the job id ftbroker chooses, read; Vertex: its label,
listed). Together shares OpenAI's way (its suffix, listed); its own tests inject each fault. SDK retries are off
here so that every fault reaches ftbroker's own recovery; that the SDK retries reads itself is shown in
test_fakes_openai.py. A slow answer is held back on the fake's stop event, past the client's timeout."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest

from fakes import ALL_FAULTS, FakeFireworks, FakeOpenAI, FakeVertex, Fault
from fakes.support import FAST, write_chat
from ftbroker.backends._managed import provider_tag
from ftbroker.broker import Broker
from ftbroker.errors import BackendRateLimitError, BackendUnavailableError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the managed routes are open on it

JOBS = 50
RATE = 0.3
MIX = (*ALL_FAULTS, Fault.slow(0.15))  # slow: three times the client's timeout below
TRANSIENT = (BackendUnavailableError, BackendRateLimitError)


def _openai(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    return {"base_url": fake.base_url}


def _fireworks(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-test-key")
    return {"base_url": fake.base_url, "account_id": fake.account}


def _vertex(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.write_credentials(tmp_path / "adc.json")))
    return fake.options()


# backend -> (fake, set-up giving the backend options, model, the upload route, the ftbroker job a remote job belongs
# to (what it carries), the remote id a ledger job names)
CASES = {
    "openai": (FakeOpenAI, _openai, "gpt-4o-mini-2024-07-18", "files.create",
               lambda remote: remote.request["metadata"]["ftbroker_job_id"], lambda job: job.remote["job_id"]),
    "fireworks": (FakeFireworks, _fireworks, "accounts/fireworks/models/llama-v3p1-8b-instruct", "datasets.upload",
                  lambda remote: remote.id, lambda job: job.remote["job_id"]),
    "vertex": (FakeVertex, _vertex, "gemini-3.5-flash", "gcs.upload",
               lambda remote: remote.request["labels"]["ftbroker-job"],
               lambda job: job.remote["job_id"].rsplit("/", 1)[-1]),
}
TAGS = {"openai": lambda job_id: job_id, "fireworks": lambda job_id: provider_tag(job_id, 63),
        "vertex": lambda job_id: provider_tag(job_id, 63)}


def _until_done(action, counter: Counter, what: str):
    """Repeat ``action`` through transient errors, as a user rerunning the command would."""
    for _ in range(200):
        try:
            return action()
        except TRANSIENT:
            counter[what] += 1
    raise AssertionError(f"{what}: still failing after 200 tries")


@pytest.mark.parametrize("name", sorted(CASES))
def test_fifty_jobs_under_a_thirty_percent_fault_rate(name, tmp_path, monkeypatch, summary_line):
    fake_class, setup, model, upload_route, owner, remote_id = CASES[name]
    tag = TAGS[name]
    data = write_chat(tmp_path / "data.jsonl")
    retries: Counter[str] = Counter()
    with fake_class(advance_on_poll=True, total_steps=1) as fake, \
            Broker(tmp_path / "home", sleep=lambda s: None) as broker:
        options = setup(fake, monkeypatch, tmp_path)
        spec = JobSpec(dataset=str(data), model=model, backend=name, hyperparameters={"epochs": 1},
                       backend_options={**FAST, **options, "request_timeout_s": 0.05, "submit_attempts": 4})
        fake.faults.random(RATE, MIX, seed=5)
        ids = []
        for _ in range(JOBS):
            try:
                ids.append(broker.submit(spec).id)
            except TRANSIENT:  # recorded, maybe created remotely, unconfirmed: resume finishes it
                retries["submissions left to resume"] += 1
                ids.append(broker.jobs(limit=1)[0].id)
        for job_id in ids:
            while broker.job(job_id).submitted_at is None:
                _until_done(partial(broker.resume, job_id), retries, "resume retries")
        results = {job_id: _until_done(partial(broker.follow, job_id), retries, "follow restarts") for job_id in ids}
        ledger_jobs = {job_id: broker.job(job_id) for job_id in ids}

        remote = list(fake.jobs.values())
        owners = Counter(owner(job) for job in remote)
        duplicates = sum(n - 1 for n in owners.values())
        assert len(remote) == JOBS and duplicates == 0 and set(owners) == {tag(i) for i in ids}
        for job_id, job in ledger_jobs.items():
            assert owner(fake.jobs[remote_id(job)]) == tag(job_id)
            assert job.status is JobStatus.SUCCEEDED and results[job_id].status is JobStatus.SUCCEEDED
        uploads = len([r for r in fake.calls(upload_route) if r.fault is None or r.fault.commit])
        assert uploads < JOBS  # the same data is uploaded again only when an upload broke
        injected = sum(fake.faults.injected.values())
        assert injected > 0.2 * len(fake.requests)

    statuses = Counter(j.status.value for j in ledger_jobs.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(fake.faults.injected.items()))
    summary_line(f"fault test [{name}]: {JOBS} jobs at a {RATE:.0%} fault rate -> {len(remote)} remote jobs, "
                 f"{duplicates} duplicates, ledger: {dict(statuses)}; {len(fake.requests)} requests, {injected} "
                 f"faults ({kinds}); {uploads} uploads of the (same) data; "
                 f"recovery: {dict(retries) or 'none needed'}")
