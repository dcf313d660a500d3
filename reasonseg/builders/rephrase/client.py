"""Chat-completion calls through the `openai` package, with the failure classes the run loop needs.

The openai client's own retries are switched off (`max_retries=0`): the run loop retries itself, so that every
attempt is written to the ledger and the budget is checked before each one.
"""
from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from ...errors import BuildError


class RephraseError(BuildError):
    """The rephrasing run cannot go on: a missing key, a refused split, an endpoint that rejects us."""


class TransientError(Exception):
    """A failure worth retrying: 429, 5xx, 408/409, a timeout, a dropped connection, an unreadable body."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None, request_id: str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.retry_after, self.request_id = kind, detail, retry_after, request_id


class RequestRefused(Exception):
    """The server refused this one request (400, 422, ...): retrying it unchanged cannot help."""

    def __init__(self, kind: str, detail: str, request_id: str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.request_id = kind, detail, request_id


@dataclass(frozen=True)
class ChatReply:
    content: str | None
    finish_reason: str | None
    request_id: str | None
    prompt_tokens: int | None  # None when the server reports no usage
    completion_tokens: int | None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is honoured when it is given and not absurd."""

    max_attempts: int = 6
    base_s: float = 1.0
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        jittered = backoff * (0.5 + 0.5 * rng.random())
        if retry_after is not None:
            # Never earlier than the server asked; a little jitter so that concurrent workers do not stampede.
            return retry_after + 0.1 * retry_after * rng.random()
        return jittered


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None when absent or invalid."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """A thread-safe OpenAI-compatible chat client: one request per `complete`, no hidden retries."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout_s: float):
        import openai

        self._openai = openai
        # The default connection pool (100 kept alive) is larger than any sensible --concurrency.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def complete(self, *, model: str, messages: list[dict[str, str]], temperature: float, seed: int | None,
                 max_tokens: int) -> ChatReply:
        openai = self._openai
        extra = {"seed": seed} if seed is not None else {}
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=model, messages=messages, temperature=temperature, max_tokens=max_tokens,
                response_format={"type": "json_object"}, **extra)
            request_id = raw.headers.get("x-request-id")
            completion = raw.parse()
        except openai.APITimeoutError as exc:
            raise TransientError("timeout", str(exc)) from None
        except openai.APIConnectionError as exc:
            raise TransientError("connection", str(exc.__cause__ or exc)) from None
        except openai.APIStatusError as exc:
            raise _status_failure(exc) from None
        except (openai.APIResponseValidationError, ValueError, RecursionError) as exc:
            # A 200 whose body is not a chat completion (truncated JSON, an HTML error page from a proxy, JSON
            # nested past the parser's depth).
            raise TransientError("bad_body", f"unreadable response body: {exc}"[:300]) from None
        request_id = request_id or getattr(completion, "id", None)
        choice = completion.choices[0] if getattr(completion, "choices", None) else None
        usage = getattr(completion, "usage", None)
        return ChatReply(
            content=choice.message.content if choice is not None and choice.message is not None else None,
            finish_reason=choice.finish_reason if choice is not None else None,
            request_id=request_id,
            prompt_tokens=getattr(usage, "prompt_tokens", None) if usage is not None else None,
            completion_tokens=getattr(usage, "completion_tokens", None) if usage is not None else None)


def _status_failure(exc) -> Exception:
    status = exc.status_code
    request_id = getattr(exc, "request_id", None)
    detail = _message(exc)
    if status == 429 or status >= 500 or status in (408, 409):
        return TransientError(f"http_{status}", detail, parse_retry_after(exc.response.headers), request_id)
    if status in (401, 403):
        return RephraseError(f"the server refused the API key (HTTP {status}): {detail}",
                             hint="check OPENAI_API_KEY and --base-url")
    if status == 404:
        return RephraseError(f"the server has no such model or endpoint (HTTP 404): {detail}",
                             hint="check --model and --base-url (it usually ends in /v1)")
    return RequestRefused(f"http_{status}", detail, request_id)


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
    return str(getattr(exc, "message", exc))[:300]
