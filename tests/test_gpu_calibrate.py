"""bench/gpu_calibrate.py: the CPU smoke path through the local trainer's code, and the --fit arithmetic."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from ftbroker.backends.local.config import TrainConfig
from ftbroker.estimate.calibration import Calibration, TrainerTiming, default_calibration, parse_calibration
from ftbroker.estimate.compute import throughput
from ftbroker.estimate.memory import GIB, estimate_memory
from ftbroker.estimate.setup import ModelShape, TrainingSetup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import estimator_accuracy  # noqa: E402
import gpu_calibrate as gc  # noqa: E402


def test_a_tiny_case_trains_through_the_local_trainer_and_reports(tmp_path):
    """One QLoRA case (the longest path: bitsandbytes, the trainer's gradient guard); bench/gpu_check.sh --cpu runs
    every tiny case, and the trainer's own tests cover the methods."""
    plan = gc.TINY_PLAN
    cases = [c for c in plan.cases if c.method == "qlora"]
    results = tmp_path / "tiny.jsonl"
    gc.worker(cases, plan, tmp_path, results, deadline=time.time() + 120)
    meta, records = gc.collect(cases, gc.read_lines(results), "the worker died")
    assert meta["device"] == "cpu" and meta["versions"]["trl"]
    assert [r["status"] for r in records] == ["ok"], [r.get("reason") for r in records]
    (record,) = records
    measured = record["measured"]
    ends = measured["step_ends_s"]
    assert len(ends) == plan.steps and 0 < ends[0] and ends == sorted(ends) and measured["tokens_per_s"] > 0
    assert len(measured["losses"]) == plan.steps and all(math.isfinite(x) for x in measured["losses"])
    assert record["tokens_per_step"] == 64 * 2 and record["estimate"]["allocated_gib"] > 0
    assert gc.setup_from_json(record["setup"]).method == "qlora"
    assert record["setup"]["precision"] == "fp32"  # the trainer trains in fp32 on a CPU
    assert not (tmp_path / gc.TINY_ARCH.name).exists()  # the model folder is removed after its cases
    text = gc.report(meta, records)
    assert "tiny-llama/qlora/64x2" in text and "device: cpu" in text


def test_the_validation_cases_are_new_and_fit_the_h200():
    fitted_on = {c.id for c in gc.GPU_PLAN.cases}
    assert 4 <= len(gc.VALIDATE_PLAN.cases) <= 6 and not fitted_on & {c.id for c in gc.VALIDATE_PLAN.cases}
    assert gc.PLANS[False, "validate"] is gc.VALIDATE_PLAN and gc.PLANS[True, "validate"] is gc.TINY_VALIDATE_PLAN
    assert len({c.model for c in gc.VALIDATE_PLAN.cases}) <= 2  # one model build per model: the time budget
    h200, archs = estimator_accuracy.load_gpus()["H200"], gc.architectures()
    for case in gc.VALIDATE_PLAN.cases:
        setup = TrainConfig(model="m", dataset="d", method=case.method, micro_batch_size=case.micro_batch,
                            max_seq_len=case.seq_len,
                            gradient_checkpointing=case.checkpointing).training_setup("bf16")
        assert estimate_memory(archs[case.model], setup.with_(impl=gc.BENCH_IMPL)).total < h200.memory_gib


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
    config = TrainConfig(model="m", dataset="d.jsonl", method="full", micro_batch_size=2, max_seq_len=512,
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
# The constants the synthetic measurements below are generated from; the fit must find them again.
TRUE_TIMING = TrainerTiming(on="synthetic", implementation="trl-sft", gpu_class="datacenter", peak_tflops=989.4,
                            device_efficiency=0.4, host_ms={"full": 3.0, "lora": 5.0, "qlora": 6.0},
                            overlap=gc.OVERLAP, dequant_bytes_per_param=gc.DEQUANT_BYTES_PER_PARAM,
                            allocator_overhead={}, cuda_context_gib=0.0)


def _record(case, reserved_ratio: float, context_gib: float, truth: Calibration, gpu) -> dict:
    config = TrainConfig(model="m", dataset="d.jsonl", method=case.method, micro_batch_size=case.micro_batch,
                         max_seq_len=case.seq_len, gradient_checkpointing=case.checkpointing)
    setup = config.training_setup("bf16").with_(impl=gc.BENCH_IMPL)
    tokens_per_s = throughput(gc.architectures()[case.model], gpu, setup, truth).tokens_per_s_per_gpu.expected
    allocated = 10 * GIB
    return {"id": case.id, "case": asdict(case), "status": "ok", "device": "cuda", "setup": gc._setup_json(setup),
            "tokens_per_step": case.seq_len * case.micro_batch,
            "measured": {"max_allocated": allocated, "max_reserved": allocated * reserved_ratio,
                         "context": context_gib * GIB, "tokens_per_s": tokens_per_s}}


def test_fit_finds_the_step_time_constants_and_the_memory_readings_again():
    gpus = estimator_accuracy.load_gpus()
    h200 = gpus["H200"]
    base = default_calibration()
    truth = replace(base, trainer=TRUE_TIMING)
    cases = [gc.Case(model, method, seq, batch, ckpt) for model, seq, batch, ckpt in
             (("Llama-3.2-1B", 512, 1, False), ("Llama-3.2-1B", 2048, 4, False), ("Qwen2.5-7B", 2048, 4, True))
             for method in gc.METHODS]
    ratios = {"full": (1.08, 1.10, 1.30), "lora": (1.02, 1.01, 1.03), "qlora": (1.0, 1.02, 1.05)}
    records = [_record(c, ratios[c.method][i // 3], 0.7 + 0.01 * i, truth, h200) for i, c in enumerate(cases)]
    records.append({"id": "x", "case": {"model": "Llama-3.2-1B", "method": "full"}, "status": "oom", "device": "cuda"})
    fitted, lines = gc.fit({"meta": H200_META, "cases": records, "date": "2026-12-01"}, base, "bench/results/r.json")

    t = fitted.trainer
    assert t.host_ms == pytest.approx(TRUE_TIMING.host_ms, rel=0.02)
    assert t.device_efficiency == pytest.approx(0.4, rel=0.02)
    assert t.allocator_overhead == pytest.approx({"full": 0.10, "lora": 0.02, "qlora": 0.02})
    assert t.cuda_context_gib == pytest.approx(0.74) and t.gpu_class == "datacenter" and t.implementation == "trl-sft"
    assert "NVIDIA H200" in t.on and "r.json, 9 cases" in t.on
    assert any("host ms per layer-pass: full 3.0" in line for line in lines)
    # the published constants are kept; the measured ones apply to the local trainer only
    assert (fitted.allocator_overhead, fitted.mfu) == (base.allocator_overhead, base.mfu)
    assert fitted.memory_constants("trl-sft", "full") == (1.0, t.allocator_overhead["full"], t.cuda_context_gib)
    assert fitted.memory_constants("torchtune", "full") == (base.activation_scale, base.allocator_overhead,
                                                            base.cuda_context_gib)
    # an H100 SXM (same class and die) gets the measured device efficiency; a workstation card the published
    # workstation/datacenter ratio of it; another implementation the published efficiency
    assert fitted.device_efficiency("trl-sft", "lora", "datacenter") == t.device_efficiency
    assert fitted.device_efficiency("trl-sft", "full", "workstation") == pytest.approx(
        t.device_efficiency * base.efficiency("full", "workstation") / base.efficiency("full", "datacenter"))
    assert fitted.device_efficiency("torchtune", "full", "datacenter") == base.efficiency("full", "datacenter")
    # written and read back, the [trainer] part survives; the published-run refit keeps it
    assert replace(parse_calibration(estimator_accuracy.calibration_toml(fitted), "t"), source=fitted.source) == fitted
    assert estimator_accuracy.fit_memory(estimator_accuracy.load_points(), fitted).trainer == t


def test_host_bound_steps_do_not_speed_up_with_more_tokens():
    """Launch-bound: a 1B LoRA step of 512 tokens takes nearly as long as one of 2048 (measured: 162 vs 171 ms)."""
    cal = replace(default_calibration(), trainer=TRUE_TIMING)
    h200, arch = estimator_accuracy.load_gpus()["H200"], gc.architectures()["Llama-3.2-1B"]
    setup = TrainingSetup("lora", seq_len=512, grad_checkpointing=False, lora_dropout=0.05, impl=gc.BENCH_IMPL)
    small, large = (throughput(arch, h200, setup.with_(micro_batch=b), cal) for b in (1, 4))
    host = 5.0e-3 * 16 * 2
    assert host < small.step_seconds < 1.1 * host and small.step_seconds < large.step_seconds < 1.3 * host
    assert large.tokens_per_s_per_gpu.expected > 3 * small.tokens_per_s_per_gpu.expected


def test_fit_refuses_results_without_a_gpu_measurement(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"meta": {"device": "cpu"}, "cases": [{"status": "ok", "device": "cpu"}]}))
    assert gc.main(["--fit", str(path)]) == 2
