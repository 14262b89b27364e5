"""A loopback fake of Anthropic's Messages API, for the real ``anthropic`` SDK (2.x, API version 2026-10-21).

Point the SDK at it: ``ANTHROPIC_BASE_URL=fake.base_url`` (or ``base_url=``) for the Claude API, and
``ANTHROPIC_BEDROCK_MANTLE_BASE_URL=fake.mantle_url`` for Claude in Amazon Bedrock (``AnthropicBedrockMantle``).
Shapes from the SDK 2.17.0 types (``Message``, ``Usage``, the error envelope ``{"type": "error", "error": {type,
message, details}, "request_id"}``):

    messages.create   POST /v1/messages                 the Claude API: x-api-key or Authorization: Bearer
    mantle.create     POST /anthropic/v1/messages       Bedrock's Messages API: Bearer (API key) or SigV4

Like the 2026-10-21 API, it refuses sampling parameters (``temperature``, ``top_p``, ``top_k``: 400 "Extra inputs
are not permitted"). What the judge answers is the test's: ``responder(model, body)`` returns the text of the reply
(the default is a tie verdict); ``thinking=True`` puts an empty thinking block first, as adaptive-thinking models
do. Errors: the shared fault plan (429 with Retry-After, 5xx, dropped or held answers) and ``fail_next(status, type,
error_code)`` for Anthropic's own (529 overloaded, a spend-limit 429). Usage counts words.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from ._jobs import Clock, count_tokens
from ._server import LoopbackServer, Request, Response, http_error

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
TIE = '{"winner": "tie", "reason": "neither answer is better"}'


class FakeAnthropic(LoopbackServer):
    def __init__(self, models: tuple[str, ...] = ("claude-haiku-5-5", "claude-sonnet-5-5", "anthropic.claude-haiku-5-5",
                                                  "anthropic.claude-sonnet-5-5")):
        super().__init__()
        self.models = set(models)
        self.responder: Callable[[str, dict[str, Any]], str] = lambda model, body: TIE
        self.thinking = False
        self.clock = Clock()
        self._scripted: deque[tuple[int, str, str | None]] = deque()
        self.route("POST", "/v1/messages", "messages.create", self._create)
        self.route("POST", "/anthropic/v1/messages", "mantle.create", self._create)

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def mantle_url(self) -> str:
        return f"{self.origin}/anthropic"

    def fail_next(self, status: int, error_type: str | None = None, error_code: str | None = None,
                  times: int = 1) -> None:
        """The next ``times`` calls answer this error (Anthropic's envelope; ``error_code`` under details)."""
        with self.lock:
            self._scripted.extend([(status, error_type or ERROR_TYPES.get(status, "api_error"), error_code)] * times)

    def error_body(self, status: int, message: str, error_type: str | None = None,
                   error_code: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message}
        if error_code:
            error["details"] = {"error_code": error_code}
        return {"type": "error", "error": error, "request_id": f"req_fake{len(self.requests)}"}

    def _authorized(self, req: Request) -> None:
        auth = req.headers.get("authorization", "")
        if not (req.headers.get("x-api-key") or auth.startswith(("Bearer ", "AWS4-HMAC-SHA256"))):
            raise http_error(401, "x-api-key header is required")

    def _create(self, req: Request) -> Response:
        self._authorized(req)
        if self._scripted:
            status, kind, code = self._scripted.popleft()
            return Response.json(self.error_body(status, f"fake {kind}", kind, code), status,
                                 {"retry-after-ms": "1"} if status in (429, 529) else {})
        body = req.json()
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                raise http_error(400, f"{name}: Extra inputs are not permitted")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                raise http_error(400, f"{name}: Field required")
        if body["model"] not in self.models:
            raise http_error(404, f"model: {body['model']}")
        text = self.responder(body["model"], body)
        content = ([{"type": "thinking", "thinking": "", "signature": "sig"}] if self.thinking else [])
        content.append({"type": "text", "text": text})
        return Response.json({
            "id": f"msg_fake{self.clock.tick()}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": count_tokens(json.dumps(body).encode()),
                      "output_tokens": count_tokens(text.encode())}})
