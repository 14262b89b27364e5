"""Plausibility bounds (ftbroker.bounds): a count or length past what exists is refused with exit 2, saying why,
the same way by plan, estimate and run (flags, job files and the SDK)."""

import json

import pytest
from click.testing import CliRunner
from jobsupport import write_chat

import ftbroker
from ftbroker import bounds
from ftbroker.cli import cli
from ftbroker.errors import InputError
from ftbroker.ledger import Ledger
from ftbroker.spec import JobSpec

HUGE = "99999999999999999999"


def ftb(*args, ok=(0,)):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in ok, (result.exit_code, result.output, result.exception)
    return result


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl")


def test_every_bound_says_why():
    for name, bound in bounds.BOUNDS.items():
        assert bound.problem(bound.high) is None and bound.problem(bound.low) is None
        refused = bound.problem(bound.high + 1)
        assert refused.startswith(f"at most {bound.high:,}") and len(refused) > 40, name
        assert bound.problem(bound.low - 1) == f"must be at least {bound.low:,}"


@pytest.mark.parametrize("args, words", [
    (["estimate", "Llama-3.1-8B", "--method", "qlora", "--seq-len", HUGE], "at most 1,048,576 tokens"),
    (["estimate", "Llama-3.1-8B", "--method", "qlora", "--batch", HUGE], "at most 4,096 sequences"),
    (["estimate", "Llama-3.1-8B", "--method", "lora", "--lora-r", "5000"], "at most 1,024 (LoRA rank)"),
    (["estimate", "Llama-3.1-8B", "--method", "qlora", "--gpu", f"H100:{HUGE}"], "at most 64 GPUs per job"),
    (["plan", "DATA", "--gpu", f"H100:{HUGE}"], "at most 64 GPUs per job: a job trains on one machine"),
    (["plan", "DATA", "--max-seq-len", HUGE], "at most 1,048,576 tokens"),
    (["plan", "DATA", "--epochs", "101"], "at most 100 epochs"),
    (["run", "DATA", "--model", "m", "--gpu", f"H100:{HUGE}", "--yes"], "at most 64 GPUs per job"),
    (["run", "DATA", "--model", "m", "--max-seq-len", HUGE, "--yes"], "at most 1,048,576 tokens"),
    (["validate", "DATA", "--max-seq-len", HUGE], "at most 1,048,576 tokens"),
])
def test_flags_past_what_exists_are_exit_2_with_the_reason(data, args, words):
    result = ftb(*[data if a == "DATA" else a for a in args], ok=(2,))
    assert words in result.stderr and "$" not in result.stdout
    assert Ledger().list() == []


def test_the_sdk_and_job_files_hold_the_same_bounds(data):
    with pytest.raises(InputError, match=f"seq-len {HUGE}: at most 1,048,576 tokens"):
        ftbroker.estimate("Llama-3.1-8B", method="qlora", seq_len=int(HUGE))
    with pytest.raises(InputError, match="at most 64 GPUs per job"):
        ftbroker.estimate("Llama-3.1-8B", method="qlora", gpu="H100", n_gpus=65)
    with pytest.raises(ValueError, match="(?s)lora.r.*at most 1,024"):
        JobSpec(dataset=str(data), model="m", lora={"r": 4096})


def test_a_list_limit_past_what_the_ledger_holds_lists_every_job(data):
    ftb("run", data, "--model", "m", "--option", "trainer=/bin/true", "--yes", "--detach", ok=(0, 1))
    listed = json.loads(ftb("jobs", "--limit", "99999999999999999999999", "--json").stdout)["jobs"]
    assert len(listed) == 1
