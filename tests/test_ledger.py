import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from jobsupport import wait_for

from ftbroker.errors import InputError, JobBusyError, JobNotFoundError, LedgerError
from ftbroker.jobs import Artifact, Event, JobStatus, MetricPoint, Progress, Result
from ftbroker.ledger import MIGRATIONS, SCHEMA_VERSION, Claim, LeaseKeeper, Ledger, default_home
from ftbroker.spec import JobSpec

SPEC = JobSpec(dataset="/data/chats.jsonl", model="Qwen2.5-0.5B", backend="local")


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        yield led


def test_home_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FTBROKER_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    with Ledger() as led:
        assert led.path == tmp_path / "h" / "ledger.sqlite3"
        assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_ledger_that_cannot_be_opened_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FTBROKER_HOME", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(LedgerError, match="FTBROKER_HOME must name a folder"):
        Ledger()
    (tmp_path / "ledger.sqlite3").write_bytes(b"not SQLite " * 200)
    with pytest.raises(LedgerError, match="not a database.*move the file aside"):
        Ledger(tmp_path / "ledger.sqlite3")


def test_an_empty_job_id_is_asked_for(ledger):
    with pytest.raises(InputError, match="give a job id"):
        ledger.resolve("  ")


def test_a_job_and_everything_about_it(ledger):
    job = ledger.create(SPEC, estimated_cost_usd=Decimal("1.20"), resources={"estimated_peak_vram_gib": 7.5})
    assert job.id.startswith("ftb-") and len(job.id) == 12
    assert job.status is JobStatus.QUEUED and job.submitted_at is None
    now = datetime.now(UTC)
    job = ledger.update(job.id, status=JobStatus.RUNNING, remote={"pid": "42"}, submitted=True, cursor="10",
                        progress=Progress(step=3, total_steps=9, loss=1.5),
                        events=[Event(time=now, kind="step", message="step 3")],
                        metrics=[MetricPoint(step=3, name="train_loss", value=1.5)])
    assert job.submitted_at is not None and job.started_at is not None
    assert job.remote == {"pid": "42"} and job.cursor == "10" and job.progress.step == 3
    job = ledger.update(job.id, status=JobStatus.SUCCEEDED, remote={"output": "x"}, actual_cost_usd=Decimal("0.99"),
                        resources={"measured_peak_memory_gib": 7.1},
                        metrics=[MetricPoint(step=3, name="train_loss", value=1.4)],  # same point, replaced
                        artifacts=[Artifact(kind="adapter", uri="/runs/x/output")])
    assert job.remote == {"pid": "42", "output": "x"}
    assert job.resources == {"estimated_peak_vram_gib": 7.5, "measured_peak_memory_gib": 7.1}
    assert job.actual_cost_usd == Decimal("0.99") and job.estimated_cost_usd == Decimal("1.20")
    assert job.finished_at is not None
    assert [s for _, s, _ in ledger.history(job.id)] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert [m.value for m in ledger.metrics(job.id)] == [1.4]
    assert [e.message for _, e in ledger.events(job.id)] == ["step 3"]
    assert ledger.artifacts(job.id)[0].uri == "/runs/x/output"
    assert ledger.get(job.id).spec == SPEC


def test_resuming_a_finished_job_forgets_its_old_ending(ledger):
    job = ledger.create(SPEC)
    result = Result(id=job.id, backend="local", status=JobStatus.FAILED, model="m", error="oom")
    ledger.update(job.id, status=JobStatus.FAILED, error="oom", result=result)
    assert ledger.stored_result(job.id) is not None
    job = ledger.update(job.id, status=JobStatus.RUNNING)
    assert job.error is None and job.finished_at is None and ledger.stored_result(job.id) is None


def test_ids_resolve_by_unique_prefix(ledger):
    jobs = [ledger.create(SPEC) for _ in range(3)]
    first = jobs[0].id
    assert ledger.resolve(first) == first
    unique = next(n for n in range(5, 13) if sum(j.id.startswith(first[:n]) for j in jobs) == 1)
    assert ledger.get(first[:unique]).id == first
    assert ledger.get(first[4:unique]).id == first  # without "ftb-"
    with pytest.raises(InputError, match="ambiguous") as info:
        ledger.resolve("ftb-")
    assert info.value.exit_code == 2
    with pytest.raises(JobNotFoundError) as info:
        ledger.resolve("ftb-zzzzzzzzz")
    assert info.value.exit_code == 2
    with pytest.raises(JobNotFoundError):
        ledger.resolve("%")  # a LIKE wildcard is not a wildcard here


def test_a_start_of_the_id_prefix_is_not_prefixed_again(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(JobNotFoundError, match="no job ftb in the ledger"):  # not "no job ftb-ftb"
            ledger.resolve("ftb")
        only = ledger.create(SPEC).id
        assert [ledger.resolve(ref) for ref in ("ftb", "ft", "ftb-", only[4:7])] == [only] * 4
        ledger.create(SPEC)
        with pytest.raises(InputError, match="job id prefix 'ftb' is ambiguous: it matches ftb-"):
            ledger.resolve("ftb")


def test_list_newest_first_and_filters(ledger):
    a = ledger.create(SPEC)
    b = ledger.create(SPEC.model_copy(update={"backend": "openai"}))
    ledger.update(a.id, status=JobStatus.FAILED)
    assert [j.id for j in ledger.list()] == [b.id, a.id]
    assert [j.id for j in ledger.list(backend="openai")] == [b.id]
    assert [j.id for j in ledger.list(status=JobStatus.FAILED)] == [a.id]
    assert len(ledger.list(limit=1)) == 1


def test_secrets_in_the_environment_never_reach_the_file(ledger, monkeypatch):
    canary = "sk-canary-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    job = ledger.create(SPEC)
    ledger.update(job.id, status=JobStatus.FAILED, error=f"401: bad key {canary}",
                  events=[Event(time=datetime.now(UTC), kind="log", message=f"using {canary}",
                                data={"header": f"Bearer {canary}"})])
    ledger.close()
    raw = b"".join(p.read_bytes() for p in ledger.path.parent.glob("ledger.sqlite3*"))
    assert canary.encode() not in raw
    with Ledger(ledger.path) as again:
        assert again.get(job.id).error == "401: bad key ***"


def _v1_file(path):
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO jobs (id, backend, model, method, status, spec, created_at, updated_at)"
               " VALUES ('ftb-old12345', 'local', 'm', 'lora', 'succeeded', ?, '2026-01-02T03:04:05+00:00',"
               " '2026-01-02T03:04:05+00:00')", (SPEC.model_dump_json(),))
    db.execute("INSERT INTO events (job_id, time, kind, level, message) VALUES ('ftb-old12345',"
               " '2026-01-02T03:04:05+00:00', 'log', 'info', 'from version 1')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_migration_from_version_1_keeps_every_job(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    _v1_file(path)
    with Ledger(path) as led:
        assert led.schema_version == SCHEMA_VERSION
        tables = {r["name"] for r in led.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"evaluations", "deployments", "leases"} <= tables  # v3: ftbroker eval's records; v4: leases
        old = led.get("ftb-old")
        assert old.status is JobStatus.SUCCEEDED and old.resources == {}
        assert [e.message for _, e in led.events(old.id)] == ["from version 1"]
        led.update(old.id, resources={"measured_tokens_per_s": 900.0})  # the v2 column works
        assert led.get(old.id).resources == {"measured_tokens_per_s": 900.0}


def test_a_ledger_from_a_newer_ftbroker_is_refused_untouched(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path):
        pass
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)


_WRITER = """
import sys
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec
with Ledger(sys.argv[1]) as led:
    for i in range(150):
        job = led.create(JobSpec(dataset="d", model=sys.argv[2]))
        led.update(job.id, status=JobStatus.RUNNING, remote={"n": str(i)})
"""


def test_two_processes_writing_at_once(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], stderr=subprocess.PIPE)
             for name in ("a", "b")]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with Ledger(path) as led:
        jobs = led.list()
        assert len(jobs) == 300 and len({j.id for j in jobs}) == 300
        assert all(j.status is JobStatus.RUNNING for j in jobs)
        assert sorted(j.model for j in jobs).count("a") == 150


def test_one_process_at_a_time_holds_a_jobs_lease_and_the_others_are_told_who(ledger):
    job = ledger.create(SPEC)
    resuming = Claim("resuming")
    ledger.claim(job.id, resuming)
    with pytest.raises(JobBusyError) as busy:
        ledger.claim(job.id, Claim("cancelling"))
    assert busy.value.exit_code == 3 and busy.value.holder.pid == os.getpid()
    assert str(busy.value).startswith(f"job {job.id} is busy: another ftbroker process is at it (resuming; pid "
                                      f"{os.getpid()} on {socket.gethostname()}, since ")
    assert "nothing was done" in str(busy.value)
    ledger.claim(job.id, resuming)  # the holder itself may claim again
    ledger.release(job.id, resuming)
    assert ledger.lease(job.id) is None
    ledger.claim(job.id, Claim("cancelling"))
    assert ledger.lease(job.id).purpose == "cancelling"
    created = ledger.create(SPEC, claim=Claim("submitting"))  # taken with the row itself: nobody comes first
    assert ledger.lease(created.id).purpose == "submitting"


def test_a_lease_whose_holder_died_is_taken_over(ledger, monkeypatch):
    job = ledger.create(SPEC)
    monkeypatch.setenv("FTBROKER_NOW", "2030-01-01T12:00:00+00:00")
    ledger.claim(job.id, Claim("resuming", ttl_s=60, host="another-machine"))
    with pytest.raises(JobBusyError, match="its lease runs out at"):
        ledger.claim(job.id, Claim("resuming"))
    monkeypatch.setenv("FTBROKER_NOW", "2030-01-01T12:01:00+00:00")  # a minute on: it did not renew, it is gone
    ledger.claim(job.id, Claim("resuming"))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    other = ledger.create(SPEC)
    ledger.claim(other.id, Claim("submitting", pid=int(ended.stdout)))  # a process of this machine, ended
    ledger.claim(other.id, Claim("resuming"))  # taken over at once, without waiting for the lease to run out


def test_a_holder_renews_its_lease_while_it_works(ledger):
    job = ledger.create(SPEC)
    claim = Claim("submitting", ttl_s=0.2)
    ledger.claim(job.id, claim)
    first = ledger.lease(job.id).expires_at
    with LeaseKeeper(ledger.path, job.id, claim) as keeper:
        wait_for(lambda: ledger.lease(job.id).expires_at != first, timeout=30, interval=0.01)
    assert ledger.lease(job.id).expires_at > first and not keeper.lost
    ledger.release(job.id, claim)
    ledger.claim(job.id, Claim("cancelling", ttl_s=0.2))  # taken over: the keeper of the old claim finds it lost
    with LeaseKeeper(ledger.path, job.id, claim) as keeper:
        wait_for(lambda: keeper.lost, timeout=30, interval=0.01)
    assert keeper.lost
