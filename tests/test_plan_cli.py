"""`ftbroker plan` and `ftbroker catalog` through the CLI, on real files with the real dataset layer: output shapes,
every number a user sees checked against the counts it comes from, exit codes, and light imports. On the frozen
catalog (tests/fixtures/frozen_catalog), whose prices and dates the hand-checked figures are; the README's sample
alone is the shipped catalog's."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import ftbroker
import pytest
from click.testing import CliRunner
from ftbroker import clock
from ftbroker.backends.base import Gpu
from ftbroker.cli import cli
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.gpu_routes import DEFAULT_GPU_MODELS
from ftbroker.plan_io import find_local_gpus
from ftbroker.pricing.catalog import load_catalog
from ftbroker.pricing.catalog.load import CATALOG_DIR_ENV
from ftbroker.routes import PLAN_EPOCHS

REPO = Path(__file__).resolve().parents[1]
README_DATE = date(2026, 11, 28)  # the day the README's sample was printed; the frozen catalog's routes are open then
pytestmark = pytest.mark.usefixtures("frozen_catalog")
EXAMPLES = REPO / "examples" / "data"
CHATS, HELD_OUT, PREFERENCES = (EXAMPLES / n for n in ("support_chats.jsonl", "support_chats_val.jsonl",
                                                       "support_preferences.jsonl"))
HEAVY = ("torch", "transformers", "openai", "together", "boto3", "botocore", "httpx", "httpx2", "huggingface_hub",
         "peft", "trl", "fireworks", "google.genai", "google.auth")
TRAINER = TrainConfig(model="m", dataset="d")  # the local trainer's defaults


def run(*args):
    """The command as a user runs it on README_DATE, when the frozen catalog's routes are as these tests expect."""
    return CliRunner(env={"COLUMNS": "200", clock.ENV: README_DATE.isoformat()}).invoke(
        cli, [str(a) for a in args], catch_exceptions=False)


def plan_json(*args) -> dict:
    result = run("plan", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(autouse=True)
def no_gpu_here(no_gpu):
    """Plans here see no GPU unless a test says otherwise (the machine running the tests might have one)."""


@pytest.fixture(scope="module")
def example(frozen_catalog):
    """The bundled example planned once for all the checks below (with a named GPU, so local routes are in)."""
    result = CliRunner(env={clock.ENV: README_DATE.isoformat()}).invoke(  # a day its OpenAI routes are open
        cli, ["plan", str(CHATS), "--gpu", "RTX-4090", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def counts_of(doc: dict, route: dict) -> dict:
    """The token counts of the counter a route was priced with (routes name it in their breakdown)."""
    found = [c for c in doc["dataset"]["token_counts"].values() if c["tokenizer"] == route["breakdown"]["tokenizer"]]
    assert len(found) == 1, route["id"]
    return found[0]


def route(doc: dict, route_id: str) -> dict:
    return next(r for r in doc["routes"] if r["id"] == route_id)


# ---------------------------------------------------------------------------------------------- the example

def test_example_dataset_is_read_once_with_every_counter(example):
    ds = example["dataset"]
    assert (ds["examples"], ds["format"], ds["errors"]) == (300, "chat", [])
    assert ds["tokens"]["total"] == ds["token_counts"]["tiktoken:o200k_base"]["total"]  # the first counter is main
    assert {"tiktoken:o200k_base", "tiktoken:cl100k_base", "estimate:llama3", "estimate:qwen2"} <= set(
        ds["token_counts"])


def test_openai_route_hand_checked(example):
    mini = route(example, "openai:gpt-4o-mini-2024-07-18:sft")
    o200k = example["dataset"]["token_counts"]["tiktoken:o200k_base"]
    assert counts_of(example, mini) is o200k or counts_of(example, mini) == o200k
    # 300 examples: OpenAI's auto epochs keep 3 (300 x 3 is within 100..25,000); no example is over 65,536 tokens;
    # gpt-4o-mini trains at $3.00 per 1M tokens (the frozen catalog's row, as of 2025-07-01)
    assert o200k["over_limit"] == 0 and mini["epochs"] == 3
    assert mini["billed_tokens"] == 3 * o200k["total"]
    assert Decimal(str(mini["cost_usd"])) == (Decimal(3 * o200k["total"]) * Decimal("3.00") / 10**6).quantize(
        Decimal("0.0001"))
    assert mini["feasible"] and mini["price_as_of"] == "2025-07-01" and mini["stale"]


def test_together_route_with_validation_hand_checked():
    doc = plan_json(CHATS, "--validation-file", HELD_OUT, "--model", "Llama-3.1-8B", "--method", "lora",
                    "--n-evals", 2)
    together = route(doc, "together:Llama-3.1-8B:lora")
    train = counts_of(doc, together)
    held_out = next(c for c in doc["validation"]["token_counts"].values() if c["tokenizer"] == train["tokenizer"])
    # the plan's 3 epochs (OpenAI's rule for 260 examples; Together's own default, 1, is a note), validation tokens
    # billed once per evaluation; up to 16B LoRA: $0.48 per 1M (the frozen catalog's tier)
    assert doc["validation"]["examples"] == 40 and together["epochs"] == doc["options"]["epochs"] == 3
    assert "together's own default is 1 epoch; priced and run at the plan's" in together["notes"]
    assert together["billed_tokens"] == 3 * train["total"] + 2 * held_out["total"]
    assert together["breakdown"]["validation_tokens"] == held_out["total"]
    assert Decimal(str(together["cost_usd"])) == (Decimal(together["billed_tokens"]) * Decimal("0.48")
                                                  / 10**6).quantize(Decimal("0.0001"))
    # the same counter prices the GPU routes: all of the file trained (the validation file is the held-out set)
    cloud = next(r for r in doc["routes"] if r["kind"] == "cloud" and r["feasible"])
    assert cloud["breakdown"]["tokens"]["real_per_epoch"] == train["total"]
    assert cloud["breakdown"]["tokens"]["eval_processed_per_pass"] >= held_out["total"]  # padded like training


def test_every_managed_route_bills_its_counters_tokens(example):
    for r in example["routes"]:
        if r["kind"] != "managed" or r["billed_tokens"] is None:
            continue
        counts = counts_of(example, r)
        per_epoch = r["breakdown"]["train_tokens_per_epoch"]
        assert counts["over_limit"] == 0 and per_epoch == counts["total"]  # nothing over any limit: no truncation
        assert r["billed_tokens"] == per_epoch * r["epochs"] + r["breakdown"].get("validation_tokens", 0) * \
            r["breakdown"].get("n_evals", 0)
        if r["cost_usd"] is not None and "min_charge_applied" not in r["breakdown"]:
            price = r["breakdown"]["usd_per_m_tokens"]
            assert r["cost_usd"] == pytest.approx(r["billed_tokens"] * price / 1e6, abs=1e-4), r["id"]


def test_every_gpu_route_is_consistent(example):
    gpu = [r for r in example["routes"] if r["kind"] in ("local", "cloud")]
    assert {r["kind"] for r in gpu} == {"local", "cloud"}
    llama = example["dataset"]["token_counts"]["estimate:llama3"]
    for r in gpu:
        b = r["breakdown"]
        assert r["hardware"]["gpu"] and r["epochs"] == TRAINER.epochs and r["vram_gib"] > 0
        assert b["setup"]["seq_len"] == min(llama["per_example"]["max"], TRAINER.max_seq_len) \
            or r["model"] != "Llama-3.1-8B"
        if not r["feasible"]:
            assert r["reason"] and r["cost_usd"] is None
            continue
        assert r["vram_gib"] <= b["gpu_memory_gib"]
        if r["model"] == "Llama-3.1-8B":  # 10% held out by the trainer, no example cut
            assert b["tokens"]["real_per_epoch"] == round(llama["total"] * 0.9)
        assert b["tokens"]["processed_per_epoch"] >= b["tokens"]["real_per_epoch"]
        if r["cost_usd"] is None:
            continue
        low, high = b["cost_usd"]["low"], b["cost_usd"]["high"]
        assert low <= r["cost_usd"] <= high
        if r["market"] == "on-demand":
            assert r["cost_usd"] == pytest.approx(b["hours"]["expected"] * float(b["usd_per_hour"]), rel=0.01,
                                                  abs=2e-4)
        if r["market"] == "spot":
            assert r["hours"] >= b["hours"]["expected"]
    trusted = [r for r in example["routes"] if r["feasible"] and r["cost_usd"] is not None and r["price_known"]
               and not r["price_doubt"] and (not r["stale"] or r["kind"] == "local")]
    assert example["cheapest"] == min(trusted, key=lambda r: r["cost_usd"])["id"]
    # the fastest: no trusted route is 20% quicker (the estimator's error); a quicker one costs more
    fastest = route(example, example["fastest"])
    assert fastest["feasible"] and not any(r["hours"] is not None and r["hours"] < fastest["hours"] * 0.8
                                           for r in trusted)
    assert all(r["cost_usd"] >= fastest["cost_usd"] for r in trusted if r["hours"] is not None
               and r["hours"] < fastest["hours"])


def test_the_table_shows_each_kind_of_route_and_names_the_cheapest_and_fastest(example):
    result = run("plan", CHATS, "--gpu", "RTX-4090")
    out = result.stdout
    titles = ("Best routes on", "Managed fine-tuning APIs", "Your GPU: 1 x RTX-4090 (--gpu) · cost: its electricity",
              "Cloud GPUs, on-demand (the cheapest per model and method)",
              "Cloud GPUs, spot (the cheapest per model and method)",
              "Notes", "Price sources")
    at = [next(i for i, line in enumerate(out.splitlines()) if line.startswith(t)) for t in titles]
    assert at == sorted(at) and result.stderr == ""  # in this order, and nothing but the plan on stdout
    cheapest = route(example, example["cheapest"])
    best = next(line for line in out.splitlines() if line.lstrip().startswith("cheapest"))
    number = re.search(r"#(\d+)", best)[1]
    assert f"{cheapest['model']} {cheapest['method']} · 1xRTX-4090 · local" in best
    row = next(line for line in out.splitlines() if re.match(rf"\s*{number}  {cheapest['model']} ", line))
    assert f"{cheapest['method']} " in row and f"{cheapest['vram_gib']:.1f}/24" in row  # the row it points to
    assert re.search(r"gpt-4o-mini-2024-07-18 +sft +3 +344k +1\.03 +2025-07 +\[\d+\]!", out)
    assert "Every route trains 3 epochs: OpenAI's auto rule for 300 examples" in out
    assert "GPU routes: Llama-3.1-8B, Qwen2.5-7B (the default models), ftbroker's trainer; --model prices" in out
    for model in ("Llama-3.1-8B", "Qwen2.5-7B"):  # every model planned is in the cloud tables, not the cheaper only
        assert re.search(rf"^\s*\d+  \S+ \S+ +\S+ +{re.escape(model)} ", out[out.index("Cloud GPUs, spot"):], re.M)
    assert re.search(r"Not available:\n +#\d+ local \S+ full: does not fit at micro-batch 4 or any smaller", out)
    assert "more on-demand cloud routes: " in out and "--all shows them" in out


def test_verbose_says_every_note_in_full():
    short, verbose = (run("plan", CHATS, "--model", "gpt-4o-mini", *flag).stdout for flag in ((), ("-v",)))
    closing = "closes to new jobs in 39 days (2027-01-06)"
    assert closing in short and "OpenAI is winding down" not in short
    assert "OpenAI is winding down self-serve fine-tuning" in verbose


def test_all_lists_every_instance(example):
    every = plan_json(CHATS, "--model", "Llama-3.1-8B", "--method", "qlora", "--all")
    cheapest = plan_json(CHATS, "--model", "Llama-3.1-8B", "--method", "qlora")
    cloud = [r for r in every["routes"] if r["kind"] == "cloud"]
    assert len({r["instance_type"] for r in cloud}) == len({(r["cloud"], r["instance_type"]) for r in cloud}) > 150
    assert len(cloud) > len([r for r in cheapest["routes"] if r["kind"] == "cloud"])
    assert every["options"]["all_instances"] and "cloud GPUs: every instance, on-demand and spot" in every["notes"]


def test_plan_csv_has_one_row_per_route():
    result = run("plan", CHATS, "--csv", "--model", "gpt-4o-mini", "--model", "Llama-3.1-8B", "--method", "lora")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {"openai", "together", "bedrock", "fireworks"} == {r["backend"] for r in rows if r["kind"] == "managed"}
    assert {"openai", "together", "fireworks", "bedrock"} <= {r["provider"] for r in rows}
    assert {"aws", "gcp"} <= {r["cloud"] for r in rows}
    mini = next(r for r in rows if r["model"] == "gpt-4o-mini-2024-07-18")
    assert (mini["feasible"], mini["stale"], mini["price_as_of"]) == ("true", "true", "2025-07-01")
    spot = next(r for r in rows if r["market"] == "spot")
    assert mini["runnable"] == "true" and int(mini["number"]) < int(spot["number"])  # managed routes first
    assert spot["instance_type"] and spot["gpu"] and float(spot["vram_gib"]) > 0 and spot["region"]
    unclaimed = next(r for r in rows if r["cloud"] in ("vast", "runpod"))  # SkyPilot mounts no bucket there
    assert unclaimed["runnable"] == "false"
    assert unclaimed["not_runnable"].startswith(f"no ftbroker backend rents {unclaimed['cloud']}")
    aws = next(r for r in rows if r["market"] == "spot" and r["cloud"] == "aws")
    assert (aws["backend"], aws["runnable"]) == ("ec2", "true")  # the ec2 backend claims AWS's instances
    gcp = next(r for r in rows if r["market"] == "spot" and r["cloud"] == "gcp")
    assert (gcp["backend"], gcp["runnable"]) == ("skypilot", "true")  # SkyPilot the other clouds'
    assert [int(r["number"]) for r in rows] == list(range(1, len(rows) + 1))


def test_preference_data_plans_dpo_offers_and_says_why_no_gpu_route():
    doc = plan_json(PREFERENCES)
    assert doc["dataset"]["format"] == "preference"
    assert {r["objective"] for r in doc["routes"] if r["feasible"]} == {"dpo"}
    assert not [r for r in doc["routes"] if r["kind"] != "managed"]
    assert doc["notes"] == ["no GPU routes: the local trainer does supervised fine-tuning only (no DPO yet)"]
    dpo = next(r for r in doc["routes"] if r["id"] == "together:Llama-3.1-8B:lora:dpo")
    assert dpo["billed_tokens"] == doc["options"]["epochs"] * counts_of(doc, dpo)["total"]


# ---------------------------------------------------------------------------------------------- the local GPU

def test_a_detected_gpu_is_planned_on(nvidia_smi):
    nvidia_smi(*(Gpu("NVIDIA H100 80GB HBM3", 79.6),) * 2)
    doc = plan_json(CHATS, "--model", "Qwen2.5-7B", "--method", "qlora")
    local = [r for r in doc["routes"] if r["kind"] == "local"]
    assert [r["id"] for r in local] == ["local:Qwen2.5-7B:qlora:H100-SXMx2"]
    assert doc["options"]["gpu"] == {"name": "H100-SXM", "count": 2, "source": "detected"}
    assert "local GPU: 2 x H100-SXM (detected)" in doc["notes"]


def test_what_nvidia_smi_says_on_an_h200_resolves_to_the_catalogs_h200(nvidia_smi):
    # recorded on an H200 machine (2026-11-28) with the query detect_gpus runs
    nvidia_smi(output="0, GPU-3ea88e84-df26-ac01-b961-3dca62a033b1, NVIDIA H200, 143771\n")
    local = find_local_gpus(load_catalog(), None, today=date(2026, 11, 28))
    assert (local.gpu.name, local.gpu.memory_gib, local.count, local.source, local.note) == (
        "H200-SXM", 140.4, 1, "detected", "")


def test_no_gpu_or_an_unknown_one_is_said_in_one_line(nvidia_smi):
    doc = plan_json(CHATS, "--model", "Qwen2.5-7B", "--method", "qlora")
    assert not [r for r in doc["routes"] if r["kind"] == "local"]
    assert "local GPU: none detected (nvidia-smi) and none named, so no local routes" in doc["notes"]
    nvidia_smi(Gpu("NVIDIA H100 NVL", 93.6))
    doc = plan_json(CHATS, "--model", "Qwen2.5-7B", "--method", "qlora")
    assert ("local GPU: 1 x NVIDIA H100 NVL (detected); NVIDIA H100 NVL (93.6 GiB) is not in the catalog: planned "
            "with its memory alone (no time or cost)") in " ".join(doc["notes"])
    local = next(r for r in doc["routes"] if r["kind"] == "local")  # whether it fits, as `ftbroker run` checks
    assert local["feasible"] and 0 < local["vram_gib"] <= 93.6 and local["hours"] is None


def test_ftbroker_gpu_names_the_local_gpu_for_plan_as_for_run(monkeypatch):
    monkeypatch.setenv("FTBROKER_GPU", "L4:2")
    doc = plan_json(CHATS, "--model", "Qwen2.5-7B", "--method", "qlora")
    assert doc["options"]["gpu"] == {"name": "L4", "count": 2, "source": "FTBROKER_GPU"}
    assert plan_json(CHATS, "--model", "Qwen2.5-7B", "--gpu", "T4")["options"]["gpu"]["source"] == "--gpu"


def test_gpu_and_lora_r_are_recorded():
    doc = plan_json(CHATS, "--model", "Llama-3.1-8B", "--method", "lora", "--gpu", "h100:8", "--lora-r", 64)
    assert doc["options"]["gpu"] == {"name": "H100-SXM", "count": 8, "source": "--gpu"}
    assert doc["options"]["lora_r"] == 64
    local = next(r for r in doc["routes"] if r["kind"] == "local")
    assert local["hardware"] == {"gpu": "H100-SXM", "count": 8} and local["breakdown"]["setup"]["lora_r"] == 64
    assert any("LoRA rank 64" in a["message"] for a in doc["dataset"]["advice"])


def test_local_model_folder_plans_its_own_architecture(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768}))
    doc = plan_json(CHATS, "--model", folder, "--method", "lora", "--gpu", "L40S")
    managed = {r["provider"] for r in doc["routes"] if r["kind"] == "managed"}
    assert managed == {"together", "fireworks"}  # the size tiers its 7.6B parameters fall in
    local = next(r for r in doc["routes"] if r["kind"] == "local")
    assert local["model"] == "my-model" and local["breakdown"]["tokenizer"].startswith("estimate (qwen2 family")


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.jsonl", "missing.jsonl: no such file"),
    (lambda tmp: tmp, "is a directory, not a JSONL file: name the .jsonl file in it"),
])
def test_a_missing_file_or_a_directory_gets_the_data_layers_message(tmp_path, make, message):
    for args in ((), ("--json",)):
        result = run("plan", make(tmp_path), *args)
        assert result.exit_code == 2 and message in result.stderr
        assert result.stdout == "" and "does not exist" not in result.stderr
    result = run("plan", CHATS, "--validation-file", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.stderr and result.stdout == ""


def test_dataset_errors_exit_2_with_file_line_and_json_still_printed(tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = CHATS.read_text().splitlines()[:12]
    lines[1], lines[3] = "not json", "[1]"
    bad.write_text("\n".join(lines) + "\n")
    result = run("plan", bad, "--model", "gpt-4o-mini")
    assert result.exit_code == 2
    assert f"{bad}:2: " in result.stderr and f"{bad}:4: " in result.stderr and "Traceback" not in result.stderr
    result = run("plan", bad, "--model", "gpt-4o-mini", "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert [e["line"] for e in doc["dataset"]["errors"]] == [2, 4] and doc["dataset"]["examples"] == 10


@pytest.mark.parametrize("args, message", [
    (("--model", "Llama-3.1-8"), "did you mean 'Llama-3.1-8B'"),
    (("--gpu", "RTX-4070"), "unknown GPU 'RTX-4070'"),
    (("--gpu", "H100:0"), "COUNT must be a positive integer"),
    (("--json", "--csv"), "cannot be combined"),
    (("--method", "dora"), "Invalid value for '--method'"),
    (("--max-seq-len", "8"), "Invalid value for '--max-seq-len'"),
    (("--tokenizer", "o300k"), "valid: o200k_base, cl100k_base, an OpenAI model name, or a local tokenizer folder"),
    (("--gpu", "Z9"), "`ftbroker catalog show --kind gpus` lists them"),
])
def test_bad_options_exit_2(args, message):
    result = run("plan", CHATS, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_plan_takes_the_values_run_takes():
    """--epochs, --max-seq-len and --lora-r are bounded as the JobSpec bounds them (both from ftbroker.bounds)."""
    import click
    from pydantic import ValidationError

    from ftbroker.bounds import BOUNDS
    from ftbroker.spec import Hyperparameters, LoraSettings

    options = {p.name: p.type for p in cli.commands["plan"].params}
    for option, (part, field) in {"epochs": (Hyperparameters, "epochs"), "lora_r": (LoraSettings, "r"),
                                  "max_seq_len": (Hyperparameters, "max_seq_len")}.items():
        bound = BOUNDS[option]
        for value in (bound.low, bound.high):
            assert options[option].convert(str(value), None, None) == value
            part(**{field: value})
        for value in (bound.low - 1, bound.high + 1):
            with pytest.raises(click.BadParameter):
                options[option].convert(str(value), None, None)
            with pytest.raises(ValidationError):
                part(**{field: value})


def test_the_help_states_the_defaults_the_planner_uses():
    text = " ".join(run("plan", "--help").stdout.split())
    assert f"GPU routes for {' and '.join(DEFAULT_GPU_MODELS)}" in text
    assert f"default {TRAINER.max_seq_len})" in text
    # the plan's epochs: the rule's target, more for small sets, fewer for large ones, as --help says
    most_more = max(n for n in range(1, 200) if PLAN_EPOCHS.epochs_for(n) > PLAN_EPOCHS.target)
    least_fewer = min(n for n in range(1, 20_000) if PLAN_EPOCHS.epochs_for(n) < PLAN_EPOCHS.target)
    assert (f"OpenAI's auto rule: {PLAN_EPOCHS.target}, more for {most_more} examples or fewer, fewer for over "
            f"{least_fewer - 1:,}") in text and TRAINER.epochs == PLAN_EPOCHS.target


def test_sdk_plan_returns_the_object_the_cli_renders():
    plan = ftbroker.plan(CHATS, models=["gpt-4o-mini", "Llama-3.2-1B"], method="qlora", today=README_DATE)
    assert isinstance(plan, ftbroker.Plan) and all(isinstance(r, ftbroker.Route) for r in plan.routes)
    cli_doc = plan_json(CHATS, "--model", "gpt-4o-mini", "--model", "Llama-3.2-1B", "--method", "qlora")
    assert plan.to_json() == cli_doc


# ---------------------------------------------------------------------------------------------- catalog

def test_catalog_show_json_and_table():
    result = run("catalog", "show", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {"gpus", "instances", "managed", "models", "version", "files"} <= set(doc)
    assert any(row["stale"] for row in doc["instances"]) and not any(row["stale"] for row in doc["gpus"])
    assert doc["models"][0]["params"] > 0
    table = run("catalog", "show", "--kind", "gpus").stdout
    assert "RTX-4090" in table and "Sources" in table and "Cloud GPU instances" not in table
    assert "not checked against its source for 90 days" in run("catalog", "show", "--kind", "managed").stdout


def test_catalog_validate(tmp_path):
    result = run("catalog", "validate")
    pinned = os.environ[CATALOG_DIR_ENV]  # the frozen catalog (test_catalog.py checks the shipped one)
    assert result.exit_code == 0 and result.stdout.startswith(f"ok: catalog folder {pinned} ({CATALOG_DIR_ENV}): ")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gpu]]\nname = "X1"\nmemory_gib = -3\nbandwidth_gbps = 100\nsupports_bf16 = true\n'
                   'source = "s"\nas_of = 2026-01-01\n')
    result = run("catalog", "validate", bad)
    assert result.exit_code == 2
    assert f"{bad}:3: memory_gib: -3 is outside the plausible range" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(bad.read_text().replace("-3", "12"))
    assert run("catalog", "validate", good).exit_code == 0


# ---------------------------------------------------------------------------------------------- imports

@pytest.mark.usefixtures("catalog_day")  # its prices are checked then: the plan trusts a cheapest and a fastest
def test_plan_end_to_end_imports_no_heavy_module_and_prints_only_json():
    code = ("import sys, runpy\n"
            f"sys.argv = ['ftbroker', 'plan', {str(CHATS)!r}, '--json']\n"
            "try:\n    runpy.run_module('ftbroker.cli', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or 'none', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "none"
    doc = json.loads(done.stdout)
    assert doc["dataset"]["examples"] == 300 and doc["cheapest"] and doc["fastest"]
    assert {"managed", "cloud"} <= {r["kind"] for r in doc["routes"]}  # and local ones where nvidia-smi finds a GPU


def test_the_readme_shows_a_real_plan_of_the_example(monkeypatch):
    """The README's sample is the command's output at 100 columns on README_DATE (regenerate it with
    ``COLUMNS=100 ftbroker plan ...`` as its first line says, on that date or with this test's date pinned): every
    line must match, so the README never drifts from what the tool prints."""

    monkeypatch.setenv(clock.ENV, README_DATE.isoformat())
    monkeypatch.delenv("FTBROKER_GPU", raising=False)
    monkeypatch.delenv(CATALOG_DIR_ENV)  # the sample is what a user sees: the shipped catalog's plan
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("$ ftbroker plan examples/data/support_chats.jsonl")
    block = readme[start:readme.index("```", start)].splitlines()
    out = CliRunner(env={"COLUMNS": "100"}).invoke(cli, block[0].split()[2:], catch_exceptions=False).stdout
    assert [line.rstrip() for line in block[1:]] == [line.rstrip() for line in out.splitlines()], out


def test_into_a_pipe_every_name_and_column_is_printed_whole():
    """Not a terminal and no COLUMNS: nothing is cut to 80 columns (grep and scripts read whole names)."""
    args = [str(CHATS), "--model", "Llama-3.1-8B", "--gpu", "RTX-4090"]
    piped = CliRunner(env={"COLUMNS": None, clock.ENV: README_DATE.isoformat()}).invoke(cli, ["plan", *args])
    assert piped.exit_code == 0, piped.stderr
    dates = re.sub(r"\d{4}-\d\d-\d\d … \d{4}-\d\d-\d\d", "", piped.stdout)  # the catalog's date range
    assert "…" not in dates and "Cut to fit" not in piped.stdout
    assert "Standard_NC48ads_A100_v4" in piped.stdout  # a long instance name, whole (cut at 100 columns)
    assert "$/h" in piped.stdout and max(map(len, piped.stdout.splitlines())) > 120
    narrow = CliRunner(env={"COLUMNS": "80", clock.ENV: README_DATE.isoformat()}).invoke(cli, ["plan", *args])
    assert "Cut to fit 80 columns" in narrow.stdout  # a width asked for is still honoured
