"""The provider protocol: one upstream attempt, OpenAI-shaped in and out, and its error vocabulary.

A provider makes exactly one attempt per call and raises one of the :class:`UpstreamFailure`
classes below on failure — never a transport library's exception: HTTP providers map
``requests``' errors, Bedrock maps botocore's (the vocabulary of openai-python's
``_exceptions.py``). The router owns retries, fallback and the deadline, so no layer multiplies
attempts, and it imports no transport library.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

Timeout = tuple[float, float]  # (connect, read) seconds


class UpstreamFailure(Exception):
    """Base of what a provider raises for a failed attempt. Internal: the router maps it to a
    GatewayError for the client."""


class UpstreamHTTPError(UpstreamFailure):
    """A non-2xx answer (or a 2xx whose body is not what the protocol promises, as 502)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class UpstreamReplyTooLarge(UpstreamHTTPError):
    """The upstream's body (compressed or decoded) passed the gateway's cap: a 502 that says so."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            502, f"The upstream's reply exceeds the gateway's {limit}-byte limit.", code="upstream_reply_too_large"
        )


class UpstreamConnectionError(UpstreamFailure):
    """The upstream could not be reached, or the connection broke before the reply began."""


class UpstreamTimeout(UpstreamConnectionError):
    """Connecting, or waiting for the reply (or its next bytes, before the first chunk), took
    longer than the attempt's timeout."""


class UpstreamStreamError(UpstreamFailure):
    """A stream failed after it had begun: ``reason`` is cut / malformed / stall / error."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or f"upstream stream failed: {reason}")
        self.reason = reason


class DeadlineExceeded(UpstreamFailure):
    """No time was left for a (further) attempt."""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (preferred) or ``Retry-After`` (seconds or HTTP date);
    ``headers`` must look names up case-insensitively (as ``requests``' headers do)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


# No single call reads or writes more tokens than this; a count above it is not believed.
MAX_USAGE_TOKENS = 10_000_000


def token_count(value: Any) -> int | None:
    """An upstream's token counter if it is believable — a non-negative integer (an integral float
    too) no larger than MAX_USAGE_TOKENS — else None. Absent (None) counts as 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return None


@dataclass(frozen=True)
class Usage:
    """Token counts as the upstream reported them. A counter that was not believable (negative,
    huge, non-integer, not a number) reads 0 and is named in ``suspect``, so the chat layer
    (:mod:`llm_gateway.chat.usage`) replaces it with its own count; 0 also means not reported."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    suspect: tuple[str, ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def counted(cls, usage: Any, prompt: tuple[str, ...], completion: str) -> Usage:
        """Usage from a provider's counters: the prompt parts (e.g. input, cache reads and writes)
        add up; never raises, whatever the upstream sent."""
        if not isinstance(usage, dict):
            return cls(suspect=("prompt_tokens", "completion_tokens")) if usage is not None else cls()
        suspect: list[str] = []
        parts = [token_count(usage.get(k)) for k in prompt]
        prompt_tokens = sum(p for p in parts if p is not None)
        if None in parts or prompt_tokens > MAX_USAGE_TOKENS:
            suspect.append("prompt_tokens")
            prompt_tokens = 0
        completion_tokens = token_count(usage.get(completion))
        if completion_tokens is None:
            suspect.append("completion_tokens")
        return cls(prompt_tokens, completion_tokens or 0, tuple(suspect))

    @classmethod
    def from_openai(cls, usage: Any) -> Usage:
        return cls.counted(usage, ("prompt_tokens",), "completion_tokens")


@dataclass(frozen=True)
class UpstreamReply:
    body: dict[str, Any]  # an OpenAI ``chat.completion``
    usage: Usage


class Provider(Protocol):
    name: str  # the deployment's name

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        """One attempt; raises an :class:`UpstreamFailure` on failure."""
        ...

    def stream(self, body: dict[str, Any], timeout: Timeout) -> Iterator[dict[str, Any]]:
        """One streamed attempt, as a generator of OpenAI ``chat.completion.chunk`` dicts.

        The connection opens at the first ``next()``; an HTTP error raises
        UpstreamHTTPError there, before any chunk (a stall or a cut before the first chunk is
        UpstreamTimeout / UpstreamConnectionError, retried like any failed attempt). The read timeout applies between
        chunks. A failure after the first chunk (cut, malformed chunk, stall) raises
        UpstreamStreamError. The generator ends normally only when the upstream said
        the reply is complete; closing it closes the upstream connection. A provider's
        stream may also offer ``abort()``: callable from another thread, it wakes a read that
        is blocked on a silent upstream (used when the client has gone away).
        """
        ...
