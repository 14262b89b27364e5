"""How an evaluation looks: the side-by-side table, the quote, the JSON, and the PNG chart (matplotlib, from the
``local`` extra; without it the chart is skipped and the evaluation says so)."""

from __future__ import annotations

import importlib.util
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ftbroker.evaluation.records import Evaluation

LABELS = {"exact_match": "exact match", "token_f1": "token F1", "length_ratio": "length / reference",
          "json_valid": "valid JSON", "schema_valid": "matches --schema", "tool_call": "tool-call shape"}


def _num(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.2f}"


def _delta(base: float | None, tuned: float | None, percent: bool = True) -> str:
    if base is None or tuned is None:
        return "-"
    diff = tuned - base
    return f"{diff:+.1%}" if percent else f"{diff:+.2f}"


def table(evaluation: Evaluation) -> Group:
    """The scores side by side, then the win rate, the capability check, the cost and the notes."""
    grid = Table(header_style="bold")
    grid.add_column("score")
    grid.add_column("base", justify="right")
    grid.add_column("fine-tuned", justify="right")
    grid.add_column("change", justify="right")
    for metric, values in evaluation.overall.items():
        percent = metric != "length_ratio"
        label = LABELS.get(metric, metric) + (f" ({int(values['applies'])})" if values["applies"] != evaluation.examples
                                              else "")
        grid.add_row(label, _num(values["base"], percent), _num(values["tuned"], percent),
                     _delta(values["base"], values["tuned"], percent))
    capability = evaluation.capability
    if capability is not None:
        grid.add_row(f"general capability ({capability.items})", _num(capability.base), _num(capability.tuned),
                     _delta(capability.base, capability.tuned), style="red" if capability.regression else None)
    head = Text(f"{evaluation.job_id} ({evaluation.backend}): {evaluation.examples} held-out examples, "
                f"{evaluation.held_out}", style="bold")
    lines: list[Any] = [head, grid]
    if evaluation.win_rate is not None:
        lines.append(Text(win_line(evaluation)))
    lines.append(Text(cost_line(evaluation)))
    lines += [Text(f"note: {n}", style="yellow" if n.startswith(("REGRESSION", "not deleted")) else "")
              for n in evaluation.notes]
    if evaluation.chart:
        lines.append(Text(f"chart: {evaluation.chart}"))
    return Group(*lines)


def win_line(evaluation: Evaluation) -> str:
    w = evaluation.win_rate
    if w.rate is None:
        return f"win rate: no pair judged ({w.unparseable} unparseable) by {w.judge}"
    return (f"win rate of the fine-tuned model: {w.rate:.1%} (95% CI {w.ci_low:.1%}-{w.ci_high:.1%}, Wilson) over "
            f"{w.judged} pairs: {w.tuned_wins} won, {w.base_wins} lost, {w.ties} tied; {w.unparseable} unparseable; "
            f"orders agreed on {w.consistency:.0%}; judge {w.judge}" if w.consistency is not None else
            f"win rate of the fine-tuned model: {w.rate:.1%} over {w.judged} pairs; judge {w.judge}")


def cost_line(evaluation: Evaluation) -> str:
    c = evaluation.costs
    total = f"${c.total_usd:.4f}" if c.total_usd is not None else f"unknown ({', '.join(c.unknown)} unpriced)"
    return (f"cost: {total} (answers ${c.inference_usd:.4f}, deployments ${c.deployment_usd:.4f}, judge "
            f"${c.judge_usd:.4f}); {c.calls} calls, {c.cached_calls} from the cache")


def quote_table(prepared: Any) -> Group:
    quote = prepared.quote
    grid = Table(header_style="bold")
    grid.add_column("part")
    grid.add_column("expected", justify="right")
    grid.add_column("at most", justify="right")
    for part in quote.parts:
        grid.add_row(part.label, _money(part.expected), _money(part.high) if part.high is not None
                     else f"unknown: {part.why}")
    grid.add_row(Text("total", style="bold"), _money(quote.expected), _money(quote.high))
    budget = prepared.request.max_cost
    head = Text(f"ftbroker eval {prepared.job.id}: the quote, before anything is spent", style="bold")
    lines: list[Any] = [head, grid, Text(f"budget (--max-cost): {_money(budget)}")]
    lines += [Text(f"note: {n}") for n in quote.notes]
    return Group(*lines)


def _money(value: Any) -> str:
    return f"${value:.4f}" if value is not None else "unknown"


def chart(evaluation: Evaluation, path: str) -> tuple[str | None, str | None]:
    """Write the PNG: each score, base beside fine-tuned, and the win rate with its interval. (path written or None,
    the reason it was not)."""
    if importlib.util.find_spec("matplotlib") is None:
        return None, "no chart: matplotlib is not installed (it comes with pip install 'ftbroker[local]')"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(LABELS.get(m, m), v) for m, v in evaluation.overall.items() if m != "length_ratio"]
    if evaluation.capability is not None:
        metrics.append(("general capability", {"base": evaluation.capability.base,
                                               "tuned": evaluation.capability.tuned}))
    panels = 2 if evaluation.win_rate is not None and evaluation.win_rate.rate is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(4 + 1.6 * len(metrics) + 2.5 * (panels - 1), 4),
                                gridspec_kw={"width_ratios": [max(1, len(metrics)), 1][:panels]}, squeeze=False)
    bars = axes[0][0]
    xs = range(len(metrics))
    bars.bar([x - 0.2 for x in xs], [v["base"] or 0 for _, v in metrics], 0.4, label="base")
    bars.bar([x + 0.2 for x in xs], [v["tuned"] or 0 for _, v in metrics], 0.4, label="fine-tuned")
    bars.set_xticks(list(xs), [name for name, _ in metrics], rotation=20, ha="right")
    bars.set_ylim(0, 1.05)
    bars.set_title(f"{evaluation.job_id}: {evaluation.examples} held-out examples")
    bars.legend()
    if panels == 2:
        w = evaluation.win_rate
        ax = axes[0][1]
        ax.bar([0], [w.rate], 0.5, yerr=[[w.rate - w.ci_low], [w.ci_high - w.rate]], capsize=6, color="tab:green")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks([0], ["win rate"])
        ax.set_ylim(0, 1.05)
        ax.set_title("judge (95% Wilson CI)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path), None
