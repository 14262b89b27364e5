"""The examples a user is pointed at still work: the SDK scripts run, and every example job file loads."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import ftbroker
from ftbroker.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_sdk_plan_prints_the_best_routes_and_the_cheapest_route_of_each_kind_of_the_plan(tmp_path):
    spec = importlib.util.spec_from_file_location("sdk_plan", EXAMPLES / "sdk_plan.py")
    sdk_plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk_plan)
    printed = run_example("sdk_plan.py", "--chart", str(tmp_path / "plan.png")).splitlines()
    plan = ftbroker.plan(sdk_plan.BUNDLED, models=["Llama-3.1-8B"], gpu="RTX-4090")
    assert printed[0].endswith(f"{plan.options.epochs} epochs each")
    assert printed[1:1 + len(plan.best)] == [
        f"{b.label:>17}  {sdk_plan.describe(b.route)}" + (f"; {b.trade}" if b.trade else "") for b in plan.best]
    best = sdk_plan.cheapest_of_each_kind(plan)
    assert all(best.values())  # the bundled dataset has a priced route of every kind
    assert printed[1 + len(plan.best):-1] == [f"{label:>17}  {sdk_plan.describe(route)}"
                                              for label, route in best.items()]
    assert printed[-1] == f"chart: {tmp_path / 'plan.png'}" and (tmp_path / "plan.png").stat().st_size > 0
    for label, route in best.items():
        assert route.cost_usd == min(r.cost_usd for r in plan.routes if sdk_plan.KINDS[label](r) and r.feasible
                                     and r.cost_usd is not None)


def test_sdk_estimate_prints_each_method():
    printed = run_example("sdk_estimate.py", "Llama-3.1-8B", "RTX-4090").splitlines()
    assert [line.split()[1].rstrip(":") for line in printed[:3]] == ["full", "lora", "qlora"]
    qlora = ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="RTX-4090", seq_len=2048, micro_batch=4)
    assert f"{qlora.memory.total:6.1f} GiB per GPU" in printed[2] and "fits on 1xRTX-4090" in printed[2]
    assert "does not fit" in printed[0]  # full fine-tuning of 8B parameters needs far more than 24 GiB


@pytest.mark.parametrize("job_file", sorted((EXAMPLES / "jobs").iterdir()), ids=lambda p: p.name)
def test_every_example_job_file_loads(job_file):
    spec = load_spec(job_file)
    assert Path(spec.dataset).is_file() and spec.dataset.startswith(str(EXAMPLES))  # relative to the job file
    assert spec.backend == job_file.name.split("-")[0] and spec.method in job_file.name
