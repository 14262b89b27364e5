"""Assistant-only labels on a chat template WITHOUT {% generation %} markers, checked token by token."""

from __future__ import annotations

import pytest
from ftbroker.backends.local import masking
from tinymodels import (
    CHATML_GENERATION_TEMPLATE,
    CHATML_TEMPLATE,
    build_tokenizer,
    code_examples,
    tool_conversation,
)


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tokenizer(CHATML_TEMPLATE)
    assert "{% generation %}" not in tok.chat_template
    return tok


def expected_labels(tokenizer, input_ids, trained_turns):
    """An independent reading of the token stream: after <|im_start|>, the role runs to the first newline;
    an assistant turn's tokens from there through its <|im_end|> are trained if its index (among assistant
    turns) is in ``trained_turns``."""
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    labels, role, in_header, assistant_index, header = [], None, False, -1, ""
    for token in input_ids:
        if token == start:
            in_header, header = True, ""
            labels.append(-100)
            continue
        if in_header:
            header += tokenizer.decode([token])
            labels.append(-100)
            if "\n" in header:
                in_header, role = False, header.split("\n")[0]
                assistant_index += role == "assistant"
            continue
        trained = role == "assistant" and assistant_index in trained_turns
        labels.append(token if trained else -100)
        if token == end:
            role = None
    return labels


def test_multi_turn_with_tools_and_a_weight_zero_turn(tokenizer):
    conversation = tool_conversation()
    example = masking.tokenize_example(tokenizer, conversation)
    # Assistant turns: 0 has weight 0 (context), 1 is the tool call, 2 is the final reply.
    assert example.labels == expected_labels(tokenizer, example.input_ids, trained_turns={1, 2})
    trained = [tokenizer.decode([t]) for t, label in zip(example.input_ids, example.labels, strict=True)
               if label != -100]
    assert "".join(trained) == '<tool_call>lookup {"name": "peru"}</tool_call><|im_end|>PE4<|im_end|>'
    assert "PE9" not in "".join(trained)  # the weight-0 turn is context only
    # The text that was tokenized is exactly the template's rendering (tool-call arguments parsed from the
    # OpenAI JSON string, the tools listed in the system turn).
    rendered = tokenizer.apply_chat_template(masking.normalize_messages(conversation["messages"]),
                                             tools=conversation["tools"], tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered
    assert '{"name": "peru"}' in rendered and '"lookup"' in rendered


def test_agrees_with_the_generation_marker_mask_of_the_same_template(tokenizer):
    """The same format with {% generation %} markers lets transformers compute the assistant mask itself."""
    marked = build_tokenizer(CHATML_GENERATION_TEMPLATE)
    conversation = tool_conversation()
    for message in conversation["messages"]:
        message.pop("weight", None)  # transformers knows nothing of weights
    for example in [conversation, *code_examples(5)]:
        ours = masking.tokenize_example(tokenizer, example)
        theirs = marked.apply_chat_template(masking.normalize_messages(example["messages"]),
                                            tools=example.get("tools"), return_dict=True,
                                            return_assistant_tokens_mask=True)
        assert theirs["input_ids"] == ours.input_ids
        assert [t if m else -100 for t, m in zip(theirs["input_ids"], theirs["assistant_masks"], strict=True)] \
            == ours.labels


def test_all_weight_zero_trains_nothing(tokenizer):
    example = code_examples(1)[0]
    example["messages"][-1]["weight"] = 0
    assert masking.tokenize_example(tokenizer, example).trained_tokens == 0


def test_cut_keeps_the_start(tokenizer):
    full = masking.tokenize_example(tokenizer, tool_conversation())
    cut = masking.tokenize_example(tokenizer, tool_conversation(), max_length=10)
    assert cut.input_ids == full.input_ids[:10] and cut.labels == full.labels[:10]


def test_prompt_completion_and_text(tokenizer):
    example = masking.tokenize_example(tokenizer, {"prompt": "What is the code of peru? ", "completion": "PE4"})
    trained = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels, strict=True)
                                if label != -100])
    assert trained == "PE4<|im_end|>"
    text = masking.tokenize_example(tokenizer, {"text": "PE4"})
    assert text.labels == text.input_ids and tokenizer.decode(text.input_ids) == "PE4<|im_end|>"


def test_template_that_rewrites_history_is_refused(tokenizer):
    """A template that renders the last assistant turn differently (as reasoning models do) is not
    prefix-preserving: the spans cannot be trusted, so it is refused with the reason."""
    rewriting = build_tokenizer(CHATML_TEMPLATE.replace(
        "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n' + ('' if loop.last else '~') }}", 1))
    with pytest.raises(masking.TemplateError, match="not prefix-preserving"):
        masking.chat_spans(rewriting, tool_conversation()["messages"])


def test_line_without_a_known_shape(tokenizer):
    with pytest.raises(masking.TemplateError, match="'messages'"):
        masking.tokenize_example(tokenizer, {"input": "x"})
