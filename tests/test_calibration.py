"""Calibrated by the user's own runs: the rule (``ftbroker.estimate.measured``) on hand-made runs, and the whole loop
on the real trainer: the tiny model trained twice through ``ftbroker run --route``, the ledger keeping each estimate
beside its measurement, and the next plan's figures moving towards what was measured."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from tinymodels import code_examples, write_jsonl

import ftbroker
from ftbroker.backends.local.results import measured_resources
from ftbroker.cli import cli
from ftbroker.estimate import measured
from ftbroker.estimate.measured import Corrections, MeasuredRun, factor, measured_run
from ftbroker.ledger import Ledger
from ftbroker.pricing.catalog import load_catalog
from ftbroker.your_runs import measured_runs


def resources(**changes):
    base = {"estimated_gpu": "RTX-4090", "stack": "ftbroker", "estimated_allocated_gib": 10.0,
            "estimated_tokens_per_s": 1000.0, "measured_peak_vram_allocated_gib": 12.0, "measured_tokens_per_s": 500.0,
            "measured_gpu": "NVIDIA GeForce RTX 4090"}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


# ---------------------------------------------------------------------------------------------- the rule

def test_a_run_is_read_as_ratios_measured_over_estimated():
    run = measured_run("j1", "lora", resources(), measured_on="RTX-4090")
    assert run == MeasuredRun("j1", "RTX-4090", "lora", "ftbroker", memory_ratio=1.2, time_ratio=2.0)


def test_a_correction_already_in_the_estimate_is_divided_out_so_corrections_never_compound():
    # quoted with +10% memory and x1.5 time: the raw estimate was 10 GiB and 1,500 tokens/s
    run = measured_run("j2", "lora", resources(estimated_allocated_gib=11.0, estimated_tokens_per_s=1000.0,
                                               applied_memory_factor=1.1, applied_time_factor=1.5),
                       measured_on="RTX-4090")
    assert run.memory_ratio == pytest.approx(1.2) and run.time_ratio == pytest.approx(3.0)


@pytest.mark.parametrize("why, changes, measured_on", [
    ("trained on the CPU: no CUDA peak", {"measured_peak_vram_allocated_gib": None}, None),
    ("measured on another card than the one estimated for", {}, "A100-SXM4-80GB"),
    ("no GPU estimate (a quote for the CPU)", {"estimated_gpu": None}, "RTX-4090"),
    ("the user's own recipe is another stack", {"stack": None}, "RTX-4090"),
])
def test_runs_that_say_nothing_about_the_estimate_do_not_count(why, changes, measured_on):
    assert measured_run("j", "lora", resources(**changes), measured_on) is None, why


def test_the_factor_is_the_median_shrunk_toward_one_and_bounded():
    assert factor([]) == 1.0
    assert factor([1.5]) == pytest.approx(1.5 ** (1 / 3))  # one run: a third of the way (log scale)
    assert factor([1.4, 1.5, 9.0]) == pytest.approx(1.5 ** (3 / 5))  # the median: one odd run does not drag it
    assert factor([1.5] * 10) == pytest.approx(1.5 ** (10 / 12))
    assert factor([100.0] * 50) == measured.MAX_FACTOR and factor([0.001] * 50) == 1 / measured.MAX_FACTOR


def test_corrections_are_kept_per_gpu_method_and_stack_and_say_what_they_do():
    runs = [MeasuredRun(f"j{i}", "RTX-4090", "lora", "ftbroker", 1.1, 0.7) for i in range(3)]
    runs.append(MeasuredRun("q", "RTX-4090", "qlora", "ftbroker", None, 1.3))
    found = Corrections.from_runs(runs)
    lora = found.get("RTX-4090", "lora", "ftbroker")
    assert lora.describe() == "calibrated on 3 of your runs: +6% memory, -19% time"
    assert found.get("RTX-4090", "qlora", "ftbroker").describe() == "calibrated on 1 of your run: +9% time"
    assert found.get("RTX-4090", "lora", "unsloth") is None and found.get("H100-SXM", "lora", "ftbroker") is None
    base = ftbroker.estimate("Llama-3.1-8B", method="lora", gpu="RTX-4090")
    fixed = ftbroker.estimate("Llama-3.1-8B", method="lora", gpu="RTX-4090", corrections=found)
    assert fixed.memory.allocated == pytest.approx(base.memory.allocated * lora.memory)
    assert sum(fixed.memory.components().values()) == pytest.approx(fixed.memory.total)  # "your runs" is a term
    assert fixed.throughput.tokens_per_s.expected == pytest.approx(base.throughput.tokens_per_s.expected / lora.time)
    other = ftbroker.estimate("Llama-3.1-8B", method="lora", gpu="RTX-4090", stack="unsloth", corrections=found)
    assert other.memory.your_runs == 0  # the runs were made with ftbroker's trainer


# ---------------------------------------------------------------------------------------------- the loop

MEMORY_SEEN, TIME_SEEN = 1.2, 1.5  # what the "RTX 4090" measures against the raw estimate


def ftb(*args):
    done = CliRunner().invoke(cli, [str(a) for a in args])
    assert done.exit_code == 0, (done.exit_code, done.output, done.exception)
    return done.stdout


def llama(doc) -> dict:
    return next(r for r in doc["routes"] if r["id"] == "local:Llama-3.1-8B:lora:RTX-4090x1")


def measured_on_a_4090(job_id: str) -> None:
    """What the trainer would have recorded on an RTX 4090 (this machine has no GPU: the CPU trained, and a CPU
    measurement rightly counts for nothing), written as the local backend's poll writes it: the trainer's
    ``raw.measured`` named by ``measured_resources``, merged into the job's resources by the ledger."""
    with Ledger() as ledger:
        quoted = ledger.get(job_id).resources
        raw_allocated = quoted["estimated_allocated_gib"] / quoted.get("applied_memory_factor", 1.0)
        raw_tokens_per_s = quoted["estimated_tokens_per_s"] * quoted.get("applied_time_factor", 1.0)
        trainer = {"device": "cuda", "peak_memory_bytes": raw_allocated * MEMORY_SEEN * 2**30,
                   "cuda_max_reserved_bytes": raw_allocated * MEMORY_SEEN * 1.1 * 2**30,
                   "tokens_per_s": raw_tokens_per_s / TIME_SEEN, "train_seconds": 5.0,
                   "gpu": "NVIDIA GeForce RTX 4090"}
        ledger.update(job_id, resources=measured_resources({"raw": {"measured": trainer}}))


@pytest.mark.slow
def test_two_runs_of_the_tiny_model_move_the_next_plans_towards_what_was_measured(tmp_path, tiny_model_dir,
                                                                                  catalog_day, summary_line):
    data = write_jsonl(tmp_path / "train.jsonl", code_examples(40))
    plan_args = ("plan", data, "--model", tiny_model_dir, "--model", "Llama-3.1-8B", "--method", "lora",
                 "--gpu", "RTX-4090", "--json")
    plans = [json.loads(ftb(*plan_args))]
    tiny = next(r for r in plans[0]["routes"] if r["kind"] == "local" and r["model"] != "Llama-3.1-8B")
    ids = []
    for attempt in range(2):
        job = json.loads(ftb("run", "--route", tiny["number"], "--yes", "--json"))["job"]
        ids.append(job["id"])
        assert job["status"] == "succeeded" and job["resources"]["stack"] == "ftbroker"
        assert job["resources"]["estimated_gpu"] == "RTX-4090" and "measured_peak_rss_gib" in job["resources"]
        if attempt == 0:  # measured on the CPU: no correction
            assert json.loads(ftb("catalog", "calibration", "--json"))["corrections"] == []
        else:  # the second run was quoted with the first one's correction, and recorded it
            assert job["resources"]["applied_time_factor"] == pytest.approx(TIME_SEEN ** (1 / 3), rel=1e-3)
        measured_on_a_4090(job["id"])
        plans.append(json.loads(ftb(*plan_args)))

    with Ledger() as ledger:  # the ratios as the ledger holds them (the tiny model's GiB rounded to 3 decimals)
        runs = sorted(measured_runs(ledger, load_catalog()), key=lambda r: ids.index(r.job_id))
    assert [r.time_ratio for r in runs] == pytest.approx([TIME_SEEN] * 2, rel=1e-3)  # not compounded
    memory = [llama(p)["breakdown"]["vram_gib"]["allocated"] for p in plans]
    speed = [llama(p)["breakdown"]["tokens_per_s"] for p in plans]
    for n, (gib, tokens_per_s) in enumerate(zip(memory, speed, strict=True)):  # 0, 1/3, 1/2 of the way (log)
        assert gib == pytest.approx(memory[0] * factor([r.memory_ratio for r in runs[:n]]), rel=2e-3)
        assert tokens_per_s == pytest.approx(speed[0] / factor([r.time_ratio for r in runs[:n]]), rel=2e-3)
    assert speed[2] == pytest.approx(speed[0] / TIME_SEEN ** 0.5, rel=2e-3)
    assert memory[0] < memory[1] < memory[2] < memory[0] * MEMORY_SEEN  # towards what was measured, not past it
    assert llama(plans[2])["hours"] > llama(plans[0])["hours"]
    said = f"calibrated on 2 of your runs: {memory[2] / memory[0] - 1:+.0%} memory, +22% time"
    assert said in llama(plans[2])["notes"]
    assert re.search(r"RTX-4090 +lora +ftbroker +2 +\+10% +2 +\+22%", ftb("catalog", "calibration"))
    estimate = ftb("estimate", "Llama-3.1-8B", "--method", "lora", "--gpu", "RTX-4090")
    assert said in estimate  # estimate applies the same correction
    summary_line(f"calibration: Llama-3.1-8B LoRA on RTX 4090, allocated GiB {' -> '.join(f'{m:.2f}' for m in memory)}"
                 f", tokens/s {' -> '.join(f'{s:.0f}' for s in speed)} (measured: x{MEMORY_SEEN} memory, "
                 f"x{TIME_SEEN} time)")
