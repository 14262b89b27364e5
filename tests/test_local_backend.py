"""The local backend's process handling, against the scripted trainer (tests/scripted_trainer.py)."""

import json
import os
import signal
import sys
from dataclasses import replace

import pytest
from spine_support import SCRIPTED_TRAINER, install_data_double, wait_for, write_chat

from ftbroker.backends.base import Gpu, Verdict
from ftbroker.backends.local.backend import (TRAINER_MODULE, LocalBackend, LocalOptions, accelerate_config,
                                             fit_verdict, read_events)
from ftbroker.broker import Broker
from ftbroker.errors import JobError
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec


@pytest.fixture
def broker(tmp_path):
    install_data_double()
    with Broker(tmp_path / "home") as b:
        yield b
        for job in b.jobs():  # never leave a trainer behind
            if job.remote.get("pid") and not job.status.terminal:
                b.cancel(job.id)


def gone(pid: str) -> bool:
    """No such process, or only its zombie (a container's pid 1 may never reap the orphans it inherits)."""
    import psutil

    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def local_spec(tmp_path, **options):
    return JobSpec(dataset=str(write_chat(tmp_path / "data.jsonl")), model="tiny", method="lora",
                   backend_options={"trainer": str(SCRIPTED_TRAINER), "cancel_grace_s": 5, **options})


def test_detached_trainer_runs_in_its_own_session_and_follows_to_success(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_STEPS", "4")
    job = broker.submit(local_spec(tmp_path))
    pid = int(job.remote["pid"])
    assert job.status is JobStatus.RUNNING and job.remote["pid_started"]
    assert os.getsid(pid) == pid != os.getsid(0)  # its own session: Ctrl-C in the CLI does not reach it
    run_dir = broker.home / "runs" / job.id
    assert job.remote["run_dir"] == str(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["job_id"] == job.id and config["spec"]["model"] == "tiny"

    result = broker.follow(job.id, poll_interval=0.05)
    assert result.status is JobStatus.SUCCEEDED
    assert result.output_model == str(run_dir / "output") and result.trained_tokens == 400
    assert [m.step for m in result.metrics if m.name == "train_loss"] == [1, 2, 3, 4]
    assert {a.kind for a in result.artifacts} >= {"adapter", "metrics"}
    job = broker.job(job.id)
    assert job.progress.step == 4 and job.progress.total_steps == 4
    assert job.resources["measured_peak_memory_gib"] == 0.5
    kinds = [e.kind for _, e in broker.events(job.id)]
    assert kinds.count("step") == 4 and "done" in kinds


def test_a_failing_trainer_surfaces_its_error(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_MODE", "fail")
    job = broker.submit(local_spec(tmp_path))
    result = broker.follow(job.id, poll_interval=0.05)
    assert result.status is JobStatus.FAILED
    assert result.error.startswith("CUDA out of memory")


def test_cancel_stops_the_trainer_cleanly(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_MODE", "hang")
    job = broker.submit(local_spec(tmp_path))
    wait_for(lambda: (p := broker.refresh(job.id).progress) and p.step)  # it took a step
    job = broker.cancel(job.id)
    assert job.status is JobStatus.CANCELLED
    kinds = [e.kind for _, e in broker.events(job.id)]
    assert "cancelled" in kinds  # the trainer's own event: it saw SIGTERM and checkpointed
    assert gone(job.remote["pid"])
    assert broker.result(job.id).status is JobStatus.CANCELLED


def test_cancel_kills_a_trainer_that_ignores_sigterm(broker, tmp_path, monkeypatch):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    job = broker.submit(local_spec(tmp_path, trainer=str(stubborn), cancel_grace_s=0.3))
    job = broker.cancel(job.id)
    assert job.status is JobStatus.CANCELLED
    assert gone(job.remote["pid"])


def test_kill_9_is_detected_and_resume_continues_from_the_checkpoint(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_MODE", "hang")
    monkeypatch.setenv("FTB_SCRIPT_STEPS", "3")
    job = broker.submit(local_spec(tmp_path))
    wait_for(lambda: (p := broker.refresh(job.id).progress) and p.step)
    os.kill(int(job.remote["pid"]), signal.SIGKILL)
    job = wait_for(lambda: (j := broker.refresh(job.id)).status.terminal and j)
    assert job.status is JobStatus.FAILED
    assert "ended without finishing" in job.error and "last event: step" in job.error

    monkeypatch.setenv("FTB_SCRIPT_MODE", "succeed")
    job = broker.resume(job.id)
    assert job.status is JobStatus.RUNNING and job.error is None
    result = broker.follow(job.id, poll_interval=0.05)
    assert result.status is JobStatus.SUCCEEDED
    messages = [e.message for _, e in broker.events(job.id)]
    assert any("resumed at step 1" in m for m in messages)
    steps = [e.data["step"] for _, e in broker.events(job.id) if e.kind == "step"]
    assert steps == [1, 2, 3]  # one run of steps, continued, none repeated
    with pytest.raises(Exception, match="only a failed or cancelled job"):
        broker.resume(job.id)


def test_resume_refuses_a_live_trainer(tmp_path, monkeypatch):
    backend = LocalBackend(LocalOptions(), home=tmp_path)
    me = {"pid": str(os.getpid()), "pid_started": repr(__import__("psutil").Process().create_time())}
    job = _job(tmp_path, remote=me)
    with pytest.raises(JobError, match="still running"):
        backend.resume(job, tracker=None)


def test_a_reused_pid_is_not_mistaken_for_the_trainer(tmp_path):
    backend = LocalBackend(LocalOptions(), home=tmp_path)
    job = _job(tmp_path, remote={"pid": str(os.getpid()), "pid_started": "12345.0"})
    update = backend.poll(job)
    assert update.status is JobStatus.FAILED and "no event was written" in update.error


def _job(tmp_path, remote):
    from datetime import UTC, datetime

    from ftbroker.jobs import Job

    now = datetime.now(UTC)
    return Job(id="ftb-test0001", spec=JobSpec(dataset="d", model="m"), status=JobStatus.RUNNING,
               remote=remote, created_at=now, updated_at=now, submitted_at=now)


def test_trainer_command_lines(tmp_path):
    spec = JobSpec(dataset="d", model="m", method="full")
    default = LocalBackend(LocalOptions(), home=tmp_path)
    assert default.command(spec, tmp_path, resume=False, gpu_count=1) == [
        sys.executable, "-m", TRAINER_MODULE, str(tmp_path)]
    assert default.command(spec, tmp_path, resume=True, gpu_count=0)[-1] == "--resume"
    multi = LocalBackend(LocalOptions(python="/venv/bin/python"), home=tmp_path)
    cmd = multi.command(spec, tmp_path, resume=False, gpu_count=4)
    assert cmd[:5] == ["/venv/bin/python", "-m", "accelerate.commands.launch", "--config_file",
                       str(tmp_path / "accelerate.yaml")]
    assert cmd[5:] == ["-m", TRAINER_MODULE, str(tmp_path)]
    assert (tmp_path / "accelerate.yaml").is_file()


@pytest.mark.parametrize("method, strategy, expected", [
    ("lora", "auto", "MULTI_GPU"), ("qlora", "auto", "MULTI_GPU"), ("full", "auto", "FSDP"),
    ("full", "deepspeed", "DEEPSPEED"),
])
def test_generated_accelerate_config_is_what_accelerate_reads(tmp_path, method, strategy, expected):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    spec = JobSpec(dataset="d", model="m", method=method, hyperparameters={"gradient_accumulation_steps": 4})
    config = accelerate_config(spec, 4, strategy)
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config_from_file(str(path))  # accelerate's own parser: unknown keys are an error there
    assert loaded.distributed_type.value == expected and loaded.num_processes == 4
    if expected == "FSDP":
        assert loaded.fsdp_config["fsdp_version"] == 2
        assert loaded.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert loaded.fsdp_config["fsdp_activation_checkpointing"] is True
    if expected == "DEEPSPEED":
        assert loaded.deepspeed_config["zero_stage"] == 3
        assert loaded.deepspeed_config["gradient_accumulation_steps"] == 4


def test_fit_verdict_suggests_what_to_change():
    h100 = Gpu(name="H100", memory_gib=79.6)
    small = Gpu(name="RTX 4090", memory_gib=23.99)
    spec = JobSpec(dataset="d", model="m", method="lora",
                   hyperparameters={"micro_batch_size": 8, "gradient_checkpointing": False, "max_seq_len": 4096})
    assert fit_verdict(spec, 30.0, [h100]) == (Verdict.OK, None)
    assert fit_verdict(spec, 30.0, []) == (Verdict.OK, None)  # CPU run: nothing to compare
    assert fit_verdict(spec, None, [small]) == (Verdict.OK, None)
    verdict, reason = fit_verdict(spec, 30.0, [h100, small])  # the smallest GPU decides
    assert verdict is Verdict.DOES_NOT_FIT
    for hint in ("30.0 GiB", "RTX 4090 has 24.0 GiB", "--method qlora", "--grad-checkpointing",
                 "--micro-batch 1 (now 8) with --grad-accum 8", "--max-seq-len (now 4096)", "--force"):
        assert hint in reason


def test_events_file_reading_keeps_partial_lines_for_later(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind": "step", "step": 1}\nnot json\n{"kind": "st')
    events, offset = read_events(path, 0)
    assert events == [{"kind": "step", "step": 1}, {"kind": "log", "message": "not json"}]
    with path.open("ab") as fh:
        fh.write(b'ep", "step": 2}\n')
    more, offset2 = read_events(path, offset)
    assert more == [{"kind": "step", "step": 2}] and offset2 == path.stat().st_size
    assert read_events(tmp_path / "absent.jsonl", 0) == ([], 0)


def test_quote_names_the_hardware(tmp_path):
    from datetime import date

    from ftbroker.backends.base import Environment

    backend = LocalBackend(LocalOptions(gpus=2), home=tmp_path)
    env = Environment(today=date(2026, 1, 1), gpus=(Gpu("A100", 80.0),) * 4)
    quote = backend.quote(JobSpec(dataset="d", model="m"), None, env)
    assert quote.hardware == "2x A100" and quote.verdict is Verdict.OK
    cpu = LocalBackend(LocalOptions(), home=tmp_path).quote(JobSpec(dataset="d", model="m"), None,
                                                            replace(env, gpus=()))
    assert cpu.hardware == "CPU"


def test_a_trainer_launched_just_before_a_crash_is_found_not_started_twice(broker, tmp_path, monkeypatch):
    monkeypatch.setenv("FTB_SCRIPT_MODE", "hang")
    spec = local_spec(tmp_path)
    job = broker.ledger.create(spec)  # the intent, as the Broker records it

    class CrashingTracker:  # the CLI dies right after the launch, before the ledger gets the pid
        def remember(self, **remote):
            raise KeyboardInterrupt

        def event(self, *a, **kw):
            pass

    backend = broker.backend(spec)
    with pytest.raises(KeyboardInterrupt):
        backend.submit(job, CrashingTracker())
    assert broker.job(job.id).remote == {}
    job = broker.resume(job.id)  # submits "again": finds the running trainer
    assert any("found the job already created" in e.message for _, e in broker.events(job.id))
    pid = (broker.home / "runs" / job.id / "trainer.pid").read_text()
    assert job.remote["pid"] == pid and job.status is JobStatus.RUNNING
    assert broker.cancel(job.id).status is JobStatus.CANCELLED


def test_a_refused_resume_leaves_the_job_as_it_was(broker, tmp_path):
    job = broker.submit(local_spec(tmp_path))
    broker.follow(job.id, poll_interval=0.05)
    broker.ledger.update(job.id, status=JobStatus.CANCELLED)
    (broker.home / "runs" / job.id / "config.json").unlink()
    with pytest.raises(JobError, match="no run folder"):
        broker.resume(job.id)
    assert broker.job(job.id).status is JobStatus.CANCELLED
