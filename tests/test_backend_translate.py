"""The managed backends' pure translation: tags, statuses, events, metrics, requests, dataset conversion,
error translation, backoff and the look-before-create loop. No SDK call except where an SDK error is
produced for real against a fake."""

from __future__ import annotations

import base64
import json
import random
import re
import sys
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from ftbroker.backends import bedrock, together
from ftbroker.backends import openai as oai
from ftbroker.backends._managed import (
    QUOTED_PRICE,
    actual_cost,
    map_status,
    provider_tag,
    quote_from_route,
)
from ftbroker.backends.managed_files import ConvertedFile, convert_file
from ftbroker.backends.base import Verdict
from ftbroker.backends.provider_calls import Backoff, submit_once, translate_error
from ftbroker.broker import check_guards
from ftbroker.errors import (
    BackendAuthError,
    BackendRateLimitError,
    BackendUnavailableError,
    BudgetExceededError,
    ExtraNotInstalledError,
    ProviderAPIError,
    RouteUnavailableError,
)
from ftbroker.jobs import JobStatus
from ftbroker.routes import Route
from ftbroker.spec import JobSpec
from hypothesis import given
from hypothesis import strategies as st

# botocore 1.44.8 bedrock service-2.json patterns
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9\+\-\.])*")
CUSTOM_MODEL_NAME = re.compile(r"([0-9a-zA-Z][_-]?){1,63}")
TOKEN = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")


# -- tags --------------------------------------------------------------------------------------------
@given(st.text(min_size=1, max_size=120))
def test_provider_tag_is_valid_everywhere(job_id):
    tag = provider_tag(job_id)
    assert len(tag) <= together.SUFFIX_MAX
    assert JOB_NAME.fullmatch(tag) and CUSTOM_MODEL_NAME.fullmatch(tag) and TOKEN.fullmatch(tag)
    assert provider_tag(job_id) == tag


def test_provider_tag_keeps_long_ids_apart():
    a, b = "x" * 60 + "1", "x" * 60 + "2"
    assert provider_tag(a) != provider_tag(b)
    assert provider_tag("01JDX4ZQ3K9M") == "ftb-01jdx4zq3k9m"
    assert len(provider_tag("y" * 100, max_len=63)) == 63


# -- statuses (each provider's job status enum) --------------------------------------------------------
@pytest.mark.parametrize(("module", "raw", "expected"), [
    (oai, "validating_files", "validating"), (oai, "queued", "queued"), (oai, "running", "running"),
    (oai, "pausing", "running"), (oai, "paused", "queued"), (oai, "succeeded", "succeeded"),
    (oai, "failed", "failed"), (oai, "cancelled", "cancelled"), (oai, "brand_new_state", "running"),
    (together, "pending", "queued"), (together, "queued", "queued"), (together, "running", "running"),
    (together, "compressing", "running"), (together, "uploading", "running"),
    (together, "cancel_requested", "running"), (together, "cancelled", "cancelled"),
    (together, "error", "failed"), (together, "user_error", "failed"), (together, "completed", "succeeded"),
])
def test_status_tables(module, raw, expected):
    assert map_status(raw, module.STATUS) == JobStatus(expected)


@pytest.mark.parametrize(("job", "expected"), [
    ({"status": "InProgress"}, "running"),
    ({"status": "Completed"}, "succeeded"),
    ({"status": "Failed"}, "failed"),
    ({"status": "Stopping"}, "running"),
    ({"status": "Stopped"}, "cancelled"),
    ({"status": "InProgress", "statusDetails": {"validationDetails": {"status": "InProgress"}}}, "validating"),
    ({"status": "InProgress", "statusDetails": {"validationDetails": {"status": "NotStarted"},
                                                "trainingDetails": {"status": "NotStarted"}}}, "queued"),
    ({"status": "InProgress", "statusDetails": {"validationDetails": {"status": "Completed"},
                                                "trainingDetails": {"status": "InProgress"}}}, "running"),
])
def test_bedrock_status_with_details(job, expected):
    assert bedrock.normalize_status(job) == JobStatus(expected)


def test_bedrock_failure_message_only_on_failed_jobs():
    assert bedrock.failure_message({"status": "InProgress", "failureMessage": "Failure Message"}) is None
    assert bedrock.failure_message({"status": "Failed", "failureMessage": "bad data"}) == "bad data"


# -- events and metrics ------------------------------------------------------------------------------
OPENAI_EVENTS = [
    {"id": "e3", "created_at": 1795824003, "level": "info", "type": "metrics", "message": "Step 2/2",
     "data": {"step": 2, "total_steps": 2, "train_loss": 1.5, "train_mean_token_accuracy": 0.6, "valid_loss": 1.6,
              "full_valid_loss": 1.55}},
    {"id": "e2", "created_at": 1795824002, "level": "info", "type": "metrics", "message": "Step 1/2",
     "data": {"step": 1, "total_steps": 2, "train_loss": 1.9, "train_mean_token_accuracy": 0.5}},
    {"id": "e1", "created_at": 1795824001, "level": "warn", "type": "message", "message": "Files validated"},
]


def test_openai_events_and_metrics():
    events = oai.normalize_events(OPENAI_EVENTS)
    assert [e.data["id"] for e in events] == ["e1", "e2", "e3"]
    assert [(e.kind, e.level) for e in events] == [("warning", "warning"), ("metrics", "info"), ("metrics", "info")]
    assert events[0].time == datetime(2026, 11, 28, 0, 0, 1, tzinfo=UTC)
    points = {(p.step, p.name): p.value for p in oai.metrics_from_events(OPENAI_EVENTS)}
    assert points == {(1, "train_loss"): 1.9, (1, "train_accuracy"): 0.5, (2, "train_loss"): 1.5,
                      (2, "train_accuracy"): 0.6, (2, "eval_loss"): 1.6, (2, "full_eval_loss"): 1.55}


CSV = (b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
       b"1,1.9,0.5,,\n2,1.5,0.6,1.6,0.55\nbroken,row,,,\n3,1.2,n/a,,\n")


@pytest.mark.parametrize("content", [CSV, base64.b64encode(CSV), base64.encodebytes(CSV), b"\xef\xbb\xbf" + CSV])
def test_openai_result_csv_plain_or_base64(content):
    points = {(p.step, p.name): p.value for p in oai.metrics_from_result_csv(content)}
    assert points == {(1, "train_loss"): 1.9, (1, "train_accuracy"): 0.5, (2, "train_loss"): 1.5,
                      (2, "train_accuracy"): 0.6, (2, "eval_loss"): 1.6, (2, "eval_accuracy"): 0.55,
                      (3, "train_loss"): 1.2}


def test_openai_result_csv_that_is_not_one():
    assert oai.metrics_from_result_csv(b"not a csv at all") == []
    assert oai.metrics_from_result_csv(base64.b64encode(b"hello")) == []


def test_together_events_metrics_and_price():
    events = together.normalize_events([
        {"object": "fine-tune-event", "created_at": "2026-11-28T00:00:05Z", "type": "job_error", "level": "error",
         "message": "OOM", "step": 3},
        {"object": "fine-tune-event", "created_at": "2026-11-28T00:00:01Z", "type": "job_pending", "level": None,
         "message": "queued", "checkpoint_path": ""},
        {"object": "fine-tune-event", "created_at": "2026-11-28T00:00:03Z", "type": "checkpoint_save",
         "level": "legacy_iwarning", "message": "saved", "checkpoint_path": "s3://x"},
    ])
    assert [(e.kind, e.level) for e in events] == [("log", "info"), ("checkpoint", "warning"), ("error", "error")]
    assert events[1].data == {"type": "checkpoint_save", "checkpoint_path": "s3://x"}
    points = together.normalize_metrics([
        {"train/loss": 1.9, "train/learning_rate": 1e-5, "train/global_step": 1.0},
        {"train/loss": 1.5, "train/global_step": 2, "eval/loss": 1.7},
        {"eval/loss": 1.4, "eval/global_step": 3},
        {"no_step": 1.0},
    ])
    assert [(p.step, p.name, p.value) for p in points] == [
        (1, "train_learning_rate", 1e-5), (1, "train_loss", 1.9), (2, "eval_loss", 1.7), (2, "train_loss", 1.5),
        (3, "eval_loss", 1.4)]
    assert together.price_usd(1_920_000) == Decimal("0.00192")
    assert together.price_usd(None) is None


def test_bedrock_metrics_csvs():
    train = b"step_number,epoch_number,training_loss,perplexity\n1,0,2.0,7.39\n2,1,1.5,4.48\nx,,,\n"
    valid = b"step_number,epoch_number,validation_loss,perplexity\n2,1,1.7,5.47\n"
    assert [(p.step, p.name, p.value, p.epoch) for p in bedrock.metrics_from_csv(train)] == [
        (1, "train_loss", 2.0, 0.0), (2, "train_loss", 1.5, 1.0)]
    assert [(p.step, p.name, p.value) for p in bedrock.metrics_from_csv(valid, validation=True)] == [
        (2, "eval_loss", 1.7)]


# -- requests ----------------------------------------------------------------------------------------
def test_openai_create_request():
    body = oai.create_request(model="gpt-4o-mini-2024-07-18", training_file="file-1", validation_file=None,
                              tag="ftb-j1", job_id="J1", dpo=False, epochs=3, batch_size=8,
                              options={"learning_rate_multiplier": 0.5, "seed": 7})
    assert body == {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-1", "suffix": "ftb-j1",
                    "metadata": {"ftbroker_job_id": "J1"}, "seed": 7,
                    "method": {"type": "supervised", "supervised": {"hyperparameters": {
                        "n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 0.5}}}}
    dpo = oai.create_request(model="m", training_file="f", validation_file="v", tag="t", job_id="j", dpo=True,
                             epochs=None, batch_size=None, options={"beta": 0.1})
    assert dpo["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
    assert dpo["validation_file"] == "v"


def test_openai_hyperparameter_ranges():
    assert oai.check_hyperparameters(epochs=3, batch_size=8, options={"learning_rate_multiplier": 2}) == []
    problems = oai.check_hyperparameters(epochs=51, batch_size=0, options={"learning_rate_multiplier": 0, "beta": 3})
    assert problems == ["epochs: 51 is outside [1, 50] (OpenAI API)", "batch size: 0 is outside [1, 256] (OpenAI API)",
                        "learning_rate_multiplier: 0 is outside (0, inf] (OpenAI API)",
                        "beta: 3 is outside (0, 2] (OpenAI API)"]


LIMITS = {"model_name": "m", "max_num_epochs": 20, "max_learning_rate": 1.0, "min_learning_rate": 1e-8,
          "max_seq_length_sft": 8192, "max_seq_length_dpo": 4096, "min_max_seq_length": 512,
          "supports_full_training": False,
          "lora_training": {"max_rank": 64, "min_batch_size": 8, "max_batch_size": 64, "max_batch_size_dpo": 32},
          "full_training": None}


def test_together_create_arguments_and_limits():
    kwargs = together.create_arguments(model="m", training_file="f", validation_file="v", tag="ftb-j", method="lora",
                                       dpo=False, epochs=2, batch_size=16, learning_rate=1e-4, lora_r=16, lora_alpha=32,
                                       lora_dropout=None, lora_targets=None, max_seq_len=None, seed=3, n_evals=1,
                                       options={})
    assert kwargs == {"model": "m", "training_file": "f", "suffix": "ftb-j", "lora": True, "training_method": "sft",
                      "train_on_inputs": "auto", "validation_file": "v", "n_epochs": 2, "batch_size": 16,
                      "learning_rate": 1e-4, "random_seed": 3, "lora_r": 16, "lora_alpha": 32, "n_evals": 1}
    full = together.create_arguments(model="m", training_file="f", validation_file=None, tag="t", method="full",
                                     dpo=True, epochs=None, batch_size=None, learning_rate=None, lora_r=8,
                                     lora_alpha=16, lora_dropout=0.1, lora_targets="q_proj", max_seq_len=None,
                                     seed=None, n_evals=0, options={"dpo_beta": 0.2})
    assert full == {"model": "m", "training_file": "f", "suffix": "t", "lora": False, "training_method": "dpo",
                    "dpo_beta": 0.2}
    assert together.check_against_limits(LIMITS, method="lora", dpo=False, epochs=2, batch_size=16,
                                         learning_rate=1e-4, lora_r=16, max_seq_len=2048) == []
    problems = together.check_against_limits(LIMITS, method="full", dpo=False, epochs=30, batch_size=4,
                                             learning_rate=2.0, lora_r=None, max_seq_len=100)
    assert problems[0] == "method: full fine-tuning is not offered for m; use lora"
    assert [p.split(":")[0] for p in problems[1:]] == ["epochs", "learning rate", "max sequence length"]
    dpo = together.check_against_limits(LIMITS, method="lora", dpo=True, epochs=None, batch_size=48,
                                        learning_rate=None, lora_r=128, max_seq_len=8192)
    assert [p.split(":")[0] for p in dpo] == ["batch size", "lora r", "max sequence length"]


def test_bedrock_hyperparameters_are_strings_within_the_documented_ranges():
    llama = bedrock.family_of("meta.llama3-1-8b-instruct-v1:0:128k")
    hyper, problems = bedrock.hyperparameters(llama, epochs=3, learning_rate=1e-4, batch_size=1, warmup_steps=None)
    assert (hyper, problems) == ({"epochCount": "3", "learningRate": "0.0001", "batchSize": "1"}, [])
    nova = bedrock.family_of("amazon.nova-micro-v1:0:128k")
    hyper, problems = bedrock.hyperparameters(nova, epochs=2, learning_rate=1e-5, batch_size=None, warmup_steps=10)
    assert hyper == {"epochCount": "2", "learningRate": "1e-05", "learningRateWarmupSteps": "10"}
    _, problems = bedrock.hyperparameters(nova, epochs=6, learning_rate=1e-3, batch_size=4, warmup_steps=None)
    assert [p.split(":")[0] for p in problems] == ["epochs", "learning rate", "batch size"]
    assert "no such hyperparameter" in problems[2]
    _, problems = bedrock.hyperparameters(llama, epochs=None, learning_rate=None, batch_size=2, warmup_steps=None)
    assert problems == ["batch size: 2 is outside [1, 1] (Llama 3.1, AWS user guide cm-hp-meta-llama31)"]
    assert bedrock.family_of("meta.llama3-2-3b-instruct-v1:0:128k").fmt == "chat"
    assert bedrock.family_of("cohere.command-text-v14:7:4k") is None
    haiku = bedrock.family_of("anthropic.claude-3-haiku-20240307-v1:0:200k")
    hyper, problems = bedrock.hyperparameters(haiku, epochs=2, learning_rate=1e-4, batch_size=2, warmup_steps=None)
    assert [p.split(":")[0] for p in problems] == ["learning rate", "batch size"]


def test_bedrock_create_request():
    request = bedrock.create_request(job_name="ftb-j", custom_model_name="ftb-j", role_arn="arn:r",
                                     base_model="meta.llama3-1-8b-instruct-v1:0:128k", training_uri="s3://b/t.jsonl",
                                     validation_uri="s3://b/v.jsonl", output_uri="s3://b/out/",
                                     hyper={"epochCount": "2"},
                                     token="ftb-j", tags={"ftbroker-job-id": "J"})
    assert request["validationDataConfig"] == {"validators": [{"s3Uri": "s3://b/v.jsonl"}]}
    assert request["clientRequestToken"] == "ftb-j" and request["jobTags"] == [{"key": "ftbroker-job-id", "value": "J"}]


# -- dataset conversion (the lines were checked by ftbroker.data: converters only convert) -----------
def chat(*turns, system=None, **extra):
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"messages": messages, **extra}


def run(convert, examples, tmp_path, fmt="chat") -> tuple[ConvertedFile, list[str]]:
    out = convert_file(list(enumerate(examples, 1)), source="data.jsonl", fmt=fmt, convert=convert,
                       out=tmp_path / "out.jsonl")
    return out, (tmp_path / "out.jsonl").read_text().splitlines()


TOOL_ROUND = [{"role": "user", "content": "where is 7?"},
              {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                    "function": {"name": "find", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
              {"role": "assistant", "content": "It shipped.", "weight": 1, "refusal": None}]
PREFERENCE = {"input": {"messages": [{"role": "user", "content": "q"}], "parallel_tool_calls": False},
              "preferred_output": [{"role": "assistant", "content": "good"}],
              "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def test_openai_lines(tmp_path):
    examples = [chat("hi", "hello", system="be nice", tools=[{"type": "function"}], id="x"),
                {"system": "bedrock-style", "messages": TOOL_ROUND}]
    result, lines = run(oai.convert, examples, tmp_path)
    assert result.errors == () and result.examples == 2
    assert json.loads(lines[0]) == {"messages": examples[0]["messages"], "tools": [{"type": "function"}]}
    assert json.loads(lines[1]) == {"messages": [{"role": "system", "content": "bedrock-style"}, *TOOL_ROUND]}
    _, lines = run(oai.convert, [{"prompt": "p", "completion": "c", "id": 1}], tmp_path, fmt="prompt_completion")
    assert lines == ['{"prompt":"p","completion":"c"}']  # babbage-002 / davinci-002 lines
    _, lines = run(oai.convert, [PREFERENCE], tmp_path, fmt="preference")
    assert json.loads(lines[0]) == PREFERENCE


def test_same_content_same_upload_name(tmp_path):
    a, _ = run(oai.convert, [chat("a", "b")], tmp_path)
    (tmp_path / "other").mkdir()
    b, _ = run(oai.convert, [chat("a", "b")], tmp_path / "other")
    c, _ = run(oai.convert, [chat("a", "c")], tmp_path)
    assert a.upload_name == b.upload_name != c.upload_name
    assert re.fullmatch(r"ftbroker-[0-9a-f]{32}\.jsonl", a.upload_name)


def test_together_lines(tmp_path):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    examples = [{"system": "s", "messages": TOOL_ROUND, "parallel_tool_calls": True, "id": 3},
                {"messages": [{"role": "user", "content": [image], "weight": 0, "extra": 1},
                              {"role": "assistant", "content": "x"}], "tools": []}]
    result, lines = run(together.convert, examples, tmp_path)
    assert result.errors == ()
    assert json.loads(lines[0]) == {"messages": [{"role": "system", "content": "s"}, *TOOL_ROUND[:3],
                                                 {"role": "assistant", "content": "It shipped.", "weight": 1}]}
    assert json.loads(lines[1]) == {"messages": [{"role": "user", "content": [image], "weight": 0},
                                                 {"role": "assistant", "content": "x"}], "tools": []}
    _, lines = run(together.convert, [{"text": "raw"}], tmp_path, fmt="text")
    assert lines == ['{"text":"raw"}']
    _, lines = run(together.convert, [{"prompt": "p", "completion": "c"}], tmp_path, fmt="prompt_completion")
    assert lines == ['{"prompt":"p","completion":"c"}']
    _, lines = run(together.convert, [PREFERENCE], tmp_path, fmt="preference")
    assert json.loads(lines[0]) == {**PREFERENCE, "input": {"messages": PREFERENCE["input"]["messages"]}}


@pytest.mark.parametrize(("model_id", "names"), [
    ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
     ("meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "meta-llama/Meta-Llama-3.1-8B-Instruct",
      "Meta-Llama-3.1-8B-Instruct-Reference", "Meta-Llama-3.1-8B-Instruct")),
    ("deepseek-ai/DeepSeek-R1", ("deepseek-ai/DeepSeek-R1", "DeepSeek-R1")),
    ("Qwen2.5-7B-Instruct", ("Qwen2.5-7B-Instruct",)),
])
def test_together_catalog_names(model_id, names):
    assert together.catalog_names(model_id) == names


def test_bedrock_llama31_prompt_completion(tmp_path):
    family = bedrock.family_of("meta.llama3-1-8b-instruct-v1:0:128k")
    result, lines = run(family.converter(), [chat("q", "a", system="sys"), chat("q1", "a1", "q2", "a2")], tmp_path)
    assert lines == ['{"prompt":"sys\\n\\nq","completion":"a"}']
    assert [str(e) for e in result.errors] == [
        "data.jsonl:2: Llama 3.1 on Bedrock takes one prompt and one completion per line; this conversation has "
        "4 turns (split it, or use a Llama 3.2 or Nova model)"]
    _, lines = run(family.converter(), [{"prompt": "p", "completion": "c"}], tmp_path, fmt="prompt_completion")
    assert lines == ['{"prompt":"p","completion":"c"}']


def test_bedrock_llama32_and_nova_lines(tmp_path):
    llama = bedrock.family_of("meta.llama3-2-3b-instruct-v1:0:128k")
    examples = [chat("q1", "a1", "q2", "a2", system="s"), {**chat("q", "a"), "system": "top"}]
    _, lines = run(llama.converter(), examples, tmp_path)
    assert lines == ['{"system":"s","messages":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},'
                     '{"role":"user","content":"q2"},{"role":"assistant","content":"a2"}]}',
                     '{"system":"top","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}']
    nova = bedrock.family_of("amazon.nova-lite-v1:0:300k")
    examples = [
        chat("why is the sky blue", [{"type": "text", "text": "Rayleigh "}, {"type": "refusal", "refusal": "no"}],
             system="short answers"),
        chat("User: hi", "hello"),
        chat("hi", "hello", system="  System: be brief"),
    ]
    result, lines = run(nova.converter(), examples, tmp_path)
    assert lines == ['{"schemaVersion":"bedrock-conversation-2024","system":[{"text":"short answers"}],'
                     '"messages":[{"role":"user","content":[{"text":"why is the sky blue"}]},'
                     '{"role":"assistant","content":[{"text":"Rayleigh no"}]}]}']
    assert [str(e) for e in result.errors] == [
        "data.jsonl:2: user turn starts with 'User:', a keyword Nova fine-tuning reserves",
        "data.jsonl:3: system prompt starts with 'System:', a keyword Nova fine-tuning reserves"]


def test_bedrock_claude_haiku_lines(tmp_path):
    haiku = bedrock.family_of("anthropic.claude-3-haiku-20240307-v1:0:200k")
    result, lines = run(haiku.converter(), [chat("q", "a", system="s"), chat("q", "well\nHuman: again")], tmp_path)
    assert lines == ['{"system":"s","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}']
    assert [str(e) for e in result.errors] == [
        "data.jsonl:2: contains '\\nHuman:', which Claude 3 Haiku fine-tuning data must not"]


# -- quotes ------------------------------------------------------------------------------------------
def route(**kw):
    base = dict(kind="managed", backend="openai", provider="openai", model="gpt-4o-mini-2024-07-18", method="sft",
                feasible=True, reason="", notes=(), cost_usd=Decimal("4.5"), price_known=True,
                billed_tokens=1_500_000, epochs=3, price_source="openai.com/api/pricing", price_as_of=None,
                breakdown={"billing": "tokens x epochs", "usd_per_m_tokens": Decimal("3.00")})
    return Route(**{**base, **kw})


def test_quotes_from_the_routes_price():
    quote = quote_from_route("openai", route(notes=("closes to new jobs in 39 days (2027-01-06)",)))
    assert (quote.verdict, quote.cost_usd, quote.billed_tokens) == (Verdict.OK, Decimal("4.5"), 1_500_000)
    assert quote.warnings == ("closes to new jobs in 39 days (2027-01-06)",)
    assert quote.resources == {QUOTED_PRICE: 3.0} and quote.breakdown["price_source"] == "openai.com/api/pricing"
    closed = quote_from_route("bedrock", route(model="anthropic.claude-3-haiku-20240307-v1:0:200k", feasible=False,
                                               reason="closed: the model reached end of life on 2026-09-10",
                                               closed=True))
    assert closed.verdict is Verdict.ROUTE_UNAVAILABLE
    assert closed.reason == ("anthropic.claude-3-haiku-20240307-v1:0:200k: closed: the model reached end of life "
                             "on 2026-09-10")
    spec = JobSpec(dataset="d.jsonl", model="m", backend="bedrock", budget={"max_cost_usd": 5})
    with pytest.raises(RouteUnavailableError) as err:
        check_guards(closed, spec)
    assert err.value.exit_code == 3 and "2026-09-10" in str(err.value)
    unpriced = quote_from_route("bedrock", route(model="amazon.nova-micro-v1:0:128k", cost_usd=None, price_known=False,
                                                 breakdown={"billing": "tokens x epochs"}))
    assert unpriced.verdict is Verdict.OK and unpriced.resources == {}
    assert unpriced.reason == "price unknown: the catalog has no bedrock training price for amazon.nova-micro-v1:0:128k"
    with pytest.raises(BudgetExceededError) as err:
        check_guards(unpriced, spec)
    assert err.value.exit_code == 3 and "(price unknown: the catalog has no bedrock training price" in str(err.value)
    check_guards(unpriced, spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_cost_usd": None})}))


def test_actual_cost_is_trained_tokens_at_the_quoted_price():
    job = SimpleNamespace(resources={QUOTED_PRICE: 3.0})
    assert actual_cost(job, 1_234_567) == Decimal("3.7037")
    assert actual_cost(job, None) is None and actual_cost(SimpleNamespace(resources={}), 10) is None


# -- errors ------------------------------------------------------------------------------------------
def _sdk_error(fault):
    import openai
    from fakes import FakeOpenAI

    with FakeOpenAI() as fake:
        fake.faults.on("jobs.list", fault)
        try:
            fake.client().fine_tuning.jobs.list()
        except openai.APIError as exc:
            return exc
    raise AssertionError("no error")


def test_translate_openai_sdk_errors(monkeypatch):
    from fakes import Fault

    err = translate_error(_sdk_error(Fault.rate_limited(retry_after=3)), "openai", "listing jobs")
    assert isinstance(err, BackendRateLimitError) and err.retry_after == 3.0
    assert str(err) == "openai: listing jobs failed: Rate limit reached, retry later"
    assert isinstance(translate_error(_sdk_error(Fault.error(503)), "openai", "x"), BackendUnavailableError)
    assert isinstance(translate_error(_sdk_error(Fault.dropped()), "openai", "x"), BackendUnavailableError)
    assert isinstance(translate_error(_sdk_error(Fault.timed_out(commit=False)), "openai", "x"), BackendUnavailableError)

    import openai
    from fakes import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-revoked-123456")
    with FakeOpenAI() as fake:
        fake.rejected_keys.add("sk-canary-revoked-123456")
        with pytest.raises(openai.AuthenticationError) as exc:
            fake.client(api_key="sk-canary-revoked-123456").files.list()
        err = translate_error(exc.value, "openai", "listing files")
        assert isinstance(err, BackendAuthError) and "sk-canary" not in str(err)
        with pytest.raises(openai.BadRequestError) as exc:
            fake.client().fine_tuning.jobs.create(model="nope", training_file="f")
        err = translate_error(exc.value, "openai", "creating the job")
        assert isinstance(err, ProviderAPIError) and err.status_code == 400
        assert str(err) == ("openai: creating the job failed: Model 'nope' is not available for fine-tuning "
                            "or does not exist.")


def test_translate_botocore_errors():
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code, status):
        return ClientError({"Error": {"Code": code, "Message": "m"},
                            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "r1"}}, "Op")

    assert isinstance(translate_error(client_error("ThrottlingException", 400), "bedrock", "x"), BackendRateLimitError)
    denied = translate_error(client_error("AccessDeniedException", 403), "bedrock", "x")
    assert isinstance(denied, BackendAuthError) and denied.request_id == "r1"
    invalid = translate_error(client_error("ValidationException", 400), "bedrock", "creating")
    assert isinstance(invalid, ProviderAPIError) and str(invalid) == (
        "bedrock: creating failed: ValidationException: m (request id r1)")
    assert isinstance(translate_error(client_error("InternalServerException", 500), "bedrock", "x"),
                      BackendUnavailableError)
    assert isinstance(translate_error(EndpointConnectionError(endpoint_url="http://x"), "bedrock", "x"),
                      BackendUnavailableError)
    assert isinstance(translate_error(NoCredentialsError(), "bedrock", "x"), BackendAuthError)


# -- waiting and exactly-once ------------------------------------------------------------------------
def test_backoff_is_jittered_capped_and_honours_retry_after():
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    for attempt in range(8):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
    assert backoff.delay(0, retry_after=30.0) == 30.0


def test_submit_once_finds_what_a_failed_create_made():
    remote: list[str] = []
    sleeps: list[float] = []

    def create():
        remote.append("job")
        if len(remote) == 1:
            raise BackendUnavailableError("500 after commit", backend="x")
        return "created-again"

    result = submit_once(lambda: remote[0] if remote else None, create, attempts=5,
                         backoff=Backoff(initial=0.01, sleep=sleeps.append))
    assert result == "job" and remote == ["job"] and len(sleeps) == 1


def test_submit_once_retries_only_transient_errors():
    calls = []

    def refused():
        calls.append(1)
        raise ProviderAPIError("bad model", backend="x", status_code=400)

    with pytest.raises(ProviderAPIError):
        submit_once(lambda: None, refused, attempts=5, backoff=Backoff(sleep=lambda s: None))
    assert len(calls) == 1

    def limited():
        calls.append(1)
        raise BackendRateLimitError("slow down", backend="x", retry_after=4.0)

    sleeps: list[float] = []
    with pytest.raises(BackendRateLimitError):
        submit_once(lambda: None, limited, attempts=3, backoff=Backoff(initial=0.01, sleep=sleeps.append))
    assert len(calls) == 4 and sleeps == [4.0, 4.0]


@pytest.mark.parametrize(("name", "package", "extra"), [("openai", "openai", "openai"),
                                                          ("together", "together", "together"),
                                                          ("bedrock", "boto3", "aws")])
def test_a_missing_sdk_names_its_extra(name, package, extra, monkeypatch, tmp_path):
    from ftbroker.backends.base import create_backend

    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    backend = create_backend(name, {}, home=tmp_path)
    with pytest.raises(ExtraNotInstalledError) as err:
        backend.sdk()
    assert f"pip install 'ftbroker[{extra}]'" in str(err.value) and err.value.exit_code == 1
