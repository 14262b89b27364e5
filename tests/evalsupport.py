"""Helpers of the ``ftbroker eval`` tests: held-out data with known answers, responders that make a "fine-tuned"
model right and its base wrong, a judge that recognises the right answer, and jobs recorded as succeeded."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftbroker.jobs import JobStatus
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def write_sums(path: Path, n: int = 6, start: int = 0) -> Path:
    """``n`` chat examples "What is i + i?" -> "2i" (the reference)."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"messages": [{"role": "system", "content": "Answer with the number."},
                                              {"role": "user", "content": f"What is {i} + {i}?"},
                                              {"role": "assistant", "content": str(2 * i)}]}) + "\n")
    return path


def right_answer(messages: list[dict[str, Any]]) -> str | None:
    text = " ".join(str(m.get("content") or "") for m in messages)
    found = QUESTION.search(text)
    return str(int(found.group(1)) + int(found.group(2))) if found else None


def tuned_knows(is_tuned):
    """A chat responder: the models ``is_tuned(model)`` names answer the sums right, the others ramble."""
    def respond(model: str, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        answer = right_answer(messages)
        if answer is not None and is_tuned(model):
            return answer
        return "I am not sure, let me think about numbers in general."
    return respond


def converse_text(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Bedrock Converse messages as chat messages (for the responders)."""
    return [{"role": m["role"], "content": " ".join(p.get("text", "") for p in m["content"])}
            for m in body.get("messages", [])]


def judge_by_reference(model: str, body: dict[str, Any]) -> str:
    """A judge that names the answer equal to the reference shown in its prompt (tie when both or neither)."""
    text = body["messages"][0]["content"]
    reference = _section(text, "Reference answer")
    a, b = _section(text, "Answer A"), _section(text, "Answer B")
    winner = "A" if a == reference and b != reference else "B" if b == reference and a != reference else "tie"
    return json.dumps({"winner": winner, "reason": "matches the reference" if winner != "tie" else "same"})


def _section(text: str, title: str) -> str:
    found = re.search(rf"\[{re.escape(title)}\]\n(.*?)(?:\n\n\[|\n\nReply with)", text, re.DOTALL)
    return found.group(1).strip() if found else ""


def succeeded_job(home: Path, spec: JobSpec, output_model: str) -> str:
    """A job recorded as succeeded, as if it had been trained (for routes whose training the test does not need)."""
    with Ledger(home / "ledger.sqlite3") as ledger:
        job = ledger.create(spec)
        ledger.update(job.id, status=JobStatus.RUNNING, submitted=True)
        ledger.update(job.id, status=JobStatus.SUCCEEDED, output_model=output_model)
    return job.id


def ledger_snapshot(home: Path) -> dict[str, list]:
    """Every row of every table of the ledger (what a failed evaluation must not change), but the leases: who acts
    on a job right now, which another process holding one renews as it goes."""
    with Ledger(home / "ledger.sqlite3") as ledger:
        tables = [r["name"] for r in ledger.read("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if r["name"] != "leases"]
        return {t: [tuple(r) for r in ledger.read(f"SELECT * FROM {t}")] for t in tables}
