"""A streamed chat turn after its first chunk: relay, accumulate, commit only when complete.

:class:`ChatStream` is what the HTTP layer iterates. Everything that can fail before the
first byte (validation, the conversation lease, history, the upstream's retries) has
already happened when it exists. From here on:

* each upstream chunk is passed on as it arrives (plus ``conversation_id``) and folded
  into a :class:`ReplyBuilder`;
* the upstream ending normally (``[DONE]`` with a ``finish_reason``) is the only way to
  *complete*: for a conversation the new messages and the reply are committed in one
  transaction, and only then does the iterator end (so ``[DONE]`` follows the commit);
* an upstream failure, a failed commit or the deadline raise a GatewayError (the caller
  ends the stream with an error event); nothing is stored for the turn;
* :meth:`ChatStream.close` always runs (the HTTP layer guarantees it, also when the client
  went away) and releases the lease of a turn that did not commit.

It runs in worker threads, one step at a time; :meth:`abort` is the only method meant to
be called concurrently (from the event loop, when the client disconnects).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from llm_gateway.chat.replies import Completion, new_completion_id, stored_reply
from llm_gateway.chat.usage import believed, reply_count, usage_body
from llm_gateway.conversations.records import NewMessage
from llm_gateway.deadline import Deadline, Scope, bounded
from llm_gateway.errors import GatewayError, UpstreamTimeout
from llm_gateway.providers.base import Usage
from llm_gateway.reports import STREAM_OUTCOMES, StreamReport
from llm_gateway.upstream.router import RoutedStream

__all__ = ["STREAM_OUTCOMES", "ChatStream", "ReplyBuilder", "StreamReport", "StreamTurn"]


class ReplyBuilder:
    """Folds the chunks of choice 0 into the assistant message they spell."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.created: int | None = None

    def add(self, chunk: dict[str, Any]) -> bool:
        """Fold one chunk in; True if it carried reply tokens (text or a tool call)."""
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if self.created is None and isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        tokens = False
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.content.append(content)
                tokens = True
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self.refusal.append(refusal)
                tokens = True
            for call in delta.get("tool_calls") or ():
                self._tool_call(call)
                tokens = True
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return tokens

    def _tool_call(self, delta: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            int(delta.get("index", len(self.tool_calls))),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    @property
    def text(self) -> str:
        return "".join(self.content)

    def message(self) -> dict[str, Any]:
        """The assistant message in wire format, as it is stored and later sent upstream."""
        body: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            body["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            body["content"] = self.text or None
            if body["content"] is None:
                del body["content"]
        if self.refusal:
            body["refusal"] = "".join(self.refusal)
        return body


class StreamTurn(Protocol):
    """The conversation side of a streamed turn (held lease, prepared messages)."""

    def renew(self) -> None: ...
    def commit(self, reply: NewMessage, usage: Usage, cost_usd: float) -> None: ...
    def release(self) -> None: ...


class QuotaHold(Protocol):
    """A quota reservation (quotas.service.Hold), settled once when the stream ends."""

    def settle(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None: ...


class ChatStream:
    """Iterate the chunks of a streamed turn; always :meth:`close` it. See the module docstring."""

    def __init__(
        self,
        routed: RoutedStream,
        report: Any,  # service.TurnReport (its .stream is a StreamReport)
        deadline: Deadline,
        *,
        conversation_id: str | None,
        turn: StreamTurn | None,
        estimate_prompt_tokens: Callable[[], int],
        renew_every: float,
        quota: QuotaHold | None = None,
    ) -> None:
        self.routed = routed
        self.report = report
        self.deadline = deadline
        self.scope = Scope(deadline)  # the stream's AWS calls (lease renewal, commit) are bounded by it
        self.conversation_id = conversation_id
        self.turn = turn
        self.estimate_prompt_tokens = estimate_prompt_tokens
        self.renew_every = renew_every
        self.quota = quota
        self.reply = ReplyBuilder()
        self.completion: Completion | None = None  # once the upstream ended normally
        self._lock = threading.Lock()
        self._aborted = threading.Event()
        self._closed = False
        self._shut = False  # upstream closed and lease let go
        self._committed = False
        self._next_renewal = time.monotonic() + renew_every

    @property
    def stats(self) -> StreamReport:
        return self.report.stream

    @property
    def ended(self) -> bool:
        return self.stats.outcome is not None

    # ---- iteration ------------------------------------------------------------------
    def next_chunk(self) -> dict[str, Any] | None:
        """The next chunk to send, or None once the turn is complete (and committed)."""
        with self._lock, bounded(self.scope):  # each step runs in some worker thread: enter the deadline
            if self.ended or self._closed:
                return None
            try:
                try:
                    chunk = next(self.routed)
                except StopIteration:
                    self._complete()
                    return None
                if self.reply.add(chunk) and self.stats.first_token_ms is None:
                    self.stats.first_token_ms = self.stats.since_start_ms()
                if chunk.get("usage") is not None:  # the client sees the counts the gateway bills
                    chunk["usage"] = usage_body(chunk["usage"], self._usage())
                if self.stats.first_chunk_ms is None:
                    self.stats.first_chunk_ms = self.stats.since_start_ms()
                self.stats.chunks += 1
                if self.deadline.expired():
                    raise UpstreamTimeout(
                        "The stream reached the request's time limit before the reply was complete.",
                        code="stream_deadline_exceeded",
                    )
                self._renew_lease()
            except BaseException as exc:
                if self.stats.outcome is None:
                    failed = "upstream_error" if isinstance(exc, GatewayError) else "internal_error"
                    self._end("client_disconnect" if self._aborted.is_set() else failed)
                # Let go of the upstream and the conversation before the client hears of the
                # failure, so a client retrying at once is not told the conversation is busy.
                with contextlib.suppress(Exception):
                    self._shutdown()
                raise
            if self.conversation_id is not None:
                chunk["conversation_id"] = self.conversation_id
            return chunk

    def __iter__(self):
        while (chunk := self.next_chunk()) is not None:
            yield chunk

    def _renew_lease(self) -> None:
        if self.turn is not None and time.monotonic() >= self._next_renewal:
            self.turn.renew()
            self._next_renewal = time.monotonic() + self.renew_every

    def _usage(self) -> Usage:
        """What the stream used, as the gateway believes it (chat.usage): the upstream's counts when
        plausible, else ours (the prompt as sent, the reply as generated so far)."""
        usage, replaced = believed(
            self.reply.usage,
            context_window=self.routed.deployment.context_window,
            prompt=self.estimate_prompt_tokens,
            completion=lambda: reply_count(self.reply.message()),
        )
        self.report.usage_replaced = self.report.usage_replaced or replaced
        return usage

    def _complete(self) -> None:
        usage = self._usage()
        report = self.report
        report.prompt_tokens, report.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        report.cost_usd = self.routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
        self.completion = Completion(
            message=self.reply.message(),
            finish_reason=self.reply.finish_reason,
            usage=usage,
            cost_usd=report.cost_usd,
            model=self.reply.model,
            deployment=self.routed.deployment.name,
            id=self.reply.id or new_completion_id(),
            created=self.reply.created or int(time.time()),
        )
        if self.turn is not None:
            try:
                self.turn.commit(stored_reply(self.completion), usage, report.cost_usd)
            except BaseException:
                self._end("commit_failed")
                raise
            self._committed = True
        self._end("complete")

    def _end(self, outcome: str) -> None:
        assert outcome in STREAM_OUTCOMES
        self.stats.outcome = outcome
        self.stats.duration_ms = self.stats.since_start_ms()

    # ---- ending ---------------------------------------------------------------------
    def abort(self) -> None:
        """The client went away: wake the step blocked on the upstream, if any (thread-safe)."""
        if self.ended:
            return
        self._aborted.set()
        self.routed.abort()

    def close(self) -> None:
        """Close the upstream connection and release the lease of an uncommitted turn. Idempotent."""
        with self._lock, bounded(self.scope):  # waits for a step still running (abort() made it return promptly)
            if self._closed:
                return
            self._closed = True
            if self.stats.outcome is None:
                self._end("client_disconnect")
            self._shutdown()

    def _shutdown(self) -> None:
        if self._shut:
            return
        self._shut = True
        try:
            self.routed.close()
        finally:
            try:
                if self.turn is not None and not self._committed:
                    self.turn.release()
            finally:
                self._settle_quota()

    def _settle_quota(self) -> None:
        """Charge what the stream used: all of it when complete, what was generated when cut."""
        if self.quota is not None:
            usage = self._usage()
            cost = self.routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
            self.quota.settle(usage.prompt_tokens, usage.completion_tokens, cost)
