"""The plan as a picture (``plan --chart``, ``ftbroker.plan_chart``), and the plan's own limits and stack from the
command line and the SDK: ``--max-cost``, ``--deadline``, ``--stack``."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

import ftbroker
from ftbroker import clock
from ftbroker.cli import cli
from ftbroker.errors import UnknownNameError

CHATS = Path(__file__).resolve().parents[1] / "examples" / "data" / "support_chats.jsonl"
DAY = date(2026, 11, 28)
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args):
    return CliRunner(env={"COLUMNS": "120", clock.ENV: DAY.isoformat()}).invoke(cli, [str(a) for a in args])


@pytest.fixture(autouse=True)
def no_gpu_here(no_gpu):
    """Plans here see no GPU, whatever machine runs them."""


def test_chart_draws_every_priced_route_with_the_front_budget_and_deadline(tmp_path):
    chart = tmp_path / "plan.png"
    done = run("plan", CHATS, "--model", "Llama-3.1-8B", "--max-cost", "0.5", "--deadline", "0.3", "--chart", chart,
               "--json")
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)  # stdout is the JSON alone; the chart's path is said on stderr
    assert f"chart: {chart}" in done.stderr
    assert chart.read_bytes()[:8] == PNG and 20_000 < chart.stat().st_size < 300_000
    assert doc["options"]["max_cost"] == 0.5 and doc["options"]["deadline_hours"] == 0.3
    best = [route for b in doc["best"] for route in doc["routes"] if route["number"] == b["number"]]
    assert best and all(r["cost_usd"] <= 0.5 and r["hours"] <= 0.3 for r in best)
    over = [r for r in doc["routes"] if r["cost_usd"] and r["cost_usd"] > 0.5]
    assert over and all("over your --max-cost $0.50" in " ".join(r["notes"]) for r in over)


def test_the_sdk_draws_a_plan_it_made(tmp_path):
    plan = ftbroker.plan(CHATS, models=["Qwen2.5-7B"], method="qlora", today=DAY)
    written = ftbroker.plan_chart(plan, tmp_path / "sdk.png")
    assert written == tmp_path / "sdk.png" and written.read_bytes()[:8] == PNG


def test_without_matplotlib_the_chart_is_refused_first_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    done = run("plan", CHATS, "--chart", tmp_path / "plan.png")
    assert done.exit_code == 2 and "pip install 'ftbroker[chart]'" in done.stderr and "Traceback" not in done.output
    assert done.stdout == "" and not (tmp_path / "plan.png").exists()  # refused before any work


def test_a_chart_that_cannot_be_written_says_where(tmp_path):
    done = run("plan", CHATS, "--model", "gpt-4o-mini", "--chart", tmp_path / "no" / "such" / "plan.png")
    assert done.exit_code == 2 and "the chart cannot be written" in done.stderr


@pytest.mark.parametrize("flag, value", [("--max-cost", "0"), ("--max-cost", "five"), ("--deadline", "-1"),
                                         ("--deadline", "inf")])
def test_limits_must_be_positive_amounts(flag, value):
    done = run("plan", CHATS, flag, value)
    assert done.exit_code == 2 and f"Invalid value for '{flag}'" in done.stderr


def test_the_sdk_takes_a_stack_and_refuses_an_unknown_one():
    plan = ftbroker.plan(CHATS, models=["Llama-3.1-8B"], method="qlora", gpu="RTX-4090", stack="axolotl", today=DAY)
    local = next(r for r in plan.routes if r.kind == "local")
    assert plan.options.stack == "axolotl" and local.breakdown["stack"] == "axolotl" and not local.runnable
    assert plan.to_json()["options"]["stack"] == "axolotl"
    with pytest.raises(UnknownNameError, match="stack"):
        ftbroker.plan(CHATS, stack="nanogpt", today=DAY)
    refused = run("run", "--route", local.number)  # the last plan is the CLI's: plan it there first
    assert refused.exit_code == 2
