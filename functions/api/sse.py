"""Server-sent events framing for a streamed chat turn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from llm_gateway.chat.streaming import ChatStream
from llm_gateway.errors import GatewayError, ShuttingDown, internal_error, to_http
from llm_gateway.observability import RequestMetrics, logger
from llm_gateway.reports import TurnReport
from pump import Pump, Step

SSE_DONE = b"data: [DONE]\n\n"
DEPLOYMENT_HEADER = "x-llm-gateway-deployment"  # which deployment of the alias answered


# The streams being sent right now, so a server that is stopping can end them (end_all_streams).
_live: set[ChatStreamResponse] = set()


def end_all_streams() -> int:
    """The server is stopping: end every stream in flight with an error event; how many there were.

    Call it from the event loop (uvicorn's shutdown) before waiting for connections to close:
    each stream's blocked upstream read is woken (``abort``) and its client gets a final
    ``server_shutting_down`` error event instead of a cut connection. Nothing is stored for them.
    """
    live = list(_live)
    for response in live:
        response.shutting_down = True
        response.stream.abort()
    return len(live)


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # one encoder (json.dumps with options builds one a call)


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + _ENCODE(payload).encode() + b"\n\n"


class ChatStreamResponse(StreamingResponse):
    """SSE for a streamed turn: one event per chunk, then ``[DONE]`` — or, if the turn fails
    after the first byte, a final OpenAI-shaped error event and no ``[DONE]``.

    The first event is built where the stream was opened (the route's worker thread, where the
    upstream's first chunk has just arrived), so it follows the headers with no thread hand-off.
    The rest is read by one :class:`~pump.Pump` thread and sent as it arrives (no buffering
    beyond what a slow client leaves unread), not one thread-pool hop per chunk. ``__call__``
    always ends the turn: when the client goes away Starlette cancels the body, and the cleanup
    here wakes the read blocked on the upstream (``abort``), waits for the stream to be closed
    (upstream connection, lease, quota) and records the turn's metrics — before the middleware
    flushes them.
    """

    def __init__(self, stream: ChatStream, report: TurnReport, metrics: RequestMetrics) -> None:
        self.stream = stream
        self.report = report
        self.metrics = metrics
        self.shutting_down = False
        self._pump: Pump | None = None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if stream.conversation_id:
            headers["x-conversation-id"] = stream.conversation_id
        if report.deployment:
            headers[DEPLOYMENT_HEADER] = report.deployment
        headers.update(report.rate_headers)
        super().__init__(self._events(), media_type="text/event-stream", headers=headers)
        self._first = self._opening()

    # ---- the steps (each runs in a worker thread) ---------------------------------------------
    def _opening(self) -> Step:
        """What is sent right after the headers (the upstream's first chunk is here already)."""
        return self._step()

    def _step(self) -> Step:
        """The next bytes to send, and whether they are the stream's last."""
        try:
            chunk = self.stream.next_chunk()
        except Exception as exc:  # noqa: BLE001 - every failure ends the stream with an error event
            return self._failure(exc), True
        if chunk is None:
            return SSE_DONE, True
        return sse_event(chunk), False

    def _failure(self, exc: Exception) -> bytes:
        error = exc
        if self.shutting_down:
            error = ShuttingDown("The gateway is shutting down; the reply was not completed or stored.")
        if not isinstance(error, GatewayError):
            logger.exception("stream failed", extra={"error_type": type(error).__name__}, exc_info=exc)
            return sse_event(internal_error().body)
        logger.warning(
            "stream failed after the first byte",
            extra={"error_code": error.code, "outcome": self.stream.stats.outcome},
        )
        return sse_event(to_http(error).body)

    def _close(self) -> None:
        self.stream.close()

    # ---- the event loop's side ------------------------------------------------------------------
    async def _events(self) -> AsyncIterator[bytes]:
        data, last = self._first
        yield data
        if last:
            return
        self._pump = pump = Pump(self._step, self._close)
        while True:
            data, last = await pump.get()
            if data:
                yield data
            if last:
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _live.add(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _live.discard(self)
            with anyio.CancelScope(shield=True):
                self.stream.abort()  # no-op unless the stream is still running (client gone)
                if self._pump is not None:
                    await self._pump.finish()  # its thread closes the stream when its last step is done
                else:
                    await anyio.to_thread.run_sync(self._close)
                stats = self.stream.stats
                logger.info(
                    "stream",
                    extra={
                        "outcome": stats.outcome,
                        "chunks": stats.chunks,
                        "ttft_ms": stats.first_token_ms,
                        "duration_ms": stats.duration_ms,
                    },
                )
                self.metrics.turn(self.report)
