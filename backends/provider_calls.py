"""Calling a provider's API: its errors translated into ``ftbroker.errors``, waiting, and creating exactly once.

- Errors: ``translate_error`` maps the SDKs' exceptions (the Stainless-generated openai/together
  ones, botocore's) onto ``ftbroker.errors`` with secrets scrubbed out of every message.
- Retries: ``Backoff`` (exponential, full jitter, never shorter than a server's Retry-After) and
  ``submit_once``: look for the job first, create only when it is not there, retry only on
  transient errors (tenacity). See "Who retries what" below.

Who retries what (the split):
- The SDK retries idempotent reads itself (GET: retrieve, list, events, metrics; botocore: every
  call, which is safe there because Bedrock creates carry ``clientRequestToken``): connection
  errors, timeouts, 408/409/429/5xx, honouring Retry-After up to its own cap. Backends pass
  ``max_retries`` explicitly.
- Non-idempotent writes of the Stainless SDKs (upload, create job) run with ``max_retries=0``:
  a blind SDK retry after a create that succeeded on the server but answered 500 (or dropped the
  connection, or timed out) would create a second job. ``submit_once`` retries them instead, each
  attempt starting with a look-up by the job's tag.
- Polls raise a transient error as ``BackendUnavailableError`` / ``BackendRateLimitError`` (with the
  server's Retry-After): the Broker's follow loop backs off with jitter and polls again, so a
  passing outage never turns into a failed job. Each poll suggests its interval (``next_poll_s``).
- Every call has a timeout (``request_timeout_s``; uploads ``upload_timeout_s``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ftbroker.errors import (
    BackendAuthError,
    BackendError,
    BackendRateLimitError,
    BackendUnavailableError,
    ProviderAPIError,
)
from ftbroker.redact import scrub

T = TypeVar("T")


# -- secrets and errors ------------------------------------------------------------------------------
def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue
    return None


def translate_error(exc: BaseException, backend: str, doing: str) -> BackendError:
    """The ftbroker error for an SDK exception (call as ``raise translate_error(...) from exc``).

    Works on the Stainless-generated SDKs (openai, together: ``status_code``, ``response``,
    ``body``; connection and timeout errors by class name) and on botocore (``ClientError`` with
    ``response['Error']``, connection errors by class). Messages are scrubbed of secrets.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    if status is None and "APIError" in names and isinstance(getattr(exc, "code", None), int):
        status = exc.code  # type: ignore[attr-defined]  # google-genai's errors carry the HTTP status as ``code``
    request_id = getattr(exc, "request_id", None)
    message = _provider_message(exc)
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if "ClientError" in names and isinstance(getattr(exc, "response", None), Mapping):  # botocore
        err = exc.response.get("Error", {})  # type: ignore[attr-defined]
        meta = exc.response.get("ResponseMetadata", {})  # type: ignore[attr-defined]
        status, request_id = meta.get("HTTPStatusCode"), meta.get("RequestId")
        code = err.get("Code", "")
        message = f"{code}: {err.get('Message', '')}".strip(": ")
        headers = meta.get("HTTPHeaders")
        if code in ("ThrottlingException", "TooManyRequestsException"):
            status = 429
        elif code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
                      "InvalidSignatureException"):
            status = 403
    text = scrub(f"{doing} failed: {message}")
    if names & {"APITimeoutError", "APIConnectionError", "EndpointConnectionError", "ConnectTimeoutError",
                "ReadTimeoutError", "ConnectionClosedError", "ConnectionError", "TimeoutException",
                "TransportError"} or getattr(exc, "retryable", False):  # google-auth: a token endpoint's 5xx
        return BackendUnavailableError(text, backend=backend)
    if names & {"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "RefreshError",
                "DefaultCredentialsError"}:  # botocore's; google-auth's
        return BackendAuthError(text, backend=backend)
    return error_for_status(status, text, backend, request_id=request_id, headers=headers)


def raise_for_http(answer: Any, backend: str, doing: str) -> None:
    """For the plain HTTP calls beside an SDK (signed URLs, Cloud Storage): an ``httpx.Response`` that is not a
    success raised as the ftbroker error of its status, with the body's ``error.message`` when it has one."""
    if answer.is_success:
        return
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {answer.status_code} {answer.reason_phrase}"
    raise error_for_status(answer.status_code, scrub(f"{doing} failed: {message}"), backend, headers=answer.headers)


def error_for_status(status: int | None, text: str, backend: str, *, request_id: str | None = None,
                     headers: Any = None) -> BackendError:
    """The ftbroker error for an HTTP status (None: no status known), ``text`` already scrubbed."""
    if status is None:
        return BackendError(text, backend=backend, request_id=request_id)
    if status in (401, 403):
        return BackendAuthError(text, backend=backend, request_id=request_id)
    if status == 429:
        return BackendRateLimitError(text, backend=backend, request_id=request_id, retry_after=_retry_after(headers))
    if status >= 500 or status == 408:
        return BackendUnavailableError(text, backend=backend, request_id=request_id)
    return ProviderAPIError(text, backend=backend, status_code=status, request_id=request_id)


def _provider_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    if isinstance(getattr(exc, "message", None), str) and exc.message:  # type: ignore[attr-defined]  # google-genai
        return exc.message  # type: ignore[attr-defined]
    return str(exc) or type(exc).__name__


TRANSIENT = (BackendUnavailableError, BackendRateLimitError)


# -- waiting -----------------------------------------------------------------------------------------
@dataclass
class Backoff:
    """Exponential backoff with full jitter; a server's Retry-After is a floor, ``maximum`` a cap.

    ``rng`` and ``sleep`` are injectable so that tests run without waiting.
    """

    initial: float = 2.0
    maximum: float = 60.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        ceiling = min(self.maximum, self.initial * self.multiplier**attempt)
        wait = self.rng.uniform(ceiling / 2, ceiling)
        return max(wait, retry_after or 0.0)


def retry_after_of(exc: BaseException) -> float | None:
    return getattr(exc, "retry_after", None)


def submit_once(find: Callable[[], T | None], create: Callable[[], T], *, attempts: int,
                backoff: Backoff, on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """Create a remote object exactly once: each attempt first looks for it, then creates it.

    ``find`` and ``create`` raise ftbroker errors; only transient ones (unavailable, rate limited)
    are retried, up to ``attempts`` attempts, waiting ``backoff`` (honouring Retry-After) between.
    A create that succeeded remotely but failed locally is found by the next attempt's ``find``.
    """
    import tenacity

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff.delay(state.attempt_number - 1, retry_after_of(exc) if exc else None)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(state.attempt_number, state.outcome.exception())

    def attempt() -> T:
        existing = find()
        return existing if existing is not None else create()

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(attempts), wait=wait,
                                 retry=tenacity.retry_if_exception_type(TRANSIENT), reraise=True,
                                 sleep=backoff.sleep, before_sleep=before_sleep)
    return retrying(attempt)
