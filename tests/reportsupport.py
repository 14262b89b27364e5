"""What the report tests report on, made for real: a ledger with an OpenAI fine-tune trained on the loopback fake
(train and eval curves) and evaluated (an `evaluations` row, Claude judging on its fake), a local job of the scripted
trainer quoted for a catalog model and GPU (estimated beside measured resources) under a hostile name, and the plan
`ftbroker plan --json` prints for examples/data."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from evalsupport import judge_by_reference, tuned_knows, write_sums
from fakes import FakeAnthropic, FakeOpenAI, nvidia_smi
from fakes.support import FAST
from jobsupport import SCRIPTED_TRAINER, write_chat
from test_eval_openai import EVAL_FAST, MODEL

from ftbroker.backends.local.backend import LocalBackend
from ftbroker.broker import Broker
from ftbroker.cli import cli
from ftbroker.evaluation import evaluate
from ftbroker.spec import JobSpec

CHATS = Path(__file__).resolve().parents[1] / "examples" / "data" / "support_chats.jsonl"
# a job name that would run as a script, or load a picture from elsewhere, were it not escaped
HOSTILE = "<script>pwned=1</script><img src=//x.invalid onerror=pwned=2>"  # a job name holds 64 characters


def ledger_with_jobs(home: Path, work: Path, day: date) -> dict[str, str]:
    """{"openai": id, "local": id}: both jobs finished in the ledger under ``home`` on ``day`` (conftest's
    CATALOG_DAY: the OpenAI route is open then); the OpenAI one evaluated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTBROKER_HOME", str(home))
        mp.setenv("FTBROKER_NOW", f"{(day - date.today()).days:+d}d")  # as conftest's catalog_day: still running
        mp.setattr(LocalBackend, "capabilities", replace(LocalBackend.capabilities, poll_interval_s=0.05))
        with FakeOpenAI(advance_on_poll=True, total_steps=12) as openai, FakeAnthropic() as anthropic:
            mp.setenv("OPENAI_API_KEY", "sk-test-report")
            mp.setenv("OPENAI_BASE_URL", openai.base_url)
            mp.setenv("ANTHROPIC_API_KEY", "test-report-anthropic")
            mp.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
            openai.responder = tuned_knows(lambda model: model.startswith("ft:"))
            anthropic.responder = judge_by_reference
            spec = JobSpec(dataset=str(write_sums(work / "train.jsonl", 12)), model=MODEL, backend="openai",
                           validation=str(write_sums(work / "valid.jsonl", 6, start=50)), name="sums (OpenAI)",
                           backend_options=FAST)
            with Broker(home, sleep=lambda s: None) as broker:
                managed = broker.submit(spec).id
                broker.follow(managed)
            evaluate(managed, home=home, sleep=lambda s: None, capability=False, judge="claude-haiku-5-5",
                     options=EVAL_FAST)
        mp.setenv("FTB_SCRIPT_STEPS", "8")
        done = CliRunner().invoke(cli, ["run", str(write_chat(work / "chat.jsonl")), "--model", "Qwen2.5-0.5B",
                                        "--gpu", "RTX-4090", "--name", HOSTILE, "--option",
                                        f"trainer={SCRIPTED_TRAINER}", "--yes", "--json"])
        assert done.exit_code == 0, done.output
        local = json.loads(done.stdout)["job"]["id"]
    return {"openai": managed, "local": local}


def plan_json(path: Path, day: date, home: Path) -> Path:
    """``ftbroker plan examples/data/support_chats.jsonl --json`` on ``day`` with a budget and a deadline, into
    ``path``."""
    env = {"FTBROKER_NOW": day.isoformat(), "COLUMNS": "120",
           "FTBROKER_HOME": str(home)}
    with pytest.MonkeyPatch.context() as mp:
        bin_dir = path.parent / "no-gpu-bin"
        bin_dir.mkdir(exist_ok=True)
        nvidia_smi.install(mp, bin_dir)  # no GPU here: the same plan on a machine with one
        done = CliRunner(env=env).invoke(cli, ["plan", str(CHATS), "--max-cost", "2", "--deadline", "3", "--json"])
    assert done.exit_code == 0, done.output
    path.write_text(done.stdout)
    return path
