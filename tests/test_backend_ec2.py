"""The EC2 backend against moto (server mode, loopback) with its instances played on this machine: the real
bootstrap (user data read back from moto) runs under bash, installs the wheel the backend built and staged, and its
agent runs the trainer, syncing to moto's S3 (tests/fakes/ec2_fake.py).

One real training goes through all of it (``walkthrough``, shared by the tests that read it): `ftbroker plan` with
a tiny Llama, `ftbroker run --from-plan plan.json --route N` on an AWS route, the real trainer on the played
instance, then status, logs, result, export and gc as a user would. The fault paths (spot reclaim, stall, cancel)
run the scripted trainer (tests/scripted_trainer.py, staged through the ``trainer`` option) through the same
bootstrap and agent: what they test is the backend, not the training.

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
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.ec2_fake import BUCKET, REGION, SCRIPTED_TRAINER, Instance, MotoAws, ec2_options
from jobsupport import ftb, wait_for
from tinymodels import code_examples, write_jsonl

from ftbroker import clock
from ftbroker.ledger import Ledger

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
CHATS = EXAMPLES / "support_chats.jsonl"
SPOT_REGION = "me-central-1"  # where the catalog saw g6e.xlarge's spot price
# The scripted trainer on a played instance: slow enough to be caught mid-run, checkpointing every 2 steps.
CATCHABLE = {"FTB_SCRIPT_STEPS": "200", "FTB_SCRIPT_STEP_S": "0.2", "FTB_SCRIPT_SAVE_STEPS": "2"}


@pytest.fixture(scope="module")
def moto_server():
    """One moto server for the module; each test empties it (``aws``)."""
    with pytest.MonkeyPatch.context() as patch:
        moto = MotoAws(patch).start(regions=(REGION, SPOT_REGION))
    yield moto
    moto.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    return moto_server.use(monkeypatch, regions=(REGION, SPOT_REGION))


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


def tiny_job(data, model, python, *extra, **options) -> list[str]:
    options = {"instance_type": "g6e.xlarge", **options}
    return ["run", data, "--backend", "ec2", "--model", model, "--epochs", "2", "--lr", "1e-2", "--max-seq-len", "64",
            "--seed", "0", *flags(ec2_options(python, **options)), *extra]


def scripted_job(data, model, python, *extra, **options) -> list[str]:
    """A job whose recipe is the scripted trainer: its steps and speed are the played instance's (``env``)."""
    return tiny_job(data, model, python, "--max-hours", "1", "--yes", "--detach", "--json", *extra,
                    trainer=SCRIPTED_TRAINER, **options)


def launch_facts(aws, job_id: str, attempt: int, region: str = REGION) -> dict[str, Any]:
    """What moto says of the instance launched for ``job_id``'s ``attempt``."""
    [inst] = [i for i in aws.instances(region, job_id) if any(
        t["Key"] == "ftbroker:attempt" and t["Value"] == str(attempt) for t in i["Tags"])]
    return {"id": inst["InstanceId"], "user_data": aws.attribute(inst["InstanceId"], "userData", region),
            "shutdown_behaviour": aws.attribute(inst["InstanceId"], "instanceInitiatedShutdownBehavior", region),
            "tags": {t["Key"]: t["Value"] for t in inst["Tags"]}, "lifecycle": inst.get("InstanceLifecycle"),
            "job_id": job_id, "attempt": attempt}


def check_launch(facts: dict[str, Any]) -> tuple[str, int]:
    """What every launch must carry: the runtime cap as the script's first command, terminate on shutdown, the
    job's tags. The instance id and the cap (minutes)."""
    script = facts["user_data"]
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    cap = re.fullmatch(r"shutdown -h \+(\d+)", commands[0])
    assert cap, commands[:2]
    assert commands[1] == "trap 'shutdown -h now' EXIT"
    assert len(script.encode()) < 16 * 1024
    assert facts["shutdown_behaviour"] == "terminate"
    tags = facts["tags"]
    assert tags["ftbroker:job"] == facts["job_id"] and tags["ftbroker:attempt"] == str(facts["attempt"])
    assert tags["ftbroker:managed-by"] == "ftbroker" and tags["ftbroker:cap-minutes"] == cap.group(1)
    return facts["id"], int(cap.group(1))


def launched(aws, job_id: str, attempt: int, region: str = REGION) -> tuple[str, int]:
    return check_launch(launch_facts(aws, job_id, attempt, region))


def status(job_id: str) -> dict:
    return json.loads(ftb("status", job_id, "--json").stdout)


def state(aws, instance_id: str, region: str = REGION) -> str:
    return next(i for i in aws.instances(region) if i["InstanceId"] == instance_id)["State"]["Name"]


def events_of(instance: Instance) -> list[dict]:
    path = instance.run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# --- the plan's AWS routes are ec2's, and its quote is theirs ------------------------------------------------------

def test_the_plan_lists_aws_routes_that_ec2_runs_at_the_routes_price(monkeypatch, home):
    from ftbroker.broker import Broker
    from ftbroker.route_jobs import route_fields
    from ftbroker.spec import load_spec

    for name, value in MotoAws(monkeypatch).environment().items():  # credentials found; nothing is called
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    doc = json.loads(ftb("plan", CHATS, "--model", "Llama-3.2-1B", "--json").stdout)
    aws_routes = [r for r in doc["routes"] if r["cloud"] == "aws"]
    assert aws_routes and all(r["backend"] == "ec2" and r["runnable"] for r in aws_routes)
    assert {r["market"] for r in aws_routes} == {"on-demand", "spot"}
    for route in (next(r for r in aws_routes if r["feasible"] and r["market"] == market)
                  for market in ("on-demand", "spot")):
        assert route["job"]["backend_options"] == {"instance_type": route["instance_type"], "region": route["region"],
                                                   "spot": route["market"] == "spot"}
        fields, _ = route_fields(doc, route["number"], "the plan")
        spec = load_spec(None, {**fields, "backend_options.s3_uri": f"s3://{BUCKET}/jobs"})
        with Broker() as broker:
            quote = broker.prepare(spec).quote
        assert quote.verdict.value == "ok", quote.reason
        assert (quote.cost_usd, quote.hours, quote.peak_vram_gib) == (
            Decimal(str(route["cost_usd"])), route["hours"], route["vram_gib"])
        assert quote.breakdown["region"] == route["region"]
        # the budget guard's figure: the price x the runtime cap (the estimate x 2, at least its high end)
        cap = quote.breakdown["runtime_cap_minutes"]
        assert cap >= route["hours"] * 2 * 60
        assert quote.cost_high_usd == (Decimal(str(route["breakdown"]["usd_per_hour"])) * cap / 60).quantize(
            Decimal("0.0001"))
    assert Ledger().list() == []


# --- the one real training: plan -> run --from-plan -> status/logs -> result/export -> gc --------------------------

@dataclass
class Walkthrough:
    home: Path
    route: dict[str, Any]  # the plan's route that was run
    run: dict[str, Any]  # `ftbroker run --json`: the job and its result
    launch: dict[str, Any]  # what moto said of the launch
    instance: Instance
    exit_code: int  # the played bootstrap's
    final_state: str  # the instance's, at the end
    gc: dict[str, Any]  # `ftbroker gc --json` after the run
    folder: Path


@pytest.fixture(scope="module")
def walkthrough(moto_server, tmp_path_factory, tiny_model_dir, ec2_instance_python):
    """`ftbroker plan` of 20 examples with the tiny Llama, then `ftbroker run --from-plan plan.json --route N` on
    its cheapest AWS on-demand route (its own process, following the job to its end) while the launched instance
    is played here with the real trainer; then `ftbroker gc`. What AWS said is read at once (the next test empties
    moto); the ledger and the run folder stay for the tests."""
    folder = tmp_path_factory.mktemp("walkthrough")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTBROKER_HOME", str(folder / "home"))
        aws = moto_server.use(patch)
        instance = None
        try:
            data = write_jsonl(folder / "train.jsonl", code_examples(20))
            planned = ftb("plan", data, "--model", tiny_model_dir, "--method", "lora", "--epochs", 2, "--max-seq-len",
                          64, "--json").stdout
            (folder / "plan.json").write_text(planned)
            route = min((r for r in json.loads(planned)["routes"] if r["backend"] == "ec2" and r["feasible"]
                         and r["market"] == "on-demand" and r["region"] == REGION), key=lambda r: r["cost_usd"])
            run = subprocess.Popen([sys.executable, "-m", "ftbroker.cli", "run", "--from-plan", folder / "plan.json",
                                    "--route", str(route["number"]), "--lr", "1e-2", "--seed", "0",
                                    *flags(ec2_options(ec2_instance_python)), "--max-cost", "1", "--yes", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for(lambda: aws.instances() or run.poll() is not None, interval=0.25, timeout=240)
            job_id = next(t["Value"] for t in aws.instances()[0]["Tags"] if t["Key"] == "ftbroker:job")
            launch = launch_facts(aws, job_id, 1)
            instance = Instance(aws, launch["id"], REGION, folder, full_install=True).start()
            out, err = run.communicate(timeout=600)  # `ftbroker run` follows the job to its end
            assert run.returncode == 0, (err[-3000:], instance.console())
            exit_code = instance.wait()  # its EXIT trap's power-off terminated it (InstanceInitiatedShutdownBehavior)
            final_state = state(aws, launch["id"])
            swept = json.loads(ftb("gc", "--json").stdout)
        finally:
            if instance is not None:
                instance.kill()
    yield Walkthrough(folder / "home", route, json.loads(out), launch, instance, exit_code, final_state, swept, folder)


@pytest.fixture
def at_its_home(walkthrough, monkeypatch):
    monkeypatch.setenv("FTBROKER_HOME", str(walkthrough.home))


def test_a_plan_route_runs_end_to_end_on_a_played_instance(walkthrough, ec2_instance_python, summary_line):
    result = walkthrough.run["result"]
    job_id = result["id"]
    assert result["status"] == "succeeded" and result["backend"] == "ec2"
    instance_id, cap = check_launch(walkthrough.launch)
    adapter = Path(result["output_model"])
    assert adapter == walkthrough.home / "runs" / job_id / "output" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    evals = [m["value"] for m in result["metrics"] if m["name"] == "eval_loss"]
    assert len(evals) >= 2 and evals[-1] < evals[0]  # it learned
    [attempt] = result["raw"]["attempts"]
    assert attempt["instance_id"] == instance_id and Decimal(str(result["actual_cost_usd"])) == Decimal(
        attempt["cost_usd"]) > 0
    assert walkthrough.exit_code == 0  # the bootstrap ran to its end ...
    assert walkthrough.instance.shutdowns == [f"-h +{cap}", "-h now"]  # ... the cap first, then the EXIT trap's
    assert walkthrough.final_state == "terminated"
    assert walkthrough.gc == {"applied": False, "leftovers": []}  # nothing left running
    # the instance ran the staged wheel, not this checkout
    where = subprocess.run([str(ec2_instance_python), "-c", "import ftbroker; print(ftbroker.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert str(ec2_instance_python.parent.parent) in where
    summary_line(f"ec2 end to end (plan route #{walkthrough.route['number']}, {walkthrough.route['id']}): {job_id} "
                 f"succeeded on a played {instance_id}, runtime cap {cap} min, {attempt['runtime_s']:.0f} s billed as "
                 f"${attempt['cost_usd']} (quoted ${result['estimated_cost_usd']})")


def test_the_job_is_quoted_as_its_route_to_the_cent(walkthrough, summary_line):
    job, route = walkthrough.run["job"], walkthrough.route
    quoted = (job["estimated_cost_usd"], job["resources"]["estimated_hours"],
              job["resources"]["estimated_peak_vram_gib"])
    assert quoted == (route["cost_usd"], route["hours"], route["vram_gib"])
    remote = job["remote"]
    assert (remote["instance_type"], remote["region"], remote["market"]) == (
        route["instance_type"], route["region"], route["market"])
    assert Decimal(remote["usd_per_hour"]) == Decimal(str(route["breakdown"]["usd_per_hour"]))
    summary_line(f"ec2 quote = plan route #{route['number']}: ${quoted[0]}, {quoted[1]} h, {quoted[2]} GiB "
                 f"({route['instance_type']} {route['market']}, {route['region']})")


def test_status_logs_result_and_export_work_as_for_a_local_job(walkthrough, at_its_home, tmp_path):
    job_id = walkthrough.run["job"]["id"]
    assert "succeeded" in ftb("status", job_id).stdout
    kinds = [json.loads(line)["kind"] for line in ftb("logs", job_id, "--json").stdout.splitlines()]
    assert {"started", "running", "progress", "eval", "checkpoint", "done"} <= set(kinds)
    result = json.loads(ftb("result", job_id, "--json").stdout)
    assert result["status"] == "succeeded" and result["raw"]["instance_type"] == walkthrough.route["instance_type"]
    exported = json.loads(ftb("export", job_id, "--format", "merged", "-o", tmp_path / "merged", "--json").stdout)
    assert exported["artifacts"][0]["kind"] == "merged_model" and (tmp_path / "merged" / "config.json").is_file()


def test_ledger_rebuild_says_where_an_ec2_jobs_state_lives_and_restores_no_local_job(walkthrough, tmp_path,
                                                                                         monkeypatch):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(walkthrough.home / "runs", home / "runs")  # the run folders without their ledger
    monkeypatch.setenv("FTBROKER_HOME", str(home))
    job_id = walkthrough.run["job"]["id"]
    rebuilt = json.loads(ftb("ledger", "rebuild", "--json").stdout)
    assert rebuilt["restored"] == []
    [skipped] = rebuilt["skipped"]
    assert f"not a local job: the run folder of ec2 job {job_id}, on AWS: s3://{BUCKET}/jobs/{job_id}" in skipped


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
        "no such recipe": (base + ["--option", "trainer=/nowhere/train.py"], 2,
                           "backend_options.trainer: no such file: /nowhere/train.py"),
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


# --- the fault paths, with the scripted trainer --------------------------------------------------------------------

def test_a_spot_interruption_resumes_from_the_last_checkpoint_and_the_costs_add_up(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(12))
    job = json.loads(ftb(*scripted_job(data, tiny_model_dir, ec2_instance_python, spot="true")).stdout)["job"]
    facts = launch_facts(aws, job["id"], 1, SPOT_REGION)
    first_id, first_cap = check_launch(facts)
    assert facts["lifecycle"] == "spot"
    first = Instance(aws, first_id, SPOT_REGION, tmp_path, env=CATCHABLE).start()
    played.append(first)
    saved = wait_for(lambda: next((e for e in events_of(first) if e["kind"] == "checkpoint"), None), timeout=240)
    os.kill(first.trainer_pid(), signal.SIGSTOP)  # the trainer holds still while the agent syncs the checkpoint
    state_key = f"jobs/{job['id']}/run/checkpoints/checkpoint-{saved['step']}/trainer_state.json"
    wait_for(lambda: state_key in aws.objects(f"jobs/{job['id']}/run/"), interval=0.25, timeout=240)
    in_s3 = {int(m) for k in aws.objects(f"jobs/{job['id']}/run/checkpoints/")
             for m in re.findall(r"checkpoint-(\d+)/trainer_state.json", k)}
    first.kill()  # the reclaim: the machine is gone ...
    aws.client("ec2", SPOT_REGION).terminate_instances(InstanceIds=[first_id])  # ... and so is the instance

    assert status(job["id"])["status"] == "running"  # the poll saw it gone and relaunched
    second_id, second_cap = launched(aws, job["id"], 2, SPOT_REGION)
    assert second_cap <= first_cap  # what is left of the cap
    second = Instance(aws, second_id, SPOT_REGION, tmp_path,  # to the end at once: a few more steps
                      env={**CATCHABLE, "FTB_SCRIPT_STEPS": "10", "FTB_SCRIPT_STEP_S": "0"}).start()
    played.append(second)
    final = wait_for(lambda: (s := status(job["id"]))["status"] != "running" and s, timeout=240, interval=0.25)
    assert final["status"] == "succeeded", (final["error"], second.console())
    resumed = [e for e in events_of(second) if e["kind"] == "running"][-1]
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


def test_a_stalled_heartbeat_gets_the_instance_terminated_and_the_job_failed(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, monkeypatch, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(12))
    job = json.loads(ftb(*scripted_job(data, tiny_model_dir, ec2_instance_python)).stdout)["job"]
    instance_id, _ = launched(aws, job["id"], 1)
    instance = Instance(aws, instance_id, REGION, tmp_path, env=CATCHABLE).start()
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


def test_cancel_checkpoints_on_the_instance_then_ends_it_and_resume_relaunches(
        aws, home, tmp_path, tiny_model_dir, ec2_instance_python, played, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(12))
    job = json.loads(ftb(*scripted_job(data, tiny_model_dir, ec2_instance_python)).stdout)["job"]
    instance_id, _ = launched(aws, job["id"], 1)
    instance = Instance(aws, instance_id, REGION, tmp_path, env=CATCHABLE).start()
    played.append(instance)
    wait_for(lambda: any(e["kind"] == "progress" for e in events_of(instance)), timeout=240)
    cancelled = json.loads(ftb("cancel", job["id"], "--json").stdout)  # the marker; the agent SIGTERMs the trainer
    assert cancelled["status"] == "cancelled", cancelled
    last = events_of(instance)[-1]
    assert last["kind"] == "cancelled" and "stopped by SIGTERM" in last["message"]  # it saved a checkpoint first
    assert f"jobs/{job['id']}/run/checkpoints/checkpoint-{last['step']}/trainer_state.json" in aws.objects(
        f"jobs/{job['id']}/run/checkpoints/")
    assert instance.wait() != 0 and instance.shutdowns[-1] == "-h now"  # the machine powered itself off
    assert state(aws, instance_id) == "terminated"
    resumed = json.loads(ftb("resume", job["id"], "--detach", "--json").stdout)["job"]
    assert resumed["status"] == "running" and resumed["remote"]["attempt"] == "2"
    second_id, cap = launched(aws, job["id"], 2)
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
    from ftbroker.backends.ec2 import Ec2Backend, Ec2Options
    from ftbroker.backends.ec2_instances import Ec2Instance
    from ftbroker.jobs import Job, JobStatus
    from ftbroker.spec import JobSpec

    backend = Ec2Backend(Ec2Options(), home=tmp_path)
    now = clock.now()

    def instance(ran_minutes: float, ledger: str = backend.ledger_id, cap: int = 60) -> Ec2Instance:
        return Ec2Instance("i-1", "running", "g6e.xlarge", {"ftbroker:job": "ftb-a", "ftbroker:ledger": ledger,
                                                            "ftbroker:cap-minutes": str(cap)},
                           now - timedelta(minutes=ran_minutes))

    def job(status: JobStatus, instance_id: str = "i-1") -> Job:
        return Job(id="ftb-a", spec=JobSpec(dataset="d.jsonl", model="m", backend="ec2"), status=status,
                   created_at=now, updated_at=now, remote={"instance_id": instance_id})

    def why(inst: Ec2Instance, found: Job | None) -> tuple[str | None, str]:
        return backend._why_collect(inst, found, now - inst.launched_at)

    assert why(instance(30), job(JobStatus.RUNNING)) == (None, "job ftb-a is running on it")
    assert why(instance(30), job(JobStatus.SUCCEEDED))[0] == "its job ftb-a is succeeded"
    assert why(instance(30), None)[0] == "its job ftb-a is not in the ledger"
    assert why(instance(30), job(JobStatus.RUNNING, instance_id=""))[0].startswith("job ftb-a never recorded it")
    assert why(instance(2), job(JobStatus.RUNNING, instance_id=""))[0] is None  # may be mid-launch
    assert why(instance(71), job(JobStatus.RUNNING))[0] == "past its runtime cap: ran 1h11m, cap 1h00m"
    assert why(instance(30, ledger="another"), None) == (None, "another ledger's job (only its cap applies here)")
    assert why(instance(71, ledger="another"), None)[0].startswith("past its runtime cap")


def test_closing_the_backend_closes_its_aws_clients(monkeypatch, tmp_path):
    """Broker.close closes every backend it opened: EC2's AWS clients (their connection pools) go with it, and a
    later call opens a fresh one."""
    from ftbroker.backends.ec2 import Ec2Backend, Ec2Options

    for name, value in MotoAws(monkeypatch).environment().items():  # credentials found; nothing is called
        monkeypatch.setenv(name, value)
    backend = Ec2Backend(Ec2Options(), home=tmp_path)
    s3, ec2 = backend.client("s3", REGION), backend.client("ec2", REGION)
    assert backend.client("s3", REGION) is s3  # one client per service and region
    closed = []
    for client in (s3, ec2):
        monkeypatch.setattr(client, "close", lambda c=client: closed.append(c))
    backend.close()
    assert closed == [s3, ec2]
    assert backend.client("s3", REGION) is not s3
