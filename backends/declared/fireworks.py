"""Fireworks' own rules on fine-tuning data lines (see ``ftbroker.backends.declared``); its keys have no shape of
their own to mask."""

from __future__ import annotations

from ftbroker.data.providers import ChatExample, LineRules, Remark


def _chat_rules(example: ChatExample) -> list[Remark]:
    remarks = []
    if "system" in example.body:
        remarks.append(("system-late", "a system message after the first message (Fireworks)"))
    if example.parts("image_url"):
        remarks.append(("images", "image parts: ftbroker runs Fireworks' text fine-tuning (vision is a separate "
                                  "Fireworks method)"))
    return remarks


# The OpenAI chat format ("existing OpenAI SFT datasets work with no conversion",
# docs.fireworks.ai/fine-tuning/managed-finetuning-intro), the system message optional and first; chat data only
# (docs.fireworks.ai/fine-tuning/fine-tuning-models); text only here.
line_rules = LineRules("fireworks", chat=_chat_rules,
                       formats={"text": "Fireworks fine-tuning takes chat data, not plain text"})
