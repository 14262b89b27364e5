import json
import os
from decimal import Decimal

import pytest
from jobsupport import write_chat

from ftbroker.backends.registry import BUILTIN_BACKENDS
from ftbroker.errors import SpecError
from ftbroker.spec import JobSpec, load_spec

# AWS's documented example access key id, assembled so that no key-shaped string sits in the source
AWS_EXAMPLE_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "data.jsonl")


def test_yaml_job_file_with_relative_paths(tmp_path, data):
    (tmp_path / "val.jsonl").write_text(data.read_text())
    job = tmp_path / "job.yaml"
    job.write_text("""
dataset: data.jsonl
validation: val.jsonl
model: Qwen2.5-0.5B-Instruct
method: qlora
hyperparameters: {epochs: 2, learning_rate: 2e-4, micro_batch_size: 4, packing: true, seed: 7}
lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
budget: {max_cost_usd: 5}
backend_options: {gpus: 1}
""")
    spec = load_spec(job)
    assert spec.dataset == str(data.resolve())
    assert spec.validation == str((tmp_path / "val.jsonl").resolve())
    assert spec.method == "qlora"
    assert spec.hyperparameters.learning_rate == 2e-4  # "2e-4" is a string to YAML 1.1
    assert spec.lora.target_modules == ["q_proj", "v_proj"]
    assert spec.budget.max_cost_usd == Decimal("5")
    assert spec.backend_options == {"gpus": 1}


def test_toml_job_file_and_flags_override(tmp_path, data, monkeypatch):
    job = tmp_path / "job.toml"
    job.write_text(f"""
dataset = "{data.name}"
model = "from-file"
[hyperparameters]
epochs = 3
max_seq_len = 1024
""")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(job, {"model": "from-flag", "hyperparameters.epochs": "5", "lora.r": None})
    assert spec.model == "from-flag"
    assert spec.hyperparameters.epochs == 5
    assert spec.hyperparameters.max_seq_len == 1024  # untouched by flags
    assert spec.lora.r is None


def test_every_problem_reported_at_once_with_its_field(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("""
model: m
method: dpo
hyperparameters: {epochs: 0, learning_rate: -1, lr: 3}
lora: {r: 0, target_modules: []}
""")
    with pytest.raises(SpecError) as info:
        load_spec(job, {"hyperparameters.micro_batch_size": "many"},
                  flag_names={"hyperparameters.micro_batch_size": "--micro-batch"})
    problems = "\n".join(info.value.problems)
    assert info.value.exit_code == 2
    for expected in ("dataset: required", "method: Input should be 'full', 'lora' or 'qlora'",
                     "hyperparameters.epochs: must be at least 1 (got 0)",
                     "hyperparameters.learning_rate: Input should be greater than 0",
                     "hyperparameters.lr: unknown field; did you mean 'learning_rate'?",
                     "hyperparameters.micro_batch_size: Input should be a valid integer",
                     "(from --micro-batch)", "lora.r:", "lora.target_modules:"):
        assert expected in problems
    assert str(job) in str(info.value)


def test_missing_files_unknown_backend_and_bad_options_together(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(None, {"dataset": str(tmp_path / "nope.jsonl"), "model": "m", "backend": "opnai"})
    text = str(info.value)
    assert "dataset: no such file" in text
    assert "backend: unknown backend 'opnai'" in text and f"valid: {', '.join(sorted(BUILTIN_BACKENDS))})" in text


def test_backend_options_are_checked_by_the_backend(data):
    with pytest.raises(SpecError) as info:
        load_spec(None, {"dataset": str(data), "model": "m", "backend_options.gpu_count": 2,
                         "backend_options.cancel_grace_s": -1, "backend_options.gpu": "A100:0"})
    text = str(info.value)
    assert "backend_options.gpu_count: local has no such option" in text
    assert "backend_options.cancel_grace_s:" in text
    assert "backend_options.gpu: GPU 'A100:0': COUNT must be a positive integer (NAME[:COUNT])" in text


@pytest.mark.parametrize("options", [
    {"api_key": "abc"},
    {"openai": {"OPENAI_API_KEY": "x"}},
    {"hf_token": "x"},
    {"extra_headers": ["Authorization: Bearer abcdefghijklmnopqrstuvwxyz"]},
    {"note": "sk-proj-abcdefghijklmnopqrstuvwxyz012345"},
    {"aws": AWS_EXAMPLE_KEY_ID},
])
def test_secrets_are_refused_without_being_echoed(data, options):
    with pytest.raises(SpecError) as info:
        load_spec(None, {"dataset": str(data), "model": "m", **{f"backend_options.{k}": v
                                                                   for k, v in options.items()}})
    text = str(info.value)
    assert "looks like a secret" in text and "environment" in text
    for secret in ("abcdefghijklmnopqrstuvwxyz", AWS_EXAMPLE_KEY_ID):
        assert secret not in text


def test_harmless_option_names_are_not_taken_for_secrets():
    spec = JobSpec(dataset="d", model="m", backend_options={"max_tokens": 5, "token_budget_note": "fine"})
    assert spec.backend_options["max_tokens"] == 5


def test_backend_capabilities_refuse_what_it_cannot_do(data, plugin_backends):
    plugin_backends(scripted="jobsupport:ScriptedBackend")
    with pytest.raises(SpecError) as info:
        load_spec(None, {"dataset": str(data), "model": "m", "backend": "scripted", "method": "qlora",
                         "hyperparameters.packing": True})
    text = str(info.value)
    assert "method: scripted cannot do qlora: scripted jobs have no 4-bit kernels" in text
    assert "hyperparameters.packing: not supported by scripted: scripted jobs never pack" in text


@pytest.mark.parametrize("name, text, where", [
    ("job.yaml", "model: [unclosed\n", "job.yaml:2:"),
    ("job.toml", "model = \n", "job.toml:"),
    ("job.json", '{"model": }', "job.json:1:"),
    ("job.yaml", "- a list\n", "top level must be a mapping"),
    ("job.ini", "model=m", "ends in .yaml"),
])
def test_job_file_syntax_errors(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert where in str(info.value)


def test_missing_job_file(tmp_path):
    with pytest.raises(SpecError, match="no such job file"):
        load_spec(tmp_path / "absent.yaml")


def test_spec_round_trips_through_json(data):
    spec = load_spec(None, {"dataset": str(data), "model": "m", "budget.max_cost_usd": "1.25"})
    again = JobSpec.model_validate_json(json.dumps(spec.to_json()))
    assert again == spec
    assert spec.set_fields() == {"dataset", "model", "budget.max_cost_usd"}


@pytest.mark.parametrize("name", ["local-qlora.yaml", "local-full.toml"])
def test_shipped_example_job_files_are_valid(name, tmp_path, monkeypatch):
    from pathlib import Path

    example = Path(__file__).parents[1] / "examples" / "jobs" / name
    copy = tmp_path / "jobs" / name  # beside a dataset of its own, so the check does not depend on examples/data
    copy.parent.mkdir()
    copy.write_text(example.read_text())
    (tmp_path / "data").mkdir()
    write_chat(tmp_path / "data" / "support_chats.jsonl")
    spec = load_spec(copy)
    assert spec.backend == "local" and spec.hyperparameters.epochs


@pytest.mark.parametrize("kind", ["device", "fifo", "directory-link"])
def test_a_job_file_must_be_a_regular_file(tmp_path, kind):
    job = tmp_path / "job.yaml"
    if kind == "device":
        job.symlink_to("/dev/zero")  # read whole, it never ends
    elif kind == "fifo":
        os.mkfifo(job)  # opened plainly, it waits for a writer forever
    else:
        job.symlink_to(tmp_path)
    with pytest.raises(SpecError, match="a job file must be a regular file"):
        load_spec(job)


def test_a_job_file_over_the_size_limit(tmp_path, monkeypatch):
    job = tmp_path / "job.yaml"
    job.write_text("model: m\n" + "# padding\n" * 200_000)
    with pytest.raises(SpecError, match="over 1 MiB, too large for a job file"):
        load_spec(job)


def test_yaml_anchors_and_aliases_are_refused_at_the_first(tmp_path, data):
    laughs = ["model: m", f"dataset: {data}", "backend_options:", "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(9)]
    job = tmp_path / "laughs.yaml"
    job.write_text("\n".join(laughs) + "\n")  # 8 * 9**9 strings (3 billion) if the aliases were expanded
    with pytest.raises(SpecError) as refused:
        load_spec(job)
    assert refused.value.problems == [f"{job}:4: anchors and aliases (&name, *name) are not accepted"]
