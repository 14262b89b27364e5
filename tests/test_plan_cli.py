"""`ftbroker plan` and `ftbroker catalog` through the CLI: output shapes, exit codes, and light imports.

Most tests run the command with stand-in ``data``/``tokens`` modules (tests/plan_doubles.py), so the numbers
are fixed by the test; ``test_plan_end_to_end_on_the_example`` runs the real modules when they are present.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

import ftbroker
from ftbroker.cli import cli
from plan_doubles import fake_modules

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "openai", "together", "boto3", "botocore", "httpx", "peft", "trl")


@pytest.fixture
def fake(monkeypatch):
    data_mod, tokens_mod, seen = fake_modules(tokens_per_example=500)
    for name, module in (("data", data_mod), ("tokens", tokens_mod)):
        monkeypatch.setitem(sys.modules, f"ftbroker.{name}", module)
        monkeypatch.setattr(ftbroker, name, module, raising=False)
    return seen


@pytest.fixture
def chats(tmp_path):
    path = tmp_path / "chats.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    path.write_text("\n".join([line] * 1000) + "\n")
    return path


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_plan_json_is_only_json_and_reads_the_file_once_with_every_counter(fake, chats):
    result = run("plan", chats, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dataset"]["examples"] == 1000
    assert len(fake.analyzed) == 1  # one pass, all counters at once
    keys = fake.analyzed[0][1]
    assert "fake:o200k_base" in keys and "fake:cl100k_base" in keys and len(keys) == len(set(keys))
    mini = next(r for r in doc["routes"] if r["model"] == "gpt-4o-mini-2024-07-18")
    assert mini["billed_tokens"] == 1_500_000 and mini["cost_usd"] == 4.5 and mini["epochs"] == 3
    assert doc["cheapest"] == doc["routes"][0]["id"]
    assert doc["options"]["models"] == []


def test_plan_csv_has_one_row_per_route(fake, chats):
    result = run("plan", chats, "--csv", "--model", "gpt-4o-mini", "--model", "Llama-3.1-8B")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["backend"] for r in rows} == {"openai", "together", "fireworks", "bedrock"}
    mini = next(r for r in rows if r["model"] == "gpt-4o-mini-2024-07-18")
    assert (mini["cost_usd"], mini["billed_tokens"], mini["feasible"], mini["stale"]) == ("4.5", "1500000", "true",
                                                                                          "true")
    assert mini["price_as_of"] == "2025-07-01" and mini["price_source"]


def test_plan_table_names_sources_dates_and_the_cheapest(fake, chats):
    result = run("plan", chats, "--model", "gpt-4o-mini", "--model", "gpt-4.1-nano")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "gpt-4o-mini-2024-07-18" in out and "$4.50" in out and "2025-07-01 !" in out
    assert "Price sources" in out and "[1]" in out
    assert "OUT: closed: the model reached end of life on 2026-10-23" in out
    assert "Cheapest: openai · gpt-4o-mini-2024-07-18 · sft $4.50" in out


def test_dataset_errors_exit_2_with_file_line_and_json_still_printed(fake, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\nnot json\n{"messages": []}\n[1]\n')
    result = run("plan", bad)
    assert result.exit_code == 2
    assert f"{bad}:2: not a JSON object" in result.stderr and f"{bad}:4: not a JSON object" in result.stderr
    result = run("plan", bad, "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert [e["line"] for e in doc["dataset"]["errors"]] == [2, 4]
    assert "Traceback" not in result.stderr


def test_validation_file_is_read_with_the_same_counters(fake, chats, tmp_path):
    held_out = tmp_path / "val.jsonl"
    held_out.write_text(chats.read_text().split("\n", 1)[0] * 1 + "\n")
    result = run("plan", chats, "--validation-file", held_out, "--model", "Llama-3.1-8B", "--method", "lora",
                 "--n-evals", 2, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["validation"]["examples"] == 1
    assert [keys for _, keys in fake.analyzed][0] == [keys for _, keys in fake.analyzed][1]
    together = next(r for r in doc["routes"] if r["backend"] == "together")
    assert together["billed_tokens"] == 500_000 + 500 * 2


@pytest.mark.parametrize("args, message", [
    (("--model", "Llama-3.1-8"), "did you mean 'Llama-3.1-8B'"),
    (("--gpu", "RTX-4080"), "unknown GPU 'RTX-4080'"),
    (("--gpu", "H100:0"), "COUNT must be a positive integer"),
    (("--json", "--csv"), "cannot be combined"),
    (("--method", "dora"), "Invalid value for '--method'"),
])
def test_bad_options_exit_2(fake, chats, args, message):
    result = run("plan", chats, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_gpu_and_lora_r_are_accepted_and_recorded(fake, chats):
    result = run("plan", chats, "--gpu", "h100:8", "--lora-r", 64, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["options"]["gpu"] == {"name": "H100-SXM", "count": 8} and doc["options"]["lora_r"] == 64


def test_local_model_folder_is_counted_with_its_own_tokenizer(fake, chats, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768}))
    (folder / "tokenizer.json").write_text("{}")
    result = run("plan", chats, "--model", folder, "--method", "lora", "--json")
    assert result.exit_code == 0, result.stderr
    assert (str(folder.resolve()), None, None) in fake.resolved
    routes = json.loads(result.stdout)["routes"]
    assert {r["backend"] for r in routes} == {"together", "fireworks"} and routes[0]["model"] == "my-model"


def test_sdk_plan_returns_the_object_the_cli_renders(fake, chats):
    plan = ftbroker.plan(chats, models=["gpt-4o-mini"], today=date.today())
    assert isinstance(plan, ftbroker.Plan) and all(isinstance(r, ftbroker.Route) for r in plan.routes)
    cli_doc = json.loads(run("plan", chats, "--model", "gpt-4o-mini", "--json").stdout)
    assert plan.to_json() == cli_doc


def test_catalog_show_json_and_table(fake):
    result = run("catalog", "show", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {"gpus", "instances", "managed", "models", "version", "files"} <= set(doc)
    assert any(row["stale"] for row in doc["instances"]) and not any(row["stale"] for row in doc["gpus"])
    assert doc["models"][0]["params"] > 0
    table = run("catalog", "show", "--kind", "gpus").stdout
    assert "RTX-4090" in table and "Sources" in table and "Cloud GPU instances" not in table
    assert "older than 90 days" in run("catalog", "show", "--kind", "managed").stdout


def test_catalog_validate(tmp_path):
    result = run("catalog", "validate")
    assert result.exit_code == 0 and result.stdout.startswith("ok: shipped catalog")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gpu]]\nname = "X1"\nmemory_gib = -3\nbandwidth_gbps = 100\nsupports_bf16 = true\n'
                   'source = "s"\nas_of = 2026-01-01\n')
    result = run("catalog", "validate", bad)
    assert result.exit_code == 2
    assert f"{bad}:3: memory_gib: -3 is outside the plausible range" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(bad.read_text().replace("-3", "12"))
    assert run("catalog", "validate", good).exit_code == 0


_LIGHT_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from plan_doubles import fake_modules
import ftbroker
data_mod, tokens_mod, _ = fake_modules()
sys.modules["ftbroker.data"], sys.modules["ftbroker.tokens"] = data_mod, tokens_mod
ftbroker.data, ftbroker.tokens = data_mod, tokens_mod
from ftbroker.cli import main
sys.argv = ["ftbroker", "plan", {data!r}, "--json"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)) or "none", file=sys.stderr)
"""


def test_plan_imports_no_heavy_module(chats):
    code = _LIGHT_CHECK.format(tests=str(REPO / "tests"), data=str(chats), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "none"
    json.loads(done.stdout)  # and stdout is the JSON alone


@pytest.mark.skipif(importlib.util.find_spec("ftbroker.data") is None, reason="the data area has not landed yet")
def test_plan_end_to_end_on_the_example():
    example = REPO / "examples" / "data" / "support_chats.jsonl"
    code = ("import sys, runpy\n"
            f"sys.argv = ['ftbroker', 'plan', {str(example)!r}, '--json']\n"
            "try:\n    runpy.run_module('ftbroker.cli', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or 'none', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "none"
    doc = json.loads(done.stdout)
    assert doc["dataset"]["examples"] > 0 and doc["routes"] and doc["cheapest"]
