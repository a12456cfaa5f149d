"""Incremental Server-Sent Events over a ``requests`` streamed response, as OpenAI chunks.

The one event-stream reader of the HTTP providers (OpenAI-compatible, Azure, Anthropic).
Written by hand (no SSE client library is a runtime dependency) because the relay must see
every event the moment its bytes arrive: ``Response.iter_content(chunk_size=None)`` reads a
non-chunked (close-delimited) body to the end before yielding, and ``iter_lines`` holds back
partial lines across reads. We read with urllib3's ``read1`` — whatever bytes have arrived,
chunked or not — and split events on blank lines (the SSE spec's dispatch rule).

:class:`SSEChunkStream` owns the connection, the reads and the failure semantics; what one
event means is a wire format's :class:`EventDecoder`: :class:`OpenAIChunks` here (OpenAI
Chat Completions chunks, ``[DONE]``), ``anthropic.AnthropicEvents`` for the Messages API.

Failure semantics (the Provider protocol's stream contract):

* before the first chunk is yielded, a failure is an ordinary failed attempt the router may
  retry: ``UpstreamTimeout`` (stall), ``UpstreamConnectionError`` (cut), or
  ``UpstreamHTTPError(502)`` (malformed / error event / empty stream) — unless the decoder
  names a more precise error for it (:attr:`StreamFailure.before_start`);
* after it, :class:`~llm_gateway.providers.base.UpstreamStreamError` with reason ``stall`` (the read
  timeout passed between two reads), ``deadline`` (the request's deadline passed: keep-alive
  comments and empty chunks do not extend a stream), ``cut`` (the connection ended before the reply was
  complete), ``malformed`` (an event that does not parse) or ``error`` (the upstream sent an
  error event);
* it ends normally only once the decoder says the reply is complete.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from llm_gateway.deadline import current
from llm_gateway.providers.base import (
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamReplyTooLarge,
    UpstreamStreamError,
    UpstreamTimeout,
)
from llm_gateway.providers.body import MAX_REPLY_BYTES, connection_socket, loads, read_timeout
from llm_gateway.redaction import scrub

READ_SIZE = 65_536
MAX_STREAM_BYTES = 4 * MAX_REPLY_BYTES  # a whole stream, decoded (its chunks' JSON framing included)
DRAIN_SECONDS = 0.5  # after the end of the reply: read the body's end so the connection can be reused


def sse_data(chunks: Iterator[bytes], limit: int = MAX_REPLY_BYTES) -> Iterator[str]:
    """The ``data`` of each event, as soon as the blank line that ends it has arrived; an event
    (or a line) over ``limit`` bytes is a failure, not a buffer that grows without bound."""
    buffer = bytearray()
    data: list[str] = []
    size = 0
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise _too_large(limit)
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield "\n".join(data)
                    data, size = [], 0
                continue
            if line.startswith(b":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(b":")
            if field == b"data":
                size += len(value)
                if size > limit:
                    raise _too_large(limit)
                data.append(value.removeprefix(b" ").decode("utf-8", errors="replace"))
        del buffer[:start]


def _too_large(limit: int) -> StreamFailure:
    error = UpstreamReplyTooLarge(limit)
    return StreamFailure("malformed", error.message, before_start=error)


class StreamFailure(Exception):
    """A stream gone wrong. ``reason``: stall, cut, malformed or error (see the module docstring).

    ``before_start``: the exception to raise instead when no chunk has reached the client yet
    (None: the default for the reason).
    """

    def __init__(self, reason: str, message: str, *, before_start: Exception | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.before_start = before_start


class EventDecoder(Protocol):
    """One wire format's events -> OpenAI ``chat.completion.chunk`` dicts (raises StreamFailure)."""

    @property
    def done(self) -> bool:
        """The upstream said the reply is complete: read no further."""
        ...

    def feed(self, data: str) -> list[dict[str, Any]]:
        """The chunks one event's ``data`` stands for."""
        ...

    def end(self) -> None:
        """The events are over (``done``, or the connection ended): raise unless the reply is complete."""
        ...


class OpenAIChunks:
    """OpenAI Chat Completions stream events: chunks, an ``error`` event, ``[DONE]``.

    Complete at ``[DONE]`` (or the connection's clean end) once every choice has its ``finish_reason``.
    """

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.done = False
        self.seen: set[int] = set()
        self.finished: set[int] = set()

    def feed(self, data: str) -> list[dict[str, Any]]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = self._parse(data)
        for choice in chunk["choices"]:
            index = choice.get("index", 0) if isinstance(choice, dict) else 0
            self.seen.add(index)
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished.add(index)
        return [chunk]

    def end(self) -> None:
        if (self.seen - self.finished) or (not self.done and not self.seen):
            how = "[DONE]" if self.done else "the connection's end"
            raise StreamFailure("cut", f"The upstream sent {how} before a finish_reason.")

    def _parse(self, data: str) -> dict[str, Any]:
        try:
            chunk = loads(data)
        except ValueError:
            raise StreamFailure("malformed", "The upstream sent a chunk that is not JSON.") from None
        if not isinstance(chunk, dict):
            raise StreamFailure("malformed", "The upstream sent a chunk that is not a JSON object.")
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamFailure("error", scrub(str(message or "The upstream reported an error."), self.secret))
        if not isinstance(chunk.get("choices"), list):
            raise StreamFailure("malformed", "The upstream sent a chunk without 'choices'.")
        if not _foldable(chunk):
            raise StreamFailure("malformed", "The upstream sent a chunk that is not a chat.completion.chunk.")
        return chunk


def _foldable(chunk: dict[str, Any]) -> bool:
    """Whether the parts of a chunk that the gateway reads (streaming.ReplyBuilder) have their shape."""
    from llm_gateway.providers.base import Usage

    for choice in chunk["choices"]:
        if not isinstance(choice, dict):
            return False
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict) or not isinstance(delta.get("tool_calls") or [], list):
            return False
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {} if isinstance(call, dict) else None
            if (
                not isinstance(function, dict)
                or not isinstance(call.get("index", 0), int)
                or not all(isinstance(function.get(k) or "", str) for k in ("name", "arguments"))
            ):
                return False
    try:
        Usage.from_openai(chunk.get("usage"))
    except (TypeError, ValueError, AttributeError):
        return False
    return True


class SSEChunkStream:
    """Iterator of ``chat.completion.chunk`` dicts from one upstream streamed response.

    ``open_response`` makes the request (it raises UpstreamHTTPError for a non-2xx answer) and
    returns the response and the key it used; it is called at the first ``next()``.
    ``decoder(key)`` makes the wire format's :class:`EventDecoder` (the key, so an error event
    can be scrubbed of it). ``close()`` closes the connection; ``abort()`` may be called from
    another thread to wake a read blocked on a silent upstream.
    """

    def __init__(
        self,
        open_response: Callable[[], tuple[requests.Response, str | None]],
        decoder: Callable[[str | None], EventDecoder] = OpenAIChunks,
    ) -> None:
        self._open = open_response
        self._decoder = decoder
        scope = current()  # the router's attempt runs in the request's deadline scope; later reads may not
        self._deadline = scope.deadline if scope is not None else None
        self._resp: requests.Response | None = None
        self._aborted = threading.Event()
        self._started = False  # a chunk has been yielded
        self._gen = self._chunks()

    def __iter__(self) -> SSEChunkStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        self._close_response()

    def abort(self) -> None:
        """Thread-safe: make a blocked read return at once (the stream then fails as cut)."""
        self._aborted.set()
        resp = self._resp
        sock = getattr(getattr(getattr(resp, "raw", None), "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ---- internals ----------------------------------------------------------------
    def _close_response(self) -> None:
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()

    def _reads(self, resp: requests.Response) -> Iterator[bytes]:
        """The body's bytes as they arrive. Every read is bounded by the read timeout and by the time
        left before the deadline (keep-alive comments and empty chunks are bytes too: they keep the
        read timeout from firing, never the deadline)."""
        raw = resp.raw
        sock = connection_socket(resp)
        base = sock.gettimeout() if sock is not None else None
        deadline = self._deadline
        total = 0
        while True:
            try:
                # while more time is left than the read timeout, the socket's own timeout (base) stands
                if base is None or deadline is None or deadline.remaining() <= base:
                    read_timeout(sock, base, deadline)
            except UpstreamTimeout:
                raise StreamFailure("deadline", "The stream reached the request's deadline.") from None
            try:
                data = raw.read1(READ_SIZE, decode_content=True)
            except ReadTimeoutError as exc:
                if deadline is not None and deadline.expired():
                    raise StreamFailure("deadline", "The stream reached the request's deadline.") from exc
                raise StreamFailure("stall", "The upstream sent nothing within the read timeout.") from exc
            except DecodeError as exc:
                raise StreamFailure("malformed", "The upstream's stream could not be decoded.") from exc
            except (ProtocolError, OSError, ValueError) as exc:
                raise StreamFailure("cut", "The upstream connection broke mid-stream.") from exc
            if not data:
                return
            total += len(data)
            if total > MAX_STREAM_BYTES:  # decoded; on the wire it is no more (what compresses shrinks)
                raise _too_large(MAX_STREAM_BYTES)
            yield data

    def _chunks(self) -> Generator[dict[str, Any], None, None]:
        resp, secret = self._open()
        self._resp = resp
        if self._aborted.is_set():
            self._close_response()
            raise UpstreamConnectionError("stream aborted before it began")
        decoder = self._decoder(secret)
        try:
            try:
                for data in sse_data(self._reads(resp)):
                    for chunk in decoder.feed(data):
                        self._started = True
                        yield chunk
                    if decoder.done:
                        break
                decoder.end()
                if not self._started:
                    raise StreamFailure("cut", "The upstream ended the stream without sending a chunk.")
            except StreamFailure as failure:
                raise self._error(failure) from failure
            if decoder.done:
                self._drain(resp)
        finally:
            self._close_response()

    def _error(self, failure: StreamFailure) -> Exception:
        if self._started:
            return UpstreamStreamError(failure.reason, failure.message)
        # Nothing has reached the client yet: an ordinary failed attempt, retried by the router.
        if failure.before_start is not None:
            return failure.before_start
        if failure.reason in ("stall", "deadline"):
            return UpstreamTimeout(failure.message)
        if failure.reason == "cut":
            return UpstreamConnectionError(failure.message)
        return UpstreamHTTPError(502, failure.message)

    @staticmethod
    def _drain(resp: requests.Response) -> None:
        """Read the end of the body (normally already here) so the connection goes back to the pool."""
        sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
        try:
            if sock is not None:
                sock.settimeout(DRAIN_SECONDS)
            while resp.raw.read1(READ_SIZE, decode_content=True):
                pass
        except Exception:  # noqa: BLE001 - a connection we could not drain is simply closed
            return
