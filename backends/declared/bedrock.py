"""Bedrock's own rules on fine-tuning data lines, and the shape of AWS keys (see ``ftbroker.backends.declared``).

These hold for every model Bedrock fine-tunes; what one model's format cannot hold (Llama 3.1: one prompt and one
completion) is refused by its converter in ``ftbroker.backends.bedrock``."""

from __future__ import annotations

from ftbroker.data.providers import ChatExample, LineRules, Remark, plain_turns


def _chat_rules(example: ChatExample) -> list[Remark]:
    images = example.parts("image_url")
    return [*plain_turns(example, "Bedrock"),
            *([("images", "image parts: ftbroker's Bedrock formats carry text only")] if images else [])]


# Conversations start with user, end with assistant and strictly alternate, no tool turns; no preference or
# plain-text fine-tuning data (AWS Bedrock user guide, preparing-text-data; the Claude-on-Bedrock cookbook,
# platform.claude.com/cookbook/finetuning-finetuning-on-bedrock).
line_rules = LineRules("bedrock", chat=_chat_rules, formats={
    "text": "plain text is continued pre-training on Bedrock, not fine-tuning",
    "preference": "Bedrock fine-tuning takes no preference (DPO) data",
})

key_shapes = (r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",)  # access key ids: long-lived, temporary
