"""Plan a dataset from Python: the epochs every route trains, the best routes with what each trades, and the
cheapest available route of each kind.

    python examples/sdk_plan.py                                   # the bundled dataset, Llama-3.1-8B, an RTX 4090
    python examples/sdk_plan.py data.jsonl --model Qwen2.5-7B --gpu H100:2 --max-cost 5 --chart plan.png
    python examples/sdk_plan.py --report plan.html                # the plan as a page to open or send
    python examples/sdk_plan.py --stack unsloth                   # the GPU routes as Unsloth would train them

``ftbroker.plan()`` reads the dataset once and returns the Plan that ``ftbroker plan`` renders: every route
(managed fine-tuning APIs, your GPU, cloud GPUs on-demand and spot), each with its cost, hours and peak VRAM, or
the reason it is out, all at the same number of epochs (``plan.options.epochs``). ``plan.best`` is the cost-time
front of the routes whose price the plan trusts; ``ftbroker.plan_chart(plan, path)`` draws it (the ``chart``
extra), and ``ftbroker.report(plan=plan, output=path)`` writes it as one self-contained HTML page. Dataset
problems do not raise: they are in ``plan.dataset.errors``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import ftbroker
from ftbroker import Plan, Route

BUNDLED = Path(__file__).resolve().parent / "data" / "support_chats.jsonl"

KINDS: dict[str, Callable[[Route], bool]] = {
    "managed API": lambda r: r.kind == "managed",
    "your GPU": lambda r: r.kind == "local",
    "cloud on-demand": lambda r: r.kind == "cloud" and r.market == "on-demand",
    "cloud spot": lambda r: r.kind == "cloud" and r.market == "spot",
}


def cheapest_of_each_kind(plan: Plan) -> dict[str, Route | None]:
    """The cheapest feasible, priced route of each kind (None: the plan has no such route)."""
    best = {}
    for label, is_kind in KINDS.items():
        priced = [r for r in plan.routes if is_kind(r) and r.feasible and r.cost_usd is not None]
        best[label] = min(priced, key=lambda r: r.cost_usd, default=None)
    return best


def describe(route: Route) -> str:
    where = f"{route.hardware.count}x{route.hardware.gpu}" if route.hardware else route.provider
    if route.instance_type:
        where += f" on {route.cloud} {route.instance_type}"
    hours = f", {route.hours:.2f} h" if route.hours is not None else ""
    vram = f", {route.vram_gib:.1f} GiB per GPU" if route.vram_gib is not None else ""
    cost = f"${route.cost_usd:.2f}" if route.cost_usd >= Decimal("0.01") else "<$0.01"
    runs = f"ftbroker run --route {route.number}" if route.runnable else route.not_runnable
    doubt = f" [price in doubt: {route.doubt}]" if route.doubt else ""
    return f"{cost}{hours}{vram}: {route.model} {route.method} via {where} ({runs}){doubt}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(BUNDLED), help="a JSONL dataset (default: the bundled one)")
    parser.add_argument("--model", action="append", help="a model to plan for (repeatable; default Llama-3.1-8B)")
    parser.add_argument("--gpu", default="RTX-4090", help="your GPU, NAME[:COUNT] (default RTX-4090)")
    parser.add_argument("--stack", default="ftbroker", help="the trainer the GPU routes are priced for")
    parser.add_argument("--max-cost", help="your budget in USD: routes over it are never a best route")
    parser.add_argument("--chart", help="also draw the plan into this PNG file (needs ftbroker[chart])")
    parser.add_argument("--report", help="also write the plan's report into this HTML file")
    args = parser.parse_args(argv)

    plan = ftbroker.plan(args.data, models=args.model or ["Llama-3.1-8B"], gpu=args.gpu, stack=args.stack,
                         max_cost=args.max_cost)
    plan.dataset.raise_for_errors()  # FILE:LINE problems, as `ftbroker validate` prints them
    print(f"{plan.dataset.path}: {plan.dataset.examples} examples, {len(plan.routes)} routes "
          f"({sum(r.feasible for r in plan.routes)} available), catalog {plan.catalog.version}, "
          f"{plan.options.epochs} epochs each")
    for best in plan.best:
        print(f"{best.label:>17}  {describe(best.route)}" + (f"; {best.trade}" if best.trade else ""))
    for label, route in cheapest_of_each_kind(plan).items():
        print(f"{label:>17}  {describe(route) if route else 'none available'}")
    if args.chart:
        print(f"chart: {ftbroker.plan_chart(plan, args.chart)}")
    if args.report:
        print(f"report: {ftbroker.report(plan=plan, output=args.report)}")


if __name__ == "__main__":
    main()
