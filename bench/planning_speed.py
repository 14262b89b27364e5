"""How long `ftbroker plan` spends outside the dataset pass: catalog import and load (bench/catalog_load.py),
planning (every route source, found in the backend registry as `ftbroker plan` finds them), JSON and the table.
Prints its figures.

    python bench/planning_speed.py [ROUNDS]

The dataset is a token-length histogram built here (the shape of a large chat file: log-normal lengths, a
thousand distinct lengths, 400,000 examples), so the figures do not depend on the dataset pass that
bench/plan_throughput.py times. Three plans: the default (every managed offer, the two default models, three
methods, the cheapest cloud instance per GPU type and cloud, a local GPU), `--all` (every instance), and
`--all` with six models (the largest plan a user is likely to ask for).
"""

from __future__ import annotations

import io
import json
import math
import random
import statistics
import sys
import time
from datetime import date

import catalog_load  # bench/catalog_load.py, beside this script
from rich.console import Console

from ftbroker import planner
from ftbroker.cli.plan_table import print_plan
from ftbroker.data.report import DatasetReport, Summary, TokenStats
from ftbroker.plan_io import route_sources
from ftbroker.pricing.catalog import load_catalog
from ftbroker.routes import ModelRequest, PlanOptions, RouteContext


def _report(keys: list[str]) -> DatasetReport:
    rng = random.Random(3)
    lengths: dict[int, int] = {}
    for _ in range(400_000):
        length = max(20, min(30_000, int(math.exp(rng.gauss(6.3, 0.8)))))
        lengths[length] = lengths.get(length, 0) + 1
    total = sum(k * v for k, v in lengths.items())
    n = sum(lengths.values())
    summary = Summary(min(lengths), total / n, 0, 0, max(lengths))
    stats = TokenStats("synthetic", True, total, total // 3, summary, lengths, None, 0)
    return DatasetReport("synthetic.jsonl", "chat", n, 10**9, None, dict.fromkeys(keys, stats), [], [], [], {})


def _time(fn, rounds: int) -> tuple[float, object]:
    runs, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), result


def main(rounds: int) -> None:
    catalog_load.main(rounds)
    cat = load_catalog()
    six = ("Llama-3.1-8B", "Qwen2.5-7B", "Llama-3.2-3B", "Qwen3-14B", "Gemma-3-27B-it", "Llama-3.1-70B")
    gpu = cat.gpu("RTX-4090")
    cases = (("default", PlanOptions(gpu=gpu, gpu_source="--gpu")),
             ("--all", PlanOptions(gpu=gpu, gpu_source="--gpu", all_instances=True)),
             ("--all, 6 models", PlanOptions(models=tuple(ModelRequest(m, cat.models[m]) for m in six), gpu=gpu,
                                             gpu_source="--gpu", all_instances=True)))
    sources, _ = route_sources(cat)
    for label, options in cases:
        needs = planner.token_needs(sources, cat, options)
        keys = {need.spec: f"k{i}" for i, need in enumerate(needs)}
        report = _report(list(keys.values()))

        def plan_once(options=options, keys=keys, report=report):  # a fresh context: nothing remembered
            context = RouteContext(report, None, cat, options, keys, date(2026, 11, 28))
            return planner.build_plan(context, sources)

        plan_s, plan = _time(plan_once, rounds)
        json_s, text = _time(lambda plan=plan: json.dumps(plan.to_json()), rounds)
        every = options.all_instances
        table_s, _ = _time(lambda plan=plan, every=every: print_plan(
            plan, Console(file=io.StringIO(), width=160), all_routes=every), max(1, rounds // 3))
        print(f"{label:16} {len(plan.routes):5,} routes: plan {plan_s * 1e3:6.0f} ms, JSON {json_s * 1e3:5.0f} ms "
              f"({len(text) / 1e6:.1f} MB), table {table_s * 1e3:6.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
