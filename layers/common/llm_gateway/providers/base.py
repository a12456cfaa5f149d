"""The provider protocol: one upstream attempt, OpenAI-shaped in and out.

A provider makes exactly one attempt per call and raises
:class:`~llm_gateway.upstream.retry.UpstreamHTTPError` or a ``requests`` exception on failure;
the router owns retries, fallback and the deadline, so no layer multiplies attempts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

Timeout = tuple[float, float]  # (connect, read) seconds


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage:
        usage = usage or {}
        return cls(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


@dataclass(frozen=True)
class UpstreamReply:
    body: dict[str, Any]  # an OpenAI ``chat.completion``
    usage: Usage


class Provider(Protocol):
    name: str  # the deployment's name

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        """One attempt; raises UpstreamHTTPError or a requests exception on failure."""
        ...

    def stream(self, body: dict[str, Any], timeout: Timeout) -> Iterator[dict[str, Any]]:
        """One streamed attempt, as a generator of OpenAI ``chat.completion.chunk`` dicts.

        The connection opens at the first ``next()``; an HTTP error raises
        UpstreamHTTPError there, before any chunk. The read timeout applies between
        chunks. A failure after the first chunk (cut, malformed chunk, stall) raises
        UpstreamStreamError. The generator ends normally only when the upstream said
        the reply is complete; closing it closes the upstream connection. A provider's
        stream may also offer ``abort()``: callable from another thread, it wakes a read that
        is blocked on a silent upstream (used when the client has gone away).
        """
        ...
