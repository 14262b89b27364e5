"""The SkyPilot backend against a fake of SkyPilot's state machine (tests/fakes/skypilot_fake.py), whose nodes run
the task's real run script: here with the scripted trainer (fast), the real one in the contract suite and in
test_skypilot_multinode.py. Exactly once, recovery and its cost, teardown after a failed launch, the runtime cap,
a graceful cancel, and what ``gc`` finds and tears down."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from fakes.skypilot_fake import FakeSky
from jobsupport import SCRIPTED_TRAINER, wait_for, write_chat

from ftbroker import clock
from ftbroker.backends.base import create_backend
from ftbroker.backends.skypilot import backend as skypilot
from ftbroker.broker import Broker
from ftbroker.errors import BudgetExceededError, RouteUnavailableError, SpecError, UnknownNameError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

ON_DEMAND = {"instance_type": "gpu_1x_h100_sxm5", "cloud": "lambda"}  # 4.29 $/h
SPOT = {"instance_type": "gpu-h100-sxm_1gpu-16vcpu-200gb", "spot": True}  # nebius, 1.25 $/h spot
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # the prices above are its rows'
BUCKET = "s3://ftb-test/runs"


@pytest.fixture
def sky(tmp_path, monkeypatch):
    fake = FakeSky(tmp_path / "sky", usd_per_hour=Decimal("4.29"), env={"FTB_SCRIPT_STEPS": "3"})
    monkeypatch.setattr(skypilot, "adapter", lambda: fake)
    # the fake answers for SkyPilot: its SDK need not be installed for these tests
    caps = dataclasses.replace(skypilot.SkyPilotBackend.capabilities, requires={})
    monkeypatch.setattr(skypilot.SkyPilotBackend, "capabilities", caps)
    yield fake
    fake.close()
    assert not _processes_under(tmp_path)  # every node's processes ended: none left behind


def _processes_under(folder) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(folder) in " ".join(proc.info["cmdline"] or ()):
                found.append(proc.pid)
    return found


@pytest.fixture
def broker(tmp_path, sky):
    def wait(seconds):  # the broker's sleep: a minute of SkyPilot's time, a moment of the nodes'
        sky.advance(60)
        time.sleep(0.05)

    with Broker(tmp_path / "home", sleep=wait) as b:
        yield b


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl", 30)


def spec(data, **options) -> JobSpec:
    return JobSpec(dataset=str(data), model="Llama-3.1-8B", backend="skypilot",
                   backend_options={"bucket": BUCKET, "trainer": str(SCRIPTED_TRAINER), **ON_DEMAND, **options})


def test_an_on_demand_run_launches_one_cluster_and_tears_it_down(broker, sky, data, tmp_path):
    job = broker.submit(spec(data))
    result = broker.follow(job.id)
    assert result.status is JobStatus.SUCCEEDED and result.backend == "skypilot"
    (launch,) = sky.launches()
    assert launch[1]["cluster"] == job.id and launch[1]["down"] is True and launch[1]["idle_minutes"] == 5
    assert not sky.clusters_  # torn down as soon as its job ended
    assert ("down", {"cluster": job.id, "graceful": False}) in sky.calls
    # the adapter, downloaded into the local run folder, where export finds it
    run_dir = tmp_path / "home" / "runs" / job.id
    assert result.output_model == str(run_dir / "output" / "adapter") and (run_dir / "output" / "adapter").is_dir()
    kinds = [e.kind for _, e in broker.events(job.id)]
    assert kinds.count("progress") == 3 and "done" in kinds  # the trainer's events, from SkyPilot's logs
    assert broker.job(job.id).actual_cost_usd == sky.cost(job.id)  # SkyPilot's cost report
    assert (run_dir / "task.yaml").is_file()


def test_a_spot_run_is_a_managed_job_whose_recoveries_and_their_cost_are_recorded(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"  # long enough to be preempted
    job = broker.submit(spec(data, **SPOT, cloud=None))
    wait_for(lambda: broker.refresh(job.id).status is JobStatus.RUNNING)
    for _ in range(2):  # two reclaims, each found by a poll
        sky.advance(1800)
        sky.preempt(1)
        wait_for(lambda: broker.refresh(job.id).status_detail == "running")
    sky.advance(600)
    sky.jobs_cancel(1)  # ends the job (its trainer would run for hours)
    job = broker.refresh(job.id)
    assert [c[0] for c in sky.launches()] == ["jobs_launch"]  # recovered by SkyPilot, never launched again
    attempts = [e for _, e in broker.events(job.id) if e.kind == "attempt"]
    assert [a.data["attempt"] for a in attempts] == [2, 3]
    price = Decimal("1.25")
    per_attempt = [Decimal(str(a.data["cost_usd"])) for a in attempts]
    assert job.actual_cost_usd == (Decimal(str(sky.managed[1].job_duration)) / 3600 * price).quantize(Decimal("1e-4"))
    last = Decimal(str(sky.managed[1].job_duration)) - Decimal(job.remote["attempts_runtime_s"])
    assert abs(sum(per_attempt) + last / 3600 * price - job.actual_cost_usd) <= Decimal("0.0003")  # rounding
    assert job.remote["recoveries"] == "2"


def test_a_launch_that_fails_after_its_cluster_exists_is_torn_down(broker, sky, data):
    sky.fail_launch_after_cluster = True
    job = broker.submit(spec(data))
    result = broker.follow(job.id)
    assert result.status is JobStatus.FAILED and "setup failed" in result.error
    assert not sky.clusters_ and [c for c in sky.calls if c[0] == "down"]  # down=True would have kept it
    assert len(sky.launches()) == 1


def test_a_submit_finds_what_was_launched_for_the_job_first(broker, sky, data):
    job = broker.submit(spec(data))
    backend = broker.backend(job.spec)
    crashed = broker.job(job.id).model_copy(update={"remote": {}})  # the ledger never learnt the request
    for _ in range(3):  # in flight, then provisioning, then up: found each time
        assert backend.submit(crashed, _NoSideEffects()).reused
        sky.request("req-1")
    assert len(sky.launches()) == 1


def test_a_managed_job_is_found_by_its_name(broker, sky, data):
    job = broker.submit(spec(data, **SPOT, cloud=None))
    wait_for(lambda: broker.refresh(job.id).remote.get("sky_job_id"))
    again = broker.backend(job.spec).submit(broker.job(job.id).model_copy(update={"remote": {}}), _NoSideEffects())
    assert again.reused and again.remote == {"sky_job_id": "1"}
    assert len(sky.launches()) == 1


def test_cancel_stops_the_trainer_with_a_checkpoint_then_tears_down(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    job = broker.submit(spec(data))
    wait_for(lambda: any(e.kind == "running" for _, e in broker.tail(job.id)))
    job = broker.cancel(job.id)
    assert job.status is JobStatus.CANCELLED
    assert ("cancel", {"cluster": job.id, "job_id": 1}) in sky.calls  # SIGTERM, the trainer's end awaited,
    assert ("down", {"cluster": job.id, "graceful": True}) in sky.calls and not sky.clusters_  # then teardown
    run = sky.bucket(f"{BUCKET}/{job.id}")
    assert list((run / "checkpoints").glob("checkpoint-*"))  # saved on SIGTERM, in the bucket
    assert '"cancelled"' in (run / "events.jsonl").read_text().splitlines()[-1]


def test_a_managed_job_is_cancelled_gracefully(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    job = broker.submit(spec(data, **SPOT, cloud=None))
    wait_for(lambda: broker.refresh(job.id).status is JobStatus.RUNNING)
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    assert ("jobs_cancel", {"job_id": 1, "graceful": True}) in sky.calls


def test_the_poll_tears_down_a_run_past_its_cap(broker, sky, data, monkeypatch):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    job = broker.submit(spec(data, max_hours=1))
    wait_for(lambda: broker.refresh(job.id).status is JobStatus.RUNNING)
    later = clock.now() + timedelta(hours=3)  # SkyPilot's clock and ftbroker's, both
    monkeypatch.setenv("FTBROKER_NOW", later.isoformat())
    sky.advance(3 * 3600)
    job = broker.refresh(job.id)
    assert job.status is JobStatus.FAILED and "past the hard runtime cap of 1.00 h" in job.error
    assert not sky.clusters_


def test_the_poll_cancels_a_managed_job_past_its_cap(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    job = broker.submit(spec(data, **SPOT, cloud=None, max_hours=1))
    wait_for(lambda: broker.refresh(job.id).status is JobStatus.RUNNING)
    sky.advance(3 * 3600)
    job = broker.refresh(job.id)
    assert job.status is JobStatus.FAILED and "past the hard runtime cap" in job.error
    assert ("jobs_cancel", {"job_id": 1, "graceful": True}) in sky.calls


def test_the_node_stops_the_trainer_at_the_cap(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    job = broker.submit(spec(data, max_hours=0.0002))  # 1 s on the node's own clock (timeout)
    result = broker.follow(job.id)
    assert result.status is JobStatus.FAILED and "runtime cap reached" in result.error


def test_a_route_skypilot_cannot_run_is_refused_before_anything_is_recorded(broker, sky, data):
    with pytest.raises(RouteUnavailableError, match="STORAGE_MOUNTING"):
        broker.submit(spec(data, instance_type="1x_H100-SXM_SECURE", cloud="runpod"))
    with pytest.raises(UnknownNameError, match="gpu_1x_h999"):
        broker.submit(spec(data, instance_type="gpu_1x_h999"))
    assert broker.jobs() == [] and sky.calls == []


def test_options_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match="not a bucket URI"):
        create_backend("skypilot", {**ON_DEMAND, "bucket": "/tmp/here"}, home=tmp_path)
    with pytest.raises(SpecError, match="bucket: required .*: pass --option bucket="):
        create_backend("skypilot", ON_DEMAND, home=tmp_path)


def test_the_budget_guard_reads_the_routes_quote(broker, sky, data):
    with pytest.raises(BudgetExceededError):
        broker.submit(JobSpec(**{**spec(data).model_dump(), "budget": {"max_cost_usd": Decimal("0.01")}}))
    assert sky.calls == []


def test_an_instance_skypilot_would_start_without_its_gpus_is_not_launched(broker, sky, data):
    sky.attached_gpus["gpu_1x_h100_sxm5"] = None
    with pytest.raises(Exception, match="with no GPUs"):
        broker.submit(spec(data))
    assert sky.launches() == []


def test_gc_finds_what_is_left_over_and_tears_it_down(broker, sky, data):
    sky.env["FTB_SCRIPT_STEPS"] = "100000"
    running = broker.submit(spec(data))
    wait_for(lambda: broker.refresh(running.id).status is JobStatus.RUNNING)
    ended = broker.submit(spec(data))
    wait_for(lambda: broker.refresh(ended.id).status is JobStatus.RUNNING)
    broker.ledger.update(ended.id, status=JobStatus.FAILED, error="the CLI marked it failed")  # its cluster lives on
    task = sky.launches()[0][1]["task"]  # labelled with this ledger's id
    resources = task["resources"]
    elsewhere = {**task, "resources": {**resources, "labels": {**resources["labels"], "ftbroker-ledger": "other"}}}
    for request in (sky.launch(task, cluster="ftb-zzzzzzzz", idle_minutes=5, down=True),  # this ledger lost it
                    sky.jobs_launch(task, name="ftb-yyyyyyyy"),
                    sky.launch(elsewhere, cluster="ftb-xxxxxxxx", idle_minutes=5, down=True)):
        sky.request(request)
        sky.request(request)
    backend = broker.backend(running.spec)

    def lookup(job_id):
        return next((j for j in broker.jobs() if j.id == job_id), None)

    found = {left.job_id: left for left in backend.leftovers(lookup)}
    assert set(found) == {running.id, ended.id, "ftb-zzzzzzzz", "ftb-yyyyyyyy", "ftb-xxxxxxxx"}
    assert "failed" in found[ended.id].reason and "no job ftb-zzzzzzzz" in found["ftb-zzzzzzzz"].reason
    assert found["ftb-yyyyyyyy"].handle == {"kind": "managed job"} and found["ftb-yyyyyyyy"].reason
    assert found[running.id].reason is None and "running" in found[running.id].note  # in use: it stays
    assert found["ftb-xxxxxxxx"].reason is None and "another ledger" in found["ftb-xxxxxxxx"].note
    assert found[ended.id].cost_usd is not None  # SkyPilot's cost report
    for left in found.values():
        if left.reason:
            assert backend.collect(left).startswith(("tore down", "cancelled"))
    assert set(sky.clusters_) == {running.id, "ftb-xxxxxxxx"} and sky.managed[1].status == "CANCELLED"
    assert [left.job_id for left in backend.leftovers(lookup) if left.reason] == []


class _NoSideEffects:
    def remember(self, **remote):
        raise AssertionError(f"a reused submission must not record anything new: {remote}")

    def event(self, message, **kw):
        raise AssertionError(message)


def test_the_trainers_events_are_read_out_of_skypilots_log_lines():
    from ftbroker.backends.skypilot.runs import CLUSTER_JOB_STATUS, log_error, status_of, trainer_events

    log = ("I 12-07 12:00:00 provisioner.py:512] Successfully provisioned cluster\n"
           '(head, rank=0, pid=4242) ftbroker-event {"time": "2026-12-07T12:01:00+00:00", "kind": "progress", '
           '"step": 10}\n'
           '(head, rank=0, pid=4242) ftbroker-event {"time": "2026-12-07T12:02:00+00:00", "kind": "error", '
           '"message": "CUDA out of memory"}\n'
           "(head, rank=0, pid=4242) ftbroker-event {not json\n")
    assert [e["kind"] for e in trainer_events(log, None)] == ["progress", "error"]
    assert [e["kind"] for e in trainer_events(log, "2026-12-07T12:01:00+00:00")] == ["error"]  # after the cursor
    assert log_error(log, trainer_events(log, None)) == "CUDA out of memory"
    capped = log + "(head, rank=0, pid=4242) ftbroker: runtime cap reached: 3600 s used\n"
    assert log_error(capped, []) == "ftbroker: runtime cap reached: 3600 s used"
    assert status_of("SETTING_UP", CLUSTER_JOB_STATUS) is JobStatus.RUNNING
    assert status_of("SOME_NEW_WORD", CLUSTER_JOB_STATUS) is JobStatus.RUNNING  # unknown: still going
