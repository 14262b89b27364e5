"""Experiment trackers of the local trainer (``--option report_to=mlflow,tensorboard``): a real run of the tiny
model through the CLI, logged through transformers' own integrations into a local MLflow file store and TensorBoard
event files, both read back; where they keep the run is in the ledger and ``ftbroker status``; credentials stay in
the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlparse

import pytest
from tinymodels import code_examples, write_jsonl

from ftbroker.backends.local.backend import LocalOptions
from ftbroker.backends.local.prepare import train_config
from ftbroker.backends.local.loading import tracker_environment
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B's key shape: 40 hex digits
MLFLOW_TOKEN = "mlflow-token-that-must-not-leak"


def ftbroker(home, *args, ok=(0,), env=None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "ftbroker.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "FTBROKER_HOME": str(home), **(env or {})}, timeout=300)
    assert done.returncode in ok, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir):
    """One LoRA run of the tiny model reporting to MLflow (a file store) and TensorBoard, with a W&B key and an
    MLflow token in its environment, as a user with trackers set up has them."""
    home = tmp_path_factory.mktemp("tracked-home")
    train = write_jsonl(tmp_path_factory.mktemp("tracked-data") / "train.jsonl", code_examples(40))
    store = home / "team-mlruns"
    done = ftbroker(home, "run", train, "--backend", "local", "--model", tiny_model_dir, "--method", "lora",
                    "--epochs", "2", "--micro-batch", "4", "--max-seq-len", "128", "--seed", "0", "--lora-r", "4",
                    "--option", "report_to=mlflow,tensorboard", "--option", "tracker_project=support-bot",
                    "--option", f"tracking_uri={store.as_uri()}", "--option", "gpus=0", "--yes", "--json",
                    env={"WANDB_API_KEY": WANDB_KEY, "MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN})
    out = json.loads(done.stdout)
    return {"home": home, "store": store, "job": out["job"], "result": out["result"], "stderr": done.stderr}


def losses(result: dict) -> dict[int, float]:
    return {m["step"]: m["value"] for m in result["metrics"] if m["name"] == "train_loss"}


@pytest.mark.slow
def test_mlflow_run_holds_the_loss_at_the_steps_trained(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a folder store, as the trainer wrote it

    assert tracked["result"]["status"] == "succeeded"
    where = tracked["job"]["trackers"]["mlflow"]
    uri, _, path = where.partition("#")
    assert uri == tracked["store"].as_uri()
    run_id = path.rsplit("/", 1)[-1]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "support-bot"
    assert run.info.run_name == tracked["job"]["id"]
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert logged and logged == pytest.approx(losses(tracked["result"]))  # the same curve the ledger keeps
    assert float(run.data.params["learning_rate"]) == pytest.approx(2e-4)


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_loss(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tracked["job"]["trackers"]["tensorboard"]
    assert folder == str(tracked["home"] / "runs" / tracked["job"]["id"] / "tensorboard")
    events = EventAccumulator(folder)
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert logged and logged == pytest.approx(losses(tracked["result"]), rel=1e-5)


@pytest.mark.slow
def test_status_shows_where_the_trackers_keep_the_run(tracked):
    job = tracked["job"]["id"]
    shown = ftbroker(tracked["home"], "status", job, env={"COLUMNS": "400"}).stdout
    assert f"tracker tensorboard  {tracked['job']['trackers']['tensorboard']}" in shown
    assert "tracker mlflow" in shown and tracked["store"].as_uri() in shown
    with Ledger(tracked["home"] / "ledger.sqlite3") as ledger:
        assert ledger.get(job).trackers == tracked["job"]["trackers"]


@pytest.mark.slow
def test_tracker_credentials_are_never_written(tracked):
    """WANDB_API_KEY and MLFLOW_TRACKING_TOKEN reach the trainer through its environment only."""
    written = [p for p in tracked["home"].rglob("*") if p.is_file() and "team-mlruns" not in p.parts]
    assert any(p.name == "ledger.sqlite3" for p in written) and any(p.name == "config.json" for p in written)
    for path in written:
        content = path.read_bytes()
        assert WANDB_KEY.encode() not in content and MLFLOW_TOKEN.encode() not in content, path


def test_report_to_reaches_the_trainer_config():
    spec = JobSpec.model_validate({"backend": "local", "model": "m", "dataset": "d.jsonl"})
    options = LocalOptions.model_validate({"report_to": "wandb, tensorboard", "tracker_project": "p"})
    config = train_config(spec, options)
    assert config.report_to == ["wandb", "tensorboard"] and config.tracker_project == "p"
    assert train_config(spec, LocalOptions()).report_to == []


def test_an_unknown_tracker_is_refused_before_anything_runs(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", code_examples(4))
    done = ftbroker(tmp_path, "run", data, "--backend", "local", "--model", "Qwen2.5-0.5B", "--option",
                    "report_to=neptune", "--yes", ok=(2,))
    assert "backend_options.report_to.0: Input should be 'wandb', 'mlflow' or 'tensorboard'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_trainer_points_the_integrations_at_the_job(tmp_path, monkeypatch):
    for name in ("TENSORBOARD_LOGGING_DIR", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    spec = JobSpec.model_validate({"backend": "local", "model": "m", "dataset": "d.jsonl"})
    tracker_environment(train_config(spec, LocalOptions(report_to=["tensorboard"])), tmp_path)
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")
    assert os.environ["WANDB_PROJECT"] == "mine" and os.environ["MLFLOW_EXPERIMENT_NAME"] == "ftbroker"
    uri = (tmp_path / "store").as_uri()
    tracker_environment(train_config(spec, LocalOptions(report_to=["mlflow"], tracker_project="p",
                                                        tracking_uri=uri)), tmp_path)
    assert os.environ["WANDB_PROJECT"] == os.environ["MLFLOW_EXPERIMENT_NAME"] == "p"
    assert urlparse(os.environ["MLFLOW_TRACKING_URI"]).path == str(tmp_path / "store")
