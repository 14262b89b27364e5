"""The local trainer end to end, as the local backend runs it: ``python -m ftbroker.backends.local.train RUN_DIR``.

Real training of a tiny Llama on CPU (LoRA, QLoRA, full), kill -9 and resume, SIGTERM, bad configs.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ftbroker.backends.local import train
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.outputs import EVENT_FIELDS
from ftbroker.jobs import JobStatus, MetricPoint, Result
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


def wait_for_event(process, run_dir: Path, kind: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(run_dir) if e["kind"] == kind]
        if found:
            return found[0]
        assert process.poll() is None, f"trainer ended before a {kind} event: {process.communicate()}"
        time.sleep(0.005)
    raise AssertionError(f"no {kind} event within {timeout} s")


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return {"train": write_jsonl(folder / "train.jsonl", code_examples(200)),
            "valid": write_jsonl(folder / "valid.jsonl", code_examples(40, seed=1))}


@pytest.fixture(scope="session")
def lora_config(tiny_model_dir, data):
    return LORA | {"model": str(tiny_model_dir), "dataset": str(data["train"]), "merge": True}


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, lora_config):
    run_dir = tmp_path_factory.mktemp("lora-run")
    done = run(run_dir, lora_config)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_lora_run_learns_and_reports(lora_run):
    lines = events(lora_run)
    assert all(set(line) == set(EVENT_FIELDS) for line in lines)
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "started" and kinds[-1] == "done" and kinds.count("done") == 1
    assert {"running", "progress", "eval", "checkpoint"} <= set(kinds)
    progress = [line for line in lines if line["kind"] == "progress"]
    assert all(line["total_steps"] == 120 and line["tokens_per_s"] > 0 for line in progress)

    res = result(lora_run)
    assert res.status is JobStatus.SUCCEEDED and res.backend == "local" and res.id == lora_run.name
    evals = losses(res, "eval_loss")
    assert [step for step, _ in evals] == [0, 40, 80, 120]  # at the start, then every epoch
    assert evals[-1][1] < evals[0][1] - 2.0, evals  # observed 6.1 -> 2.3
    assert res.output_model == str(lora_run / "output" / "merged")
    kinds = {a.kind for a in res.artifacts}
    assert {"adapter", "merged_model", "checkpoint", "metrics", "plot"} <= kinds
    # 160 training examples, 2-5 trained tokens each ("IN5<|im_end|>"), 3 epochs
    assert 160 * 2 * 3 <= res.trained_tokens <= 160 * 5 * 3
    measured = res.raw["measured"]
    assert measured["device"] == "cpu" and measured["peak_memory_kind"] == "peak_rss"
    assert 100e6 < measured["peak_memory_bytes"] < 8e9 and measured["tokens_per_s"] > 0
    assert res.raw["gradient_checks"] == {"4bit_input_gradients": 0, "adapter_gradients": 1}

    metric_lines = (lora_run / "metrics.jsonl").read_text().splitlines()
    assert [MetricPoint.model_validate_json(line) for line in metric_lines] == res.metrics
    assert (lora_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (lora_run / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-110", "checkpoint-120"]  # save_total_limit 2


@pytest.mark.slow
def test_merged_model_matches_the_adapter(lora_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lora_run / "output" / "adapter")
    prompt = tokenizer.apply_chat_template(code_examples(3)[0]["messages"][:2], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                        lora_run / "output" / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(lora_run / "output" / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**prompt).logits, merged(**prompt).logits, atol=1e-4, rtol=1e-4)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in merged.generation_config.eos_token_id


@pytest.mark.slow
def test_kill_9_then_resume_finishes_like_an_uninterrupted_run(tmp_path, lora_config, lora_run):
    run_dir = tmp_path / "run"
    process = start(run_dir, lora_config)
    checkpoint = wait_for_event(process, run_dir, "checkpoint")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "result.json").exists()
    # A checkpoint cut short by the kill must be skipped: fake one newer than any complete one.
    (run_dir / "checkpoints" / "checkpoint-999").mkdir()

    resumed = run(run_dir, lora_config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run_dir / "checkpoints" / "checkpoint-999").exists()
    res, reference = result(run_dir), result(lora_run)
    assert res.raw["global_step"] == reference.raw["global_step"] == 120
    running = [e for e in events(run_dir) if e["kind"] == "running"]
    assert running[0]["step"] == 0 and running[1]["step"] >= checkpoint["step"]
    # Same data order and state: the whole curve, before and after the kill, is the uninterrupted one.
    for name in ("train_loss", "eval_loss"):
        ours, theirs = losses(res, name), losses(reference, name)
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=1e-4)
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.count("started") == 2 and kinds.count("done") == 1
    assert res.started_at.isoformat() == events(run_dir)[0]["time"]  # the first start, not the resume


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, lora_config):
    run_dir = tmp_path / "run"
    process = start(run_dir, lora_config | {"save_steps": 1000, "merge": False})
    wait_for_event(process, run_dir, "progress")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    last = events(run_dir)[-1]
    assert last["kind"] == "cancelled" and 0 < last["step"] < 120
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{last['step']}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == last["step"]
    res = result(run_dir)
    assert res.status is JobStatus.CANCELLED and res.error is None and res.output_model is None
    assert {a.kind for a in res.artifacts} >= {"checkpoint"}
    assert "Traceback" not in err


@pytest.mark.slow
def test_qlora_run_learns_and_merges_into_the_unquantized_base(tmp_path, tiny_model_dir, data):
    import torch
    from ftbroker.backends.local import masking
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "run"
    config = LORA | {"model": str(tiny_model_dir), "dataset": str(data["train"]),
                     "validation_dataset": str(data["valid"]), "method": "qlora", "micro_batch_size": 8,
                     "padding_free": True, "save_steps": 0, "merge": True}
    done = run(run_dir, config)
    assert done.returncode == 0, done.stderr[-3000:]
    res = result(run_dir)
    evals = losses(res, "eval_loss")
    assert evals[-1][1] < evals[0][1] - 2.0, evals
    # The 4-bit gradient probe ran before the first step and after each epoch's evaluation, and passed.
    assert res.raw["gradient_checks"]["4bit_input_gradients"] >= 3

    merged_dir = run_dir / "output" / "merged"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert not any("4bit" in type(m).__name__ for m in merged.modules())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    total, count = 0.0, 0
    for row in code_examples(40, seed=1):
        example = masking.tokenize_example(tokenizer, row)
        with torch.no_grad():
            out = merged(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels]))
        total, count = total + out.loss.item() * example.trained_tokens, count + example.trained_tokens
    # The 4-bit and the unquantized merged model are not equal (NF4 rounding), but equally good.
    assert total / count == pytest.approx(evals[-1][1], rel=0.2)


@pytest.mark.slow
def test_full_fine_tune_with_packing(tmp_path, tiny_model_dir, data):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "run"
    config = {"model": str(tiny_model_dir), "dataset": str(data["train"]), "method": "full", "epochs": 3,
              "learning_rate": 3e-3, "lr_scheduler": "constant", "micro_batch_size": 2, "packing": True,
              "max_seq_length": 128, "eval_fraction": 0.2, "seed": 0, "logging_steps": 5,
              "early_stopping_patience": 2}
    done = run(run_dir, config)
    assert done.returncode == 0, done.stderr[-3000:]
    res = result(run_dir)
    evals = losses(res, "eval_loss")
    assert evals[-1][1] < evals[0][1] - 3.0, evals
    warnings = [e["message"] for e in events(run_dir) if e["kind"] == "warning"]
    assert any("without a FlashAttention kernel" in w for w in warnings)  # CPU: no varlen attention kernel
    model_dir = run_dir / "output" / "model"
    assert res.output_model == str(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(code_examples(1)[0]["messages"][:2], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    # It learned the format, and stops at its end-of-turn token (in generation_config.eos_token_id).
    assert generated[-1].item() == tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.decode(generated)
    assert len(generated) < 8


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


@pytest.mark.slow
def test_export_merged_is_a_plain_hf_folder(lora_run, tmp_path):
    from ftbroker.backends.local import export
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = export.export_merged(lora_run, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    assert not (dest / "adapter_config.json").exists()
    with pytest.raises(train.InputError, match="not empty"):
        export.export_merged(lora_run, dest)


@pytest.mark.slow
def test_export_ollama_merges_when_the_run_did_not(lora_run, tmp_path):
    from ftbroker.backends.local import export

    run_dir = tmp_path / "run"
    shutil.copytree(lora_run, run_dir, ignore=shutil.ignore_patterns("merged", "checkpoints"))
    modelfile = export.export_ollama(run_dir, tmp_path / "ollama")
    text = modelfile.read_text()
    assert f"FROM {tmp_path / 'ollama' / 'model'}\n" in text and (tmp_path / "ollama" / "model" / "config.json").exists()
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.2" in text
    # With the run's own merged folder, nothing is merged again: FROM points at it.
    assert f"FROM {lora_run / 'output' / 'merged'}\n" in export.export_ollama(lora_run, tmp_path / "o2").read_text()


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
