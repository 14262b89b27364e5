"""Calls to provider APIs for an evaluation, through the official SDKs: generation by chat completions (OpenAI and
OpenAI-compatible servers, Together) or Bedrock's Converse, and the judge's calls (Anthropic Messages, directly or
on Bedrock, or OpenAI chat completions).

Generation settings as a model is served for its task: temperature 0 (and a fixed seed where the API takes one),
the answer capped at ``max_tokens``; stop sequences are the served model's own (the provider applies its chat
template). The judge: Anthropic's API version 2026-10-21 (SDK 2.x) takes no sampling parameters at all, so
determinism comes from a fixed ``output_config.effort`` and judging both orders; its verdict is constrained by
``output_config.format`` (a JSON schema: structured outputs, platform.claude.com/docs/en/build-with-claude/
structured-outputs), since forced tool use is refused by the 5.5 models. OpenAI judges use ``response_format``
with the same schema, temperature 0.

Errors become ``ftbroker.errors`` (``translate``): the SDK's own retries cover connection errors, 408/409/429 and
5xx (529 overloaded included); an Anthropic 429 that says the organization's spend limit is reached
(``error.details.error_code = enforced_spend_limit_reached``, learn.microsoft.com/en-us/microsoft-cloud/dev/
dev-proxy/concepts/anthropic-529-overloaded-error) is final and never retried.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ftbroker.backends.provider_calls import TRANSIENT, Backoff, retry_after_of, translate_error
from ftbroker.errors import BackendAuthError, BackendError, ExtraNotInstalledError, FtBrokerError
from ftbroker.evaluation.records import Answer, Example

T = TypeVar("T")
SPEND_LIMIT = "enforced_spend_limit_reached"
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def sdk(package: str, extra: str, purpose: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ExtraNotInstalledError(package, extra, purpose) from exc


def translate(exc: BaseException, provider: str, doing: str) -> BackendError:
    if getattr(exc, "error_code", None) == SPEND_LIMIT:
        return BackendError(f"{doing} failed: the organization's spend limit is reached ({SPEND_LIMIT}); not "
                            "retried: raise the limit, or evaluate without this judge", backend=provider,
                            request_id=getattr(exc, "request_id", None))
    return translate_error(exc, provider, doing)


def guarded(provider: str, doing: str, errors: tuple[type[BaseException], ...], fn: Callable[[], T]) -> T:
    """``fn()`` with the SDK's exceptions as ftbroker errors."""
    try:
        return fn()
    except FtBrokerError:
        raise
    except errors as exc:
        raise translate(exc, provider, doing) from exc


def with_retries(fn: Callable[[], T], *, attempts: int, backoff: Backoff) -> T:
    """``fn()``, again after a transient error (unreachable, timed out, rate limited, overloaded) up to ``attempts``
    times in all, waiting ``backoff`` (never less than a server's Retry-After) between."""
    for attempt in range(attempts):
        try:
            return fn()
        except TRANSIENT as exc:
            if attempt + 1 >= attempts:
                raise
            backoff.sleep(backoff.delay(attempt, retry_after_of(exc)))
    raise AssertionError("unreachable")  # pragma: no cover


def chat_messages(example: Example) -> list[dict[str, Any]]:
    """The prompt as chat-completion messages (training-only keys such as ``weight`` dropped)."""
    return [{k: m[k] for k in _MESSAGE_KEYS if k in m and m[k] is not None} for m in example.messages]


def _answer_of_completion(response: Any) -> Answer:
    choice = response.choices[0]
    message = choice.message
    calls = tuple({"name": c.function.name, "arguments": c.function.arguments or ""}
                  for c in (message.tool_calls or ()))
    usage = response.usage
    return Answer(message.content or "", calls, getattr(usage, "prompt_tokens", 0) or 0,
                  getattr(usage, "completion_tokens", 0) or 0, choice.finish_reason)


@dataclass(frozen=True)
class Connection:
    """How to reach a provider: the job's own settings (base_url, region, ...) and the timings of the evaluation."""

    settings: Mapping[str, Any]
    timeout_s: float
    max_retries: int


class OpenAIChat:
    """Chat completions on OpenAI, or on any server that speaks its API (``base_url``)."""

    provider = "openai"
    package, extra, error = "openai", "openai", "OpenAIError"

    def __init__(self, connection: Connection):
        module = sdk(self.package, self.extra, f"evaluating on {self.provider}")
        self._errors = (getattr(module, self.error),)
        try:
            self.client = self._client(module, connection)
        except self._errors as exc:
            raise BackendAuthError(f"no credentials for {self.provider}: {exc}", backend=self.provider) from exc

    def _client(self, module: Any, connection: Connection) -> Any:
        return module.OpenAI(base_url=connection.settings.get("base_url"), timeout=connection.timeout_s,
                             max_retries=connection.max_retries)

    @staticmethod
    def settings(max_tokens: int) -> dict[str, Any]:
        return {"temperature": 0, "seed": 0, "max_tokens": max_tokens}

    def _request(self, model: str, example: Example, max_tokens: int) -> dict[str, Any]:
        request = {"model": model, "messages": chat_messages(example), "temperature": 0, "seed": 0,
                   "max_completion_tokens": max_tokens}
        if example.tools:
            request["tools"] = list(example.tools)
        return request

    def complete(self, model: str, example: Example, max_tokens: int) -> Answer:
        request = self._request(model, example, max_tokens)
        return guarded(self.provider, f"asking {model}", self._errors,
                       lambda: _answer_of_completion(self.client.chat.completions.create(**request)))

    def close(self) -> None:
        self.client.close()


class TogetherChat(OpenAIChat):
    """Together's chat completions (OpenAI's shape; ``max_tokens``, no seed)."""

    provider = "together"
    package, extra, error = "together", "together", "TogetherError"

    def _client(self, module: Any, connection: Connection) -> Any:
        return module.Together(base_url=connection.settings.get("base_url"), timeout=connection.timeout_s,
                               max_retries=connection.max_retries)

    @staticmethod
    def settings(max_tokens: int) -> dict[str, Any]:
        return {"temperature": 0, "max_tokens": max_tokens}

    def _request(self, model: str, example: Example, max_tokens: int) -> dict[str, Any]:
        request = {"model": model, "messages": chat_messages(example), "temperature": 0, "max_tokens": max_tokens}
        if example.tools:
            request["tools"] = list(example.tools)
        return request


def boto_session(settings: Mapping[str, Any]) -> Any:
    boto3 = sdk("boto3", "aws", "evaluating on bedrock")
    return boto3.Session(profile_name=settings.get("profile"), region_name=settings.get("region"))


def boto_config(connection: Connection) -> Any:
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 1 + connection.max_retries},
                  connect_timeout=connection.timeout_s, read_timeout=connection.timeout_s)


def boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class BedrockConverse:
    """Bedrock's Converse API (text turns; Bedrock's fine-tuning data carries no tools)."""

    provider = "bedrock"

    def __init__(self, connection: Connection):
        session = boto_session(connection.settings)
        self._errors = boto_errors()
        self.client = guarded(self.provider, "connecting to bedrock-runtime", self._errors, lambda: session.client(
            "bedrock-runtime", config=boto_config(connection),
            endpoint_url=connection.settings.get("runtime_endpoint_url")))

    @staticmethod
    def settings(max_tokens: int) -> dict[str, Any]:
        return {"temperature": 0, "max_tokens": max_tokens}

    def complete(self, model: str, example: Example, max_tokens: int) -> Answer:
        system = [{"text": _plain(m.get("content"))} for m in example.messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": [{"text": _plain(m.get("content"))}]}
                 for m in example.messages if m["role"] in ("user", "assistant")]
        request: dict[str, Any] = {"modelId": model, "messages": turns,
                                   "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0}}
        if system:
            request["system"] = system
        response = guarded(self.provider, f"asking {model}", self._errors, lambda: self.client.converse(**request))
        text = "".join(part.get("text", "") for part in response["output"]["message"]["content"])
        usage = response.get("usage") or {}
        return Answer(text, (), usage.get("inputTokens", 0), usage.get("outputTokens", 0), response.get("stopReason"))

    def close(self) -> None:
        self.client.close()


def _plain(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if isinstance(part, Mapping))


CHAT_CLIENTS: dict[str, type] = {"openai": OpenAIChat, "together": TogetherChat, "bedrock": BedrockConverse}


# --- the judge's calls -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """What a judge call returned: its text (None when it gave none, e.g. a refusal) and what it used."""

    text: str | None
    stop: str | None
    input_tokens: int
    output_tokens: int


class AnthropicJudge:
    """Claude through the ``anthropic`` SDK: the Claude API (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``), or
    Claude in Amazon Bedrock's Messages API (``AnthropicBedrockMantle``: AWS credentials or a Bedrock API key)."""

    def __init__(self, provider: str, connection: Connection, effort: str | None):
        module = sdk("anthropic", "eval", "an Anthropic judge")
        self.provider, self.effort = provider, effort
        self._errors = (module.AnthropicError,)
        try:
            if provider == "bedrock-anthropic":
                from anthropic.lib.bedrock import AnthropicBedrockMantle

                self.client = AnthropicBedrockMantle(aws_region=connection.settings.get("region"),
                                                     timeout=connection.timeout_s, max_retries=connection.max_retries)
            else:
                self.client = module.Anthropic(timeout=connection.timeout_s, max_retries=connection.max_retries)
        except module.AnthropicError as exc:
            raise BackendAuthError(f"no credentials for the judge: {exc}", backend=provider) from exc

    def ask(self, model: str, system: str, user: str, schema: Mapping[str, Any], max_tokens: int) -> Reply:
        config: dict[str, Any] = {"format": {"type": "json_schema", "schema": dict(schema)}}
        if self.effort:
            config["effort"] = self.effort

        def call() -> Reply:
            message = self.client.messages.create(model=model, max_tokens=max_tokens, system=system,
                                                  messages=[{"role": "user", "content": user}], output_config=config)
            # adaptive-thinking models may open with thinking blocks: the verdict is the first text block
            text = next((block.text for block in message.content if block.type == "text"), None)
            usage = message.usage
            return Reply(text, message.stop_reason, usage.input_tokens + (usage.cache_creation_input_tokens or 0)
                         + (usage.cache_read_input_tokens or 0), usage.output_tokens)

        return guarded(self.provider, f"asking the judge {model}", self._errors, call)

    def close(self) -> None:
        self.client.close()


class OpenAIJudge:
    """An OpenAI model as the judge (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``)."""

    provider = "openai"

    def __init__(self, provider: str, connection: Connection, effort: str | None):
        self._chat = OpenAIChat(Connection({}, connection.timeout_s, connection.max_retries))

    def ask(self, model: str, system: str, user: str, schema: Mapping[str, Any], max_tokens: int) -> Reply:
        def call() -> Reply:
            response = self._chat.client.chat.completions.create(
                model=model, temperature=0, seed=0, max_completion_tokens=max_tokens,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "verdict", "schema": dict(schema), "strict": True}})
            answer = _answer_of_completion(response)
            return Reply(answer.text or None, answer.finish, answer.input_tokens, answer.output_tokens)

        return guarded(self.provider, f"asking the judge {model}", self._chat._errors, call)

    def close(self) -> None:
        self._chat.close()


JUDGE_CLIENTS: dict[str, type] = {"anthropic": AnthropicJudge, "bedrock-anthropic": AnthropicJudge,
                                  "openai": OpenAIJudge}
JUDGE_SDKS = {"anthropic": ("anthropic", "eval"), "bedrock-anthropic": ("anthropic", "eval"),
              "openai": ("openai", "openai")}  # provider -> (package, the extra that installs it)
