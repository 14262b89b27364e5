"""The dataset reader: formats, statistics, limits, report shape, constant-memory paths, advice, fuzzing."""

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftbroker.backends.registry import BUILTIN_BACKENDS, backend_class
from ftbroker.data import analysis, issues, reader
from ftbroker.data.advice import Advice, advise
from ftbroker.data.analysis import analyze
from ftbroker.data.providers import LineRules, registered
from ftbroker.data.report import DatasetReport
from ftbroker.errors import DataIssue, DatasetError
from ftbroker.tokens.openai_encodings import shipped_encoding
from ftbroker.tokens.resolve import resolve

CL100K = shipped_encoding("cl100k_base")
SYSTEM = {"role": "system", "content": "You are the support agent of a parcel service."}


def chat(i: int, turns: int = 1) -> dict:
    messages = [SYSTEM]
    for t in range(turns):
        messages += [
            {"role": "user", "content": f"Where is parcel {i}-{t}?"},
            {"role": "assistant", "content": f"Parcel {i}-{t} is out for delivery."},
        ]
    return {"messages": messages}


def write(path: Path, rows, newline: str = "\n", bom: bool = False) -> Path:
    text = (
        newline.join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + newline
    )
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture(autouse=True)
def _empty_tiktoken_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))


def test_valid_chat_file_statistics(tmp_path):
    rows = [chat(i, turns=1 + i % 3) for i in range(60)]
    path = write(tmp_path / "train.jsonl", rows)
    counter = resolve("cl100k_base")
    report = analyze(path, counters=[counter])
    assert (report.format, report.examples, report.errors) == ("chat", 60, [])
    assert report.size_bytes == path.stat().st_size
    assert report.messages_per_example.min == 3 and report.messages_per_example.max == 7
    assert report.messages_per_example.p50 == 5 and report.messages_per_example.mean == 5.0

    expected = [counter.count(r, "chat") for r in rows]
    stats = report.tokens["tiktoken:cl100k_base"]
    assert stats.total == sum(t for t, _ in expected) and stats.trained == sum(t for _, t in expected)
    assert stats.exact and stats.tokenizer == "cl100k_base"
    totals = sorted(t for t, _ in expected)
    assert (stats.per_example.min, stats.per_example.max) == (totals[0], totals[-1])
    assert stats.per_example.p50 == totals[29] and stats.per_example.p95 == totals[56]
    assert sum(stats.length_counts.values()) == 60
    assert report.provider_issues == {} and report.warnings == []


def test_other_formats_are_detected(tmp_path):
    cases = {
        "prompt_completion": {"prompt": "Translate: cat", "completion": " chat"},
        "text": {"text": "A document to continue pre-training on."},
        "preference": {
            "input": {"messages": [{"role": "user", "content": "Hi"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello! How can I help?"}],
            "non_preferred_output": [{"role": "assistant", "content": "What."}],
        },
    }
    for fmt, row in cases.items():
        rows = [{**row, **({"text": f"{row['text']} {i}"} if fmt == "text" else {})} for i in range(12)]
        report = analyze(write(tmp_path / f"{fmt}.jsonl", rows), counters=[resolve("cl100k_base")])
        assert (report.format, report.examples, report.errors) == (fmt, 12, []), fmt
        assert report.tokens["tiktoken:cl100k_base"].trained > 0
        assert (report.messages_per_example is None) == (fmt != "preference")


def test_bom_crlf_and_blank_lines_change_nothing(tmp_path):
    rows = [chat(i) for i in range(12)]
    counter = resolve("cl100k_base")
    plain = analyze(write(tmp_path / "plain.jsonl", rows), counters=[counter])
    windows = analyze(write(tmp_path / "win.jsonl", rows, newline="\r\n", bom=True), counters=[counter])
    spaced = analyze(write(tmp_path / "spaced.jsonl", [rows[0], "", "  ", *rows[1:]]), counters=[counter])
    assert plain.tokens == windows.tokens == spaced.tokens
    assert windows.errors == spaced.errors == []
    blank = [w for w in spaced.warnings if w.message.startswith("blank")]
    assert [(w.line, w.message) for w in blank] == [(2, "blank lines are skipped (and 1 more line)")]


def test_missing_file(tmp_path):
    report = analyze(tmp_path / "nope.jsonl")
    assert [str(e) for e in report.errors] == [f"{tmp_path / 'nope.jsonl'}: no such file"]
    with pytest.raises(DatasetError) as exc:
        report.raise_for_errors()
    assert exc.value.exit_code == 2


def test_errors_are_capped_and_shown_twenty_at_a_time(tmp_path):
    path = write(tmp_path / "bad.jsonl", [chat(0)] + ['{"messages": 1}'] * 1200)
    report = analyze(path)
    assert len(report.errors) == issues.MAX_ERRORS + 1
    assert report.errors[0] == DataIssue(
        str(path), 2, "'messages' must be a list of messages, got a number"
    )
    assert report.errors[-1].message == "200 more errors are not listed"
    with pytest.raises(DatasetError) as exc:
        report.raise_for_errors()
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{path}:2: 'messages' must be a list of messages, got a number"
    assert len(lines) == 21 and lines[-1] == "... and 1180 more errors"  # 1,200 bad lines in all


def test_limits_count_examples_over_them(tmp_path):
    rows = [chat(i, turns=1 if i % 2 else 6) for i in range(20)]
    counter = resolve("cl100k_base")
    report = analyze(write(tmp_path / "t.jsonl", rows), counters=[counter], limits={counter.key: 80})
    stats = report.tokens[counter.key]
    assert stats.limit == 80 and stats.over_limit == 10
    over = [w for w in report.warnings if "over the 80-token limit" in w.message]
    assert len(over) == 1 and over[0].line == 1 and over[0].message.endswith("(and 9 more lines)")


def test_long_lengths_are_bucketed(tmp_path):
    long = {"text": "word " * 9000}
    report = analyze(write(tmp_path / "long.jsonl", [long]), counters=[resolve("cl100k_base")])
    stats = report.tokens["tiktoken:cl100k_base"]
    assert stats.total == 9001 and list(stats.length_counts) == [9024]  # rounded up to a multiple of 64
    assert stats.per_example.p50 == 9001  # percentiles never exceed the true maximum


def test_custom_counter_without_batch_method(tmp_path):
    class Words:
        key, name, exact = "words", "whitespace words", False

        def count(self, example, fmt):
            words = sum(len(m["content"].split()) for m in example["messages"])
            return words, words

    report = analyze(write(tmp_path / "w.jsonl", [chat(i) for i in range(3)]), counters=[Words()])
    assert report.tokens["words"].total == 3 * (9 + 4 + 6)


def test_parallel_scan_equals_sequential(tmp_path, monkeypatch):
    rows = [chat(i, turns=1 + i % 4) for i in range(400)] + ['{"messages": []}', chat(3, turns=4), "not json"]
    rows += [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": "there"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
    ] * 3
    path = write(tmp_path / "big.jsonl", rows)
    counters = [resolve("cl100k_base"), resolve(family="llama3")]
    sequential = analyze(path, counters=counters, limits={"estimate:llama3": 60})
    monkeypatch.setattr(reader, "BLOCK_BYTES", 3000)  # many blocks, each split mid-line by the reader
    monkeypatch.setattr(analysis, "PARALLEL_BYTES", 0)
    parallel = analyze(path, counters=counters, limits={"estimate:llama3": 60})
    assert parallel == sequential
    assert [str(e) for e in sequential.errors] == [
        f"{path}:401: 'messages' is empty",
        f"{path}:403: invalid JSON at column 1: Expecting value",
    ]
    assert any(
        w.line == 402 and w.message == "duplicate of line 4 (and 2 more examples)"
        for w in sequential.warnings
    )


def test_duplicate_table_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(analysis.Seen, "SLOTS", 8)
    report = analyze(write(tmp_path / "d.jsonl", [chat(i) for i in range(20)] + [chat(0)]))
    messages = [w.message for w in report.warnings]
    assert "the duplicate check covered the first 6 distinct examples only" in messages
    assert "duplicate of line 1" in messages


def test_report_json_shape(tmp_path):
    system, user, assistant = chat(4)["messages"]
    weighted_user = {"messages": [system, {**user, "weight": 1}, assistant]}
    report = analyze(
        write(tmp_path / "s.jsonl", [chat(i) for i in range(4)] + [weighted_user]),
        counters=[resolve("cl100k_base"), resolve(family="qwen2")],
    )
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["examples"] == 5 and doc["format"] == "chat"
    assert doc["tokenizer"] == {"name": "cl100k_base", "exact": True}
    assert set(doc["tokens"]) == {"total", "trained", "per_example", "limit", "over_limit"}
    assert set(doc["tokens"]["per_example"]) == {"min", "mean", "p50", "p95", "max"}
    assert set(doc["token_counts"]) == {"tiktoken:cl100k_base", "estimate:qwen2"}
    assert doc["token_counts"]["estimate:qwen2"]["exact"] is False
    assert doc["warnings"][0] == {
        "line": 0,
        "message": "only 5 examples: OpenAI recommends starting with 50 to 100 (its minimum is 10)",
    }
    assert doc["provider_issues"] == {
        "openai": [
            {"line": 5, "message": "message 2: 'weight' on a user message: OpenAI takes it on assistant messages only"}
        ]
    }
    assert doc["advice"][0]["message"] == "5 examples is a small set"


def test_advice():
    def report(n):
        return DatasetReport("f", "chat", n, 0, None, {}, [], [], [], {})

    assert [a.message for a in advise(report(150))] == ["150 examples is a small set"]
    assert advise(report(5000)) == []
    messages = [a.message for a in advise(report(5000), lora_r=64, epochs=8, has_validation=False)]
    assert messages == ["LoRA rank 64 on 5,000 examples", "8 epochs on 5,000 examples", "no validation split"]
    assert advise(report(50_000), lora_r=64, epochs=3, has_validation=True) == []
    assert all(
        isinstance(a, Advice) and a.reason and a.suggestion for a in advise(report(10), lora_r=128, epochs=4)
    )


# ------------------------------------------------------------------------------------------------ fuzzing
KEYS = [
    "messages",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "weight",
    "tools",
    "function",
    "name",
    "arguments",
    "type",
    "id",
    "input",
    "preferred_output",
    "non_preferred_output",
    "prompt",
    "completion",
    "text",
    "parallel_tool_calls",
    "functions",
    "system",
    "image_url",
    "url",
]
VALUES = [
    "user",
    "assistant",
    "system",
    "tool",
    "developer",
    "function",
    "text",
    "image_url",
    "",
    " ",
    "{}",
    "<|endoftext|>",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(VALUES)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(json_values, min_size=1, max_size=6))
def test_random_json_gives_a_report(tmp_path, rows):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    report = analyze(path, counters=[resolve("cl100k_base"), resolve(family="mistral")])
    json.dumps(report.to_json())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300)
    | st.text(alphabet=string.printable + '{}[]":,\x00é你', max_size=200).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    )
)
def test_random_bytes_give_a_report(tmp_path, blob):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(blob)
    report = analyze(path, counters=[resolve("cl100k_base")])
    json.dumps(report.to_json())
    assert all(e.line >= 0 for e in report.errors)


# examples of the right overall shape whose every field may hold any JSON value
any_json = json_values
message = st.dictionaries(
    st.sampled_from(
        ["role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call", "x"]
    ),
    st.sampled_from(["user", "assistant", "system", "tool"]) | any_json,
    max_size=5,
)
tool_call = st.dictionaries(
    st.sampled_from(["id", "type", "function"]), any_json, max_size=3
) | st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b"]),
        "type": st.just("function"),
        "function": st.dictionaries(
            st.sampled_from(["name", "arguments"]), any_json | st.sampled_from(["f", "{}"])
        ),
    }
)
chat_like = st.fixed_dictionaries(
    {
        "messages": st.lists(
            message
            | st.fixed_dictionaries(
                {"role": st.just("assistant"), "tool_calls": st.lists(tool_call, max_size=2)}
            ),
            max_size=5,
        )
    },
    optional={
        "tools": any_json | st.lists(st.dictionaries(st.sampled_from(["type", "function"]), any_json)),
        "system": any_json,
        "parallel_tool_calls": any_json,
    },
)
preference_like = st.fixed_dictionaries(
    {"input": st.fixed_dictionaries({"messages": st.lists(message, max_size=3)}) | any_json},
    optional={
        "preferred_output": st.lists(message, max_size=2) | any_json,
        "non_preferred_output": st.lists(message, max_size=2),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(chat_like, min_size=1, max_size=4) | st.lists(preference_like, min_size=1, max_size=4))
def test_random_chat_structures_give_a_report(tmp_path, rows):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    report = analyze(path, counters=[resolve("cl100k_base"), resolve(family="qwen2")])
    json.dumps(report.to_json())
    for counter in (resolve("cl100k_base"), resolve(family="llama3")):  # count() is public: any dict is safe
        for row in rows:
            counter.count(row, "chat" if "messages" in row else "preference")


def test_a_read_failure_midway_is_an_error_not_a_crash(tmp_path, monkeypatch):
    path = write(tmp_path / "t.jsonl", [chat(i) for i in range(3)])

    def failing(path):
        yield from ()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(reader, "blocks", failing)
    assert [str(e) for e in analyze(path).errors] == [f"{path}: cannot read the file: Input/output error"]


# --- one line's memory is bounded (MAX_LINE_BYTES) -----------------------------------------------------------

def _peak_bytes(fn):
    """Peak of Python's allocations while ``fn`` runs (bytes objects and buffers included)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _file_with_a_long_line(path: Path, line_bytes: int, *, before: int = 3, after: int = 3) -> Path:
    """Valid chat lines around one line of ``line_bytes`` bytes, written as a sparse file (the hole costs no disk
    and no time): a line that starts like a text example and whose middle is never written."""
    with path.open("wb") as fh:
        for i in range(before):
            fh.write(json.dumps(chat(i)).encode() + b"\n")
        start = fh.tell()
        fh.write(b'{"text": "' + b"a" * 4096)
        fh.seek(start + line_bytes - 2)
        fh.write(b'"}\n')
        for i in range(after):
            fh.write(json.dumps(chat(100 + i)).encode() + b"\n")
    return path


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "worker-processes"])
def test_a_line_over_the_limit_is_refused_unread_in_bounded_memory(tmp_path, monkeypatch, parallel):
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 2 << 20)
    if parallel:
        monkeypatch.setattr(analysis, "PARALLEL_BYTES", 1)
    path = _file_with_a_long_line(tmp_path / "big.jsonl", 40 << 20)
    report, peak = _peak_bytes(lambda: analyze(path, counters=[resolve("cl100k_base")]))
    assert [(e.line, e.message.split(" bytes")[0]) for e in report.errors] == [(4, f"the line is {40 << 20:,}")]
    assert "over the limit of 2,097,152 bytes" in report.errors[0].message
    assert report.examples == 6  # the lines around it are read as usual
    assert report.tokens["tiktoken:cl100k_base"].per_example.max < 100
    assert peak < 12 << 20, f"peak {peak / 2**20:.1f} MiB for a 40 MiB line"
    assert [n for n, _ in reader.read_examples(path)] == [1, 2, 3, 5, 6, 7]  # what a backend converts


def test_the_last_line_over_the_limit_without_a_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 2 << 20)
    path = tmp_path / "cut.jsonl"
    path.write_bytes(json.dumps(chat(1)).encode() + b"\n" + b'{"text": "' + b"a" * (3 << 20))
    errors = analyze(path).errors
    assert [e.line for e in errors] == [1 + 1] and errors[0].message.startswith(f"the line is {(3 << 20) + 10:,} bytes")


def test_a_line_at_the_real_limit(tmp_path, summary_line):
    """The documented limit itself (MAX_LINE_BYTES): one byte over is refused, in a few MiB of memory."""
    import time

    path = _file_with_a_long_line(tmp_path / "huge.jsonl", reader.MAX_LINE_BYTES + 1, before=1, after=1)
    started = time.perf_counter()
    report, peak = _peak_bytes(lambda: analyze(path))
    seconds = time.perf_counter() - started
    assert [e.line for e in report.errors] == [2] and report.examples == 2
    assert f"the line is {reader.MAX_LINE_BYTES + 1:,} bytes" in report.errors[0].message
    assert peak < 16 << 20
    summary_line(f"a {reader.MAX_LINE_BYTES + 1:,}-byte line: refused in {seconds:.2f} s, peak Python memory "
                 f"{peak / 2**20:.1f} MiB")


# --- a provider's own rules: declared by its backend, checked in the one pass ----------------------------------
def test_a_providers_line_rules_are_checked_in_the_one_pass(tmp_path):
    """A made-up provider's LineRules: its chat rule sees each valid example (counted once per line, the first
    line's message shown), its format rule the file; the file stays valid, only that provider is ruled out."""
    acme = LineRules("acme", chat=lambda ex: [("turns", "more than one turn (Acme)")] if len(ex.body) > 2 else [],
                     formats={"chat": "Acme takes no chat data"})
    path = write(tmp_path / "d.jsonl", [chat(0), chat(1, turns=2), chat(2, turns=3), {"messages": 1}])
    report = analyze(path, rules=[acme])
    assert [str(e) for e in report.errors] == [f"{path}:4: 'messages' must be a list of messages, got a number"]
    assert [(i.line, i.message) for i in report.provider_issues["acme"]] == [
        (0, "Acme takes no chat data"), (2, "more than one turn (Acme) (and 1 more line)")]
    assert analyze(path, rules=[]).provider_issues == {}


def test_every_managed_backend_declares_the_line_rules_of_the_provider_it_claims():
    for name in BUILTIN_BACKENDS:
        cls = backend_class(name)
        if cls.capabilities.managed:
            assert cls.line_rules.provider in cls.capabilities.providers, name
    assert {rules.provider for rules in registered()} >= {"openai", "together", "bedrock", "fireworks", "vertex"}
