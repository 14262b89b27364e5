"""The SkyPilot task's run script, run for real on this machine by the fake SkyPilot's nodes, with the real trainer
on the tiny Llama: two nodes training one run (two processes, world size 2 on the CPU, gloo) through the
accelerate command and SkyPilot's node variables; and a spot run preempted after a checkpoint, which SkyPilot's
recovery runs again and which resumes from the checkpoint in the bucket."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from fakes.skypilot_fake import FakeSky
from jobsupport import wait_for
from tinymodels import code_examples, write_jsonl

from ftbroker.backends.skypilot import backend
from ftbroker.broker import Broker
from ftbroker.jobs import JobStatus
from ftbroker.spec import JobSpec

pytestmark = pytest.mark.slow


@pytest.fixture
def sky(tmp_path, monkeypatch):
    fake = FakeSky(tmp_path / "sky", gpus_per_node=1)  # a GPU per node, as the route says; the CPU stands in
    monkeypatch.setattr(backend, "adapter", lambda: fake)
    monkeypatch.setattr(backend.SkyPilotBackend, "capabilities",
                        dataclasses.replace(backend.SkyPilotBackend.capabilities, requires={}))
    yield fake
    fake.close()


def _broker(tmp_path, sky) -> Broker:
    return Broker(tmp_path / "home", sleep=lambda s: (sky.advance(1), time.sleep(0.2)))


def _spec(tmp_path, model, **options) -> JobSpec:
    data = write_jsonl(tmp_path / "data.jsonl", code_examples(16))
    return JobSpec(dataset=str(data), model=str(model), backend="skypilot",
                   hyperparameters={"epochs": 1, "max_seq_len": 64, "micro_batch_size": 4},
                   backend_options={"instance_type": "gpu_1x_h100_sxm5", "bucket": "s3://ftb-real/runs",
                                    "max_hours": 1, **options})


def test_two_nodes_train_one_run_through_skypilots_node_variables(tmp_path, sky, tiny_model_dir):
    with _broker(tmp_path, sky) as broker:
        job = broker.submit(_spec(tmp_path, tiny_model_dir, nodes=2))
        result = broker.follow(job.id)
        events = [e for _, e in broker.events(job.id)]
    assert result.status is JobStatus.SUCCEEDED, result.error
    stage = tmp_path / "home" / "runs" / job.id / "stage"
    accelerate = stage / "accelerate.yaml"
    assert "num_machines: 2" in accelerate.read_text() and "distributed_type: MULTI_GPU" in accelerate.read_text()
    # 14 training examples (2 held out), 4 per process and step: 2 steps with two processes (4 with one)
    running = next(e for e in events if e.kind == "running")
    assert running.data["total_steps"] == 2
    logs = sorted((tmp_path / "sky" / "nodes" / job.id).glob("attempt1-rank*.log"))
    assert [log.name for log in logs] == ["attempt1-rank0.log", "attempt1-rank1.log"]
    assert "ftbroker-event" in logs[0].read_text() and "ftbroker-event" not in logs[1].read_text()  # rank 0 writes
    assert (tmp_path / "home" / "runs" / job.id / "output" / "adapter" / "adapter_config.json").is_file()


def test_a_preempted_spot_run_resumes_from_its_checkpoint_in_the_bucket(tmp_path, sky, tiny_model_dir):
    spec = _spec(tmp_path, tiny_model_dir, instance_type="gpu-h100-sxm_1gpu-16vcpu-200gb", spot=True)
    spec = spec.model_copy(update={"hyperparameters": spec.hyperparameters.model_copy(update={"epochs": 2})})
    with _broker(tmp_path, sky) as broker:
        job = broker.submit(spec)
        bucket = sky.bucket(f"s3://ftb-real/runs/{job.id}")
        wait_for(lambda: broker.refresh(job.id) and list(bucket.glob("checkpoints/checkpoint-*/trainer_state.json")),
                 timeout=240)
        sky.preempt(1)  # the VM vanishes: SIGKILL, nothing more is saved
        result = broker.follow(job.id)
        events = [e for _, e in broker.events(job.id)]
    assert result.status is JobStatus.SUCCEEDED, result.error
    assert [e.data["attempt"] for e in events if e.kind == "attempt"] == [2]
    second = (tmp_path / "sky" / "nodes" / job.id / "attempt2-rank0.log").read_text()
    assert "resuming from the last checkpoint" in second
    resumed = [json.loads(line.split("ftbroker-event ", 1)[1]) for line in second.splitlines()
               if "ftbroker-event " in line and '"running"' in line]
    assert resumed and resumed[0]["step"] > 0  # went on from the checkpoint's step, not from 0
    assert [c[0] for c in sky.launches()] == ["jobs_launch"]
