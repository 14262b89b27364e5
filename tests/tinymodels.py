"""Tiny models, tokenizers and datasets built on the spot, for tests that train for real without a download.

Everything is saved to a folder and meant to be loaded back through ``from_pretrained`` (the real loading
code). The recipe: a ByteLevel BPE tokenizer trained on the test texts, a 2-layer
Llama with ``initializer_range=0.1`` (near-uniform logits otherwise make a LoRA barely move the loss).

    build_tokenizer(template, specials, eos, ...) -> tokenizer     (in memory; save it yourself)
    build_tiny_model(folder, template=CHATML_TEMPLATE) -> folder    (tokenizer + LlamaForCausalLM)
    code_examples(n, seed=0) -> [{"messages": [...]}]               ("What is the code of india?" -> "IN5")
    tool_conversation() -> {"messages": [...], "tools": [...]}      (multi-turn, tool calls, a weight-0 turn)
    write_jsonl(path, rows) -> path
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def _chatml(assistant_turn: str) -> str:
    return (
        "{%- if tools %}{{- '<|im_start|>system\\n' }}"
        "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
        "{{- 'Tools:\\n' }}{%- for tool in tools %}{{- tool | tojson }}{{- '\\n' }}{%- endfor %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- elif messages and messages[0]['role'] == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
        "{%- for message in messages %}"
        "{%- if message['role'] == 'system' %}"
        "{%- elif message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}" + assistant_turn +
        "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


_REPLY = ("{{- message['content'] }}{%- for call in message.get('tool_calls') or [] %}"
          "{{- '<tool_call>' + call['function']['name'] + ' ' + (call['function']['arguments'] | tojson)"
          " + '</tool_call>' }}{%- endfor %}{{- '<|im_end|>' }}")
# ChatML without {% generation %} markers (like most real instruct templates), with tools and tool calls.
CHATML_TEMPLATE = _chatml(_REPLY + "{{- '\\n' }}")
# The same rendering with the reply and its end token inside {% generation %} (for cross-checks).
CHATML_GENERATION_TEMPLATE = _chatml("{% generation %}" + _REPLY + "{% endgeneration %}{{- '\\n' }}")

CHATML_SPECIALS = ("<|pad|>", "<|im_end|>", "<|im_start|>", "<|endoftext|>")

NAMES = ("india", "peru", "chile", "kenya", "japan", "spain", "italy", "egypt", "ghana", "nepal",
         "oman", "qatar", "sudan", "togo", "yemen", "cuba", "fiji", "iran", "iraq", "laos")
SYSTEM = "You answer with the code."


def code_of(name: str) -> str:
    return f"{name[:2].upper()}{len(name)}"


def code_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name = rng.choice(NAMES)
        rows.append({"messages": [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"What is the code of {name}?"},
                                  {"role": "assistant", "content": code_of(name)}]})
    return rows


def tool_conversation() -> dict:
    """Multi-turn: a weight-0 assistant turn (context), a tool call (OpenAI format: arguments as a JSON
    string), the tool's answer, and a final trained reply."""
    return {
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find a country code",
                                                    "parameters": {"type": "object",
                                                                   "properties": {"name": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is the code of peru?"},
            {"role": "assistant", "content": "PE9", "weight": 0},
            {"role": "user", "content": "Wrong. Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{\"name\": \"peru\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "PE4"},
            {"role": "assistant", "content": "PE4"},
        ],
    }


def write_jsonl(path: Path, rows) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _corpus() -> list[str]:
    texts = [f"What is the code of {name}? {code_of(name)} Wrong. Look it up. lookup {{\"name\": \"{name}\"}}"
             for name in NAMES]
    texts += [SYSTEM, "system user assistant tool Tools: <tool_call></tool_call> Find a country code",
              json.dumps(tool_conversation()["tools"])]
    return texts * 5


def build_tokenizer(template: str, specials=CHATML_SPECIALS, *, eos: str = "<|im_end|>", pad: str = "<|pad|>",
                    bos: str | None = None, extra_texts=(), vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_corpus() + list(extra_texts), trainer=trainer)
    named = {"eos_token": eos, "pad_token": pad} | ({"bos_token": bos} if bos else {})
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **named,
                                      additional_special_tokens=[s for s in specials if s not in named.values()])
    wrapped.chat_template = template
    return wrapped


def build_tiny_model(folder: Path, template: str = CHATML_TEMPLATE, seed: int = 0) -> Path:
    """A tokenizer + 2-layer Llama (about 130k parameters) saved in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(template)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
