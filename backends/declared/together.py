"""Together's own rules on fine-tuning data lines, and the shape of its keys (see ``ftbroker.backends.declared``).

Roles system/user/assistant/tool, starting with system or user then alternating; content parts text or image_url,
at most 10 images an example and none on a message of weight 1; a preference input ends with a user message
(togethercomputer/together-python src/together/utils/files.py; docs.together.ai/docs/fine-tuning/data-preparation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftbroker.data.providers import ChatExample, LineRules, Remark, too_many_images


def _chat_rules(example: ChatExample) -> list[Remark]:
    roles, body = example.roles, example.body
    remarks = []
    if "developer" in roles or "function" in roles:
        remarks.append(("roles", "a developer or function message: Together takes the roles system, user, assistant "
                                 "and tool"))
    if "system" in body:
        remarks.append(("system-late", "a system message after the first message (Together)"))
    # a tool round (assistant tool calls, then tool answers) sits inside the assistant's turn
    turns = [r for r, m in zip(body, example.messages[example.start:]) if r != "tool" and "tool_calls" not in m]
    if turns and turns[0] != "user" or any(a == b for a, b in zip(turns, turns[1:])):  # one role twice in a row
        remarks.append(("alternation", "after the system message, turns must start with user and alternate "
                                       "user/assistant (Together)"))
    if example.parts("refusal"):
        remarks.append(("refusal", "a refusal part: Together takes text and image_url parts"))
    remarks += too_many_images(example, "Together", 10)
    if example.has_parts:
        remarks += [("image-weight", f"message {i}: a message with images cannot have weight 1 (Together)")
                    for i, (m, images) in enumerate(zip(example.messages, example.images_per_message), 1)
                    if images and m.get("weight") == 1]
    return remarks


def _preference_rules(example: Mapping[str, Any]) -> list[Remark]:
    if example["input"]["messages"][-1]["role"] == "assistant":
        return [("pref-last", "the input ends with an assistant message (Together wants the last input message "
                              "from the user)")]
    return []


line_rules = LineRules("together", chat=_chat_rules, preference=_preference_rules)

key_shapes = (r"tgp_v1_[A-Za-z0-9_\-]{16,}",)
