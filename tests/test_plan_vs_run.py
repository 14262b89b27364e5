"""`ftbroker plan --gpu X` and `ftbroker run --backend local --gpu X` on the same data give the same job the same
peak VRAM, hours and electricity cost: both take the trainer's config through one path (preflight.py)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
CHATS, HELD_OUT = EXAMPLES / "support_chats.jsonl", EXAMPLES / "support_chats_val.jsonl"

pytestmark = pytest.mark.usefixtures("no_gpu")  # a GPU this machine has would be planned on beside the one named


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("method, plan_flags, run_flags", [
    ("lora", (), ()),  # on a 24 GiB card the plan may lower the micro-batch: run is given the flags it names
    ("qlora", ("--validation-file", HELD_OUT), ("--validation", HELD_OUT)),
])
def test_plan_and_run_quote_the_same_local_job(method, plan_flags, run_flags):
    model, gpu = "Llama-3.1-8B", "RTX-4090"
    planned = invoke("plan", CHATS, "--model", model, "--gpu", gpu, "--method", method, *plan_flags, "--json")
    assert planned.exit_code == 0, planned.stderr
    route = next(r for r in json.loads(planned.stdout)["routes"] if r["kind"] == "local")
    assert route["feasible"] and route["hours"] and route["cost_usd"]
    setup = route["breakdown"]["setup"]
    batch = ("--micro-batch", setup["micro_batch"], "--grad-accum", setup["grad_accumulation"])
    if setup["micro_batch"] != 4:  # the trainer's default, lowered to fit: the route says what to run with
        assert f"run with {' '.join(map(str, batch))} (the same effective batch)" in " ".join(route["notes"])

    # ftbroker run, quote only: without a terminal the confirmation is refused after the quote is shown
    ran = invoke("run", CHATS, "--backend", "local", "--model", model, "--gpu", gpu, "--method", method, *batch,
                 *run_flags)
    assert ran.exit_code == 3 and "confirmation needs a terminal" in ran.stderr, ran.stderr
    shown = dict(re.findall(r"^(peak VRAM|time|cost)\s+(.+?)\s*$", ran.stderr, re.M))
    assert shown["peak VRAM"] == f"{route['vram_gib']:.1f} GiB per GPU"
    minutes, seconds = map(int, re.fullmatch(r"(\d+)m(\d+)s", shown["time"]).groups())
    assert minutes * 60 + seconds == pytest.approx(route["hours"] * 3600, abs=3)  # the JSON keeps hours to 3.6 s
    assert shown["cost"].startswith(f"${Decimal(str(route['cost_usd'])):.2f}")
    assert Ledger().list() == []

    # the same through the SDK, to the last digit the plan's JSON keeps
    spec = JobSpec(dataset=str(CHATS), model=model, method=method, backend_options={"gpu": gpu},
                   validation=str(HELD_OUT) if run_flags else None,
                   hyperparameters={"micro_batch_size": setup["micro_batch"],
                                    "gradient_accumulation_steps": setup["grad_accumulation"]})
    with Broker() as broker:
        quote = broker.prepare(spec).quote
    assert quote.verdict.value == "ok" and quote.hardware == f"1x {gpu}"
    assert (round(quote.peak_vram_gib, 2), round(quote.hours, 3), float(quote.cost_usd)) == (
        route["vram_gib"], route["hours"], route["cost_usd"])
    assert quote.breakdown["estimate"]["setup"]["micro_batch"] == setup["micro_batch"]
    assert quote.breakdown["time_s"]["training"]["expected"] == pytest.approx(
        route["breakdown"]["hours_by_part"]["training"] * 3600, abs=2)


def test_run_from_plan_takes_the_micro_batch_the_route_says(tmp_path):
    """`ftbroker run --from-plan plan.json --route N`: the route's own job, its lowered micro-batch included."""
    from ftbroker.route_jobs import route_fields
    from ftbroker.spec import load_spec

    planned = invoke("plan", CHATS, "--model", "Llama-3.1-8B", "--gpu", "RTX-4090", "--json")
    doc = json.loads(planned.stdout)
    (tmp_path / "plan.json").write_text(planned.stdout)
    for route in (r for r in doc["routes"] if r["kind"] == "local" and r["feasible"]):
        ran = invoke("run", "--from-plan", tmp_path / "plan.json", "--route", route["number"])
        assert ran.exit_code == 3 and "confirmation needs a terminal" in ran.stderr, ran.stderr
        assert f"peak VRAM  {route['vram_gib']:.1f} GiB per GPU" in ran.stderr
        with Broker() as broker:
            quote = broker.prepare(load_spec(None, route_fields(doc, route["number"], "plan.json")[0])).quote
        assert (round(quote.peak_vram_gib, 2), round(quote.hours, 3), float(quote.cost_usd)) == (
            route["vram_gib"], route["hours"], route["cost_usd"])
    assert Ledger().list() == []


@pytest.mark.parametrize("method, gpu", [
    ("full", "H100"),     # does not fit: the peak of the settings asked for, not of a smaller micro-batch
    ("lora", "RTX-4090"),  # fits once the plan lowers the micro-batch: the same lowered settings everywhere
    ("qlora", "RTX-4090"),
])
def test_estimate_plan_and_run_give_one_answer(method, gpu):
    """The issue's case: `estimate` (the trainer's defaults), `plan` and `run` on the same settings show the same
    peak VRAM; plan and run the same hours and cost too (estimate has no dataset, so neither)."""
    model = "Llama-3.1-8B"
    planned = invoke("plan", CHATS, "--model", model, "--gpu", gpu, "--method", method, "--json")
    assert planned.exit_code == 0, planned.stderr
    route = next(r for r in json.loads(planned.stdout)["routes"] if r["kind"] == "local")
    setup = route["breakdown"]["setup"]
    assert setup["seq_len"] == 935  # the longest example of the bundled data

    estimated = invoke("estimate", model, "--method", method, "--gpu", gpu, "--seq-len", setup["seq_len"],
                       "--batch", setup["micro_batch"], "--grad-accum", setup["grad_accumulation"], "--json")
    assert estimated.exit_code == 0, estimated.output
    estimate = json.loads(estimated.stdout)
    shared = setup.keys() & estimate["setup"].keys()
    assert len(shared) >= 8 and {k: estimate["setup"][k] for k in shared} == {k: setup[k] for k in shared}
    assert round(estimate["vram_gib"], 2) == route["vram_gib"]
    assert estimate["fits"] is route["feasible"]

    spec = JobSpec(dataset=str(CHATS), model=model, method=method, backend_options={"gpu": gpu},
                   hyperparameters={"micro_batch_size": setup["micro_batch"],
                                    "gradient_accumulation_steps": setup["grad_accumulation"]})
    with Broker() as broker:
        quote = broker.prepare(spec).quote
    assert round(quote.peak_vram_gib, 2) == route["vram_gib"]
    assert (quote.verdict.value == "ok") is route["feasible"]
    if route["feasible"]:
        assert (round(quote.hours, 3), float(quote.cost_usd)) == (route["hours"], route["cost_usd"])
    else:  # the same figure in both reasons
        assert f"needs about {route['vram_gib']:.1f} GiB per GPU" in route["reason"]
        assert f"needs about {route['vram_gib']:.1f} GiB per GPU" in quote.reason
