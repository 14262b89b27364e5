"""Token counters: exact tiktoken counts with OpenAI's chat overhead, HF tokenizer + template, estimates."""

import hashlib
import json
from pathlib import Path

import pytest
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.tokens import estimate as token_estimate
from ftbroker.tokens import openai_encodings as encodings
from ftbroker.tokens import scripts as token_scripts
from ftbroker.tokens.counters import CounterGroup, TokenCounter
from ftbroker.tokens.estimate import FAMILIES, family_of, family_of_config
from ftbroker.tokens.resolve import resolve
from hypothesis import given, settings
from hypothesis import strategies as st

CL100K = encodings.shipped_encoding("cl100k_base")

# OpenAI cookbook, "How to count tokens with tiktoken", section 6: the API counted 129 prompt tokens for these
# messages on gpt-4 / gpt-3.5-turbo (cl100k_base).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch "
        "base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {
                    "type": "string",
                    "description": "The unit of temperature to return",
                    "enum": ["celsius", "fahrenheit"],
                },
            },
            "required": ["location"],
        },
    },
}


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """A fresh machine: tiktoken's cache is empty (only the cl100k that ftbroker ships is there), no 'fast' extra."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(encodings, "quicktok_encoding", lambda encoding: None)


def _seed_cache(directory: Path, encoding: str, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(encodings.TIKTOKEN_URLS[encoding].encode()).hexdigest()).write_bytes(data)


def _cl100k_file() -> bytes:
    return encodings.SHIPPED["cl100k_base"].read_bytes()


def test_cookbook_chat_count_matches_openai(fresh_machine):
    counter = resolve("cl100k_base")
    assert (counter.key, counter.name, counter.exact) == ("tiktoken:cl100k_base", "cl100k_base", True)
    assert counter.count({"messages": COOKBOOK_MESSAGES}, "chat") == (129, 0)


def test_tools_follow_the_cookbook_rule(fresh_machine):
    messages = [
        {
            "role": "system",
            "content": "You are a helpful assistant that can answer to questions about the weather.",
        },
        {"role": "user", "content": "What's the weather like in San Francisco?"},
    ]
    counter = resolve("gpt-4")
    without = counter.count({"messages": messages}, "chat")[0]
    with_tools = counter.count({"messages": messages, "tools": [WEATHER_TOOL]}, "chat")[0]
    enc = lambda s: len(CL100K.encode(s))
    # func_init 10 (cl100k), name:description, prop_init 3, per property 3 + "name:type:description",
    # enum -3 then 3 + the item per item, func_end 12
    expected = (
        10
        + enc("get_current_weather:Get the current weather in a given location")
        + 3
        + 3
        + enc("location:string:The city and state, e.g. San Francisco, CA")
        + 3
        - 3
        + 3
        + enc("celsius")
        + 3
        + enc("fahrenheit")
        + enc("unit:string:The unit of temperature to return")
        + 12
    )
    assert with_tools - without == expected
    assert with_tools == 105


def test_trained_tokens_are_assistant_turns_without_weight_zero(fresh_machine):
    counter = resolve("cl100k_base")
    example = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there", "weight": 0},
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "It ships today."},
        ]
    }
    total, trained = counter.count(example, "chat")
    assert trained == len(CL100K.encode("It ships today.")) + 1  # + the end-of-message token
    assert total == 3 + sum(
        3 + len(CL100K.encode(m["role"])) + len(CL100K.encode(m["content"])) for m in example["messages"]
    )


def test_tool_calls_are_counted_and_trained(fresh_machine):
    counter = resolve("cl100k_base")
    call = {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"id": "42"}'}}
    example = {
        "messages": [{"role": "user", "content": "Order 42?"}, {"role": "assistant", "tool_calls": [call]}]
    }
    _, trained = counter.count(example, "chat")
    assert trained == len(CL100K.encode("get_order")) + len(CL100K.encode('{"id": "42"}')) + 3 + 1
    untrained = {"role": "assistant", "tool_calls": [call], "weight": 0}
    example["messages"][1:] = [untrained, {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                               {"role": "assistant", "content": "It has shipped."}]
    total, trained = counter.count(example, "chat")
    assert trained == len(CL100K.encode("It has shipped.")) + 1  # the weight-0 call is not trained
    n = lambda s: len(CL100K.encode(s))
    messages = sum(3 + n(m["role"]) + n(m.get("content", "")) for m in example["messages"])
    assert total == 3 + messages + n("get_order") + n('{"id": "42"}') + 3  # priming, messages, the call


def test_other_formats(fresh_machine):
    counter = resolve("cl100k_base")
    n = lambda s: len(CL100K.encode(s))
    assert counter.count({"prompt": "Translate: cat", "completion": " chat"}, "prompt_completion") == (
        n("Translate: cat") + n(" chat"),
        n(" chat"),
    )
    assert counter.count({"text": "Plain words."}, "text") == (n("Plain words."), n("Plain words."))
    pref = {
        "input": {"messages": [{"role": "user", "content": "Hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "What?"}],
    }
    total, trained = counter.count(pref, "preference")
    assert trained == n("Hello!") + 1 + n("What?") + 1
    assert total == 3 + 3 * (3 + 1) + n("Hi") + n("Hello!") + n("What?")  # roles are one token each


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
        | st.sampled_from(
            ["<|endoftext|>", "<|fim_prefix|>", "a<|endoftext|>b", " ", "\n\n", "héllo", "你好", "🙂", ""]
        ),
        max_size=30,
    )
)
def test_batched_counts_equal_one_encode_per_text(texts):
    batched = encodings.TiktokenTexts(CL100K)(texts)
    assert batched == [len(CL100K.encode_ordinary(t)) for t in texts]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60), max_size=20))
def test_fast_extra_counts_what_tiktoken_counts(texts):
    fast = encodings.quicktok_encoding("cl100k_base")
    if fast is None:
        pytest.skip("the 'fast' extra (quicktok-v1) is not installed")
    assert encodings.QuicktokTexts(fast)(texts) == [len(CL100K.encode_ordinary(t)) for t in texts]


def test_fast_extra_makes_o200k_exact_offline(tmp_path, monkeypatch):
    if encodings.quicktok_encoding("o200k_base") is None:
        pytest.skip("the 'fast' extra (quicktok-v1) is not installed")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    counter = resolve("gpt-4o-mini-2024-07-18")
    assert (counter.key, counter.name, counter.exact) == ("tiktoken:o200k_base", "o200k_base", True)
    assert counter.count({"messages": COOKBOOK_MESSAGES}, "chat") == (124, 0)  # the cookbook's gpt-4o count


def test_batched_counts_across_many_chunks(monkeypatch):
    monkeypatch.setattr(encodings, "_CHUNK_CHARS", 50)  # many chunks, encoded by the thread pool
    texts = [f"message number {i}: " + "word " * (i % 17) for i in range(300)]
    assert encodings.TiktokenTexts(CL100K)(texts) == [len(CL100K.encode_ordinary(t)) for t in texts]


def test_o200k_falls_back_to_a_labelled_estimate_when_not_cached(fresh_machine):
    counter = resolve("o200k_base")
    assert counter.key == "estimate:o200k" and not counter.exact
    assert "estimate" in counter.name and "not in tiktoken's cache" in counter.name
    total, trained = counter.count(
        {"messages": COOKBOOK_MESSAGES + [{"role": "assistant", "content": "OK."}]}, "chat"
    )
    assert 100 < total < 160 and trained > 0
    assert resolve("gpt-4o-mini-2024-07-18").key == "estimate:o200k"


def test_corrupt_cache_file_is_not_redownloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(encodings, "quicktok_encoding", lambda encoding: None)
    _seed_cache(tmp_path, "o200k_base", b"not the real file")

    def no_network(*args, **kwargs):
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr("tiktoken.load.read_file", no_network)
    assert resolve("o200k_base").key == "estimate:o200k"


def test_seeded_cache_makes_the_plain_encoding_name_work(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _seed_cache(tmp_path, "cl100k_base", _cl100k_file())
    cached = encodings.load_encoding("cl100k_base")
    assert cached.name == "cl100k_base" and cached is not encodings.shipped_encoding("cl100k_base")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "other"))
    assert encodings.load_encoding("cl100k_base") is encodings.shipped_encoding("cl100k_base")


def test_the_shipped_cl100k_is_tiktokens_own_definition(monkeypatch):
    """The file ftbroker ships is the one tiktoken would download (its pinned hash), and the pattern and special
    tokens are tiktoken's: its own cl100k_base() is run with its download pointed at the shipped ranks."""
    from tiktoken_ext import openai_public

    ours = encodings.shipped_encoding("cl100k_base")
    asked = {}

    def load(url, expected_hash):
        asked.update(url=url, expected_hash=expected_hash)
        return ours._mergeable_ranks

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", load)
    theirs = openai_public.cl100k_base()
    assert asked == {"url": encodings.TIKTOKEN_URLS["cl100k_base"],
                     "expected_hash": hashlib.sha256(_cl100k_file()).hexdigest()}
    assert (theirs["pat_str"], theirs["special_tokens"]) == (ours._pat_str, ours._special_tokens)


def test_exact_cl100k_counts_need_no_other_package(fresh_machine, monkeypatch):
    """No package besides tiktoken is needed for exact cl100k counts and the estimates built on them."""
    import tiktoken.registry

    real = tiktoken.registry.get_encoding

    def only_tiktokens_own(name):
        if name != "cl100k_base":
            raise ValueError(f"Unknown encoding {name}")
        return real(name)

    monkeypatch.setattr(tiktoken, "get_encoding", only_tiktokens_own)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", only_tiktokens_own)
    counter = resolve("cl100k_base")
    assert (counter.key, counter.exact) == ("tiktoken:cl100k_base", True)
    assert counter.count({"messages": COOKBOOK_MESSAGES}, "chat") == (129, 0)
    assert resolve(family="llama3").count({"messages": COOKBOOK_MESSAGES}, "chat")[0] > 100


def test_estimates_are_labelled_and_plausible(fresh_machine):
    example = {
        "messages": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": "Where is my order? 我的订单在哪里？ Где мой заказ?"},
            {"role": "assistant", "content": "It ships today. 今天发货。 Отправим сегодня."},
        ]
    }
    exact = resolve("cl100k_base").count(example, "chat")[0]
    for family in FAMILIES:
        counter = resolve(family=family)
        assert isinstance(counter, TokenCounter)
        if family == "cl100k":
            assert counter.exact and counter.key == "tiktoken:cl100k_base"
            continue
        assert counter.key == f"estimate:{family}" and not counter.exact and "estimate" in counter.name
        total, trained = counter.count(example, "chat")
        assert 0.5 * exact < total < 1.6 * exact and 0 < trained < total



# characters at the edges of the estimate's script ranges, and around them
SCRIPT_CHARS = (
    "aZ09 .\n\u007f\u0080\u00bf\u00c0\u00e9\u024f\u0250\u03ff\u0400\u04ff\u0500\u05ff\u0600\u06ff"
    "\u0700\u074f\u0750\u077f\u0780\u303f\u3040\u30ff\u3100\u33ff\u3400\u4dbf\u4dc0\u4dff\u4e00"
    "\u9fff\ua000\uabff\uac00\ud7af\ud7b0\uf8ff\uf900\ufaff\ufb00\ufeff\uff00\uffef\ufff0\uffff"
    "\U0001f642\U00020000"
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(SCRIPT_CHARS) | st.characters(), min_size=1, max_size=30),
                min_size=1, max_size=20))
def test_batch_script_scan_finds_what_the_regular_expressions_find(texts):
    """The estimates scan a batch's scripts with numpy where it is installed; per text with the regular
    expressions of features otherwise: the same counts, so the same estimates."""
    scripts = token_scripts.script_counts(texts)
    if scripts is None:
        pytest.skip("numpy is not installed")
    for text, row in zip(texts, scripts.tolist()):
        per_char = 1000 / len(text)
        assert (1000, row[1], *(n * per_char for n in row[2:7])) == token_scripts.features(text, 1000)
        assert row[0] == len(text) and sum(row[1:]) == len(text)
    chunks, token_scripts.SCAN_CHARS = token_scripts.SCAN_CHARS, 7  # a scan in many steps finds the same
    try:
        assert (token_scripts.script_counts(texts) == scripts).all()
    finally:
        token_scripts.SCAN_CHARS = chunks
    family = token_estimate.FAMILY_ESTIMATES["llama3"]
    estimate = token_estimate.EstimatedTexts(family)
    with_numpy = estimate(texts)
    tokens_numpy, token_scripts.numpy_module = token_scripts.numpy_module, lambda: None
    try:
        assert estimate(texts) == with_numpy  # the very same floats
    finally:
        token_scripts.numpy_module = tokens_numpy


def test_a_group_counts_what_each_counter_counts_alone():
    """plan runs its counters as one CounterGroup (one walk, one count per encoding, one script scan)."""
    call = {"name": "get_current_weather", "arguments": "{}"}
    tool_call = {"id": "c1", "type": "function", "function": call}
    chats = [
        {"messages": COOKBOOK_MESSAGES + [{"role": "assistant", "content": "Вот так. 好的。"}]},
        {"messages": [{"role": "user", "content": "Weather in Paris, 2 days?"},
                      {"role": "assistant", "tool_calls": [tool_call]},
                      {"role": "tool", "tool_call_id": "c1", "content": '{"t": 21}'},
                      {"role": "assistant", "content": "21 °C, ensoleillé.", "weight": 0},
                      {"role": "assistant", "content": "مشمس"}],
         "tools": [WEATHER_TOOL]},
        {"system": "Bedrock's system prompt.", "messages": [{"role": "user", "content": "Hi"},
                                                            {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "Order 7?"}, {"role": "assistant", "content": "Shipped."}],
         "tools": [{"type": "function", "function": {"name": "find_order", "description": "Find an order.",
                                                     "parameters": {"properties": {"id": {"type": "string"}}}}}]},
    ]
    preference = [{"input": {"messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER_TOOL]},
                   "preferred_output": [{"role": "assistant", "content": "Hello!"}],
                   "non_preferred_output": [{"role": "assistant", "content": "What?"}]}]
    counters = [resolve("cl100k_base"), resolve(family="llama3"), resolve(family="qwen2")]
    counters.append(token_estimate.estimate_counter(None))  # no known family: the cl100k count
    if encodings.quicktok_encoding("o200k_base") is not None:
        counters.append(resolve("o200k_base"))
    for fmt, examples in (("chat", chats * 3), ("preference", preference), ("text", [{"text": "Plain 42."}])):
        group = CounterGroup(counters, json_examples=True)  # as analyze() runs it: tool lists made once
        together = group.count_many(examples, fmt)
        assert group.count_many(examples, fmt) == together  # again, with the repeated texts from the memo
        for counter in counters:
            alone = CounterGroup([counter]).count_many(examples, fmt)[counter.key]
            assert together[counter.key] == alone == [counter.count(ex, fmt) for ex in examples]
    assert together["estimate:cl100k"] == together["tiktoken:cl100k_base"]  # its cl100k count alone

def test_unknown_names():
    with pytest.raises(UnknownNameError, match="did you mean 'o200k_base'"):
        resolve("o200k_bas")
    with pytest.raises(UnknownNameError):
        resolve(family="klingon")
    with pytest.raises(InputError, match="no tokenizer folder"):
        resolve("./no/such/folder")


@pytest.mark.parametrize(
    "name, family",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2"),
        ("Qwen/Qwen3-8B", "qwen2"),
        ("Qwen/Qwen3.5-9B", "qwen3.5"),
        ("mistralai/Mistral-Nemo-Instruct-2407", "mistral"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-spm"),
        ("google/gemma-3-4b-it", "gemma"),
        ("microsoft/phi-4", "phi"),
        ("openai/gpt-oss-20b", "o200k"),
        ("gpt-4o-mini-2024-07-18", "o200k"),
        ("gpt-3.5-turbo", "cl100k"),
        ("some/unknown-model", None),
    ],
)
def test_family_of(name, family):
    assert family_of(name) == family


# ------------------------------------------------------------------------------------- Hugging Face tokenizer
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer(folder: Path) -> Path:
    """A real BPE tokenizer trained here (no download), saved as a model folder with a ChatML template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["where is my order", "it ships today", "hello there, how can I help?", "thanks a lot"] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": CHATML, "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}
        )
    )
    return folder


CHAT = {
    "messages": [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": "it ships today"},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "hello there", "weight": 0},
    ]
}


def test_local_tokenizer_folder_with_chat_template(tmp_path):
    from tokenizers import Tokenizer

    folder = _tiny_tokenizer(tmp_path / "tiny-model")
    counter = resolve(str(folder))
    assert counter.exact and counter.key == f"hf:{folder}" and counter.name == "tiny-model (local tokenizer)"
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CHAT["messages"])
    total, trained = counter.count(CHAT, "chat")
    assert total == len(tok.encode(rendered, add_special_tokens=False).ids)
    # the one trained turn: its text, the end-of-turn token and the newline after it (weight 0 turn excluded)
    assert trained == len(tok.encode("it ships today<|im_end|>\n", add_special_tokens=False).ids)


def test_local_tokenizer_agrees_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = _tiny_tokenizer(tmp_path / "tiny-model")
    reference = transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))
    ids = reference.apply_chat_template(CHAT["messages"], tokenize=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    assert resolve(str(folder / "tokenizer.json")).count(CHAT, "chat")[0] == len(ids)


def test_hub_cache_is_used_without_download(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    _tiny_tokenizer(snapshot)
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    counter = resolve(hf_repo="acme/tiny-chat")
    assert counter.exact and counter.name == "tiny-chat (local tokenizer)"
    missing = resolve(hf_repo="meta-llama/Llama-3.1-8B-Instruct")
    assert missing.key == "estimate:llama3" and not missing.exact
    # where huggingface_hub itself looks: HF_HOME/hub when HF_HUB_CACHE is not set
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert resolve(hf_repo="acme/tiny-chat").exact


@pytest.mark.parametrize(
    "config, key",
    [
        ({"model_type": "qwen2", "vocab_size": 151936}, "estimate:qwen2"),
        ({"model_type": "llama", "vocab_size": 128256}, "estimate:llama3"),
        ({"model_type": "llama", "vocab_size": 32000}, "estimate:cl100k"),
        ({"model_type": "mistral", "vocab_size": 131072}, "estimate:mistral"),
        ({"model_type": "gemma3_text", "vocab_size": 262208}, "estimate:gemma"),
    ],
)
def test_model_folder_without_tokenizer_json(tmp_path, config, key):
    (tmp_path / "config.json").write_text(json.dumps(config))
    counter = resolve(str(tmp_path))
    assert counter.key == key and not counter.exact and f"no tokenizer.json in {tmp_path}" in counter.name
    (tmp_path / "config.json").unlink()
    with pytest.raises(InputError, match="has no tokenizer.json"):
        resolve(str(tmp_path))


def test_a_template_that_refuses_an_example_is_an_error_on_its_line(tmp_path):
    from ftbroker.data.analysis import analyze

    folder = _tiny_tokenizer(tmp_path / "no-system-model")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHATML
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    rows = [CHAT, {"messages": CHAT["messages"][1:3]}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = analyze(data, counters=[resolve(str(folder))])
    assert [(e.line, e.message) for e in report.errors] == [
        (
            1,
            "the chat template of no-system-model (local tokenizer) failed on an example: System role not supported",
        )
    ]
    assert sum(report.tokens[f"hf:{folder}"].length_counts.values()) == 1


@pytest.mark.parametrize("config, family", [
    ({"model_type": "llama", "vocab_size": 128256}, "llama3"),
    ({"model_type": "llama", "vocab_size": 32000}, None),  # Llama 2: no calibrated family
    ({"model_type": "mistral", "vocab_size": 131072}, "mistral"),
    ({"model_type": "mistral", "vocab_size": 32768}, "mistral-spm"),
    ({"model_type": "mixtral", "vocab_size": 32000}, "mistral-spm"),
    ({"model_type": "phi3", "vocab_size": 100352}, "phi"),
    ({"model_type": "phi3", "vocab_size": 32064}, None),
    ({"model_type": "qwen3_5", "vocab_size": 248320}, "qwen3.5"),
    ({"model_type": "qwen2", "vocab_size": 152064}, "qwen2"),
    ({"model_type": "gemma3_text", "vocab_size": 262144}, "gemma"),
    ({"model_type": "gpt_oss", "vocab_size": 201088}, "o200k"),
])
def test_family_of_config(config, family):
    """One rule for a model folder's family, used by the token counters and by the catalog's config.json reader."""
    assert family_of_config(config) == family
    assert family is None or family in FAMILIES
