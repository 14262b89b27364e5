"""``ftbroker eval`` of local jobs: a tiny model fine-tuned here (the REAL trainer, CPU) on a task a 2-layer model
learns in seconds (a fixed mapping: "What is the code of india?" -> "IN5") scores higher than its base, end to end
through the command line, on exactly the examples the trainer held out; and the adapter path (an adapter on the
base, switched off for the base's answers) on an untrained random adapter, without training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_local_e2e import ftbroker
from tinymodels import code_examples, write_jsonl

from ftbroker.backends.local.config import load_config
from ftbroker.backends.local.train_data import held_out_split
from ftbroker.cli import cli


def ftb(*args, ok=(0,), env=None):
    done = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    assert done.exit_code in ok, (done.exit_code, done.output, done.exception)
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A full fine-tune of the tiny model on 100 examples (10 held out by the trainer), through `ftbroker run`."""
    home = tmp_path_factory.mktemp("eval-home")
    data = write_jsonl(tmp_path_factory.mktemp("eval-data") / "codes.jsonl", code_examples(100))
    done = ftbroker(home, "run", data, "--backend", "local", "--model", tiny_model_dir, "--method", "full",
                    "--epochs", "8", "--lr", "3e-3", "--micro-batch", "8", "--max-seq-len", "128", "--seed", "0",
                    "--yes", "--json")
    return home, json.loads(done.stdout)["job"]["id"]


@pytest.mark.slow
def test_the_fine_tune_beats_its_base_on_what_the_trainer_held_out(trained, tmp_path, monkeypatch, summary_line):
    home, job_id = trained
    monkeypatch.setenv("FTBROKER_HOME", str(home))
    chart = tmp_path / "eval.png"
    evaluation = json.loads(ftb("eval", job_id, "--json", "--chart", chart).output)
    overall = evaluation["overall"]
    base, tuned = overall["exact_match"]["base"], overall["exact_match"]["tuned"]
    assert tuned >= base + 0.5 and overall["token_f1"]["tuned"] > overall["token_f1"]["base"]
    # exactly the lines the trainer held out (its own split function on its own config)
    _, held = held_out_split(load_config(home / "runs" / job_id / "config.json"))
    tasks = [row for row in evaluation["per_example"] if row["kind"] == "task"]
    assert [row["id"] for row in tasks] == [f"{path}:{line}" for path, line, _ in held] and len(tasks) == 10
    assert evaluation["settings"]["generation"]["decoding"] == "greedy"
    assert evaluation["settings"]["generation"]["stops"][0] == "<|im_end|>"  # the chat format's end of turn
    capability = evaluation["capability"]
    assert capability["items"] == 30 and set(capability["by_category"]) == {"arithmetic", "benign", "facts", "format"}
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and evaluation["chart"] == str(chart)
    assert evaluation["costs"]["total_usd"] == 0 and evaluation["quote_usd"] == 0

    result = json.loads(ftb("result", job_id, "--json").output)
    assert result["evaluation"]["id"] == evaluation["id"]
    assert "eval F1" in ftb("jobs", env={"COLUMNS": "160"}).output
    again = json.loads(ftb("eval", job_id, "--json").output)
    assert again["costs"]["cached_calls"] == again["costs"]["calls"] + again["costs"]["cached_calls"] == 80
    assert again["overall"] == overall
    summary_line(f"eval of a tiny full fine-tune [local, CPU]: {len(tasks)} held-out examples, exact match "
                 f"{base:.0%} (base) -> {tuned:.0%} (fine-tuned), token F1 {overall['token_f1']['base']:.2f} -> "
                 f"{overall['token_f1']['tuned']:.2f}; general capability {capability['base']:.0%} -> "
                 f"{capability['tuned']:.0%} of 30 (a 130k-parameter model knows nothing)")


def test_an_adapter_answers_for_the_fine_tune_and_is_switched_off_for_the_base(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftbroker.evaluation.examples import from_line
    from ftbroker.evaluation.local import LocalModels

    def run_folder(name: str, method: str):
        run_dir = tmp_path / name
        (run_dir / "output").mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "dataset": "x.jsonl",
                                                         "method": method}))
        return run_dir

    lora = run_folder("lora", "lora")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(lora / "output" / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(lora / "output" / "adapter")
    full = run_folder("full", "full")  # a "full fine-tune" that is the base model itself
    (full / "output" / "model").symlink_to(tiny_model_dir)

    examples = [from_line("x.jsonl", n, row, "chat") for n, row in enumerate(code_examples(4), 1)]
    models = LocalModels(lora)
    base, tuned = models.generate("base", examples, 8), models.generate("tuned", examples, 8)
    alone = LocalModels(full).generate("tuned", examples, 8)  # the base model, never wrapped in an adapter
    assert [a.text for a in base] == [a.text for a in alone]
    assert [a.text for a in tuned] != [a.text for a in base]
    assert all(a.input_tokens > 0 and 1 <= a.output_tokens <= 8 for a in base + tuned)
