"""The EC2 backend against moto (server mode, loopback) with its instances played on this machine: the real
bootstrap (user data read back from moto) runs under bash, installs the wheel the backend built and staged, and its
agent runs the real trainer on a tiny Llama, syncing to moto's S3 (tests/fakes/ec2_fake.py).

Exercised for real: the bootstrap script, the wheel (built, staged, presigned, downloaded, pip-installed), the agent
(heartbeat, sync, cancel marker, resume from S3 checkpoints), the trainer, the backend's polls, downloads and cost
accounting, gc. Only in moto: EC2 itself (moto never boots anything; ``shutdown`` is a fake that terminates the
instance in moto as ISB=terminate would), ClientToken idempotency (moto ignores it: the tag look-up is what is
tested), spot reclaims (the test terminates the instance), the DLAMI parameter (seeded into moto's SSM).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fakes.ec2_fake import BUCKET, REGION, Instance, MotoAws, ec2_options
from jobsupport import ftb, wait_for
from tinymodels import code_examples, write_jsonl

from ftbroker import clock
from ftbroker.ledger import Ledger

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
CHATS = EXAMPLES / "support_chats.jsonl"
SPOT_REGION = "me-central-1"  # where the catalog saw g6e.xlarge's spot price


@pytest.fixture
def aws(monkeypatch):
    moto = MotoAws(monkeypatch).start(regions=(REGION, SPOT_REGION))
    yield moto
    moto.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTBROKER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def played(tmp_path):
    instances: list[Instance] = []
    yield instances
    for instance in instances:
        instance.kill()


def flags(options: dict) -> list[str]:
    return [arg for key, value in options.items() for arg in ("--option", f"{key}={value}")]


def ftbroker(*args, ok=(0,)) -> subprocess.CompletedProcess:
    """The real command line, in its own process (FTBROKER_HOME and the AWS settings from the environment)."""
    done = subprocess.run([sys.executable, "-m", "ftbroker.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode in ok, (done.returncode, done.stderr[-4000:])
    return done


def tiny_job(data, model, python, *extra, **options) -> list[str]:
    return ["run", data, "--backend", "ec2", "--model", model, "--epochs", "2", "--lr", "1e-2", "--max-seq-len", "64",
            "--seed", "0", *flags(ec2_options(python, **options)), *extra]


def check_launch(aws, job_id: str, attempt: int, region: str = REGION) -> tuple[str, int]:
    """What every launch must carry: the runtime cap as the script's first command, terminate on shutdown, the
    job's tags. The instance id and the cap (minutes)."""
    [inst] = [i for i in aws.instances(region, job_id) if any(
        t["Key"] == "ftbroker:attempt" and t["Value"] == str(attempt) for t in i["Tags"])]
    script = aws.attribute(inst["InstanceId"], "userData", region)
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    cap = re.fullmatch(r"shutdown -h \+(\d+)", commands[0])
    assert cap, commands[:2]
    assert commands[1] == "trap 'shutdown -h now' EXIT"
    assert len(script.encode()) < 16 * 1024
    assert aws.attribute(inst["InstanceId"], "instanceInitiatedShutdownBehavior", region) == "terminate"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["ftbroker:job"] == job_id and tags["ftbroker:attempt"] == str(attempt)
    assert tags["ftbroker:managed-by"] == "ftbroker" and tags["ftbroker:cap-minutes"] == cap.group(1)
    return inst["InstanceId"], int(cap.group(1))


def status(job_id: str) -> dict:
    return json.loads(ftb("status", job_id, "--json").stdout)


def state(aws, instance_id: str, region: str = REGION) -> str:
    return next(i for i in aws.instances(region) if i["InstanceId"] == instance_id)["State"]["Name"]


# --- pricing: the plan's AWS routes and the quote are one computation ---------------------------------------------

def test_the_quote_is_the_plans_aws_route_to_the_cent(monkeypatch, home):
    from ftbroker.broker import Broker
    from ftbroker.spec import JobSpec

    for name, value in MotoAws(monkeypatch).environment().items():  # credentials found; nothing is called
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    planned = ftb("plan", CHATS, "--model", "Llama-3.1-8B", "--method", "qlora", "--all", "--json")
    routes = [r for r in json.loads(planned.stdout)["routes"] if r["instance_type"] == "g6e.xlarge"]
    assert {r["market"] for r in routes} == {"on-demand", "spot"}
    for route in routes:
        setup = route["breakdown"]["setup"]
        spec = JobSpec(dataset=str(CHATS), model="Llama-3.1-8B", method="qlora", backend="ec2",
                       hyperparameters={"micro_batch_size": setup["micro_batch"],
                                        "gradient_accumulation_steps": setup["grad_accumulation"]},
                       backend_options={"s3_uri": f"s3://{BUCKET}/jobs", "instance_type": "g6e.xlarge",
                                        "spot": route["market"] == "spot"})
        with Broker() as broker:
            quote = broker.prepare(spec).quote
        assert quote.verdict.value == "ok", quote.reason
        assert (float(quote.cost_usd), round(quote.hours, 3), round(quote.peak_vram_gib, 2)) == (
            route["cost_usd"], route["hours"], route["vram_gib"])
        assert quote.breakdown["region"] == route["region"]
        # the budget guard's figure: the price x the runtime cap (the estimate x 2, at least its high end)
        cap = quote.breakdown["runtime_cap_minutes"]
        assert cap >= route["hours"] * 2 * 60
        assert quote.cost_high_usd == (Decimal(quote.breakdown["usd_per_hour"]) * cap / 60).quantize(Decimal("0.0001"))
    assert Ledger().list() == []


# --- refused before anything is recorded or launched ---------------------------------------------------------------

def test_bad_input_is_refused_before_anything_is_recorded_or_launched(aws, home, monkeypatch, summary_line):
    base = ["run", CHATS, "--backend", "ec2", "--model", "Llama-3.1-8B", "--yes",
            "--option", f"s3_uri=s3://{BUCKET}/jobs"]
    cases = {
        "unknown instance type": (base + ["--option", "instance_type=g6e.xlarg"], 2,
                                  "unknown AWS instance type 'g6e.xlarg'; did you mean 'g6e.xlarge'"),
        "unknown region": (base + ["--option", "region=us-east-9"], 2, "unknown AWS region 'us-east-9'; did you mean"),
        "a region the catalog has no price for": (
            base + ["--option", "instance_type=g6e.xlarge", "--option", "region=eu-west-1"], 2,
            "prices g6e.xlarge on-demand in us-east-1 only"),
        "a GPU that cannot hold it": (base + ["--method", "full", "--option", "instance_type=g6e.xlarge"], 3,
                                      "does not fit"),
        "over budget": (base + ["--method", "qlora", "--option", "instance_type=p5.48xlarge", "--max-cost", "1"], 3,
                        "over --max-cost $1"),
        "no s3_uri": (base[:-2], 2, "backend_options.s3_uri: required"),
    }
    for what, (args, code, message) in cases.items():
        done = ftb(*args, ok=(code,))
        assert message in done.stderr, (what, done.stderr)
        if what == "a GPU that cannot hold it":  # the changes that would fit, and the AWS instances that do
            assert "try --method lora" in done.stderr and "AWS instances that fit: " in done.stderr
            summary_line(f"ec2 refusal (exit 3): {done.stderr.strip()[:300]}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    done = ftb(*base, "--option", "instance_type=g6e.xlarge", ok=(2,))
    assert "no AWS credentials found" in done.stderr
    assert Ledger().list() == []
    assert aws.instances() == [] and aws.instances(SPOT_REGION) == []


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_end_to_end_on_a_played_instance(aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played,
                                             summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(40))
    run = subprocess.Popen([sys.executable, "-m", "ftbroker.cli", *map(str, tiny_job(
        data, tiny_model_dir, ec2_instance_python, "--max-cost", "1", "--yes", "--json"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: aws.instances() or run.poll() is not None, interval=0.25, timeout=240)
    job_id = aws.instances()[0]["Tags"] and next(t["Value"] for t in aws.instances()[0]["Tags"]
                                                 if t["Key"] == "ftbroker:job")
    instance_id, cap = check_launch(aws, job_id, 1)
    played.append(Instance(aws, instance_id, REGION, tmp_path).start())
    out, err = run.communicate(timeout=600)  # `ftbroker run` follows the job to its end
    assert run.returncode == 0, (err[-3000:], played[0].console())
    result = json.loads(out)["result"]
    assert result["status"] == "succeeded" and result["backend"] == "ec2"
    adapter = Path(result["output_model"])
    assert adapter == home / "runs" / job_id / "output" / "adapter" and (adapter / "adapter_config.json").is_file()
    evals = [m["value"] for m in result["metrics"] if m["name"] == "eval_loss"]
    assert evals[-1] < evals[0]
    [attempt] = result["raw"]["attempts"]
    assert attempt["instance_id"] == instance_id and Decimal(str(result["actual_cost_usd"])) == Decimal(
        attempt["cost_usd"]) > 0
    assert played[0].wait() == 0  # the bootstrap ran to its end ...
    assert played[0].shutdowns == [f"-h +{cap}", "-h now"]  # ... the cap first, then the EXIT trap's power-off
    wait_for(lambda: state(aws, instance_id) == "terminated", interval=0.25, timeout=240)
    # the instance ran the staged wheel, not this checkout
    where = subprocess.run([str(ec2_instance_python), "-c", "import ftbroker; print(ftbroker.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert str(ec2_instance_python.parent.parent) in where
    # the job commands, as for a local job
    assert "succeeded" in ftb("status", job_id).stdout
    kinds = [json.loads(line)["kind"] for line in ftb("logs", job_id, "--json").stdout.splitlines()]
    assert {"started", "running", "progress", "eval", "checkpoint", "done"} <= set(kinds)
    exported = json.loads(ftb("export", job_id, "--format", "merged", "-o", tmp_path / "merged", "--json").stdout)
    assert exported["artifacts"][0]["kind"] == "merged_model" and (tmp_path / "merged" / "config.json").is_file()
    summary_line(f"ec2 end to end: {job_id} succeeded on a played {instance_id}, runtime cap {cap} min, "
                 f"{attempt['runtime_s']:.0f} s billed as ${attempt['cost_usd']} "
                 f"(quoted ${result['estimated_cost_usd']})")


@pytest.mark.slow
def test_a_spot_interruption_resumes_from_the_last_checkpoint_and_the_costs_add_up(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(40))  # 36 trained: 9 steps an epoch, 2 epochs
    job = json.loads(ftbroker(*tiny_job(data, tiny_model_dir, ec2_instance_python, "--micro-batch", "4",
                                        "--max-hours", "1", "--yes", "--detach", "--json", spot="true"))
                     .stdout)["job"]
    first_id, first_cap = check_launch(aws, job["id"], 1, SPOT_REGION)
    assert next(i for i in aws.instances(SPOT_REGION))["InstanceLifecycle"] == "spot"
    first = Instance(aws, first_id, SPOT_REGION, tmp_path).start()
    played.append(first)
    events = first.run_dir / "events.jsonl"
    saved = wait_for(lambda: next((json.loads(line) for line in events.read_text().splitlines()
                                   if '"checkpoint"' in line), None) if events.is_file() else None, timeout=240)
    os.kill(first.trainer_pid(), signal.SIGSTOP)  # the trainer holds still while the agent syncs the checkpoint
    state_key = f"jobs/{job['id']}/run/checkpoints/checkpoint-{saved['step']}/trainer_state.json"
    wait_for(lambda: state_key in aws.objects(f"jobs/{job['id']}/run/"), interval=0.25, timeout=240)
    in_s3 = {int(m) for k in aws.objects(f"jobs/{job['id']}/run/checkpoints/")
             for m in re.findall(r"checkpoint-(\d+)/trainer_state.json", k)}
    first.kill()  # the reclaim: the machine is gone ...
    aws.client("ec2", SPOT_REGION).terminate_instances(InstanceIds=[first_id])  # ... and so is the instance

    assert status(job["id"])["status"] == "running"  # the poll saw it gone and relaunched
    second_id, second_cap = check_launch(aws, job["id"], 2, SPOT_REGION)
    assert second_cap <= first_cap  # what is left of the cap
    second = Instance(aws, second_id, SPOT_REGION, tmp_path).start()
    played.append(second)
    final = wait_for(lambda: (s := status(job["id"]))["status"] != "running" and s, timeout=400, interval=0.5)
    assert final["status"] == "succeeded", (final["error"], second.console())
    resumed = [json.loads(line) for line in (second.run_dir / "events.jsonl").read_text().splitlines()
               if '"running"' in line][-1]
    assert resumed["step"] == max(in_s3)  # continued from the last checkpoint that reached S3
    result = json.loads(ftb("result", job["id"], "--json").stdout)
    attempts = result["raw"]["attempts"]
    assert [a["instance_id"] for a in attempts] == [first_id, second_id]
    assert all(a["market"] == "spot" and Decimal(a["cost_usd"]) == (
        Decimal(str(max(60.0, a["runtime_s"]))) * Decimal(a["usd_per_hour"]) / 3600).quantize(Decimal("0.0001"))
        for a in attempts)
    total = sum(Decimal(a["cost_usd"]) for a in attempts)
    assert Decimal(str(result["actual_cost_usd"])) == total
    summary_line(f"ec2 spot interruption: {first_id} reclaimed after checkpoint-{max(in_s3)} reached S3; "
                 f"{second_id} (attempt 2, cap {second_cap} of {first_cap} min) resumed at step {resumed['step']}; "
                 f"cost ${attempts[0]['cost_usd']} + ${attempts[1]['cost_usd']} = ${total}")


@pytest.mark.slow
def test_a_stalled_heartbeat_gets_the_instance_terminated_and_the_job_failed(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, monkeypatch, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(40))
    job = json.loads(ftbroker(*tiny_job(data, tiny_model_dir, ec2_instance_python, "--max-hours", "2", "--yes",
                                        "--detach", "--json")).stdout)["job"]
    instance_id, _ = check_launch(aws, job["id"], 1)
    instance = Instance(aws, instance_id, REGION, tmp_path).start()
    played.append(instance)
    heartbeat = f"jobs/{job['id']}/heartbeat.json"

    def beat():
        if heartbeat not in aws.objects(f"jobs/{job['id']}/"):
            return None
        body = json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=heartbeat)["Body"].read())
        return body if body["phase"] == "training" else None

    last = wait_for(beat, interval=0.25, timeout=240)
    instance.kill()  # hung: no more heartbeats, and EC2 still says running
    assert status(job["id"])["status"] == "running"
    monkeypatch.setenv("FTBROKER_NOW", (clock.now() + timedelta(minutes=20)).isoformat())
    failed = status(job["id"])
    assert failed["status"] == "failed"
    assert re.search(r"stalled: no heartbeat for (19|20|21) min \(allowed: 15 min", failed["error"]), failed["error"]
    assert "it was terminated" in failed["error"]
    [inst] = aws.instances()
    assert inst["State"]["Name"] == "terminated"
    assert {t["Key"]: t["Value"] for t in inst["Tags"]}["ftbroker:terminated-by"].startswith("ftbroker: stalled")
    summary_line(f"ec2 stalled heartbeat: last beat {last['time']}, polled 20 min later: {instance_id} terminated, "
                 f"job failed: {failed['error'][:120]}")


@pytest.mark.slow
def test_cancel_checkpoints_on_the_instance_then_ends_it_and_resume_relaunches(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(40))
    job = json.loads(ftbroker(*tiny_job(data, tiny_model_dir, ec2_instance_python, "--epochs", "50", "--max-hours",
                                        "1", "--yes", "--detach", "--json")).stdout)["job"]
    instance_id, _ = check_launch(aws, job["id"], 1)
    instance = Instance(aws, instance_id, REGION, tmp_path).start()
    played.append(instance)
    events = instance.run_dir / "events.jsonl"
    wait_for(lambda: events.is_file() and '"checkpoint"' in events.read_text(), timeout=240)
    cancelled = json.loads(ftb("cancel", job["id"], "--json").stdout)  # the marker; the agent SIGTERMs the trainer
    assert cancelled["status"] == "cancelled", cancelled
    last = json.loads(events.read_text().splitlines()[-1])
    assert last["kind"] == "cancelled" and "stopped by SIGTERM" in last["message"]  # it saved a checkpoint first
    assert f"jobs/{job['id']}/run/checkpoints/checkpoint-{last['step']}/trainer_state.json" in aws.objects(
        f"jobs/{job['id']}/run/checkpoints/")
    assert instance.wait() != 0 and instance.shutdowns[-1] == "-h now"  # the machine powered itself off
    assert state(aws, instance_id) == "terminated"
    resumed = json.loads(ftb("resume", job["id"], "--detach", "--json").stdout)["job"]
    assert resumed["status"] == "running" and resumed["remote"]["attempt"] == "2"
    second_id, cap = check_launch(aws, job["id"], 2)
    assert f"jobs/{job['id']}/cancel" not in aws.objects(f"jobs/{job['id']}/")  # the old request is gone
    assert json.loads(ftb("cancel", job["id"], "--json").stdout)["status"] == "cancelled"  # not booted: at once
    assert state(aws, second_id) == "terminated"
    summary_line(f"ec2 cancel: the trainer checkpointed at step {last['step']} on {instance_id} before it powered "
                 f"off; resume launched {second_id} (attempt 2, cap {cap} min)")


def _killed_between_launch_and_ledger(aws, monkeypatch, args) -> str:
    """``ftbroker run`` in its own process, SIGKILLed the moment moto has launched its instance (before the answer
    reaches it, so the ledger never learns the instance id). The job id."""
    import moto.ec2.models.instances as moto_instances

    victim: dict[str, subprocess.Popen] = {}
    launch = moto_instances.InstanceBackend.run_instances

    def run_instances(self, *a, **kw):
        reservation = launch(self, *a, **kw)
        victim["cli"].send_signal(signal.SIGKILL)
        victim["cli"].wait()
        return reservation

    monkeypatch.setattr(moto_instances.InstanceBackend, "run_instances", run_instances)
    with Ledger() as ledger:
        known = {j.id for j in ledger.list()}
    victim["cli"] = subprocess.Popen([sys.executable, "-m", "ftbroker.cli", *map(str, args)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert victim["cli"].wait(timeout=300) == -signal.SIGKILL
    monkeypatch.setattr(moto_instances.InstanceBackend, "run_instances", launch)
    with Ledger() as ledger:
        [job] = [j for j in ledger.list() if j.id not in known]
    assert job.submitted_at is None and job.remote["instance_type"] and not job.remote.get("instance_id")
    return job.id


def test_a_cli_killed_between_launch_and_ledger_gc_reaps_and_a_rerun_never_launches_twice(
        aws, home, tmp_path, tiny_model_dir, monkeypatch, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(12))
    args = tiny_job(data, tiny_model_dir, Path(sys.executable), "--yes", "--detach")  # no instance is played here
    orphan_job = _killed_between_launch_and_ledger(aws, monkeypatch, args)
    [orphan] = aws.instances(job_id=orphan_job)
    assert orphan["State"]["Name"] == "running"
    listed = json.loads(ftb("gc", "--json").stdout)["leftovers"]
    assert [(lo["resource"], lo["reason"], lo["action"]) for lo in listed] == [(orphan["InstanceId"], None, None)]
    assert "may still be recording it" in listed[0]["note"]  # a launch this recent may be mid-flight
    before = os.environ.get("FTBROKER_NOW")
    monkeypatch.setenv("FTBROKER_NOW", (clock.now() + timedelta(minutes=15)).isoformat())
    reaped = json.loads(ftb("gc", "--yes", "--json").stdout)["leftovers"]
    assert [(lo["resource"], lo["action"]) for lo in reaped] == [(orphan["InstanceId"], "terminated")]
    assert f"job {orphan_job} never recorded it" in reaped[0]["reason"] and reaped[0]["cost_usd"] > 0
    assert state(aws, orphan["InstanceId"]) == "terminated"
    assert json.loads(ftb("gc", "--json").stdout)["leftovers"] == []
    if before is None:  # the clock as it was (CI's second run sets it 400 days ahead)
        monkeypatch.delenv("FTBROKER_NOW")
    else:
        monkeypatch.setenv("FTBROKER_NOW", before)

    rerun_job = _killed_between_launch_and_ledger(aws, monkeypatch, args)
    [launched] = aws.instances(job_id=rerun_job)
    assert rerun_job != orphan_job and launched["InstanceId"] != orphan["InstanceId"]
    resumed = json.loads(ftb("resume", rerun_job, "--detach", "--json").stdout)["job"]
    assert resumed["status"] == "running" and resumed["remote"]["instance_id"] == launched["InstanceId"]
    assert len(aws.instances(job_id=rerun_job)) == 1  # found by its tags, not launched again
    cancelled = json.loads(ftb("cancel", rerun_job, "--json").stdout)
    assert cancelled["status"] == "cancelled" and state(aws, launched["InstanceId"]) == "terminated"
    summary_line(f"ec2 CLI killed between launch and ledger: gc terminated the orphan {orphan['InstanceId']} "
                 f"(${reaped[0]['cost_usd']}); a rerun adopted {launched['InstanceId']}: 1 instance for the job")


def test_gc_reaps_what_should_go_and_keeps_what_is_in_use(tmp_path):
    """Which instances ``gc`` terminates and which it keeps, and why (the rule itself; the played tests cover the
    calls): its job finished, unknown to this ledger, never recorded, past its cap; else it stays."""
    from ftbroker.backends.ec2 import Ec2Backend, Ec2Options, _Instance
    from ftbroker.jobs import Job, JobStatus
    from ftbroker.spec import JobSpec

    backend = Ec2Backend(Ec2Options(), home=tmp_path)
    now = clock.now()

    def instance(ran_minutes: float, ledger: str = backend.ledger_id, cap: int = 60) -> _Instance:
        return _Instance("i-1", "running", "g6e.xlarge", {"ftbroker:job": "ftb-a", "ftbroker:ledger": ledger,
                                                          "ftbroker:cap-minutes": str(cap)},
                         now - timedelta(minutes=ran_minutes))

    def job(status: JobStatus, instance_id: str = "i-1") -> Job:
        return Job(id="ftb-a", spec=JobSpec(dataset="d.jsonl", model="m", backend="ec2"), status=status,
                   created_at=now, updated_at=now, remote={"instance_id": instance_id})

    def why(inst: _Instance, found: Job | None) -> tuple[str | None, str]:
        return backend._why_collect(inst, found, now - inst.launched_at)

    assert why(instance(30), job(JobStatus.RUNNING)) == (None, "job ftb-a is running on it")
    assert why(instance(30), job(JobStatus.SUCCEEDED))[0] == "its job ftb-a is succeeded"
    assert why(instance(30), None)[0] == "its job ftb-a is not in the ledger"
    assert why(instance(30), job(JobStatus.RUNNING, instance_id=""))[0].startswith("job ftb-a never recorded it")
    assert why(instance(2), job(JobStatus.RUNNING, instance_id=""))[0] is None  # may be mid-launch
    assert why(instance(71), job(JobStatus.RUNNING))[0] == "past its runtime cap: ran 1h11m, cap 1h00m"
    assert why(instance(30, ledger="another"), None) == (None, "another ledger's job (only its cap applies here)")
    assert why(instance(71, ledger="another"), None)[0].startswith("past its runtime cap")
