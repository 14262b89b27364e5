"""The Broker's own logic (guards, intent before side effects, exactly-once resume), on an in-memory backend."""

import os
from decimal import Decimal

import pytest
from jobsupport import ScriptedBackend, write_chat

from ftbroker.backends import base
from ftbroker.broker import Broker, check_guards
from ftbroker.errors import (BackendUnavailableError, BudgetExceededError, DatasetError, DoesNotFitError,
                             ExtraNotInstalledError, InputError, JobBusyError, JobError, NotConfirmedError,
                             ProviderAPIError, RouteUnavailableError, SpecError)
from ftbroker.jobs import JobStatus
from ftbroker.ledger import Claim
from ftbroker.spec import Budget, JobSpec


@pytest.fixture(autouse=True)
def scripted(monkeypatch, plugin_backends):
    plugin_backends(scripted="jobsupport:ScriptedBackend")
    monkeypatch.setattr(ScriptedBackend, "calls", [])
    monkeypatch.setattr(ScriptedBackend, "remote_jobs", {})


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "home", sleep=lambda s: None) as b:
        yield b


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl")


def spec(data, max_cost=None, **options):
    return JobSpec(dataset=str(data), model="m", backend="scripted", backend_options=options,
                   budget={"max_cost_usd": max_cost})


def test_submit_records_the_intent_before_the_backend_is_called(broker, data):
    job = broker.submit(spec(data, cost_usd="1.50"))
    call, job_id, row_at_submit = ScriptedBackend.calls[0]
    assert (call, job_id) == ("submit", job.id)
    assert row_at_submit is not None and row_at_submit.submitted_at is None  # written, not yet submitted
    assert job.submitted_at is not None and job.remote == {"upload": "file-123", "remote_id": f"r-{job.id}"}
    assert job.estimated_cost_usd == Decimal("1.50")
    assert job.resources == {"estimated_tokens_per_s": 1234.0, "estimated_hours": 0.5}


def test_follow_to_success_records_everything(broker, data):
    seen = []
    result = broker.run(spec(data, polls_to_finish=3), on_update=lambda job, upd: seen.append(job.status))
    assert seen == [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert result.status is JobStatus.SUCCEEDED and result.output_model == "ft:scripted:model"
    assert result.actual_cost_usd == Decimal("0.42") and result.trained_tokens == 4321
    assert [m.step for m in result.metrics] == [1, 2]  # from the ledger: the backend's result had none
    job = broker.job(result.id)
    assert job.cursor == "2" and job.finished_at is not None
    assert broker.result(job.id) == result  # stored when it ended
    messages = [e.message for _, e in broker.events(job.id)]
    assert "poll 1" in messages and "running -> succeeded" in messages


def test_a_failure_surfaces_the_providers_error(broker, data):
    result = broker.run(spec(data, outcome="failed"))
    assert result.status is JobStatus.FAILED
    assert result.error == "invalid training file: line 3 has no assistant turn"


@pytest.mark.parametrize("options, error, words", [
    ({"verdict": "does_not_fit"}, DoesNotFitError, "does not fit"),
    ({"verdict": "route_unavailable"}, RouteUnavailableError, "scripted verdict"),
    ({"cost_usd": "4", "cost_high_usd": "6", "max_cost": "5"}, BudgetExceededError, r"\$4-\$6 is over --max-cost \$5"),
    ({"max_cost": "5"}, BudgetExceededError, "cannot be estimated"),
])
def test_guards_refuse_before_anything_is_recorded(broker, data, options, error, words):
    max_cost = options.pop("max_cost", None)
    with pytest.raises(error, match=words) as info:
        broker.submit(spec(data, max_cost=max_cost, **options))
    assert info.value.exit_code == 3
    assert broker.jobs() == [] and ScriptedBackend.calls == []


def test_a_missing_extra_is_refused_before_anything_is_recorded(broker, data, monkeypatch):
    caps = ScriptedBackend.capabilities
    monkeypatch.setattr(ScriptedBackend, "capabilities",
                        type(caps)(**{**vars(caps), "requires": {"ftbroker_no_such_sdk": "scripted"}}))
    with pytest.raises(ExtraNotInstalledError, match=r"pip install 'ftbroker\[scripted\]'"):
        broker.submit(spec(data))
    assert broker.jobs() == [] and ScriptedBackend.calls == []


def test_force_overrides_only_the_fit_check(broker, data):
    job = broker.submit(spec(data, verdict="does_not_fit"), force=True)
    assert job.submitted_at is not None
    assert any("--force" in e.message for _, e in broker.events(job.id))
    with pytest.raises(RouteUnavailableError):
        broker.submit(spec(data, verdict="route_unavailable"), force=True)


def test_budget_within_limit_and_declined_confirmation(broker, data):
    prepared = []
    job = broker.submit(spec(data, max_cost="5", cost_usd="4.99"), confirm=lambda p: prepared.append(p) or True)
    assert prepared[0].quote.cost_usd == Decimal("4.99") and job.submitted_at is not None
    with pytest.raises(NotConfirmedError):
        broker.submit(spec(data), confirm=lambda p: False)
    assert len(broker.jobs()) == 1


def test_bad_data_is_refused_before_recording(broker, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2: not JSON"):
        broker.submit(spec(bad))
    assert broker.jobs() == []


def test_a_lost_answer_leaves_the_job_resumable_and_resume_submits_exactly_once(broker, data):
    with pytest.raises(BackendUnavailableError) as lost:
        broker.submit(spec(data, submit_error="unavailable"))
    [job] = broker.jobs()
    assert str(lost.value).endswith(f"job {job.id} is recorded; `ftbroker resume {job.id}` finishes the job safely: "
                                    "it looks for the remote job before creating one")
    assert job.submitted_at is None and job.status is JobStatus.QUEUED
    assert job.remote == {"upload": "file-123"}  # remembered before the create call
    assert "resume" in job.error or any("resume" in e.message for _, e in broker.events(job.id))
    with pytest.raises(JobError, match="never confirmed submitted"):
        broker.follow(job.id)
    job = broker.resume(job.id)
    assert job.submitted_at is not None and job.remote["remote_id"] == f"r-{job.id}"
    assert len(ScriptedBackend.remote_jobs) == 1  # found, not created twice
    assert any("found the job already created" in e.message for _, e in broker.events(job.id))


def test_a_refused_submission_is_recorded_failed(broker, data):
    with pytest.raises(ProviderAPIError):
        broker.submit(spec(data, submit_error="refused"))
    [job] = broker.jobs()
    assert job.status is JobStatus.FAILED and "model not available" in job.error


def test_cancel_resume_and_export_follow_capabilities(broker, data):
    job = broker.submit(spec(data, polls_to_finish=99))
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    assert broker.cancel(job.id).status is JobStatus.CANCELLED  # idempotent, backend not asked again
    assert [c for c, *_ in ScriptedBackend.calls].count("cancel") == 1
    with pytest.raises(InputError, match="scripted cannot resume jobs: scripted jobs cannot resume"):
        broker.resume(job.id)
    with pytest.raises(JobError, match="only a succeeded job"):
        broker.export(job.id, "ollama", "out")


def test_result_of_a_running_job_is_an_error(broker, data):
    job = broker.submit(spec(data, polls_to_finish=99))
    with pytest.raises(JobError, match="no result yet"):
        broker.result(job.id)


def test_tail_follows_events_to_the_end(broker, data):
    job = broker.submit(spec(data, polls_to_finish=3))
    messages = [e.message for _, e in broker.tail(job.id, follow=True)]
    assert messages[0].startswith("submitted") and "poll 2" in messages and messages[-1] == "running -> succeeded"


def test_following_waits_what_the_backend_suggests(tmp_path, data):
    """``logs --follow`` (``tail``) and ``follow`` wait what each poll suggests (the job's ``poll_interval_s``, a
    provider's hint), else the backend's default (0.01 s for this one)."""
    waits = []
    with Broker(tmp_path / "home", sleep=waits.append) as broker:
        job = broker.submit(spec(data, polls_to_finish=3, next_poll_s=7.5))
        list(broker.tail(job.id, follow=True))
        assert waits == [7.5, 7.5]
        waits.clear()
        broker.follow(broker.submit(spec(data, polls_to_finish=3, next_poll_s=7.5)).id)
        assert len(waits) == 2 and all(7.5 * 0.9 <= w <= 7.5 * 1.1 for w in waits)
        waits.clear()
        list(broker.tail(broker.submit(spec(data, polls_to_finish=2)).id, follow=True))
        assert waits == [0.01]


def test_check_guards_compares_the_high_end_of_the_range():
    quote = base.Quote(backend="x", cost_usd=Decimal("1"), cost_high_usd=Decimal("3"))
    sp = JobSpec(dataset="d", model="m", budget={"max_cost_usd": "2"})
    with pytest.raises(BudgetExceededError):
        check_guards(quote, sp)
    check_guards(quote, sp.model_copy(update={"budget": Budget(max_cost_usd=Decimal("3"))}))


def test_data_in_a_format_the_backend_cannot_train_on(broker, tmp_path, monkeypatch):
    import types

    monkeypatch.setattr(ScriptedBackend, "validate",
                        lambda self, s: types.SimpleNamespace(format="preference", examples=1, errors=[]))
    with pytest.raises(SpecError, match="scripted cannot train on preference data"):
        broker.submit(spec(write_chat(tmp_path / "d.jsonl")))


def test_whatever_acts_on_a_job_holds_its_lease_and_a_busy_job_is_refused(broker, data, monkeypatch):
    held = []
    submit = ScriptedBackend.submit

    def looking(self, job, tracker):
        held.append(broker.ledger.lease(job.id))
        return submit(self, job, tracker)

    monkeypatch.setattr(ScriptedBackend, "submit", looking)
    job = broker.submit(spec(data, polls_to_finish=99))
    assert (held[0].purpose, held[0].pid) == ("submitting", os.getpid())  # held from the moment it was recorded
    assert broker.ledger.lease(job.id) is None  # and given back
    other = Claim("resuming")  # another process of this machine, alive, acts on the job
    broker.ledger.claim(job.id, other)
    asked = len(ScriptedBackend.calls)
    for act in (broker.cancel, broker.resume):
        with pytest.raises(JobBusyError, match=fr"job {job.id} is busy: another ftbroker process is at it \(resuming; pid"):
            act(job.id)
    assert len(ScriptedBackend.calls) == asked  # the backend was never asked
    broker.ledger.release(job.id, other)
    assert broker.cancel(job.id).status is JobStatus.CANCELLED and broker.ledger.lease(job.id) is None


def test_other_backends_and_deployments_take_the_same_lease(broker, data):
    job = broker.submit(spec(data, polls_to_finish=99))
    with broker.exclusive(job.id[:7], "deploying") as leased:  # e.g. a paid deployment for evaluation
        assert leased.id == job.id
        with pytest.raises(JobBusyError, match=r"another ftbroker process is at it \(deploying; pid"):
            broker.cancel(job.id)
    assert broker.ledger.lease(job.id) is None


def test_an_evaluation_and_the_job_commands_share_one_lease(broker, data):
    from ftbroker.evaluation.lock import job_lock, locked

    job = broker.submit(spec(data, polls_to_finish=99))
    with job_lock(broker.home, job.id, "ftbroker eval"):  # from its quote to its deployments' teardown
        assert locked(broker.home, job.id)
        with pytest.raises(JobBusyError, match=r"another ftbroker process is at it \(ftbroker eval; pid"):
            broker.cancel(job.id)
    with broker.exclusive(job.id, "resuming"), pytest.raises(JobBusyError, match=r"at it \(resuming; pid"), \
            job_lock(broker.home, job.id, "ftbroker eval"):
        pass
    assert not locked(broker.home, job.id)
