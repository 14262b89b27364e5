"""Chat completions for the OpenAI and Together fakes (``POST /v1/chat/completions``), in OpenAI's shape (the
official OpenAPI spec's CreateChatCompletionResponse, which Together's spec copies).

What a model answers is up to the test: ``fake.responder(model, body)`` returns the reply's text, or a dict
``{"content": ..., "tool_calls": [{"name", "arguments"}]}``. The default responder answers "ok". A model the fake
does not serve is a 404 (a fine-tuned model id is served once its job succeeded, anything in ``fake.chat_models``
always). Usage counts words, as the fakes' stand-in tokenizer does everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._jobs import count_tokens
from ._server import Request, Response, bearer_auth, http_error

Responder = Callable[[str, dict[str, Any]], "str | dict[str, Any]"]


class ChatCompletions:
    """Mixin for a ``FakeProvider``: call ``_add_chat()`` in ``__init__``."""

    def _add_chat(self) -> None:
        self.responder: Responder = lambda model, body: "ok"
        self.chat_models: set[str] = set()
        self.route("POST", "/v1/chat/completions", "chat.create", self._chat_create)

    def _served(self, model: str) -> str | None:
        """The model that answers a request for ``model`` (None: not served). Subclasses route names (a dedicated
        endpoint's name serves the model deployed on it)."""
        served = model in self.chat_models or model in self.models or any(
            model in (self._job_json(job).get("fine_tuned_model"), self._job_json(job).get("model_output_name"))
            for job in self.jobs.values() if job.succeeded)
        return model if served else None

    def _chat_create(self, req: Request) -> Response:
        bearer_auth(req, self.rejected_keys)
        body = req.json()
        model = body.get("model")
        if not body.get("messages"):
            raise http_error(400, "messages is required")
        served = self._served(model)
        if served is None:
            raise http_error(404, f"The model {model!r} does not exist or you do not have access to it.")
        reply = self.responder(served, body)
        if isinstance(reply, str):
            reply = {"content": reply}
        calls = [{"id": f"call_{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(reply.get("tool_calls") or ())]
        prompt = count_tokens(json.dumps(body["messages"]).encode())
        completion = count_tokens((reply.get("content") or "").encode()) + len(calls)
        return Response.json({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": self.clock.tick(),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": reply.get("content"), "refusal": None,
                                     **({"tool_calls": calls} if calls else {})}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})
