"""bench/gpu_calibrate.py: the CPU smoke path through the local trainer's code, and the --fit arithmetic."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ftbroker.backends.local.config import TrainConfig
from ftbroker.estimate.calibration import default_calibration, parse_calibration
from ftbroker.estimate.compute import flops_per_token, peak_tflops, throughput
from ftbroker.estimate.memory import GIB
from ftbroker.estimate.setup import ModelShape

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import estimator_accuracy  # noqa: E402
import gpu_calibrate as gc  # noqa: E402


def test_tiny_cases_train_through_the_local_trainer_and_report(tmp_path):
    plan = gc.TINY_PLAN
    results = tmp_path / "tiny.jsonl"
    gc.worker(plan.cases, plan, tmp_path, results, deadline=time.time() + 120)
    meta, records = gc.collect(plan.cases, gc.read_lines(results), "the worker died")
    assert meta["device"] == "cpu" and meta["versions"]["trl"]
    assert [r["status"] for r in records] == ["ok", "ok", "ok"], [r.get("reason") for r in records]
    for record in records:
        measured = record["measured"]
        ends = measured["step_ends_s"]
        assert len(ends) == plan.steps and 0 < ends[0] and ends == sorted(ends) and measured["tokens_per_s"] > 0
        assert len(measured["losses"]) == plan.steps and all(math.isfinite(x) for x in measured["losses"])
        assert record["tokens_per_step"] == 64 * 2 and record["estimate"]["allocated_gib"] > 0
        assert gc.setup_from_json(record["setup"]).method == record["case"]["method"]
    assert records[0]["setup"]["precision"] == "fp32"  # the trainer trains in fp32 on a CPU
    assert not (tmp_path / gc.TINY_ARCH.name).exists()  # the model folder is removed after its cases
    text = gc.report(meta, records)
    assert "tiny-llama/qlora/64x2" in text and "device: cpu" in text


def test_a_case_the_estimator_says_will_not_fit_is_skipped_not_run(tmp_path):
    case = gc.TINY_PLAN.cases[0]
    record = gc.measure_case(case, gc.TINY_ARCH, tmp_path / "no-model", tmp_path, gc.TINY_PLAN, None, memory_gib=0.001)
    assert record["status"] == "skipped" and "> the card's 0.0 GiB" in record["reason"] and "measured" not in record


def test_the_built_models_have_the_catalog_shapes():
    import torch
    from transformers import AutoModelForCausalLM

    class Ids:
        pad_token_id, eos_token_id = 0, 1

    archs = gc.architectures()
    for name in ("Llama-3.2-1B", "Qwen2.5-7B"):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(gc.hf_config(archs[name], Ids()))
        assert type(model).__name__ == ("Qwen2ForCausalLM" if name.startswith("Qwen") else "LlamaForCausalLM")
        assert sum(p.numel() for p in model.parameters()) == ModelShape(archs[name]).total_params


def test_the_estimator_sees_a_trainer_config_as_the_trainer_runs_it():
    config = TrainConfig(model="m", dataset="d.jsonl", method="full", micro_batch_size=2, max_seq_length=512,
                         gradient_checkpointing=True)
    setup = config.training_setup("bf16")
    assert (setup.precision, setup.micro_batch, setup.seq_len, setup.grad_checkpointing) == ("amp", 2, 512, True)
    lora = config.model_copy(update={"method": "qlora"}).training_setup("bf16")
    assert lora.precision == "bf16" and lora.lora_r == 16 and lora.lora_dropout == 0.05
    assert lora.lora_modules == frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"})
    assert config.model_copy(update={"method": "lora"}).training_setup("fp32").precision == "fp32"


def test_a_dead_worker_leaves_its_unmeasured_cases_marked():
    cases = gc.GPU_PLAN.cases[:3]
    lines = [{"meta": {"device": "cuda"}}, {"id": cases[0].id, "status": "ok"}, {"id": "other", "status": "ok"}]
    meta, records = gc.collect(cases, lines, "the worker exited with code -9 before this case")
    assert meta == {"device": "cuda"}
    assert [r["status"] for r in records] == ["ok", "not run", "not run"]
    assert records[1]["reason"] == "the worker exited with code -9 before this case"


def test_a_line_cut_short_by_a_kill_is_left_out(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"meta": {}}\n{"id": "a", "status": "ok"}\n{"id": "b", "sta')
    assert gc.read_lines(path) == [{"meta": {}}, {"id": "a", "status": "ok"}]


H200_META = {"device": "cuda", "gpu": "NVIDIA H200", "memory_gib": 139.8,
             "versions": {"torch": "2.11.0+cu130", "transformers": "5.24.0", "trl": "1.16.0"}}


def _record(case, tokens_per_s: float, reserved_ratio: float, context_gib: float) -> dict:
    config = TrainConfig(model="m", dataset="d.jsonl", method=case.method, micro_batch_size=case.micro_batch,
                         max_seq_length=case.seq_len, gradient_checkpointing=case.checkpointing)
    allocated = 10 * GIB
    return {"id": case.id, "case": {"model": case.model, "method": case.method}, "status": "ok", "device": "cuda",
            "setup": gc._setup_json(config.training_setup("bf16")), "tokens_per_step": case.seq_len * case.micro_batch,
            "measured": {"max_allocated": allocated, "max_reserved": allocated * reserved_ratio,
                         "context": context_gib * GIB, "tokens_per_s": tokens_per_s}}


def test_fit_pins_the_allocator_overhead_the_context_and_the_trainer_efficiency():
    archs, gpus = gc.architectures(), estimator_accuracy.load_gpus()
    h200 = gpus["H200"]
    base = default_calibration()
    lora, qlora, small = (gc.Case("Llama-3.2-1B", "lora", 2048, 4), gc.Case("Llama-3.2-1B", "qlora", 2048, 4),
                          gc.Case("Llama-3.2-1B", "lora", 512, 1))

    def setup(case):
        return TrainConfig(model="m", dataset="d", method=case.method, micro_batch_size=case.micro_batch,
                           max_seq_length=case.seq_len, gradient_checkpointing=case.checkpointing
                           ).training_setup("bf16")

    arch = archs["Llama-3.2-1B"]
    # LoRA at 30% of the peak: tokens/s = 0.3 x peak / FLOPs per token (no dequantization term)
    lora_tps = 0.3 * peak_tflops(h200) * 1e12 / flops_per_token(arch, setup(lora)).total
    # QLoRA: pick a measured step of 1.5 x LoRA's; the fit must reproduce it through the dequantization model
    qlora_tps = lora_tps / 1.5
    records = [_record(lora, lora_tps, 1.10, 0.5), _record(qlora, qlora_tps, 1.20, 0.6),
               _record(small, lora_tps / 20, 1.30, 0.7),  # launch-bound: kept out of the efficiency median
               {"id": "x", "case": {"model": "Llama-3.2-1B", "method": "full"}, "status": "oom", "device": "cuda"}]
    fitted, lines = gc.fit({"meta": H200_META, "cases": records, "date": "2026-12-01"}, base, "bench/results/r.json")

    assert fitted.allocator_overhead == pytest.approx(0.2) and fitted.cuda_context_gib == pytest.approx(0.6)
    assert fitted.measured_impl == "trl-sft" and fitted.measured_peak_tflops == pytest.approx(989.4)
    assert fitted.measured_mfu["lora"] == pytest.approx(0.3, abs=1e-3) and "full" not in fitted.measured_mfu
    assert "NVIDIA H200" in fitted.measured_on and "r.json, 3 cases" in fitted.measured_on
    # the fitted calibration predicts the measured tokens/s of the local trainer on this GPU ...
    for case, tps in ((lora, lora_tps), (qlora, qlora_tps)):
        predicted = throughput(arch, h200, setup(case), fitted).tokens_per_s_per_gpu.expected
        assert predicted == pytest.approx(tps, rel=5e-3)
    # ... and on a GPU with the same peak, but not on an A100 or for another implementation
    assert throughput(arch, gpus["H100-SXM5"], setup(lora), fitted).efficiency == pytest.approx(
        fitted.measured_mfu["lora"], rel=1e-6)
    assert throughput(arch, gpus["A100-SXM4-80GB"], setup(lora), fitted).efficiency == pytest.approx(
        throughput(arch, gpus["A100-SXM4-80GB"], setup(lora), base).efficiency)
    assert fitted.measured_efficiency("hf", "lora", 989.4) is None
    assert any("no case with >= 2048 tokens" in line for line in lines if "full" in line)
    table = gc.report(H200_META, records)
    assert "NVIDIA H200 (139.8 GiB, bench row H200)" in table
    assert next(line for line in table.splitlines() if line.startswith(lora.id)).endswith("30.0%")
    # written and read back, the [measured] part survives; the published-run fit keeps the GPU's memory readings
    assert replace(parse_calibration(estimator_accuracy.calibration_toml(fitted), "t"), source=fitted.source) == fitted
    refit = estimator_accuracy.fit_memory(estimator_accuracy.load_points(), fitted)
    assert (refit.allocator_overhead, refit.cuda_context_gib) == (0.2, 0.6) and refit.measured_mfu == fitted.measured_mfu


def test_fit_refuses_results_without_a_gpu_measurement(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"meta": {"device": "cpu"}, "cases": [{"status": "ok", "device": "cpu"}]}))
    assert gc.main(["--fit", str(path)]) == 2
