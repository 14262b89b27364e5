"""The trainer process on its own, as the local backend runs it (``python -m ftbroker.backends.local.train RUN_DIR``):
bad configs, missing kernels, data errors, resume rules, early stopping. Real training through the CLI (LoRA, QLoRA,
full, kill -9, SIGTERM, resume, export; on a CUDA GPU too) is in test_local_e2e.py, where runs are shared between
assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ftbroker.backends.local import train, train_data
from ftbroker.backends.local.config import TrainConfig
from ftbroker.jobs import JobStatus, Result
from tinymodels import code_examples

def start(run_dir: Path, config: dict, *args: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    return subprocess.Popen([sys.executable, "-m", "ftbroker.backends.local.train", str(run_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(run_dir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    process = start(run_dir, config, *args)
    out, err = process.communicate(timeout=240)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def result(run_dir: Path) -> Result:
    return Result.model_validate_json((run_dir / "result.json").read_text())


def test_bad_config_names_every_bad_field(tmp_path):
    done = run(tmp_path, {"model": "m", "dataset": "d.jsonl", "method": "lorax", "epochs": -1, "lr": 1})
    assert done.returncode == 2
    last = events(tmp_path)[-1]
    assert last["kind"] == "error"
    for field in ("method", "epochs", "lr: unknown field"):
        assert field in last["message"]
    assert result(tmp_path).status is JobStatus.FAILED
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("flag", "package"), [("use_liger", "liger-kernel"), ("use_unsloth", "unsloth")])
def test_kernels_asked_for_but_not_installed(tmp_path, flag, package):
    done = run(tmp_path, {"model": "m", "dataset": "d.jsonl", flag: True})
    assert done.returncode == 1
    message = events(tmp_path)[-1]["message"]
    assert f"'{package}'" in message and "pip install" in message
    assert "Traceback" not in done.stderr


def test_dataset_errors_name_file_and_line(tmp_path, tiny_model_dir):
    from ftbroker.errors import DatasetError
    from transformers import AutoTokenizer

    path = tmp_path / "bad.jsonl"
    rows = [json.dumps(r) for r in code_examples(3)]
    path.write_text("\n".join([rows[0], "{not json", rows[1], '{"input": 1}', rows[2]]) + "\n")
    config = TrainConfig(model=str(tiny_model_dir), dataset=str(path), eval_fraction=0)
    with pytest.raises(DatasetError) as caught:
        train_data.prepare_data(config, AutoTokenizer.from_pretrained(tiny_model_dir))
    # the checks of `ftbroker validate`, every bad line at once
    assert [(i.line, i.message.split(":")[0]) for i in caught.value.issues] == [(2, "invalid JSON at column 2"),
                                                                                 (4, "no known format")]
    path.write_text("\n".join([rows[0], '{"input": 1}']) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: no known format: a line needs 'messages'"):
        train_data.prepare_data(config, AutoTokenizer.from_pretrained(tiny_model_dir))


def test_checkpoints_without_resume_are_refused(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(train.InputError, match="--resume"):
        train._resume_point(tmp_path, resume=False, remove_incomplete=False)


def test_every_config_field_is_documented():
    documented = train.__doc__
    fields = [name for name in TrainConfig.model_fields if name != "lora"]
    fields += [f"lora.{name}" for name in TrainConfig.model_fields["lora"].annotation.model_fields]
    assert [f for f in fields if f"\n{f} " not in documented] == []


def test_early_stopping_counts_evaluations_without_improvement():
    from ftbroker.backends.local.callbacks import EarlyStopping
    from transformers import TrainerControl, TrainerState

    stopper, control = EarlyStopping(patience=2), TrainerControl()
    state = TrainerState(log_history=[{"eval_loss": 3.0, "step": 0}, {"eval_loss": 2.0, "step": 10}])
    stopper.on_train_begin(None, state, control)  # rebuilt from history, as after a resume
    for loss in (2.5, 1.9, 2.0):
        stopper.on_evaluate(None, state, control, metrics={"eval_loss": loss})
    assert not control.should_training_stop
    stopper.on_evaluate(None, state, control, metrics={"eval_loss": 1.95})
    assert control.should_training_stop and stopper.stopped


def test_a_second_trainer_on_a_run_folder_is_refused_before_it_writes_anything(tmp_path):
    from ftbroker.backends.local import runlock

    lock = runlock.take(tmp_path)  # a trainer running there (this process stands in for it)
    runlock.note(lock, os.getpid())
    try:
        done = run(tmp_path, {"model": "m", "dataset": "d.jsonl"})
    finally:
        os.close(lock)
    assert done.returncode == train.EXIT_BUSY == 75
    assert f"another trainer (pid {os.getpid()}) is running in {tmp_path}" in done.stderr
    assert events(tmp_path) == [] and not (tmp_path / "result.json").exists()
    assert (tmp_path / "trainer.pid").read_text() == str(os.getpid())  # the running trainer's note is kept
    run(tmp_path, {"model": "m", "dataset": "d.jsonl"})  # once it has ended, the next one runs (and holds it)
    assert events(tmp_path)[0]["kind"] == "started" and runlock.take(tmp_path) is not None


def test_throughput_is_one_figure_training_seconds_only():
    """Progress events and the measured throughput count the same seconds: training, not evaluations or checkpoint
    saves (they used to disagree: the progress line's 2,308 tok/s, the measurement's 1,759 over a run that spent a
    quarter of its time evaluating and saving)."""
    from types import SimpleNamespace

    from ftbroker.backends.local import callbacks

    now = [0.0]
    emitted = []
    events_ = SimpleNamespace(emit=lambda kind, message="", **fields: emitted.append((kind, fields)))
    reporter = callbacks.Reporter(events_, monotonic=lambda: now[0])
    state = SimpleNamespace(global_step=0, max_steps=4, epoch=0.0, num_input_tokens_seen=0)
    args, control = SimpleNamespace(output_dir="ckpt"), SimpleNamespace()
    reporter.on_train_begin(args, state, control)
    now[0] += 30.0  # evaluation at the start
    reporter.on_evaluate(args, state, control)
    for step in range(1, 5):
        reporter.on_step_begin(args, state, control)
        now[0] += 2.0  # one step: 200 tokens in 2 s
        state.global_step, state.num_input_tokens_seen, state.epoch = step, 200 * step, step / 4
        reporter.on_step_end(args, state, control)
        reporter.on_log(args, state, control, logs={"loss": 1.0 / step})
        if step % 2 == 0:  # end of an epoch: evaluation, then a checkpoint
            now[0] += 20.0
            reporter.on_evaluate(args, state, control)
            now[0] += 10.0
            reporter.on_save(args, state, control)
    reporter.on_train_end(args, state, control)
    progress = [fields["tokens_per_s"] for kind, fields in emitted if kind == "progress"]
    assert progress == [100.0] * 4 and reporter.tokens_per_s == 100.0
    assert reporter.seconds == 30 + 4 * 2 + 2 * 30  # the ETA's and train_seconds' time is the whole time
