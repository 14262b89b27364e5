"""Vertex AI's own rules on Gemini tuning data lines, and the shape of a Google access token (see
``ftbroker.backends.declared``)."""

from __future__ import annotations

from ftbroker.data.providers import ChatExample, LineRules, Remark, plain_turns


def _chat_rules(example: ChatExample) -> list[Remark]:
    images = [("images", "image parts: Vertex takes images as Cloud Storage files; ftbroker's Vertex format "
                         "carries text only")] if example.parts("image_url") else []
    return [*plain_turns(example, "Vertex"), *images]


# Gemini supervised tuning: ``contents`` of alternating user and model turns ending with the model, an optional
# ``systemInstruction``, no per-turn weights; chat data only
# (docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning-about).
line_rules = LineRules("vertex", chat=_chat_rules, formats={
    "text": "Vertex supervised tuning takes chat data, not plain text",
    "preference": "ftbroker runs Vertex supervised tuning, which takes chat data; preference tuning is not driven",
})

key_shapes = (r"ya29\.[A-Za-z0-9_\-.]{16,}",)  # a Google OAuth access token (Vertex AI, Cloud Storage)
