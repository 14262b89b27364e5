"""`ftbroker estimate` and the SDK call ``ftbroker.estimate(...)``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from estimate_fixtures import LLAMA31_8B
from ftbroker.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["estimate", *args])


def test_json_is_the_only_output_and_has_the_contract_keys():
    result = run("Llama-3.1-8B", "--method", "qlora", "--seq-len", "2048", "--batch", "4", "--gpu", "RTX 4090",
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"vram_gib", "breakdown", "fits", "tokens_per_s", "max_micro_batch", "max_seq_len"} <= set(data)
    assert data["fits"] is (data["vram_gib"] <= 24)
    assert data["breakdown"]["weights"] == pytest.approx(5.31, abs=0.01)
    assert data["tokens_per_s"]["low"] < data["tokens_per_s"]["expected"] < data["tokens_per_s"]["high"]
    assert data["setup"]["targets"][0] == "down_proj"


def test_explain_shows_each_term_with_its_formula():
    result = run("Llama-3.1-8B", "--method", "lora", "--targets", "q_proj,v_proj", "--lora-r", "8",
                 "--gpu", "RTX 4090:2", "--no-grad-checkpointing", "--explain")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "x 2 B (bf16)" in out and "LoRA params (r=8 on q_proj,v_proj)" in out
    assert "saved per token per layer" in out and "GFLOP per token" in out and "2 GPUs" in out


def test_plain_output_and_unknown_throughput():
    from ftbroker.pricing.catalog import user_override_path

    user_override_path().write_text(  # a card of the user's own whose tensor TFLOPS no datasheet gives
        '[[gpu]]\nname = "Mystery-24GB"\nmemory_gib = 24\nbandwidth_gbps = 600\nsupports_bf16 = true\n'
        'source = "my card"\nas_of = 2026-11-01\n')
    result = run("Llama-3.1-8B", "--method", "lora", "--gpu", "Mystery-24GB")
    assert result.exit_code == 0, result.output
    assert "tokens/s: unknown" in result.output and "total" in result.output
    assert "(ftbroker stack): micro-batch 4 x 2048 tokens, bf16, adamw, checkpointing" in " ".join(
        result.output.split())


def test_the_stack_sets_the_defaults_and_how_tensors_are_stored():
    def peak(*args):
        result = run("Llama-3.1-8B", "--method", "qlora", "--seq-len", "8192", "--batch", "1", *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    ours, hf, unsloth = peak(), peak("--stack", "hf"), peak("--stack", "unsloth")
    assert ours["setup"]["implementation"] == "trl-sft" and unsloth["setup"]["implementation"] == "unsloth"
    assert hf["breakdown"]["loss"] > 10 > ours["breakdown"]["loss"]  # fp32 logits vs TRL's chunked head
    assert hf["setup"]["grad_checkpointing"] is False and hf["setup"]["lora_r"] == 8  # the Trainer's, PEFT's
    assert unsloth["vram_gib"] < ours["vram_gib"] < hf["vram_gib"]  # offloaded checkpoints, fused loss
    assert peak("--stack", "hf", "--grad-checkpointing")["setup"]["grad_checkpointing"] is True  # flags win
    litgpt = peak("--stack", "litgpt")
    assert litgpt["setup"]["implementation"] == "litgpt" and litgpt["setup"]["grad_checkpointing"] is False
    assert litgpt["setup"]["lora_r"] == 8 and litgpt["setup"]["optimizer"] == "paged_adamw_32bit"
    assert litgpt["breakdown"]["optimizer"] == 0 < litgpt["breakdown"]["optimizer_paged"]  # bitsandbytes PagedAdamW


@pytest.mark.parametrize("args, message", [
    (["Llama-3.1-9B", "--method", "lora"], "did you mean 'Llama-3.1-8B'"),
    (["Llama-3.1-8B", "--method", "lora", "--gpu", "RTX 4091"], "unknown GPU"),
    (["Llama-3.1-8B", "--method", "lora", "--targets", "q_prj"], "did you mean 'q_proj'"),
    (["Llama-3.1-8B", "--method", "lora", "--optimizer", "lion"], "unknown optimizer 'lion' (valid: adamw, "),
    (["Llama-3.1-8B", "--method", "lora", "--gpu", "Z9"], "`ftbroker catalog show --kind gpus` lists them"),
    (["Nope-1B", "--method", "lora"], "`ftbroker catalog show --kind models` lists the catalog's"),
    (["Llama-3.1-8B", "--method", "lora", "--json", "--explain"], "--json and --explain cannot be combined"),
    (["Llama-3.1-8B", "--method", "full", "--sharding", "zero3"], "needs more than one GPU"),
    (["Llama-3.1-8B", "--method", "dora"], "Invalid value for '--method'"),
    (["Llama-3.1-8B", "--method", "lora", "--batch", "0"], "Invalid value for '--batch'"),
])
def test_bad_input_is_exit_2_with_a_specific_message(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_sdk_call_survives_importing_the_submodules():
    import ftbroker.estimate.memory

    e = ftbroker.estimate("Llama-3.1-8B", method="lora", gpu="RTX 4090", seq_len=512)
    assert e.fits and e.memory.total > 15
    assert ftbroker.estimate(LLAMA31_8B, method="qlora").fits is None  # no GPU: no verdict
