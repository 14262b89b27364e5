"""``ftbroker eval``: did the fine-tune get better at its task, and worse at nothing else?

    from ftbroker import evaluate
    evaluation = evaluate("ftb-3k7x", judge="claude-haiku-5-5", max_cost=2)
    evaluation.overall["token_f1"]        # {"base": 0.31, "tuned": 0.92, "applies": 40.0}
    evaluation.win_rate.rate, evaluation.win_rate.ci_low, evaluation.win_rate.ci_high

The base model and the fine-tuned one answer the job's held-out examples (``examples``) with the settings a
fine-tune is served with (``local``, ``remote``, ``routes``); the answers are scored (``scoring``), optionally
judged pairwise and blind by another LLM (``judge``), and a built-in general-capability set is run on both
(``data/capability.jsonl``). The run is quoted and held to a budget before it spends (``quote``, ``prices``), paid
deployments are recorded before they exist and always torn down (``deployments``), calls are cached (``cache``),
and the ledger keeps every evaluation with its job (``store``).

For a general clean-up (``ftbroker gc``): ``live_deployments()`` lists the paid deployments recorded and not yet
deleted, ``delete_deployment(id)`` deletes one (refused while an evaluation of its job runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftbroker.evaluation.flow import Prepared
    from ftbroker.evaluation.records import Evaluation

__all__ = ["Evaluation", "delete_deployment", "evaluate", "live_deployments"]


def evaluate(job_id: str, *, test: str | None = None, judge: str | None = None, limit: int | None = None,
             max_cost: float | Decimal | None = None, schema: str | None = None, rubric: str | None = None,
             capability: bool = True, capability_file: str | None = None, regression_threshold: float = 0.10,
             seed: int = 0, chart: str | None = None, options: Mapping[str, Any] | None = None,
             confirm: Callable[[Prepared], bool] | None = None, home: str | Path | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Evaluation:
    """Evaluate a succeeded job, base model against fine-tuned; the Evaluation is also kept in the ledger.

    ``confirm`` sees the quote (``Prepared``) before anything is spent and may decline; it is asked only when the
    run can cost anything. ``options``: ``EvalOptions`` fields (timeouts, retries, the deployment-hour ceiling,
    Bedrock's runtime endpoint...). Errors: ``ftbroker.errors`` (bad input exit 2, a guard's refusal exit 3).
    """
    from pydantic import ValidationError

    from ftbroker.errors import SpecError
    from ftbroker.evaluation.flow import EvalOptions, Evaluator, Request

    try:
        parsed = EvalOptions.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise SpecError([f"option {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from exc
    request = Request(job_id=job_id, test=test, judge=judge, limit=limit,
                      max_cost=Decimal(str(max_cost)) if max_cost is not None else None, schema=schema, rubric=rubric,
                      capability=capability, capability_file=capability_file,
                      regression_threshold=regression_threshold, seed=seed, chart=chart, options=parsed)
    evaluator = Evaluator(home, sleep=sleep)
    try:
        return evaluator.evaluate(request, confirm=confirm)
    finally:
        evaluator.close()


def __getattr__(name: str) -> Any:
    if name == "Evaluation":
        from ftbroker.evaluation.records import Evaluation

        return Evaluation
    if name in ("live_deployments", "delete_deployment"):
        from ftbroker.evaluation import deployments

        return getattr(deployments, name)
    raise AttributeError(f"module 'ftbroker.evaluation' has no attribute {name!r}")
