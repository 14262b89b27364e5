"""How plans, catalogs, jobs and estimates read: tables that fit the terminal, each route on one line, each note
and reason said once with its route numbers, the best routes first. Built on hand-made plans (formatting, not the
planner's figures) and on the bundled example's real plan."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_reports import report, stats
from rich.console import Console

import ftbroker
from ftbroker.cli import cli, plan_table
from ftbroker.cli.dataset_view import counter_label
from ftbroker.cli.job_view import jobs_table
from ftbroker.cli.layout import Footnotes
from ftbroker.cli.tables import Col, fit_widths, hanging
from ftbroker.jobs import Job, JobStatus
from ftbroker.planner import CatalogInfo, Plan, numbered
from ftbroker.pricing.catalog import load_catalog
from ftbroker.routes import Hardware, PlanOptions, Route
from ftbroker.spec import JobSpec
from ftbroker.tokens.resolve import resolve

CHATS = Path(__file__).resolve().parents[1] / "examples" / "data" / "support_chats.jsonl"
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # the plans and catalogs shown are the frozen catalog's
WINDING_DOWN = ("closes to new jobs in 39 days (2027-01-06) (OpenAI is winding down self-serve fine-tuning: since "
                "2026-07-02 only organizations with fine-tuned-model inference in the past 60 days may create jobs)")


def show(plan: Plan, width: int = 100, **options) -> str:
    buffer = io.StringIO()
    plan_table.print_plan(plan, Console(file=buffer, width=width, highlight=False, soft_wrap=False), **options)
    return buffer.getvalue()


def managed(model: str, cost: str | None, *, provider: str = "together", reason: str = "", notes=(),
            method: str = "lora") -> Route:
    return Route(kind="managed", backend=provider, provider=provider, model=model, method=method,
                 feasible=not reason, reason=reason,
                 cost_usd=None if cost is None else Decimal(cost), billed_tokens=12_000, epochs=1,
                 notes=tuple(notes), price_source="provider pricing page", price_as_of=date(2026, 2, 1), stale=True)


def gpu(kind: str, model: str, method: str, cost: str | None, hours: float | None, *, market: str = "",
        instance_type: str = "", cloud: str = "aws", reason: str = "", notes=()) -> Route:
    return Route(kind=kind, backend="local" if kind == "local" else None, cloud=cloud if kind == "cloud" else "",
                 model=model, method=method, hardware=Hardware("L40S", 1),
                 feasible=not reason, reason=reason, vram_gib=30.5, hours=hours,
                 cost_usd=None if cost is None else Decimal(cost), epochs=3, notes=tuple(notes),
                 breakdown={"usd_per_hour": 0.36, "gpu_memory_gib": 48,
                            "setup": {"micro_batch": 2, "seq_len": 1024, "grad_checkpointing": True}},
                 price_source="skypilot catalog", price_as_of=date(2026, 7, 9), instance_type=instance_type,
                 market=market)


def plan_of(*routes: Route, notes=(), **options) -> Plan:
    return Plan(dataset=report({"tiktoken:o200k_base": stats({100: 10, 300: 5})}), validation=None,
                routes=numbered(routes), catalog=CatalogInfo("c0ffee", date(2026, 1, 1), date(2026, 7, 9), (), 3),
                today=date(2026, 11, 28), options=PlanOptions(**options), notes=tuple(notes))


@pytest.fixture(scope="module")
def example(frozen_catalog) -> Plan:
    """The bundled example's real plan with a named GPU, so that every kind of table is in it: on the frozen catalog,
    whose OpenAI rows close on 2027-01-06 (WINDING_DOWN)."""
    return ftbroker.plan(CHATS, gpu="RTX-4090", today=date(2026, 11, 28))


# ---------------------------------------------------------------------------------------------- fitting

COLUMNS = (Col("#", right=True), Col("instance", flex=True, min_width=10), Col("model", flex=True, min_width=12),
           Col("cost $", right=True), Col("batch", optional=True), Col("as of", optional=True))
ROWS = [["1", "azure Standard_NC24ads_A100_v4", "Llama-3.1-8B", "0.06", "4x935 ckpt", "2026-07"]]


def test_optional_columns_are_left_out_before_any_name_is_cut():
    natural = fit_widths(COLUMNS, ROWS, 1000)
    assert natural == [1, 30, 12, 6, 10, 7]
    assert fit_widths(COLUMNS, ROWS, 72) == [1, 30, 12, 6, 10, None]  # "as of" (rightmost optional) goes first
    assert fit_widths(COLUMNS, ROWS, 60) == [1, 30, 12, 6, None, None]


def test_names_are_cut_widest_first_and_never_below_their_minimum():
    widths = fit_widths(COLUMNS, ROWS, 40)
    assert widths == [1, 15, 12, 6, None, None] and sum(w for w in widths if w) + 2 * 3 == 40
    assert fit_widths(COLUMNS, ROWS, 20) == [1, 10, 12, 6, None, None]  # as narrow as they go; rich does the rest


def test_explain_text_wraps_under_its_description_column():
    line = "  optimizer states          29.915 GiB   8.030e9 trainable x 2 states x 2 B (adamw), paged, 8-bit"
    wrapped = hanging(f"Title\n{line}", 80).splitlines()
    assert wrapped[0] == "Title" and all(len(w) <= 80 for w in wrapped) and len(wrapped) == 3
    assert wrapped[1].startswith(line[:60].rsplit(" ", 1)[0][:40]) and wrapped[2].startswith(" " * 41 + "(adamw)")
    assert line.index("8.030e9") == 41


def test_gist_drops_a_long_closing_explanation_and_keeps_a_date_or_a_count():
    assert plan_table.gist(WINDING_DOWN) == "closes to new jobs in 39 days (2027-01-06)"
    assert plan_table.gist("FILE:2: tool calls (and 193 more lines)") == "FILE:2: tool calls (and 193 more lines)"
    assert plan_table.gist("(all of it in parentheses, which is no explanation of anything)").startswith("(all")


def test_route_numbers_read_as_ranges():
    assert plan_table._numbers([9, 8, 12, 13, 14, 15, 1]) == "#1, #8, #9, #12-#15"


@pytest.mark.parametrize("spec, name, accuracy", [
    ({"tokenizer": "o200k_base"}, "o200k_base", "exact"),
    ({"family": "llama3"}, "llama3 (estimate)", "±0.3%, p90 5.9%"),
    ({"family": "gemma"}, "gemma (estimate)", "not measured"),
    ({}, "unknown (estimate)", "as cl100k_base"),
])
def test_token_counters_get_a_short_name_and_a_separate_accuracy(spec, name, accuracy):
    counter = resolve(spec.get("tokenizer"), family=spec.get("family"))
    counted = stats({100: 1}, tokenizer=counter.name, exact=counter.exact, family=counter.family,
                    accuracy=counter.accuracy, why=counter.why)
    assert counter_label(counted)[:2] == (name, accuracy)


# ---------------------------------------------------------------------------------------------- the example

@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_the_example_fits_every_width_with_each_route_on_one_line(example, width):
    text = show(example, width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    sections = plan_table._sections(example, False, Footnotes())
    rows = [n for s in sections for n, _ in s.rows]
    starts = [int(m[1]) for line in lines if (m := re.match(r"\s*(\d+)  \S", line))]
    assert starts == rows  # every table row on a line of its own, in order
    assert all(re.search(rf"^\s*{n}  .*\b(together|openai|lora|qlora|full)\b", text, re.M) for n in rows[:3])


def test_the_example_answers_first_and_is_short(example):
    lines = show(example, 120).splitlines()
    best = next(i for i, line in enumerate(lines) if line.startswith("Best routes"))
    assert best < 15 and lines[best + 1].lstrip().startswith("Every route trains 3 epochs: OpenAI's auto rule")
    assert next(line for line in lines[best + 2:] if not line.startswith("    ")).lstrip().startswith("cheapest")
    first_table = next(i for i, line in enumerate(lines) if line.startswith("Managed fine-tuning APIs"))
    assert best < first_table
    assert len(lines) <= 120, len(lines)  # the route-by-route notes made it ~300 (with three managed providers)


def test_the_example_says_what_is_out_once_per_reason(example):
    text = show(example, 200)
    bedrock_out = [r for r in example.routes if r.backend == "bedrock" and "tool calls" in r.reason]
    assert len(bedrock_out) > 3
    said = [line for line in text.splitlines() if "tool calls, tool or developer messages: Bedrock" in line]
    assert len(said) == 1 and "line 2: tool calls" in said[0] and str(CHATS) not in said[0]
    assert "(and 1 more)" not in text and text.count("OpenAI is winding down") == 0  # the gist, unless -v
    assert "OpenAI is winding down" in show(example, 200, verbose=True)


# ---------------------------------------------------------------------------------------------- hand-made plans

def test_identical_notes_and_reasons_are_said_once_with_their_route_numbers():
    plan = plan_of(*(managed(f"gpt-{i}", f"{i}.00", provider="openai", method="sft", notes=[WINDING_DOWN])
                     for i in range(1, 5)),
                   managed("babbage-002", None, provider="openai", method="sft",
                           reason="takes prompt_completion data; this file is chat"),
                   managed("davinci-002", None, provider="openai", method="sft",
                           reason="takes prompt_completion data; this file is chat"))
    text = show(plan)
    assert text.count("closes to new jobs") == 1
    assert "  #1-#4: closes to new jobs in 39 days (2027-01-06)\n" in text
    assert "Not available:\n   #5, #6 openai babbage-002, davinci-002: takes prompt_completion data; this file is " \
           "chat\n" in text
    verbose = show(plan, 200, verbose=True)
    assert verbose.count("OpenAI is winding down") == 1 and "#1-#4: closes" in verbose


def test_notes_of_routes_out_are_shown_with_verbose_only():
    plan = plan_of(managed("a", "1.00"), managed("b", None, reason="closed", notes=["a note about b"]))
    assert "a note about b" not in show(plan) and "#2: a note about b" in show(plan, verbose=True)


def test_more_managed_routes_than_the_table_holds_are_counted_and_all_shows_them():
    priced = [managed(f"m{i}", f"{i}.00") for i in range(1, plan_table.MANAGED_ROWS + 4)]
    plan = plan_of(*priced, managed("tierless", None))
    text = show(plan)
    assert f"m{plan_table.MANAGED_ROWS} " in text and f"m{plan_table.MANAGED_ROWS + 1} " not in text
    assert f"4 more managed routes: 3 dearer (up to ${plan_table.MANAGED_ROWS + 3}.00), 1 without a price. " \
           "--all shows them." in text
    every = show(plan, all_routes=True)
    assert "more managed routes" not in every and "tierless" in every


def test_cloud_tables_keep_the_cheapest_per_model_and_method_and_the_fastest():
    routes = [gpu("cloud", "M", "lora", cost, hours, market="spot", instance_type=f"i{n}")
              for n, (cost, hours) in enumerate([("1.00", 2.0), ("2.00", 1.9), ("3.00", 0.5), ("4.00", 3.0)])]
    routes.append(gpu("cloud", "M", "full", None, None, market="spot", instance_type="tiny",
                      reason="does not fit even at micro-batch 1 with checkpointing"))
    text = show(plan_of(*routes))
    assert "aws i0" in text and "aws i2" in text and "aws i1" not in text  # the cheapest, and the fastest
    assert "Cloud GPUs, spot" in text and "Cloud GPUs, on-demand" not in text
    assert "2 more spot cloud routes: 2 dearer (up to $4.00). --all shows them." in text
    assert "#5 aws M full on 1xL40S: does not fit even at micro-batch 1" in text  # why no full route at all
    assert re.search(r"^1  aws i0 .*\n3  aws i2 ", text, re.M)  # each under its plan number, hidden or not


def test_best_routes_are_the_front_the_plan_trusts_each_with_what_it_trades():
    plan = plan_of(managed("api-model", "5.00", provider="together"),
                   replace(gpu("cloud", "M", "qlora", "0.20", 1.0, market="spot", instance_type="cheap"),
                           price_doubt="spot above on-demand"),
                   gpu("cloud", "M", "qlora", "0.50", 1.0, market="spot", instance_type="slow"),
                   gpu("cloud", "M", "lora", "0.90", 0.4, market="on-demand", instance_type="quick"),
                   gpu("cloud", "M", "lora", "9.00", 0.35, market="on-demand", instance_type="barely-quicker"),
                   gpu("cloud", "M", "full", "4.00", 0.1, market="on-demand", instance_type="quickest"))
    assert [(b.label, b.route.instance_type) for b in plan.best] == [
        ("cheapest", "slow"), ("balanced", "quick"), ("fastest", "quickest")]  # 0.35 h is within the error of 0.4
    assert plan.best[0].trade == "44% less than #2 for 2.5x the time"
    assert plan.best[2].trade == "4.4x the cost of #2 for 75% less time"
    lines = show(plan, 120).splitlines()
    best = lines[lines.index("Best routes on 2026-11-28") + 1:]
    assert re.match(r"\s+cheapest\s+\$0\.50\s+1\.00 h\s+#6\s+M qlora · 1xL40S · aws slow\s+44% less than #2", best[0])
    assert best[3].strip() == "passed over, the price in doubt: #5 spot above on-demand"
    assert "managed" not in " ".join(best[:3])  # dearer than a quicker route: off the front


def test_no_route_the_plan_trusts_within_the_budget_is_said():
    plan = plan_of(managed("api-model", "5.00", provider="together"), max_cost=Decimal("1"))
    text = show(plan)
    assert "Yours: cost at most $1.00 (--max-cost, --deadline)." in text
    assert "none: no available route has a price the plan trusts within your limits" in text


def test_the_same_route_cheapest_and_fastest_is_one_line():
    plan = plan_of(gpu("local", "M", "qlora", "0.01", 0.1), gpu_count=1,
                   gpu=load_catalog().gpu("RTX-4090"))
    text = show(plan)
    assert re.search(r"cheapest, fastest  \$0\.01  0\.10 h  #1  M qlora · 1xL40S · local\s*\n", text)
    assert "Your GPU: 1 x RTX-4090 (--gpu) · cost: its electricity" in text


# ---------------------------------------------------------------------------------------------- other views

def test_the_jobs_table_never_cuts_a_job_id():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    jobs = [Job(id=f"ftb-{n:08d}", spec=JobSpec(dataset="d.jsonl", model="meta.llama3-1-70b-instruct-v1:0:128k",
                                                 backend="bedrock"),
                status=JobStatus.QUEUED, created_at=now, updated_at=now, estimated_cost_usd=Decimal("12.5"))
            for n in range(3)]
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(jobs_table(jobs))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 5 and all(len(line.rstrip()) <= 80 for line in lines)
    assert [line.split()[0] for line in lines[2:]] == [j.id for j in jobs] and "12.50" in lines[2]


def test_catalog_show_fits_a_narrow_terminal():
    out = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["catalog", "show"], catch_exceptions=False).stdout
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert "Model architectures" in out and "heads/kv" in out and "Sources (! = a price not checked against its source for 90" in out
