"""The real adapter (backends/skypilot/adapter.py) reads SkyPilot's own response types: its SDK calls are replaced
here by functions returning the records SkyPilot 0.14 defines (no API server, no network), so a field renamed
upstream fails here rather than on a cluster. Skipped without SkyPilot."""

from __future__ import annotations

import json

import pytest

from ftbroker.errors import BackendError, BackendUnavailableError


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """SkyPilot, imported with its runtime folder in a temporary place (it reads it once, at import)."""
    runtime = tmp_path_factory.mktemp("sky-runtime")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SKY_RUNTIME_DIR", str(runtime))
        env.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
        return pytest.importorskip("sky", reason="SkyPilot's types: pip install 'ftbroker[skypilot]'")


@pytest.fixture
def adapter(sky, monkeypatch):
    from ftbroker.backends.skypilot.adapter import SkyAdapter

    monkeypatch.setattr(sky, "get", lambda request_id: request_id)  # each call below returns its answer directly
    return SkyAdapter()


def test_managed_jobs_are_read_from_skypilots_records(sky, adapter, monkeypatch):
    from sky.jobs.state import ManagedJobStatus
    from sky.schemas.api.responses import ManagedJobRecord

    records = [ManagedJobRecord(job_id=7, job_name="ftb-abcd2345", status=ManagedJobStatus.RECOVERING,
                                recovery_count=2, job_duration=5400.0, failure_reason=None,
                                labels={"ftbroker-job": "ftb-abcd2345"}),
               ManagedJobRecord(job_id=6, job_name="other", status=ManagedJobStatus.SUCCEEDED)]
    asked = {}

    def queue_v2(**kwargs):
        asked.update(kwargs)
        return records, len(records), {}, len(records)

    monkeypatch.setattr(sky.jobs, "queue_v2", queue_v2)
    (job,) = adapter.managed_jobs("ftb-abcd2345")
    assert (job.job_id, job.status, job.recovery_count, job.job_duration) == (7, "RECOVERING", 2, 5400.0)
    assert job.labels == {"ftbroker-job": "ftb-abcd2345"} and asked["name_match"] == "ftb-abcd2345"


def test_no_jobs_controller_means_no_managed_jobs(sky, adapter, monkeypatch):
    from sky import exceptions

    def not_up(**kwargs):
        raise exceptions.ClusterNotUpError("No in-progress managed jobs.")

    monkeypatch.setattr(sky.jobs, "queue_v2", not_up)
    assert adapter.managed_jobs() == []


def test_clusters_are_read_from_skypilots_status(sky, adapter, monkeypatch):
    from types import SimpleNamespace

    from sky.schemas.api.responses import StatusResponse
    from sky.utils.status_lib import ClusterStatus

    labels = {"ftbroker-job": "ftb-abcd2345", "ftbroker-ledger": "0f1e2d3c4b5a6978"}
    handle = SimpleNamespace(launched_resources=sky.Resources(labels=labels))  # the handle's part read
    fields = {"launched_at": 1_795_824_000, "status": ClusterStatus.UP, "autostop": 5, "to_down": True,
              "cluster_hash": "h", "cluster_ever_up": True, "user_hash": "u", "user_name": "me", "workspace": "default",
              "is_managed": False, "nodes": 1}
    records = [StatusResponse(name="ftb-abcd2345", handle=handle, **fields),
               StatusResponse(name="ftb-bcde3456", **fields)]  # provisioning: no handle yet
    monkeypatch.setattr(sky, "status", lambda names, refresh: records)
    cluster, young = adapter.clusters(["ftb-abcd2345", "ftb-bcde3456"])
    assert (cluster.name, cluster.status, cluster.launched_at, cluster.to_down, cluster.labels) == (
        "ftb-abcd2345", "UP", 1_795_824_000, True, labels)
    assert young.labels == {}


def test_launches_in_flight_are_found_by_cluster_or_job_name(sky, adapter, monkeypatch):
    from sky.server.requests.payloads import RequestPayload

    def payload(rid, name, cluster=None, body=None):
        return RequestPayload(request_id=rid, name=name, entrypoint="", request_body=json.dumps(body or {}),
                              status="RUNNING", created_at=0.0, user_id="u", return_value="", error="", pid=None,
                              schedule_type="long", cluster_name=cluster)

    pending = [payload("r1", "launch", cluster="ftb-abcd2345"), payload("r2", "jobs.launch", body={"name": "ftb-x"}),
               payload("r3", "status"), payload("r4", "launch", cluster="ftb-other")]
    monkeypatch.setattr(sky, "api_status", lambda *a, **k: pending)
    assert adapter.launching("ftb-abcd2345") == ["r1"]
    assert adapter.launching("ftb-x") == ["r2"]


def test_a_failed_request_carries_skypilots_error(sky, adapter, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(sky, "api_status", lambda ids: [SimpleNamespace(status="FAILED")])

    def failed(request_id):
        raise RuntimeError("ResourcesUnavailableError: no H100 in us-east-1")

    monkeypatch.setattr(sky, "get", failed)
    request = adapter.request("r9")
    assert request.status == "FAILED" and "no H100 in us-east-1" in request.error


def test_skypilots_errors_become_ftbrokers(sky, adapter, monkeypatch):
    from sky import exceptions

    def unreachable(*args, **kwargs):
        raise exceptions.ApiServerConnectionError("http://127.0.0.1:46580")

    def refused(*args, **kwargs):
        raise ValueError("Invalid region 'us-east-99'")

    monkeypatch.setattr(sky, "cost_report", unreachable)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        adapter.cost("ftb-abcd2345")
    monkeypatch.setattr(sky, "cost_report", refused)
    with pytest.raises(BackendError, match="Invalid region"):
        adapter.cost("ftb-abcd2345")
