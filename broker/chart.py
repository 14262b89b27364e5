"""A plan as a picture: cost against hours for every route, by kind, with the best routes (the cost-time front the
plan trusts) and the user's budget and deadline. ``ftbroker plan --chart FILE.png`` and, from Python,
``ftbroker.plan_chart(plan, "plan.png")``.

matplotlib is imported here alone, on use (the ``chart`` extra), so ``ftbroker plan`` stays light without it.
Both axes are logarithmic: costs run from cents to tens of dollars, hours from minutes to days. A route whose time
nobody publishes (a managed API) is drawn at its cost in a strip on the right; one whose price the plan doubts is
drawn hollow.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ftbroker.errors import ExtraNotInstalledError, InputError
from ftbroker.planner import Plan
from ftbroker.routes import Route

# (kind, market) -> (legend label, marker, colour): the plan's sections, in their order
KINDS = {("managed", ""): ("managed API", "s", "#7b3294"), ("local", ""): ("your GPU", "*", "#d7191c"),
         ("cloud", "on-demand"): ("cloud on-demand", "o", "#2c7bb6"), ("cloud", "spot"): ("cloud spot", "^", "#1a9641")}
UNTIMED_GAP = 2.5  # the strip of routes without hours sits this many times right of the slowest timed route


def check_chart_extra() -> None:
    """Raise (exit 2, naming the extra) unless matplotlib can be imported."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ExtraNotInstalledError("matplotlib", "chart", "plan --chart", usage=True)


def plan_chart(plan: Plan, path: str | os.PathLike) -> Path:
    """Draw ``plan`` into the PNG file ``path`` (replaced if it exists); returns the path."""
    check_chart_extra()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    routes = [r for r in plan.routes if r.feasible and r.cost_usd is not None and r.cost_usd > 0]
    timed = [r for r in routes if r.hours is not None]
    strip = max((r.hours for r in timed), default=1.0) * UNTIMED_GAP
    figure, axes = pyplot.subplots(figsize=(8, 5))
    try:
        for key, (label, marker, colour) in KINDS.items():
            mine = [r for r in routes if (r.kind, r.market if r.kind == "cloud" else "") == key]
            if mine:
                _points(axes, mine, strip, label, marker, colour)
        _front(axes, plan)
        _limits(axes, plan)
        if len(timed) < len(routes):
            axes.axvline(strip / UNTIMED_GAP ** 0.5, color="#bbbbbb", linewidth=0.8)
            axes.annotate("time not published", (strip, 1), xycoords=("data", "axes fraction"), ha="center",
                          va="bottom", fontsize=8, color="#666666", xytext=(0, -12), textcoords="offset points")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("hours (wall-clock)")
        axes.set_ylabel("cost (USD)")
        epochs = plan.options.epochs
        axes.set_title(f"{Path(plan.dataset.path).name}: {len(routes)} priced routes"
                       + (f", {epochs} epoch{'s' if epochs != 1 else ''} each" if epochs else "")
                       + f" ({plan.today}; hollow: price in doubt)", fontsize=10)
        axes.grid(alpha=0.3, which="both")
        if axes.get_legend_handles_labels()[0]:  # nothing priced: nothing to name
            axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
        out = Path(path)
        try:
            figure.savefig(out, dpi=96, bbox_inches="tight")
        except OSError as exc:
            raise InputError(f"{out}: the chart cannot be written ({exc.strerror or exc})") from exc
        return out
    finally:
        pyplot.close(figure)


def _points(axes, routes: list[Route], strip: float, label: str, marker: str, colour: str) -> None:
    """One kind of route: filled where the plan trusts the price, hollow where it doubts it (named once)."""
    for trusted in (True, False):
        mine = [r for r in routes if (not r.doubt) == trusted]
        if mine:
            axes.scatter([r.hours if r.hours is not None else strip for r in mine], [float(r.cost_usd) for r in mine],
                         marker=marker, s=60 if marker == "*" else 28, label=label,
                         facecolors=colour if trusted else "none", edgecolors=colour, linewidths=0.9, alpha=0.8)
            label = None


def _front(axes, plan: Plan) -> None:
    """The best routes, joined as the front they are (cheapest to fastest), each labelled with its number."""
    best = [b.route for b in plan.best if b.route.hours is not None]
    if not best:
        return
    axes.plot([r.hours for r in best], [float(r.cost_usd) for r in best], color="black", linewidth=1.2,
              marker="o", markerfacecolor="none", markersize=11, label="best routes (trusted front)", zorder=3)
    for r in best:
        axes.annotate(f"#{r.number}", (r.hours, float(r.cost_usd)), xytext=(6, 6), textcoords="offset points",
                      fontsize=8)


def _limits(axes, plan: Plan) -> None:
    options = plan.options
    if options.max_cost is not None:
        axes.axhline(float(options.max_cost), color="#d7191c", linestyle="--", linewidth=1,
                     label=f"your budget (${options.max_cost:,.2f})")
    if options.deadline_hours is not None:
        axes.axvline(options.deadline_hours, color="#fdae61", linestyle="--", linewidth=1,
                     label=f"your deadline ({options.deadline_hours:g} h)")
