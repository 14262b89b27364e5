"""Paid deployments of ``ftbroker eval``: a Together dedicated endpoint (the Together fake, real ``together`` SDK) and
a Bedrock Provisioned Throughput (a loopback fake driven through ``boto3``). Each is quoted and held to the budget,
recorded in the ledger before it is created, created exactly once (found by name after a create that answered an
error), always deleted (also when the evaluation fails), and found and deleted by a later process through the
clean-up hook (``live_deployments`` / ``delete_deployment``)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from evalsupport import converse_text, ledger_snapshot, succeeded_job, tuned_knows, write_sums
from fakes import FakeBedrockServing, FakeTogether, Fault
from jobsupport import ftb

from ftbroker.errors import BackendAuthError, BackendError, BudgetExceededError
from ftbroker.evaluation import delete_deployment, evaluate, live_deployments
from ftbroker.evaluation.deployments import Deployments, Timing, TogetherDeployer
from ftbroker.evaluation.lock import JobBusyError, job_lock
from ftbroker.evaluation.prices import load_prices
from ftbroker.evaluation.remote import Connection
from ftbroker.evaluation.store import active_deployments, deployments_of
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

EVAL_FAST = {"request_timeout_s": 5.0, "max_retries": 0, "attempts": 3, "retry_initial_s": 0.001,
             "retry_max_s": 0.01, "deploy_poll_s": 1.0}
TOGETHER_BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
TUNED = "fakeuser/Meta-Llama-3.1-8B-Instruct-Reference-ftb-x-abc123"
CUSTOM_MODEL = "arn:aws:bedrock:us-west-2:123456789012:custom-model/meta.llama3-1-8b-instruct-v1:0:128k/abc123"


@pytest.fixture
def together(monkeypatch, tmp_path):
    with FakeTogether() as fake:
        monkeypatch.setenv("TOGETHER_API_KEY", "test-eval-together")
        monkeypatch.setenv("TOGETHER_PROJECT_ID", "proj-fake")
        fake.responder = tuned_knows(lambda model: model == TUNED)
        home = tmp_path / "home"
        spec = JobSpec(dataset=str(write_sums(tmp_path / "train.jsonl", 12)), model=TOGETHER_BASE, backend="together",
                       validation=str(write_sums(tmp_path / "valid.jsonl", 4, start=30)),
                       backend_options={"base_url": fake.base_url})
        yield fake, home, succeeded_job(home, spec, TUNED)


def run(home, job_id, **kwargs):
    return evaluate(job_id, home=home, sleep=lambda s: None, capability=False,
                    options={**EVAL_FAST, **kwargs.pop("options", {})}, **kwargs)


def test_together_endpoints_are_quoted_created_used_and_deleted(together):
    fake, home, job_id = together
    hourly = load_prices().deployments["together"].usd_per_hour
    quoted = 2 * hourly * Decimal("1.5")  # two endpoints (base, fine-tuned), 1.5 hours each at most
    with pytest.raises(BudgetExceededError, match=rf"up to \${quoted:.4f}"):
        run(home, job_id, max_cost=quoted - Decimal("0.01"), options={"deployment_hours": 1.5})
    assert not fake.endpoints  # refused before anything was created
    evaluation = run(home, job_id, max_cost=quoted, options={"deployment_hours": 1.5})
    assert evaluation.overall["exact_match"]["tuned"] == 1.0 and evaluation.overall["exact_match"]["base"] == 0.0
    created = list(fake.deployments.values())
    assert sorted(d["model"] for d in created) == sorted([TOGETHER_BASE, TUNED])
    assert all(d["autoscaling"] == {"minReplicas": 1, "maxReplicas": 1} and d["inactiveTimeout"] == 30
               for d in created)  # one replica, and Together stops it by itself after 30 idle minutes
    assert not fake.live_deployments() and all(e["_deleted"] for e in fake.endpoints.values())
    with Ledger(home / "ledger.sqlite3") as ledger:
        records = deployments_of(ledger, job_id, "")
    assert [r.state for r in records] == ["deleted", "deleted"] and all(r.deleted_at for r in records)
    assert all(r.usd_per_hour == hourly for r in records)
    costs = evaluation.costs
    assert costs.deployment_usd > 0 and costs.inference_usd == 0
    assert costs.total_usd == pytest.approx(costs.deployment_usd + costs.judge_usd)


def test_an_endpoint_created_by_an_answer_lost_is_not_created_twice(together):
    fake, home, job_id = together
    fake.faults.on("endpoints.create", Fault.committed_error(500))  # created, but the client hears a 500
    fake.faults.on("deployments.create", Fault.dropped(commit=True))  # created, the connection dropped
    run(home, job_id)
    names = [e["name"] for e in fake.endpoints.values()]
    assert len(names) == len(set(names)) == 2  # one per side, none twice
    assert len(fake.deployments) == 2 and not fake.live_deployments()


def test_a_failed_evaluation_still_deletes_its_endpoints(together):
    fake, home, job_id = together
    fake.faults.on("chat.create", Fault.error(400), times=1)  # a refusal that no retry mends
    with pytest.raises(BackendError):
        run(home, job_id)
    assert fake.deployments and not fake.live_deployments()
    with Ledger(home / "ledger.sqlite3") as ledger:
        assert not active_deployments(ledger)
        failed = ledger.read("SELECT status, cost_usd FROM evaluations")
    assert [r["status"] for r in failed] == ["failed"] and float(failed[0]["cost_usd"]) > 0


def test_a_deployment_left_by_a_dead_process_is_found_and_deleted_by_the_hook(together):
    fake, home, job_id = together
    with Ledger(home / "ledger.sqlite3") as ledger:  # a process that brought one up, then died
        deployer = TogetherDeployer(Connection({"base_url": fake.base_url}, 5, 0))
        Deployments(ledger, deployer, Timing(poll_s=1, sleep=lambda s: None), max_hours=1).ensure(
            job_id, "tuned", TUNED, None, {"base_url": fake.base_url})
    [left] = live_deployments(home)
    assert left.state == "live" and left.provider == "together" and not left.in_use and fake.live_deployments()
    with job_lock(home, job_id, "a running evaluation"):  # in use: the clean-up leaves it alone
        assert live_deployments(home)[0].in_use
        with pytest.raises(JobBusyError, match="a running evaluation"):
            delete_deployment(left.id, home)
    deleted = delete_deployment(left.id, home)
    assert deleted.state == "deleted" and not fake.live_deployments() and live_deployments(home) == []
    assert delete_deployment(left.id, home).state == "deleted"  # idempotent


def test_gc_lists_what_a_dead_process_left_with_its_cost_keeps_it_while_in_use_and_deletes_it(together,
                                                                                               monkeypatch):
    fake, home, job_id = together
    monkeypatch.setenv("FTBROKER_HOME", str(home))
    with Ledger(home / "ledger.sqlite3") as ledger:  # a process that brought one up, then died
        deployer = TogetherDeployer(Connection({"base_url": fake.base_url}, 5, 0))
        Deployments(ledger, deployer, Timing(poll_s=1, sleep=lambda s: None), max_hours=1).ensure(
            job_id, "tuned", TUNED, load_prices().deployments["together"].usd_per_hour, {"base_url": fake.base_url})
    [left] = live_deployments(home)
    monkeypatch.setenv("FTBROKER_NOW", (left.created_at + timedelta(hours=2)).isoformat())  # 2 hours later
    with job_lock(home, job_id, "a running evaluation"):  # in use: listed, and kept even with --yes
        [kept] = json.loads(ftb("gc", "--yes", "--json").stdout)["leftovers"]
        assert (kept["resource"], kept["reason"], kept["action"]) == (left.id, None, None)
        assert "an evaluation of its job is running" in kept["note"] and fake.live_deployments()
    [listed] = json.loads(ftb("gc", "--json").stdout)["leftovers"]  # a dry run
    assert (listed["backend"], listed["job_id"], listed["action"]) == ("eval", job_id, None)
    assert listed["reason"] == f"no evaluation of job {job_id} is running, and the deployment is live"
    assert Decimal(str(listed["cost_usd"])) == left.usd_per_hour * 2  # its price x the hours since its creation
    assert "would delete (--yes)" in ftb("gc").stdout and fake.live_deployments()

    fake.faults.on("deployments.delete", Fault.error(400), times=10)  # the provider refuses, for now
    refused = ftb("gc", "--yes", "--json", ok=(1,))
    [failed] = json.loads(refused.stdout)["leftovers"]
    assert failed["action"].startswith("failed: ") and "1 could not be stopped" in refused.stderr
    assert [d.id for d in live_deployments(home)] == [left.id]  # still listed: the next gc tries again
    fake.faults.clear()
    [deleted] = json.loads(ftb("gc", "--yes", "--json").stdout)["leftovers"]
    assert (deleted["resource"], deleted["action"]) == (left.id, "deleted")
    assert not fake.live_deployments() and live_deployments(home) == []
    assert json.loads(ftb("gc", "--json").stdout)["leftovers"] == []


def test_one_spending_step_per_job_at_a_time_across_processes(together):
    fake, home, job_id = together
    script = ("import sys; from pathlib import Path; from ftbroker.evaluation.lock import job_lock\n"
              f"with job_lock(Path({str(home)!r}), {job_id!r}, 'ftbroker eval in another terminal'):\n"
              "    print('locked', flush=True); sys.stdin.read()")
    # another process takes the job's lock, says so, and holds it until its stdin closes (no clock involved)
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as holder:
        assert holder.stdout.readline().strip() == "locked"
        before = ledger_snapshot(home)
        with pytest.raises(JobBusyError, match="another terminal"):
            run(home, job_id)
        assert not fake.endpoints and ledger_snapshot(home) == before
        holder.stdin.close()
        holder.wait(timeout=60)
    assert run(home, job_id).status == "completed"  # the lock went with the process


def test_ctrl_c_while_an_endpoint_comes_up_still_deletes_it(together):
    fake, home, job_id = together

    def interrupted(seconds):  # the user presses Ctrl-C while ftbroker waits for the endpoint
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(job_id, home=home, sleep=interrupted, capability=False, options=EVAL_FAST)
    assert fake.deployments and not fake.live_deployments()
    with Ledger(home / "ledger.sqlite3") as ledger:
        assert not active_deployments(ledger)
        assert [r["status"] for r in ledger.read("SELECT status FROM evaluations")] == ["failed"]


@pytest.fixture
def bedrock(monkeypatch, tmp_path):
    with FakeBedrockServing() as fake:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-west-2")):
            monkeypatch.setenv(name, value)
        fake.responder = lambda model, body: tuned_knows(lambda m: m == CUSTOM_MODEL)(
            model, {"messages": converse_text(body)})
        home = tmp_path / "home"
        spec = JobSpec(dataset=str(write_sums(tmp_path / "train.jsonl", 40)), model="meta.llama3-1-8b-instruct-v1:0:128k",
                       backend="bedrock", validation=str(write_sums(tmp_path / "valid.jsonl", 4, start=70)),
                       backend_options={"role_arn": "arn:aws:iam::123456789012:role/x", "region": "us-west-2",
                                        "s3_uri": "s3://bucket/x", "endpoint_url": fake.endpoint_url})
        yield fake, home, succeeded_job(home, spec, CUSTOM_MODEL)


def test_bedrock_needs_provisioned_throughput_whose_price_is_unknown(bedrock):
    fake, home, job_id = bedrock
    options = {"runtime_endpoint_url": fake.endpoint_url}
    with pytest.raises(BudgetExceededError, match="cannot be estimated .*no public hourly price for a bedrock"):
        run(home, job_id, max_cost=100, options=options)
    assert not fake.throughputs
    evaluation = run(home, job_id, options=options)  # no budget: unbounded cost accepted (the CLI asks first)
    assert evaluation.overall["exact_match"] == {"base": 0.0, "tuned": 1.0, "applies": 4.0}
    [pt] = fake.throughputs.values()
    assert pt["modelArn"] == CUSTOM_MODEL and pt["modelUnits"] == 1 and pt["deleted"] is not None
    assert pt["token"] == pt["provisionedModelName"]  # the idempotency token: its ledger name
    assert evaluation.costs.total_usd is None
    assert set(evaluation.costs.unknown) == {"base model answers", "deployment hours"}


def test_bedrock_priced_by_the_users_table_is_held_to_the_budget(bedrock):
    fake, home, job_id = bedrock
    home.mkdir(parents=True, exist_ok=True)
    (home / "eval_prices.toml").write_text(
        '[[model]]\nprovider = "bedrock"\nmodel = "meta.llama3-1-8b-instruct-v1:0"\ninput = 0.22\noutput = 0.22\n'
        '[[deployment]]\nprovider = "bedrock"\nhardware = "1 model unit"\nusd_per_hour = 20.0\n')
    options = {"runtime_endpoint_url": fake.endpoint_url, "deployment_hours": 0.5}
    with pytest.raises(BudgetExceededError, match="over --max-cost"):
        run(home, job_id, max_cost=9, options=options)
    evaluation = run(home, job_id, max_cost=11, options=options)
    assert evaluation.costs.total_usd is not None and evaluation.costs.total_usd <= 11
    assert not fake.live()


def test_no_together_key_is_said_before_anything_is_spent(together, monkeypatch):
    fake, home, job_id = together
    monkeypatch.delenv("TOGETHER_API_KEY")
    with pytest.raises(BackendAuthError, match="set TOGETHER_API_KEY"):
        run(home, job_id)
    assert not fake.requests


def test_the_cache_is_private(together):
    import os
    import stat

    _, home, job_id = together
    old = os.umask(0o022)
    try:
        run(home, job_id)
    finally:
        os.umask(old)
    cache = [p for p in home.iterdir() if p.name.startswith("eval-cache.sqlite3")]
    assert cache and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cache)  # prompts and answers
    assert not (home / "locks").exists()  # the job's lease is in the (private) ledger
