"""OpenAI's own rules on fine-tuning data lines, and the shape of its keys (see ``ftbroker.backends.declared``).

Sources: the training-line schemas of OpenAI's OpenAPI spec (github.com/openai/openai-openapi, openapi.yaml, its
2025-04-29 version, the last that carries them) and the fine-tuning guide
(platform.openai.com/docs/guides/fine-tuning)."""

from __future__ import annotations

from typing import Any

from ftbroker.data.providers import LineRules, Remark, too_many_images


def _weight_roles(messages: Any, prefix: str) -> list[Remark]:
    """``weight`` belongs on assistant messages (the 2025-04-29 training-line schemas)."""
    return [("weight-role", f"{prefix}message {i}: 'weight' on a {m['role']} message: OpenAI takes it on assistant "
                            "messages only")
            for i, m in enumerate(messages, 1) if "weight" in m and m["role"] != "assistant"]


# At most 10 images an example (the fine-tuning guide, vision); no plain-text fine-tuning data.
line_rules = LineRules(
    "openai",
    chat=lambda example: [*_weight_roles(example.messages, ""), *too_many_images(example, "OpenAI", 10)],
    preference=lambda example: _weight_roles(example["input"]["messages"], "input "),
    formats={"text": "OpenAI fine-tuning takes chat, preference or prompt/completion data, not plain text"},
)

key_shapes = (r"sk-[A-Za-z0-9_\-]{16,}",)  # sk-, sk-proj-, sk-svcacct-
