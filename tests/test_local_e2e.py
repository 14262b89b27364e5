"""The local route end to end through the CLI, with the REAL trainer on a tiny Llama (CPU): ``ftbroker run`` for LoRA,
QLoRA and full fine-tuning, ``result``, ``status``, ``logs``, ``export`` (merged, Ollama), kill -9 / cancel /
``resume``, and the pre-flight's refusals. One LoRA run is shared by the tests that only read what it produced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime

import pytest
from jobsupport import ftb, wait_for
from tinymodels import code_examples, write_jsonl

from ftbroker.backends.local.config import TrainConfig
from ftbroker.ledger import Ledger

pytestmark = pytest.mark.slow

RESULT_KEYS = {"id", "backend", "status", "model", "output_model", "metrics", "trained_tokens",
               "estimated_cost_usd", "actual_cost_usd", "started_at", "finished_at", "artifacts", "error", "raw"}
EVENT_KEYS = {"time", "kind", "step", "total_steps", "epoch", "loss", "eval_loss", "tokens_per_s", "eta_s", "message",
              "tracker"}
# 100 examples: 10 held out, 90 trained at micro-batch 4 -> 23 steps an epoch, 69 in all.
STEPS_PER_EPOCH, EPOCHS = 23, 3


def lora_flags(model) -> list[str]:
    return ["--backend", "local", "--model", str(model), "--method", "lora", "--epochs", str(EPOCHS),
            "--lr", "1e-2", "--micro-batch", "4", "--max-seq-len", "128", "--seed", "0", "--lora-r", "8",
            "--lora-alpha", "16", "--lora-dropout", "0", "--target-modules", "q_proj,k_proj,v_proj,o_proj"]


def ftbroker(home, *args, ok=(0,), timeout=300) -> subprocess.CompletedProcess:
    """The real command line, in its own process."""
    env = {**os.environ, "FTBROKER_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "ftbroker.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode in ok, (done.returncode, done.stderr[-4000:])
    return done


def events(run_dir) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_event(run_dir, kind: str, after: int = 0, timeout: float = 180) -> dict:
    """The first event of ``kind`` among the lines after the first ``after``."""
    try:
        return wait_for(lambda: [e for e in events(run_dir)[after:] if e["kind"] == kind], timeout=timeout,
                        interval=0.01)[0]
    except AssertionError:
        raise AssertionError(f"no {kind} event within {timeout} s: {events(run_dir)[-3:]}") from None


def curve(result: dict, name: str) -> list[tuple[int, float]]:
    return [(m["step"], m["value"]) for m in result["metrics"] if m["name"] == name]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-home")


@pytest.fixture
def in_home(home, monkeypatch):
    monkeypatch.setenv("FTBROKER_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-data")
    return {"train": write_jsonl(folder / "train.jsonl", code_examples(100)),
            "valid": write_jsonl(folder / "valid.jsonl", code_examples(24, seed=1))}


@pytest.fixture(scope="module")
def lora_job(home, data, tiny_model_dir):
    """One LoRA run through the real CLI, planned for a declared GPU under a budget (the CPU trains it)."""
    done = ftbroker(home, "run", data["train"], *lora_flags(tiny_model_dir), "--gpu", "RTX 4090",
                    "--max-cost", "1", "--yes", "--json")
    out = json.loads(done.stdout)
    out["stderr"] = done.stderr
    return out


def test_lora_run_learns_and_reports(lora_job, home):
    job, result = lora_job["job"], lora_job["result"]
    assert job["status"] == result["status"] == "succeeded" and set(result) == RESULT_KEYS
    assert "RTX-4090" in lora_job["stderr"]  # the quote was shown, for the declared GPU
    evals = curve(result, "eval_loss")
    assert [step for step, _ in evals] == [0, 23, 46, 69]  # at the start, then every epoch
    assert evals[-1][1] < evals[0][1] - 2.0, evals  # observed 6.3 -> 2.9
    assert curve(result, "train_loss")
    run_dir = home / "runs" / job["id"]
    assert result["output_model"] == str(run_dir / "output" / "adapter")
    assert {a["kind"] for a in result["artifacts"]} >= {"adapter", "checkpoint", "metrics", "plot"}
    # 90 trained examples, 2-5 trained tokens each ("IN5<|im_end|>"), 3 epochs
    assert 90 * 2 * 3 <= result["trained_tokens"] <= 90 * 5 * 3
    raw = result["raw"]
    assert raw["global_step"] == raw["total_steps"] == STEPS_PER_EPOCH * EPOCHS
    assert raw["gradient_checks"] == {"4bit_input_gradients": 0, "adapter_gradients": 1}
    assert raw["measured"]["device"] == "cpu" and raw["measured"]["peak_memory_kind"] == "peak_rss"

    lines = events(run_dir)
    assert all(set(line) == EVENT_KEYS for line in lines)
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "started" and kinds[-1] == "done" and kinds.count("done") == 1
    assert {"running", "progress", "eval", "checkpoint"} <= set(kinds)
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-46", "checkpoint-69"]  # one per epoch, the last two kept
    metric_lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metric_lines == result["metrics"]
    log = (run_dir / "trainer.log").read_text()  # the libraries' warnings as DEBUG lines, no progress bars
    assert "\r" not in log and "it/s]" not in log
    assert all(" DEBUG [" in line for line in log.splitlines() if "Warning" in line or "warn(" in line)


def test_estimate_and_measurement_sit_side_by_side_in_the_ledger(lora_job):
    job = lora_job["job"]
    resources = job["resources"]
    # planned for the declared RTX 4090: the estimator's figures, in the ledger before the run started
    assert 0.5 < resources["estimated_peak_vram_gib"] < 2  # a 130k-parameter model: mostly the CUDA context
    assert resources["estimated_allocated_gib"] < resources["estimated_peak_vram_gib"]
    assert resources["estimated_tokens_per_s"] > 0 and resources["estimated_hours"] > 0
    # trained on this machine's CPU: what the trainer measured
    assert 0.1 < resources["measured_peak_rss_gib"] < 8
    assert resources["measured_tokens_per_s"] > 0 and resources["measured_train_seconds"] > 0
    assert job["estimated_cost_usd"] == 0.0  # seconds of a 4090's power: under a cent
    assert lora_job["result"]["estimated_cost_usd"] == 0.0


def test_status_logs_result_commands(lora_job, in_home):
    job_id = lora_job["job"]["id"]
    assert json.loads(ftb("result", job_id, "--json").stdout) == lora_job["result"]
    status = json.loads(ftb("status", job_id[:9], "--json").stdout)
    assert status["status"] == "succeeded" and status["progress"]["step"] == STEPS_PER_EPOCH * EPOCHS
    logged = [json.loads(line) for line in ftb("logs", job_id, "--json").stdout.splitlines()]
    kinds = [e["kind"] for e in logged]
    assert {"started", "running", "progress", "eval", "checkpoint", "done"} <= set(kinds)
    assert next(e for e in logged if e["kind"] == "eval")["data"]["eval_loss"] > 0
    assert "final eval_loss" in ftb("result", job_id).stdout


def test_export_merged_and_ollama(lora_job, in_home, tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = lora_job["job"]["id"]
    (tmp_path / "merged.partial").mkdir()  # the user's own folder, whose name an export once used for itself
    (tmp_path / "merged.partial" / "keep.txt").write_text("mine")
    merged = json.loads(ftb("export", job_id, "--format", "merged", "-o", tmp_path / "merged", "--json").stdout)
    assert (tmp_path / "merged.partial" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if "ftbroker" in p.name) == []  # no folder of ours left
    assert merged["artifacts"] == [{"kind": "merged_model", "uri": str(tmp_path / "merged"),
                                    "description": "merged Hugging Face folder"}]
    adapter = lora_job["result"]["output_model"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    prompt = tokenizer.apply_chat_template(code_examples(3)[0]["messages"][:2], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(**prompt).logits, model(**prompt).logits, atol=1e-4, rtol=1e-4)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id

    exported = ftbroker(in_home, "export", job_id, "--format", "ollama", "-o", tmp_path / "ollama")
    assert exported.stderr == ""  # the libraries' warnings and bars are in the run folder's export.log
    out = exported.stdout
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    assert f"file: {tmp_path / 'ollama' / 'Modelfile'}" in out
    assert f"FROM {tmp_path / 'ollama' / 'model'}\n" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0.2" in modelfile
    AutoModelForCausalLM.from_pretrained(tmp_path / "ollama" / "model")  # what FROM points at loads
    assert "not empty" in ftb("export", job_id, "--format", "merged", "-o", tmp_path / "merged", ok=(2,)).stderr
    with Ledger() as ledger:
        kinds = {a.kind for a in ledger.artifacts(job_id)}
    assert {"merged_model", "file"} <= kinds


def test_kill_9_cancel_and_resume_finish_like_an_uninterrupted_run(lora_job, home, in_home, data, tiny_model_dir):
    job_id = json.loads(ftbroker(home, "run", data["train"], *lora_flags(tiny_model_dir), "--yes", "--detach",
                                 "--json").stdout)["job"]["id"]
    run_dir = home / "runs" / job_id
    first = wait_for_event(run_dir, "checkpoint")  # the end of epoch 1
    os.kill(int((run_dir / "trainer.pid").read_text()), signal.SIGKILL)
    status = wait_for(lambda: (s := json.loads(ftb("status", job_id, "--json").stdout))["status"] != "running" and s,
                      timeout=30, interval=0.1)
    assert status["status"] == "failed" and "ended without finishing" in status["error"]

    seen = len(events(run_dir))
    assert json.loads(ftb("resume", job_id, "--detach", "--json").stdout)["job"]["status"] == "running"
    resumed = wait_for_event(run_dir, "running", after=seen)
    assert resumed["step"] == first["step"]  # continued from the checkpoint
    wait_for_event(run_dir, "progress", after=seen)
    cancelled = json.loads(ftb("cancel", job_id, "--json").stdout)
    assert cancelled["status"] == "cancelled"
    stop = events(run_dir)[-1]  # SIGTERM: a checkpoint at the step reached, then the final line
    assert stop["kind"] == "cancelled" and first["step"] < stop["step"] < STEPS_PER_EPOCH * EPOCHS
    state = json.loads((run_dir / "checkpoints" / f"checkpoint-{stop['step']}" / "trainer_state.json").read_text())
    assert state["global_step"] == stop["step"]

    result = json.loads(ftb("resume", job_id, "--json").stdout)["result"]
    reference = lora_job["result"]
    assert result["status"] == "succeeded"
    assert result["raw"]["global_step"] == reference["raw"]["global_step"] == STEPS_PER_EPOCH * EPOCHS
    running = [e["step"] for e in events(run_dir) if e["kind"] == "running"]
    assert running == [0, first["step"], stop["step"]]
    # Same data order and state: the whole curve, across a kill and a cancel, is the uninterrupted one; except
    # the first train loss logged after each resume, which averages only the steps since that resume.
    window = TrainConfig.model_fields["logging_steps"].default
    partial = {s for s, _ in curve(result, "train_loss") for r in running[1:] if s - window < r < s}
    for name in ("train_loss", "eval_loss"):
        ours, theirs = curve(result, name), curve(reference, name)
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        assert [v for s, v in ours if s not in partial] == \
            pytest.approx([v for s, v in theirs if s not in partial], rel=1e-4)
    kinds = [e["kind"] for e in events(run_dir)]
    assert kinds.count("started") == 3 and kinds.count("done") == 1 and kinds.count("cancelled") == 1
    first_start = datetime.fromisoformat(events(run_dir)[0]["time"])
    assert datetime.fromisoformat(result["started_at"]) == first_start  # the first start, not a resume


def test_qlora_learns_and_merges_into_the_unquantized_base(home, data, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftbroker.backends.local import masking

    done = ftbroker(home, "run", data["train"], "--validation", data["valid"], *lora_flags(tiny_model_dir),
                    "--method", "qlora", "--micro-batch", "8", "--option", "merge=true", "--yes", "--json")
    result = json.loads(done.stdout)["result"]
    evals = curve(result, "eval_loss")
    assert evals[-1][1] < evals[0][1] - 2.0, evals
    # The 4-bit gradient probe ran before the first step and after each epoch's evaluation, and passed.
    assert result["raw"]["gradient_checks"]["4bit_input_gradients"] >= 3

    merged_dir = result["output_model"]
    assert merged_dir.endswith("merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert not any("4bit" in type(m).__name__ for m in merged.modules())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    total, count = 0.0, 0
    for row in code_examples(24, seed=1):
        example = masking.tokenize_example(tokenizer, row)
        with torch.no_grad():
            out = merged(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels]))
        total, count = total + out.loss.item() * example.trained_tokens, count + example.trained_tokens
    # The 4-bit and the unquantized merged model are not equal (NF4 rounding), but equally good.
    assert total / count == pytest.approx(evals[-1][1], rel=0.2)


def test_full_fine_tune_with_packing_learns_to_stop(home, data, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done = ftbroker(home, "run", data["train"], "--model", tiny_model_dir, "--method", "full", "--epochs", "3",
                    "--lr", "3e-3", "--micro-batch", "2", "--packing", "--max-seq-len", "128", "--seed", "0",
                    "--early-stopping-patience", "2", "--yes", "--json")
    out = json.loads(done.stdout)
    result, job_id = out["result"], out["job"]["id"]
    evals = curve(result, "eval_loss")
    assert evals[-1][1] < evals[0][1] - 3.0, evals
    warnings = [e["message"] for e in events(home / "runs" / job_id) if e["kind"] == "warning"]
    assert any("without a FlashAttention kernel" in w for w in warnings)  # CPU: no varlen attention kernel
    assert result["output_model"] == str(home / "runs" / job_id / "output" / "model")
    model = AutoModelForCausalLM.from_pretrained(result["output_model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(result["output_model"])
    prompt = tokenizer.apply_chat_template(code_examples(1)[0]["messages"][:2], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    # It learned the format, and stops at its end-of-turn token (in generation_config.eos_token_id).
    assert generated[-1].item() == tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.decode(generated)
    assert len(generated) < 8
    # No GPU here and none declared: the quote said the CPU trains it, and the job's events keep the note.
    with Ledger(home / "ledger.sqlite3") as ledger:
        notes = [e.message for _, e in ledger.events(job_id) if e.kind == "warning"]
    assert any(n.startswith("no GPU found: the trainer runs on the CPU") for n in notes)
    assert "hardware" in done.stderr and "CPU" in done.stderr


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method, lr", [("lora", "1e-2"), ("qlora", "1e-2"), ("full", "3e-3")])
def test_on_a_gpu_it_learns_and_the_estimate_sits_beside_the_measured_vram(home, data, tiny_model_dir, method, lr):
    out = json.loads(ftbroker(home, "run", data["train"], *lora_flags(tiny_model_dir), "--method", method,
                              "--lr", lr, "--yes", "--json").stdout)
    measured, resources = out["result"]["raw"]["measured"], out["job"]["resources"]
    assert measured["device"] == "cuda" and measured["precision"] in ("bf16", "fp16")
    evals = curve(out["result"], "eval_loss")
    assert evals[-1][1] < evals[0][1] - 1.0, evals
    # planned for the GPU nvidia-smi shows, measured with torch.cuda on the same card
    assert resources["estimated_peak_vram_gib"] > resources["measured_peak_vram_reserved_gib"] > 0
    assert 0 < resources["measured_peak_vram_allocated_gib"] <= resources["measured_peak_vram_reserved_gib"]
    assert resources["estimated_tokens_per_s"] > 0 and resources["measured_tokens_per_s"] > 0
