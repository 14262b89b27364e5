"""Exactly once under faults: jobs through the Broker while provider calls fail in every way (429 with Retry-After,
500, 503, dropped connections, answers the client gave up waiting for, and creates or uploads that succeed on the
server but answer an error, drop the connection or time out). Every job must exist remotely exactly once and end in
the ledger with its final status. The figures are printed in the run's summary.

The four ways a managed backend finds the job an earlier attempt may have created: OpenAI by its metadata, listed;
Together by its suffix, listed; Fireworks by the job id ftbroker chooses, read; Vertex AI by its label, listed.
OpenAI, Fireworks and Vertex: 50 jobs at a 30% fault rate. Together: 12 jobs at 50%, every route, its three-call
upload included, the first upload's PUT storing the bytes and answering 500 (that upload must not poison the data
for the jobs after it). SDK retries are off here so that every fault reaches ftbroker's own recovery; that the SDK
retries reads itself is shown in test_fakes_openai.py."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest

from fakes import ALL_FAULTS
from fakes.harnesses import PROVIDERS, with_faults
from fakes.support import FAST, write_chat
from ftbroker.broker import Broker
from ftbroker.errors import BackendRateLimitError, BackendUnavailableError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.usefixtures("catalog_day")  # the managed routes are open on it

TRANSIENT = (BackendUnavailableError, BackendRateLimitError)


def _until_done(action, counter: Counter, what: str):
    """Repeat ``action`` through transient errors, as a user rerunning the command would."""
    for _ in range(200):
        try:
            return action()
        except TRANSIENT:
            counter[what] += 1
    raise AssertionError(f"{what}: still failing after 200 tries")


@pytest.mark.parametrize("name", with_faults())
def test_jobs_under_faults_exist_exactly_once_and_succeed(name, tmp_path, monkeypatch, summary_line):
    provider = PROVIDERS[name]
    case = provider.faults
    data = write_chat(tmp_path / "data.jsonl")
    retries: Counter[str] = Counter()
    with provider.fake(advance_on_poll=True, total_steps=1) as fake, \
            Broker(tmp_path / "home", sleep=lambda s: None) as broker:
        provider.credentials(fake, provider.key_prefix + "for-the-faults", monkeypatch, tmp_path)
        spec = JobSpec(dataset=str(data), model=provider.model, backend=name, hyperparameters={"epochs": 1},
                       backend_options={**FAST, **provider.options(fake), "submit_attempts": 4})
        fake.faults.random(case.rate, ALL_FAULTS, seed=5)
        for route, fault in case.pinned.items():
            fake.faults.at(route, 1, fault)
        ids = []
        for _ in range(case.jobs):
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
        owners = Counter(case.owner(job) for job in remote)
        duplicates = sum(n - 1 for n in owners.values())
        assert len(remote) == case.jobs and duplicates == 0 and set(owners) == {case.tag(i) for i in ids}
        for job_id, job in ledger_jobs.items():
            assert case.owner(fake.jobs[case.remote_id(job)]) == case.tag(job_id)
            assert job.status is JobStatus.SUCCEEDED and results[job_id].status is JobStatus.SUCCEEDED, job.error
        uploads = len([r for r in fake.calls(case.upload_route) if r.fault is None or r.fault.commit])
        assert uploads < case.jobs  # the same data is uploaded again only when an upload broke
        injected = sum(fake.faults.injected.values())
        assert injected > (case.rate - 0.1) * len(fake.requests)

    statuses = Counter(j.status.value for j in ledger_jobs.values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(fake.faults.injected.items()))
    summary_line(f"fault test [{name}]: {case.jobs} jobs at a {case.rate:.0%} fault rate -> {len(remote)} remote "
                 f"jobs, {duplicates} duplicates, ledger: {dict(statuses)}; {len(fake.requests)} requests, {injected} "
                 f"faults ({kinds}); {uploads} uploads of the (same) data; "
                 f"recovery: {dict(retries) or 'none needed'}")
