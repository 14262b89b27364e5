"""The job commands: exit codes, JSON shapes, and two CLI processes sharing one ledger."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from jobsupport import SCRIPTED_TRAINER, ScriptedBackend, write_chat

from ftbroker.backends.local.backend import LocalBackend
from ftbroker.cli import cli
from ftbroker.ledger import Claim, Ledger, default_home
from ftbroker.pricing.catalog import load_catalog

JOB_KEYS = {"id", "backend", "model", "method", "status", "status_detail", "submitted", "created_at",
            "submitted_at", "started_at", "finished_at", "progress", "estimated_cost_usd", "actual_cost_usd",
            "trained_tokens", "output_model", "error", "remote", "trackers", "resources", "spec"}
RESULT_KEYS = {"id", "backend", "status", "model", "output_model", "metrics", "trained_tokens",
               "estimated_cost_usd", "actual_cost_usd", "started_at", "finished_at", "artifacts", "error", "raw"}


@pytest.fixture(autouse=True)
def fast(monkeypatch, plugin_backends):
    monkeypatch.setattr(LocalBackend, "capabilities", replace(LocalBackend.capabilities, poll_interval_s=0.05))
    plugin_backends(scripted="jobsupport:ScriptedBackend")
    monkeypatch.setattr(ScriptedBackend, "calls", [])
    monkeypatch.setattr(ScriptedBackend, "remote_jobs", {})


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl")


def ftb(*args, ok=(0,)):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in ok, (result.exit_code, result.output, result.exception)
    return result


def local_run(data, *extra):
    """A local job whose trainer is the scripted stand-in (tests/scripted_trainer.py)."""
    return ["run", data, "--model", "tiny", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes", *extra]


def test_run_follows_to_the_end_and_fails_with_exit_1(data):
    scripted = ["run", data, "--backend", "scripted", "--model", "m", "--yes", "--json"]
    out = json.loads(ftb(*scripted).stdout)
    assert set(out["job"]) == JOB_KEYS and set(out["result"]) == RESULT_KEYS
    assert out["result"]["status"] == "succeeded" and out["job"]["status"] == "succeeded"
    failed = ftb(*scripted, "--option", "outcome=failed", ok=(1,))
    assert json.loads(failed.stdout)["result"]["error"].startswith("invalid training file")
    assert "failed: invalid training file" in failed.stderr


def test_bad_flags_are_all_reported_with_exit_2(data):
    result = ftb("run", data, "--model", "m", "--epochs", "0", "--lr", "lots", "--method", "sft",
                 "--option", "gpus", "--option", "colour=red", "--yes", ok=(2,))
    for words in ("hyperparameters.epochs: must be at least 1 (got '0') (from --epochs)",
                  "hyperparameters.learning_rate:", "(got 'lots') (from --learning-rate)",
                  "method: Input should be 'full', 'lora' or 'qlora' (got 'sft') (from --method)",
                  "--option 'gpus': write KEY=VALUE"):
        assert words in result.stderr
    assert "Traceback" not in result.output
    ok_otherwise = ftb("run", data, "--model", "m", "--option", "colour=red", "--yes", ok=(2,))
    assert "backend_options.colour: local has no such option" in ok_otherwise.stderr


def test_a_bad_job_file_is_exit_2_naming_the_field(data, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"dataset: {data}\nmodel: m\nhyperparameters:\n  micro_batch_size: -4\n")
    result = ftb("run", "--config", job, "--yes", ok=(2,))
    assert "hyperparameters.micro_batch_size: must be at least 1 (got -4)" in result.stderr
    assert Ledger().list() == []


def test_bad_data_is_exit_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n[1, 2]\n')
    result = ftb(*local_run(bad), ok=(2,))
    assert f"{bad}:2:" in result.stderr


def test_a_line_over_the_size_limit_is_exit_2_before_anything_starts(tmp_path, monkeypatch):
    from ftbroker.data import reader

    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 2 << 20)
    big = write_chat(tmp_path / "big.jsonl", 3)
    with big.open("ab") as fh:
        fh.write(b'{"text": "' + b"a" * (3 << 20) + b'"}\n')
    result = ftb(*local_run(big), ok=(2,))
    assert f"{big}:4: the line is {(3 << 20) + 12:,} bytes, over the limit" in result.stderr
    assert Ledger().list() == []


@pytest.mark.parametrize("extra, words", [
    (["--max-cost", "1", "--option", "cost_usd=2.5"], "estimated cost $2.5 is over --max-cost $1"),
    (["--max-cost", "1"], "cannot be estimated"),
    (["--option", "verdict=does_not_fit"], "does not fit"),
])
def test_guard_refusals_are_exit_3(data, extra, words):
    result = ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", *extra, ok=(3,))
    assert words in result.stderr
    assert Ledger().list() == []


def test_without_yes_and_without_a_terminal_nothing_starts(data):
    result = ftb("run", data, "--backend", "scripted", "--model", "m", "--option", "cost_usd=0.5", ok=(3,))
    assert "pass --yes" in result.stderr and "$0.50" in result.stderr  # the quote was shown
    assert Ledger().list() == []


def test_unknown_and_ambiguous_job_ids_are_exit_2(data):
    for _ in range(2):
        ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", "--detach")
    assert "ambiguous" in ftb("status", "ftb-", ok=(2,)).stderr
    assert "no job ftb-nothere" in ftb("logs", "nothere", ok=(2,)).stderr
    assert "no job" in ftb("result", "ftb-nothere", "--json", ok=(2,)).stderr


def test_a_job_another_process_acts_on_is_refused_with_exit_3_naming_it(data):
    job_id = json.loads(ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", "--detach", "--json",
                            "--option", "polls_to_finish=99").stdout)["job"]["id"]
    with Ledger() as ledger:
        ledger.claim(job_id, Claim("resuming"))  # another terminal's `ftbroker resume`, still at work
    for command in ("resume", "cancel"):
        refused = ftb(command, job_id, ok=(3,))
        assert f"error: job {job_id} is busy: another ftbroker process is at it (resuming; pid {os.getpid()}" in \
            refused.stderr
        assert "nothing was done. Try again when it has finished" in refused.stderr


def test_a_submission_lost_in_an_outage_says_how_to_finish_it_safely(data):
    lost = ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", "--option", "submit_error=unavailable",
               ok=(1,))
    [job] = Ledger().list()
    assert f"is recorded; `ftbroker resume {job.id}` finishes the job safely" in lost.stderr  # where it is printed
    resumed = json.loads(ftb("resume", job.id, "--detach", "--json").stdout)["job"]
    assert resumed["submitted"] and resumed["remote"]["remote_id"] == f"r-{job.id}"


def test_result_of_a_running_job_and_export_rules(data):
    job_id = json.loads(ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", "--detach", "--json",
                            "--option", "polls_to_finish=99").stdout)["job"]["id"]
    assert "no result yet" in ftb("result", job_id, ok=(1,)).stderr
    assert "only a succeeded job can be exported (`ftbroker logs" in ftb("export", job_id, "--format", "ollama",
                                                                         ok=(1,)).stderr
    done = json.loads(ftb("run", data, "--backend", "scripted", "--model", "m", "--yes", "--json").stdout)
    assert done["result"]["actual_cost_usd"] == 0.42  # money is a number in JSON
    assert "scripted cannot export jobs: not implemented" in ftb("export", done["job"]["id"], "--format", "merged",
                                                                 ok=(2,)).stderr


@pytest.mark.parametrize("model, loaded", [
    ("Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),          # a catalog name: its Hugging Face repo
    ("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B"),  # an alias, in any case
    ("someone/unknown-7b", "someone/unknown-7b"),          # a repo id stays as given
])
def test_the_trainer_loads_a_catalog_model_from_its_hugging_face_repo(data, model, loaded):
    job = json.loads(ftb("run", data, "--model", model, "--option", f"trainer={SCRIPTED_TRAINER}", "--yes",
                         "--json").stdout)["job"]
    config = json.loads((Path(job["remote"]["run_dir"]) / "config.json").read_text())
    assert config["model"] == job["remote"]["base_model"] == loaded  # what the trainer loads, kept in the job
    assert job["model"] == job["spec"]["model"] == model  # the name the user gave


def test_a_catalog_model_without_a_repo_is_refused_before_anything_starts(data):
    row = load_catalog().model("Llama-3.2-1B")  # its shape under another name, without hf_repo
    (default_home() / "catalog.toml").write_text(
        "[[model]]\n" + "".join(f"{k} = {json.dumps(getattr(row, k))}\n" for k in (
            "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
            "vocab_size", "max_position_embeddings", "tie_word_embeddings", "source"))
        + f'name = "My-1B"\nas_of = {row.as_of}\n')
    result = ftb("run", data, "--model", "My-1B", "--option", f"trainer={SCRIPTED_TRAINER}", "--yes", ok=(2,))
    assert "the catalog's My-1B names no Hugging Face repo" in result.stderr and "ORG/NAME" in result.stderr
    assert Ledger().list() == []


def test_export_of_a_local_job_without_its_run_folder_or_the_local_extra(data, monkeypatch):
    job = json.loads(ftb(*local_run(data, "--json")).stdout)["job"]
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError, as when it is not installed
    result = ftb("export", job["id"], "--format", "merged", ok=(1,))
    assert "needs the 'torch' package: pip install 'ftbroker[local]'" in result.stderr
    shutil.rmtree(job["remote"]["run_dir"])
    result = ftb("export", job["id"], "--format", "merged", ok=(1,))
    assert f"job {job['id']} has no run folder at" in result.stderr and "it cannot be exported" in result.stderr
    assert "Traceback" not in result.output


def test_two_cli_processes_share_one_ledger(data, tmp_path):
    env = {**os.environ, "FTB_SCRIPT_STEPS": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "ftbroker.cli", *local_run(data, "--json", "--name", name)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("first", "second")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out)["result"] for out, _ in outs]
    assert [r["status"] for r in results] == ["succeeded", "succeeded"]
    jobs = Ledger().list()
    assert sorted(j.spec.name for j in jobs) == ["first", "second"]
    assert all(j.status.value == "succeeded" and j.finished_at for j in jobs)


def test_job_commands_do_not_load_heavy_modules_for_help():
    code = ("import sys; from ftbroker.cli import cli\n"
            "for c in ('run', 'jobs', 'status', 'logs', 'cancel', 'result', 'resume', 'export'):\n"
            "    try: cli([c, '--help'])\n"
            "    except SystemExit: pass\n"
            "heavy = {'torch', 'transformers', 'openai', 'together', 'boto3', 'httpx'} & set(sys.modules)\n"
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_jobs_status_filter_offers_every_status():
    from ftbroker.jobs import JobStatus

    option = next(p for p in cli.commands["jobs"].params if p.name == "status")
    assert list(option.type.choices) == [s.value for s in JobStatus]
