"""The trainer process on its own, as the local backend runs it (``python -m ftbroker.backends.local.train RUN_DIR``):
bad configs, missing kernels, data errors, resume rules, early stopping; on a CUDA GPU, real runs that measure GPU
memory. Real CPU training through the CLI (LoRA, QLoRA, full, kill -9, SIGTERM, resume, export) is in
test_local_e2e.py, where the runs are shared between assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ftbroker.backends.local import train
from ftbroker.backends.local.config import TrainConfig
from ftbroker.jobs import JobStatus, Result
from tinymodels import code_examples, write_jsonl

LORA = {"method": "lora", "epochs": 3, "learning_rate": 1e-2, "lr_scheduler": "constant", "micro_batch_size": 4,
        "max_seq_length": 128, "eval_fraction": 0.2, "save_steps": 10, "logging_steps": 5, "seed": 0,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}


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


def losses(res: Result, name: str) -> list[tuple[int, float]]:
    return [(p.step, p.value) for p in res.metrics if p.name == name]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return {"train": write_jsonl(folder / "train.jsonl", code_examples(200)),
            "valid": write_jsonl(folder / "valid.jsonl", code_examples(40, seed=1))}


@pytest.fixture(scope="session")
def lora_config(tiny_model_dir, data):
    return LORA | {"model": str(tiny_model_dir), "dataset": str(data["train"]), "merge": True}


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
        train._prepare_data(config, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert [(i.line, i.message.split(":")[0]) for i in caught.value.issues] == [(2, "not valid JSON")]
    path.write_text("\n".join([rows[0], '{"input": 1}']) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: a line needs 'messages'"):
        train._prepare_data(config, AutoTokenizer.from_pretrained(tiny_model_dir))


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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_trains_on_cuda_and_measures_gpu_memory(tmp_path, lora_config, method):
    config = lora_config | {"method": method, "device": "cuda", "merge": method != "full", "save_steps": 0}
    if method == "full":
        config["learning_rate"] = 3e-3
    done = run(tmp_path / "run", config)
    assert done.returncode == 0, done.stderr[-3000:]
    res = result(tmp_path / "run")
    measured = res.raw["measured"]
    assert measured["device"] == "cuda" and measured["precision"] in ("bf16", "fp16")
    assert measured["peak_memory_kind"] == "cuda_max_memory_allocated"
    assert 0 < measured["peak_memory_bytes"] <= measured["cuda_max_reserved_bytes"]
    evals = losses(res, "eval_loss")
    assert evals[-1][1] < evals[0][1] - 1.0, evals
