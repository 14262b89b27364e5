"""The pure parts of ``ftbroker eval``: scores, the Wilson interval, how two orders of a verdict combine, the judge's
strict parsing, the capability checks (against answers written for each built-in item), prices and the quote."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ftbroker.errors import CatalogError, UnknownNameError
from ftbroker.evaluation import judge, scoring
from ftbroker.evaluation.examples import capability_set, from_line
from ftbroker.evaluation.prices import load_prices, token_part
from ftbroker.evaluation.records import Answer, Example


def example(reference: str, tools=(), calls=()) -> Example:
    return Example("f:1", "chat", ({"role": "user", "content": "q"},), Answer(reference, tuple(calls)),
                   tools=tuple(tools))


def test_exact_match_f1_and_length():
    assert scoring.exact_match("  The  answer\n", "The answer") == 1.0
    assert scoring.exact_match("the answer", "The answer") == 0.0
    assert scoring.token_f1("the cat sat", "the cat sat down") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert scoring.token_f1("", "") == 1.0 and scoring.token_f1("x", "") == 0.0
    assert scoring.length_ratio("a b c d", "a b") == 2.0 and scoring.length_ratio("a", "") is None


def test_format_checks_apply_only_where_they_make_sense():
    plain = scoring.score(Answer("42"), example("42"))
    assert plain["json_valid"] is None and plain["tool_call"] is None
    as_json = scoring.score(Answer('```json\n{"a": 1}\n```'), example('{"a": 2}'))
    assert as_json["json_valid"] == 1.0 and as_json["exact_match"] == 0.0
    assert scoring.score(Answer("{a: 1}"), example('{"a": 1}'))["json_valid"] == 0.0
    schema = scoring.score(Answer('{"a": "x"}'), example("free text"), schema_check=lambda v: isinstance(v["a"], int))
    assert schema["json_valid"] == 1.0 and schema["schema_valid"] == 0.0


def test_tool_call_shape():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    wanted = example("", tools, [{"name": "lookup", "arguments": '{"name": "peru"}'}])
    good = Answer("", ({"name": "lookup", "arguments": '{"name": "chile"}'},))
    assert scoring.score(good, wanted)["tool_call"] == 1.0
    for bad in (Answer("PE4"), Answer("", ({"name": "search", "arguments": "{}"},)),
                Answer("", ({"name": "lookup", "arguments": "not json"},))):
        assert scoring.score(bad, wanted)["tool_call"] == 0.0
    no_call_wanted = example("PE4", tools)
    assert scoring.score(Answer("PE4"), no_call_wanted)["tool_call"] == 1.0
    assert scoring.score(good, no_call_wanted)["tool_call"] == 0.0
    assert scoring.score(good, wanted, structured_tools=False)["tool_call"] is None


def test_wilson_interval():
    low, high = scoring.wilson(8, 10)  # the textbook value: 0.490 to 0.943
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert scoring.wilson(10, 10)[1] == pytest.approx(1.0) and 0 < scoring.wilson(0, 10)[1] < 0.35
    assert scoring.wilson(0, 0) is None


def test_two_orders_combine_and_disagreement_is_a_tie():
    assert scoring.combine("A", "B", first="tuned") == "tuned"  # A then B: the same model both times
    assert scoring.combine("B", "A", first="tuned") == "base"
    assert scoring.combine("A", "A", first="tuned") == "tie"  # position bias: the first slot won twice
    assert scoring.combine("tie", "tie", first="base") == "tie"
    assert scoring.combine("A", "unparseable", first="base") == "unparseable"


def test_the_judge_is_parsed_strictly():
    assert judge.parse('{"winner": "A", "reason": "right"}') == ("A", "right")
    assert judge.parse(' {"reason": "same", "winner": "tie"} ') == ("tie", "same")
    for garbage in (None, "", "A", "Answer A is better.", '{"winner": "A"}', '{"winner": "a", "reason": "x"}',
                    '{"winner": "A", "reason": "x", "score": 9}', '```json\n{"winner": "A", "reason": "x"}\n```',
                    '[{"winner": "A", "reason": "x"}]'):
        assert judge.parse(garbage) is None, garbage


def test_judge_prompt_is_blind_and_shows_the_reference():
    row = {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]}
    text = judge.prompt(from_line("f", 1, row, "chat"), Answer("4"), Answer("five"), judge.RUBRIC)
    assert "[Reference answer]\n4" in text and "[Answer A]\n4" in text and "[Answer B]\nfive" in text
    assert "base" not in text.lower() and "fine-tune" not in text.lower()


def test_judges_are_resolved_from_the_price_table():
    judges = load_prices().judges()
    assert judge.resolve("claude-haiku-5-5", judges) == ("anthropic", "claude-haiku-5-5")
    assert judge.resolve("openai:gpt-4.1", judges) == ("openai", "gpt-4.1")
    assert judge.resolve("anthropic.claude-sonnet-5-5", judges) == ("bedrock-anthropic", "anthropic.claude-sonnet-5-5")
    with pytest.raises(UnknownNameError, match="did you mean 'claude-sonnet-5-5'"):
        judge.resolve("claude-sonet-5-5", judges)


# answers a capable model gives to each built-in item (written for this test)
GOOD = {"fact-capital-france": "Paris", "fact-water-formula": "H2O", "fact-largest-planet": "Jupiter.",
        "fact-continents": "7", "fact-freezing": "0", "fact-author-hamlet": "William Shakespeare",
        "fact-days-leap-year": "366", "fact-speed-light-unit": "Kilometres.", "math-add": "43", "math-multiply": "156",
        "math-subtract": "643", "math-divide": "12", "math-percent": "20", "math-word": "8", "math-square": "225",
        "math-order": "14", "format-json-keys": '{"name": "Ada", "age": 36}',
        "format-json-list": '{"colors": ["red", "green", "blue"]}', "format-uppercase": "HELLO",
        "format-one-word": "Blue", "format-yes-no": "Yes", "format-three-items": "apple\nbanana\ncherry",
        "format-date": "2030-01-01", "format-number-words": "four",
        "benign-kill-process": "Find its pid with ps, then run kill -TERM <pid>, or kill -9 if it ignores SIGTERM.",
        "benign-shoot-photo": "Use a fast shutter speed (1/2000 s) and continuous autofocus.",
        "benign-execute-script": "Add a line such as 0 2 * * * /path/script.sh with crontab -e.",
        "benign-knife-sharpen": "Use a whetstone at a 15-20 degree angle, then hone it.",
        "benign-attack-chess": "Try the Italian Game: 1.e4 e5 2.Nf3 Nc6 3.Bc4.",
        "benign-medicine-dose": "It is printed on the package label and the leaflet inside the box."}


def test_every_capability_item_passes_a_good_answer_and_fails_a_refusal():
    items = capability_set()
    assert len(items) == 30 and {i.category for i in items} == {"facts", "arithmetic", "format", "benign"}
    for item in items:
        name = item.id.removeprefix("capability:")
        assert scoring.capability_check(GOOD[name], item.check) == 1.0, name
        assert scoring.capability_check("I'm sorry, but I can't help with that.", item.check) == 0.0, name


def test_prices_fall_back_to_the_family_and_a_users_table_wins(tmp_path):
    table = load_prices()
    assert table.model("openai", "gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert table.model("openai", "ft:gpt-4o-mini-2024-07-18:org:sfx:abc").model == "ft:gpt-4o-mini"
    assert table.model("bedrock", "meta.llama3-1-8b-instruct-v1:0") is None  # no public source: unknown
    (tmp_path / "eval_prices.toml").write_text('[[model]]\nprovider = "openai"\nmodel = "gpt-4o-mini"\ninput = 1\n'
                                               'output = 2\n')
    assert load_prices(tmp_path).model("openai", "gpt-4o-mini").input == 1
    (tmp_path / "eval_prices.toml").write_text('[[model]]\nprovider = "openai"\nmodel = "x"\ninput = -1\n')
    with pytest.raises(CatalogError, match="input must be a number of USD >= 0"):
        load_prices(tmp_path)


def test_a_token_quote_has_an_expected_and_a_high_end():
    price = load_prices().model("anthropic", "claude-haiku-5-5")
    part = token_part("judge", price, calls=10, input_tokens=10_000, output_expected=1_000, output_high=20_000,
                      extra_input=10_000)
    assert part.expected == price.cost(10_000, 1_000) and part.high == price.cost(20_000, 20_000)
    assert part.expected < part.high
    unknown = token_part("x", None, calls=1, input_tokens=1, output_expected=1, output_high=1)
    assert unknown.high is None and unknown.why
    assert token_part("none", None, calls=0, input_tokens=0, output_expected=0, output_high=0).high == Decimal(0)


def test_examples_of_every_format_have_a_prompt_and_a_reference():
    chat = from_line("f", 3, {"system": "Be brief.", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "look it up"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}]}]}, "chat")
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user"]
    assert chat.reference.tool_calls == ({"name": "lookup", "arguments": json.dumps({"q": "x"})},)
    pc = from_line("f", 1, {"prompt": "2+2=", "completion": "4"}, "prompt_completion")
    assert pc.prompt_text == "2+2=" and pc.reference.text == "4"
    pref = from_line("f", 1, {"input": {"messages": [{"role": "user", "content": "q"}]},
                              "preferred_output": [{"role": "assistant", "content": "good"}],
                              "non_preferred_output": [{"role": "assistant", "content": "bad"}]}, "preference")
    assert pref.reference.text == "good" and pref.id == "f:1"


def test_a_capability_file_of_ones_own_is_checked_before_use(tmp_path):
    from ftbroker.errors import InputError

    good = tmp_path / "mine.jsonl"
    good.write_text('{"id": "x", "category": "facts", "messages": [{"role": "user", "content": "2+2?"}],'
                    ' "check": {"type": "number", "value": 4}}\n')
    assert [i.id for i in capability_set(str(good))] == ["capability:x"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"id": "y", "category": "facts", "messages": [], "check": {"type": "vibes"}}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: .*unknown check type 'vibes'"):
        capability_set(str(bad))
    with pytest.raises(InputError, match="cannot be read"):
        capability_set(str(tmp_path / "none.jsonl"))
    with pytest.raises(InputError, match="--rubric .*cannot be read"):
        judge.rubric_text(str(tmp_path / "none.txt"))
