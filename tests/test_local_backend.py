"""The local backend's process handling, with stand-in trainer scripts of a few lines (the real trainer runs in
test_local_e2e.py and the contract suite): sessions, SIGKILL after the grace period, a vanished trainer, a trainer
launched just before a crash; and its pure parts (command lines, accelerate configs, the events file)."""

import json
import os
import signal
import subprocess
import sys

import pytest
from jobsupport import wait_for, write_chat

from ftbroker.backends.local.backend import LocalBackend, LocalOptions
from ftbroker.backends.local.config import CONFIG_NAME, TrainConfig, load_config
from ftbroker.backends.local.prepare import train_config
from ftbroker.backends.local.process import TRAINER_MODULE, accelerate_config
from ftbroker.backends.local.results import read_events
from ftbroker.broker import Broker
from ftbroker.errors import InputError, JobError
from ftbroker.jobs import JobStatus
from ftbroker.pricing.catalog import load_catalog
from ftbroker.routes import model_request
from ftbroker.spec import JobSpec


@pytest.fixture
def broker(tmp_path):
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


SLEEPER = "import time\ntime.sleep(600)\n"  # a trainer that runs until it is stopped and writes nothing


def local_spec(tmp_path, script: str = SLEEPER, **options):
    trainer = tmp_path / "trainer.py"
    trainer.write_text(script)
    return JobSpec(dataset=str(write_chat(tmp_path / "data.jsonl")), model="tiny", method="lora",
                   backend_options={"trainer": str(trainer), "cancel_grace_s": 5, **options})


def test_the_detached_trainer_runs_in_its_own_session(broker, tmp_path):
    job = broker.submit(local_spec(tmp_path))
    pid = int(job.remote["pid"])
    assert job.status is JobStatus.RUNNING and job.remote["pid_started"]
    assert os.getsid(pid) == pid != os.getsid(0)  # its own session: Ctrl-C in the CLI does not reach it
    run_dir = broker.home / "runs" / job.id
    assert job.remote["run_dir"] == str(run_dir)
    config = TrainConfig.model_validate_json((run_dir / "config.json").read_text())  # what the trainer reads
    assert config.job_id == job.id and config.model == "tiny" and config.dataset == job.spec.dataset
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    assert gone(job.remote["pid"])


def test_cancel_kills_a_trainer_that_ignores_sigterm(broker, tmp_path):
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
    job = broker.submit(local_spec(tmp_path, stubborn, cancel_grace_s=0.3))
    job = broker.cancel(job.id)
    assert job.status is JobStatus.CANCELLED
    assert gone(job.remote["pid"])


def test_a_trainer_gone_without_a_final_event_is_failed_with_its_last_event_and_log(broker, tmp_path):
    script = ("import json, sys\n"
              "open('events.jsonl', 'a').write(json.dumps({'kind': 'progress', 'step': 3, 'loss': 1.5}) + '\\n')\n"
              "print('Killed: out of memory', flush=True)\nsys.exit(137)\n")
    job = broker.submit(local_spec(tmp_path, script))
    result = broker.follow(job.id, poll_interval=0.05)
    assert result.status is JobStatus.FAILED
    assert "ended without finishing" in result.error and "last event: progress: step 3" in result.error
    assert "Killed: out of memory" in result.error  # the tail of trainer.log
    assert broker.job(job.id).progress.step == 3


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
    config = train_config(JobSpec(dataset="d", model="m", method="full"), LocalOptions())
    default = LocalBackend(LocalOptions(), home=tmp_path)
    assert default.command(config, tmp_path, resume=False, gpu_count=1) == [
        sys.executable, "-m", TRAINER_MODULE, str(tmp_path)]
    assert default.command(config, tmp_path, resume=True, gpu_count=0)[-1] == "--resume"
    multi = LocalBackend(LocalOptions(python="/venv/bin/python"), home=tmp_path)
    cmd = multi.command(config, tmp_path, resume=False, gpu_count=4)
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
    config = accelerate_config(train_config(spec, LocalOptions()), 4, strategy)
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


def test_a_run_folder_from_before_max_seq_len_took_its_name_still_loads(tmp_path):
    """A job started by an older ftbroker may be resumed by this one: its config.json says max_seq_length."""
    written = train_config(JobSpec(dataset="d.jsonl", model="m", hyperparameters={"max_seq_len": 512}), LocalOptions())
    raw = written.model_dump()
    assert raw["max_seq_len"] == 512 and "max_seq_length" not in raw  # what this version writes
    raw["max_seq_length"] = raw.pop("max_seq_len")
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    assert load_config(tmp_path / CONFIG_NAME).max_seq_len == 512


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


def test_a_trainer_launched_just_before_a_crash_is_found_not_started_twice(broker, tmp_path):
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
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    (broker.home / "runs" / job.id / "config.json").unlink()
    with pytest.raises(JobError, match="no run folder"):
        broker.resume(job.id)
    assert broker.job(job.id).status is JobStatus.CANCELLED


def test_the_trainer_loads_a_catalog_name_by_its_repo_and_anything_else_as_given(tmp_path, monkeypatch):
    catalog = load_catalog()

    def loads(name):
        return model_request(catalog, name).trainer_model()

    assert loads("Qwen2.5-7B") == catalog.model("Qwen2.5-7B").hf_repo == "Qwen/Qwen2.5-7B"
    assert loads("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"  # a repo id as given
    gpt2 = model_request(catalog, "gpt2")  # unknown to the catalog: the hub's to resolve, and its tokenizer too
    assert (gpt2.trainer_model(), gpt2.arch, gpt2.tokenizer().hf_repo) == ("gpt2", None, "gpt2")
    (tmp_path / "Llama-3.1-8B").mkdir()  # a local folder wins over the catalog name it happens to have
    monkeypatch.chdir(tmp_path)
    folder = model_request(catalog, "Llama-3.1-8B")
    assert (folder.trainer_model(), folder.folder, folder.tokenizer().tokenizer) == (
        "Llama-3.1-8B", str(tmp_path / "Llama-3.1-8B"), str(tmp_path / "Llama-3.1-8B"))
    assert loads(str(tmp_path)) == str(tmp_path)


def test_one_trainer_per_run_folder_even_for_a_launch_the_ledger_does_not_know_of(broker, tmp_path):
    job = broker.submit(local_spec(tmp_path))
    stale = broker.job(job.id).model_copy(update={"remote": {}, "status": JobStatus.FAILED})  # as another CLI saw it
    backend = broker.backend(job.spec)
    with pytest.raises(JobError, match=rf"still running \(pid {job.remote['pid']}\)"):
        backend.resume(stale, tracker=None)

    class Tracker:
        def remember(self, **remote):
            self.remote = remote

        def event(self, *a, **kw):
            pass

    tracker = Tracker()
    with pytest.raises(JobError, match=rf"a trainer \(pid {job.remote['pid']}\) holds"):  # the launch itself refuses
        backend._launch(stale, broker.home / "runs" / job.id, tracker, resume=True)
    assert tracker.remote["pid"] == job.remote["pid"]
    assert broker.cancel(job.id).status is JobStatus.CANCELLED and gone(job.remote["pid"])


def test_status_and_cancel_see_a_trainer_the_ledger_does_not_know_of(broker, tmp_path):
    job = broker.submit(local_spec(tmp_path))
    trainer = job.remote["pid"]
    # The ledger lost track of it: it names a trainer that has ended (a CLI that died, a launch raced)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    broker.ledger.update(job.id, remote={"pid": ended.stdout.strip(), "pid_started": "1.0"})
    job = broker.refresh(job.id)
    assert job.status is JobStatus.RUNNING and job.remote["pid"] == trainer  # seen, and adopted
    broker.ledger.update(job.id, remote={"pid": ended.stdout.strip(), "pid_started": "1.0"})
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    assert gone(trainer)


def test_resume_asks_first_whether_a_running_trainer_is_still_there(broker, tmp_path):
    job = broker.submit(local_spec(tmp_path))
    os.killpg(int(job.remote["pid"]), signal.SIGKILL)  # died unobserved: the ledger still says running
    wait_for(lambda: gone(job.remote["pid"]))
    assert broker.job(job.id).status is JobStatus.RUNNING
    resumed = broker.resume(job.id)  # not "job is running"
    assert resumed.status is JobStatus.RUNNING and resumed.remote["pid"] != job.remote["pid"]
    statuses = [status for _, status, _ in broker.ledger.history(job.id)]
    assert statuses[-2:] == [JobStatus.FAILED, JobStatus.RUNNING]


def test_a_trainer_whose_cli_was_killed_before_the_ledger_learnt_of_it_is_found(broker, tmp_path):
    from jobsupport import SCRIPTED_TRAINER

    spec = JobSpec(dataset=str(write_chat(tmp_path / "data.jsonl")), model="tiny",
                   backend_options={"trainer": str(SCRIPTED_TRAINER)})
    job = broker.ledger.create(spec)  # the intent; the CLI then launched the trainer and died

    class Killed:
        def remember(self, **remote):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        broker.backend(spec).submit(job, Killed())
    run_dir = broker.home / "runs" / job.id
    wait_for(lambda: (run_dir / "result.json").exists() and gone((run_dir / "trainer.pid").read_text()))
    job = broker.refresh(job.id)  # `ftbroker status`: not "queued (not submitted)"
    assert job.submitted_at is not None and job.status is JobStatus.SUCCEEDED
    with pytest.raises(InputError, match="is succeeded; only a failed or cancelled job can be resumed"):
        broker.resume(job.id)
    started = [e for e in read_events(run_dir / "events.jsonl", 0)[0] if e["kind"] == "started"]
    assert len(started) == 1  # one trainer ran: no second, no-op one


def test_a_finished_job_shows_its_runs_throughput_and_no_eta(tmp_path):
    backend = LocalBackend(LocalOptions(), home=tmp_path)
    job = _job(tmp_path, remote={"pid": "1", "pid_started": "12345.0"})  # its trainer has ended
    run_dir = tmp_path / "runs" / job.id
    run_dir.mkdir(parents=True)
    lines = [{"kind": "progress", "step": 1, "total_steps": 5, "loss": 2.0, "tokens_per_s": 2308.0, "eta_s": 144.0},
             {"kind": "done", "message": "trained 5 steps", "step": 5, "total_steps": 5, "tokens_per_s": 1759.0}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    update = backend.poll(job)
    assert update.status is JobStatus.SUCCEEDED
    assert update.progress.model_dump(exclude_none=True) == {"step": 5, "total_steps": 5, "loss": 2.0,
                                                             "tokens_per_s": 1759.0}


def test_a_launch_waits_while_the_last_trainers_threads_still_hold_the_folder(broker, tmp_path, monkeypatch):
    from ftbroker.backends.local import process, runlock

    job = broker.submit(local_spec(tmp_path))
    assert broker.cancel(job.id).status is JobStatus.CANCELLED
    # A trainer killed a moment ago: its pid is gone (a zombie) while its last threads, ending, still hold the lock
    ending = runlock.take(broker.home / "runs" / job.id)
    attempts = []
    detach = process.detach

    def launch(command, run_dir):
        attempts.append(run_dir)
        if len(attempts) == 3:
            os.close(ending)  # they have ended
        return detach(command, run_dir)

    monkeypatch.setattr(process, "detach", launch)
    resumed = broker.resume(job.id)
    assert resumed.status is JobStatus.RUNNING and resumed.remote["pid"] != job.remote["pid"] and len(attempts) == 3
