"""Computation speaks in facts, the CLI in flags: a plan's notes tell an SDK user what is so (``routes.Note``: the
fact and the setting that changes it), and ``ftbroker plan`` adds the flag that changes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import ftbroker
from ftbroker.cli import cli
from ftbroker.cli.hints import PLAN_HINTS, RUN_HINTS, worded
from ftbroker.routes import Note

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
CHATS, HELD_OUT = EXAMPLES / "support_chats.jsonl", EXAMPLES / "support_chats_val.jsonl"
# every managed offer (no --model: a tier is shown for its reference model), validation billed per evaluation at 0
SETTINGS = {"validation_file": HELD_OUT, "n_evals": 0, "gpu": "RTX-4090"}
pytestmark = pytest.mark.usefixtures("frozen_catalog")


@pytest.fixture(scope="module")
def sdk_plan(frozen_catalog):
    return ftbroker.plan(CHATS, **SETTINGS, your_runs=False)


def test_an_sdk_plans_notes_state_facts_and_name_the_setting_never_a_flag(sdk_plan):
    managed = [r for r in sdk_plan.routes if r.kind == "managed"]
    assert not [n for r in managed for n in r.notes if "--" in n]
    assert not [n for r in sdk_plan.routes for n in (*r.notes, *sdk_plan.notes) if "pass --" in n]
    settings = {n.setting for r in managed for n in r.notes if isinstance(n, Note)}
    assert {"models", "n_evals"} <= settings
    tier = next(n for r in managed for n in r.notes if isinstance(n, Note) and n.setting == "models")
    assert tier.endswith("its reference model")
    doc = sdk_plan.to_json()  # the JSON keeps the fact alone, a plain string
    assert tier in {n for r in doc["routes"] for n in r["notes"]}


def test_the_cli_words_each_setting_as_its_flag():
    assert worded(Note("Acme publishes no default epoch count", "epochs")) == \
        "Acme publishes no default epoch count; --epochs prices it"
    assert worded(Note("n_evals is 0", "n_evals"), RUN_HINTS) == "n_evals is 0; --option n_evals=N sets it"
    assert worded("a plain note") == "a plain note"
    assert set(PLAN_HINTS) == set(RUN_HINTS) == {"epochs", "models", "n_evals", "max_seq_len", "gpu", "all_instances",
                                                 "bucket"}


def test_the_gpu_routes_notes_state_facts_and_say_how_far_the_stacks_figures_were_from_measured_runs():
    plan = ftbroker.plan(CHATS, stack="axolotl", max_seq_len=300, your_runs=False)
    notes = [*plan.notes, *(n for r in plan.routes for n in (*r.notes, r.not_runnable or ""))]
    assert not [n for n in notes if "--" in n]
    settings = {n.setting for n in notes if isinstance(n, Note)}
    assert {"models", "gpu", "all_instances", "max_seq_len", "bucket"} <= settings
    assert any(n.startswith("Checked against") and "axolotl" in n for n in plan.notes)


@pytest.mark.usefixtures("catalog_day")
def test_ftbroker_plan_shows_the_flag_beside_the_fact():
    args = ["plan", str(CHATS), "--validation-file", str(HELD_OUT), "--n-evals", "0", "--gpu", "RTX-4090", "--all",
            "-v"]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "its reference model; --model prices another model" in text
    assert "validation tokens are billed per evaluation; n_evals is 0; --n-evals sets it" in text
    assert "on-demand and spot; --all shows every instance" not in text  # --all given: every instance is shown
    assert "cloud GPUs: every instance, on-demand and spot" in text
