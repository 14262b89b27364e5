"""The SkyPilot task ftbroker builds for a route (backends/skypilot/task.py): what it says, and that SkyPilot's own
task loader and optimizer accept it for every kind of route in the catalog (each cloud, on-demand and spot, 1 GPU,
8 GPUs, 2 nodes), offline, with its catalog cache seeded from ftbroker's rows (tests/skypilot_catalog.py); and the
task ``ftbroker run --from-plan PLAN --route N`` hands SkyPilot (its fake) for a plan's GCP spot route, which
SkyPilot's loader takes too."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.skypilot_fake import FakeSky
from skypilot_catalog import seed

from ftbroker.backends.skypilot import backend

from ftbroker.backends.skypilot.task import (LABEL, LEDGER_LABEL, RUN, STAGE, Launch, Placement, infra, run_command,
                                             shell_line, task_config, unsupported)
from ftbroker.cli import cli
from ftbroker.pricing.catalog import load_catalog

TESTS = Path(__file__).parent
CLAIMED = "aws"  # the ec2 backend's
DATA = "examples/data/support_chats.jsonl"


def _launch(place: Placement, stage: Path, **overrides) -> Launch:
    fields = {"job_id": "ftb-abcd2345", "place": place, "stage_dir": str(stage),
              "run_uri": "s3://ftb-bucket/runs/ftb-abcd2345", "wheel": "ftbroker-0.1.0-py3-none-any.whl",
              "max_seconds": 7200, "disk_gb": 200, "accelerate": place.ranks > 1, "ledger": "0f1e2d3c4b5a6978",
              **overrides}
    return Launch(**fields)


def _instance(cloud: str, instance_type: str):
    return next(i for i in load_catalog().instances if i.cloud == cloud and i.instance_type == instance_type)


def route_kinds() -> list[Placement]:
    """Per cloud of the catalog (but AWS): on-demand and spot where priced, and two nodes, on its first 1-GPU and
    8-GPU instances."""
    kinds = []
    clouds = sorted({i.cloud for i in load_catalog().instances} - {CLAIMED})
    for cloud in clouds:
        rows = [i for i in load_catalog().instances if i.cloud == cloud]
        chosen = [next((i for i in rows if i.gpu_count == n), None) for n in (1, 8)]
        for instance in filter(None, chosen):
            for market in ("on-demand", "spot"):
                if Placement(instance, market).price is not None:
                    kinds.append(Placement(instance, market))
        kinds += [Placement(i, "on-demand", nodes=2) for i in filter(None, chosen)]
    return kinds


# --- what the task says (no SkyPilot needed) ---

def test_an_on_demand_task_names_the_route_and_mounts_the_bucket(tmp_path):
    place = Placement(_instance("lambda", "gpu_1x_h100_sxm5"))
    task = task_config(_launch(place, tmp_path))
    resources = task["resources"]
    assert resources == {"infra": "lambda/us-east-1", "instance_type": "gpu_1x_h100_sxm5", "use_spot": False,
                         "disk_size": 200,  # SkyPilot's CUDA image by default
                         "labels": {LABEL: "ftb-abcd2345", LEDGER_LABEL: "0f1e2d3c4b5a6978"}}
    assert task["name"] == "ftb-abcd2345" and task["num_nodes"] == 1
    assert task["file_mounts"] == {STAGE: str(tmp_path), RUN: {"source": "s3://ftb-bucket/runs/ftb-abcd2345",
                                                               "mode": "MOUNT_CACHED"}}
    assert task["envs"]["FTBROKER_MAX_SECONDS"] == "7200" and task["envs"]["FTBROKER_EVENTS_TO_STDOUT"] == "1"
    assert "[local]" in task["setup"] and "$FTBROKER_WHEEL" in task["setup"]
    # the same trainer as --backend local, resuming from a checkpoint, under the runtime cap
    assert '"$PY" -m ftbroker.backends.local.train "$RUN" ${RESUME:+--resume}' in task["run"]
    assert 'timeout --signal=TERM --kill-after="$FTBROKER_GRACE_SECONDS" "$LEFT"' in task["run"]
    assert "secrets" not in task


def test_a_spot_task_is_recovered_after_a_preemption_but_not_after_a_failure(tmp_path):
    place = Placement(_instance("gcp", "a2-highgpu-1g"), "spot")
    task = task_config(_launch(place, tmp_path, image="skypilot:gpu-ubuntu-2204", secrets={"HF_TOKEN": "x"}))
    assert task["resources"]["infra"] == "gcp/europe-west4"  # the spot price's region
    assert task["resources"]["use_spot"] is True and task["resources"]["image_id"] == "skypilot:gpu-ubuntu-2204"
    assert task["resources"]["job_recovery"] == {"strategy": "FAILOVER", "max_restarts_on_errors": 0}
    assert task["secrets"] == {"HF_TOKEN": "x"}


def test_several_nodes_run_accelerate_with_skypilots_rank_and_head_address(tmp_path):
    place = Placement(_instance("lambda", "gpu_8x_h100_sxm5"), nodes=2)
    command = shell_line(run_command(_launch(place, tmp_path)))
    assert command == ('"$PY" -m accelerate.commands.launch --config_file "$FTBROKER_STAGE/accelerate.yaml" '
                       '--num_machines "$SKYPILOT_NUM_NODES" --machine_rank "$SKYPILOT_NODE_RANK" '
                       '--main_process_ip "$HEAD_IP" --main_process_port "$FTBROKER_PORT" '
                       '--num_processes "$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))" '
                       '-m ftbroker.backends.local.train "$RUN" ${RESUME:+--resume}')
    assert 'HEAD_IP=$(printf \'%s\\n\' "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)' in task_config(
        _launch(place, tmp_path))["run"]
    one_node = shell_line(run_command(_launch(Placement(place.instance), tmp_path)))
    assert "--num_machines" not in one_node and "--config_file" in one_node


def test_clouds_skypilot_cannot_serve_are_refused_with_the_reason():
    assert "STORAGE_MOUNTING" in unsupported(Placement(_instance("runpod", "1x_H100-SXM_SECURE")))
    assert "STORAGE_MOUNTING" in unsupported(Placement(_instance("vast", "1x-H100_SXM-32-65536")))
    assert unsupported(Placement(_instance("nebius", "gpu-h100-sxm_8gpu-128vcpu-1600gb"), nodes=2)) == ""
    assert infra(Placement(_instance("runpod", "1x_H100-SXM_SECURE"))) == "runpod"  # its catalog has no regions


# --- a plan's route, run from the plan file ---

def _runner() -> CliRunner:
    """A runner keeping stderr out of stdout under both clicks: SkyPilot's pin (click < 8.2) mixes them unless told."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 has no such option: it never mixes them
        return CliRunner()


@pytest.fixture(scope="module")
def from_plan(tmp_path_factory):
    """``ftbroker plan --json`` then ``ftbroker run --from-plan PLAN --route N`` on a feasible GCP spot route, with
    the fake SkyPilot: (the plan's route, what SkyPilot was asked, the run's JSON)."""
    tmp = tmp_path_factory.mktemp("from-plan")
    sky = FakeSky(tmp / "sky")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backend, "adapter", lambda: sky)
        patch.setattr(backend.SkyPilotBackend, "capabilities",  # the fake answers: no SDK needed
                      dataclasses.replace(backend.SkyPilotBackend.capabilities, requires={}))
        patch.setenv("FTBROKER_HOME", str(tmp / "home"))
        runner = _runner()
        out = runner.invoke(cli, ["plan", DATA, "--model", "Llama-3.1-8B", "--method", "qlora", "--all", "--json"])
        assert out.exit_code == 0, out.output
        (tmp / "plan.json").write_text(out.stdout)
        route = next(r for r in json.loads(out.stdout)["routes"] if r["backend"] == "skypilot"
                     and r["cloud"] == "gcp" and r["market"] == "spot" and r["feasible"])
        run = runner.invoke(cli, ["run", "--from-plan", str(tmp / "plan.json"), "--route", str(route["number"]),
                                  "--option", "bucket=gs://ftb-test/runs", "--yes", "--detach", "--json"])
        assert run.exit_code == 0, run.output
    sky.close()
    ((kind, launch),) = sky.launches()
    return route, kind, launch, json.loads(run.stdout)


def test_a_plans_spot_route_runs_from_the_plan_file_as_priced(from_plan):
    route, kind, launch, run = from_plan
    resources = launch["task"]["resources"]
    assert kind == "jobs_launch" and resources["use_spot"] is True and launch["name"] == run["job"]["id"]
    assert resources["instance_type"] == route["instance_type"] and resources["infra"] == f"gcp/{route['region']}"
    assert run["job"]["estimated_cost_usd"] == pytest.approx(route["cost_usd"])


# --- SkyPilot's own loader and optimizer ---

def _skypilot_verdicts(tmp_path: Path, launches: list[Launch], extra: list[dict] = ()) -> list[dict]:
    """SkyPilot's verdict on each launch's task, then on each of ``extra`` ({"task", "autodown"})."""
    runtime = tmp_path / "sky-runtime"
    clouds = seed(runtime, [i for i in load_catalog().instances if i.cloud != CLAIMED])
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([*({"task": task_config(launch), "autodown": not launch.place.spot}
                                   for launch in launches), *extra]))
    env = {**os.environ, "HOME": str(runtime), "SKY_RUNTIME_DIR": str(runtime),
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "SKYPILOT_API_SERVER_LOCAL_PORT": "46599"}
    out = subprocess.run([sys.executable, str(TESTS / "skypilot_validate.py"), str(tasks), ",".join(clouds)],
                         env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (runtime / ".sky" / "catalogs" / "v8" / ".meta").exists()  # nothing was downloaded
    assert not _api_servers(runtime)  # none was started, or sky.api_stop() stopped it
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _api_servers(runtime: Path) -> list[int]:
    """SkyPilot API server daemons started with ``runtime`` as their runtime folder."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "sky.server.server" in " ".join(proc.info["cmdline"] or ()) and \
                    proc.environ().get("SKY_RUNTIME_DIR") == str(runtime):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_skypilot_accepts_the_task_of_every_route_kind(tmp_path, from_plan):
    pytest.importorskip("sky", reason="SkyPilot's loader: pip install 'ftbroker[skypilot]'")
    stage = tmp_path / "stage"
    stage.mkdir()
    kinds = route_kinds()
    edge = Placement(_instance("gcp", "a3-edgegpu-8g"))  # a GCP machine SkyPilot attaches no GPUs to
    route, _, planned, _ = from_plan
    verdicts = _skypilot_verdicts(tmp_path, [_launch(place, stage) for place in [*kinds, edge]],
                                  extra=[{"task": planned["task"], "autodown": False}])
    assert len(verdicts) == len(kinds) + 2
    chosen = verdicts[-1]["ok"]  # the plan's route, as `ftbroker run --from-plan` launched it
    assert (chosen["cloud"], chosen["instance_type"], chosen["region"], chosen["use_spot"]) == (
        "gcp", route["instance_type"], route["region"], True)
    assert sum(chosen["accelerators"].values()) == route["hardware"]["count"] and chosen["task_unchanged"]
    verdicts = verdicts[:-1]
    clouds = set()
    for place, verdict in zip(kinds, verdicts[:-1], strict=True):
        route = f"{place.hardware} x{place.nodes}"
        why_not = unsupported(place)
        if why_not:  # ftbroker's table of what SkyPilot cannot do agrees with SkyPilot
            assert "error" in verdict and ("storage_mounting" in verdict["error"]
                                           or "Catalog does not contain" in verdict["error"]), (route, verdict)
            continue
        assert "ok" in verdict, (route, verdict)
        chosen = verdict["ok"]
        clouds.add(chosen["cloud"])
        assert chosen["instance_type"] == place.instance.instance_type, route
        assert chosen["use_spot"] is place.spot and chosen["num_nodes"] == place.nodes, route
        assert sum(chosen["accelerators"].values()) == place.instance.gpu_count, route
        assert chosen["adapter_gpus"] == chosen["accelerators"] and chosen["task_unchanged"], route
        assert chosen["storage_mounts"] == [RUN], route
        if infra(place) != place.instance.cloud:
            assert chosen["region"] == place.region, route
    assert clouds >= {"gcp", "lambda", "azure", "nebius"}
    assert verdicts[-1]["ok"]["accelerators"] is None  # the backend refuses such a route before launching:
    assert verdicts[-1]["ok"]["adapter_gpus"] is None  # its adapter sees what SkyPilot would attach


def test_the_staged_wheel_installs_this_very_ftbroker(tmp_path):
    """What setup.sh installs on the cluster: the installed ftbroker, packaged here, trainer and data included."""
    from ftbroker.backends.wheel import build_wheel

    wheel = build_wheel(tmp_path / "stage")
    assert build_wheel(tmp_path / "again").read_bytes() == wheel.read_bytes()  # same code, same bytes: EC2 uploads once
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=120)
    probe = ("import importlib.metadata, ftbroker.backends.local.train, ftbroker.backends.skypilot.task as t;"
             "from ftbroker.pricing.catalog import load_catalog;"
             "print(importlib.metadata.version('ftbroker'), len(load_catalog().instances), t.__file__)")
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); " + probe],
                         capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    version, instances, where = out.stdout.split()
    assert version == importlib.metadata.version("ftbroker") and int(instances) == len(load_catalog().instances)
    assert where.startswith(str(target))  # the wheel's copy, not this checkout
    assert "extra == \"local\"" in (target / f"ftbroker-{version}.dist-info" / "METADATA").read_text()
