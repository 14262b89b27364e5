"""How much to trust a stack's memory figures: each stack's held-out error, written into the calibration by
bench/estimator_accuracy.py --write, travels with every estimate (SDK, JSON, explain) and is said when an estimate
is shown; a stack whose misses are mostly under-estimates is told to leave headroom, a stack never checked says so."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import ftbroker
from ftbroker.cli import cli
from ftbroker.estimate.calibration import StackCheck, default_calibration, parse_calibration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import estimator_accuracy

UNDER = StackCheck(runs=4, median=0.25, p90=0.64, misses=3, under=2, measured_on="published axolotl runs")
OVER = StackCheck(runs=9, median=0.04, p90=0.13, misses=3, under=1, measured_on="published torchtune runs")


def calibration(**checks):
    return replace(default_calibration(), checks=checks)


@pytest.mark.parametrize("check, expected", [(UNDER, True), (OVER, False),
                                             (replace(OVER, misses=0, under=0), False)])
def test_mostly_under_means_more_than_a_third_of_the_misses(check, expected):
    assert check.mostly_under is expected


def test_an_estimate_carries_its_stacks_check_and_says_it():
    e = ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="RTX-4090", stack="axolotl",
                          calibration=calibration(axolotl=UNDER))
    assert e.check == UNDER
    assert e.to_json()["checked"] == {"runs": 4, "median": 0.25, "p90": 0.64, "misses": 3, "under": 2,
                                      "measured_on": "published axolotl runs", "mostly_under": True}
    assert e.explain().splitlines()[-1] == ("Checked against 4 published axolotl runs: peak memory off by 25% "
                                            "(median), 64% (p90); 2 of the 3 runs off by over 10% needed more: "
                                            "leave headroom.")


def test_a_stack_never_checked_says_its_figure_is_the_models_alone():
    e = ftbroker.estimate("Llama-3.1-8B", method="lora", gpu="RTX-4090", stack="llamafactory",
                          calibration=calibration(axolotl=UNDER))
    assert e.check is None and e.to_json()["checked"] is None
    assert "Not checked against measured llamafactory runs" in e.explain()


def test_the_shipped_calibration_checks_every_stack_with_published_runs_and_our_trainer():
    checks = default_calibration().checks
    assert {"trl-sft", "hf", "unsloth", "axolotl", "torchtune", "litgpt"} <= set(checks)
    assert all(c.runs > 0 and 0 <= c.median <= c.p90 and c.under <= c.misses <= c.runs for c in checks.values())


def test_checks_round_trip_through_the_calibration_file():
    cal = calibration(axolotl=UNDER, torchtune=OVER)
    assert parse_calibration(estimator_accuracy.calibration_toml(cal), cal.source).checks == cal.checks


@pytest.mark.parametrize("stack, said", [("llamafactory", "Not checked against measured llamafactory runs"),
                                         ("hf", "Checked against ")])
def test_estimate_says_how_far_the_stacks_figures_were_from_measured_runs(stack, said):
    result = CliRunner().invoke(cli, ["estimate", "Llama-3.1-8B", "--method", "lora", "--gpu", "RTX-4090",
                                      "--stack", stack])
    assert result.exit_code == 0, result.output
    assert said in result.output
