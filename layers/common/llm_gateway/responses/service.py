"""ResponseService: OpenAI Responses as a view over one chat turn.

A request is validated (fields we cannot honour are refused by name), its context
assembled — the ``previous_response_id`` chain's messages trimmed to the history budget
and context window, or the conversation's history via the chat turn itself — and run
through :class:`ChatService`. With ``store`` (the default) the response is written
before it is returned (or before ``response.completed`` is sent): a follow-up sent the
moment it arrives sees it. Nothing is written for a request that fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.replies import stored_reply
from llm_gateway.chat.service import ChatService
from llm_gateway.chat.tokens import count_message
from llm_gateway.chat.turn import drop_orphans
from llm_gateway.conversations.records import NewMessage
from llm_gateway.deadline import Deadline
from llm_gateway.errors import ContextLengthExceeded, GatewayError, InvalidRequest
from llm_gateway.providers.base import Usage
from llm_gateway.reports import TurnReport
from llm_gateway.responses.event_log import FINAL_STATUSES, EventFollower, EventLog, StoredEvents
from llm_gateway.responses.events import EventBuilder, ResponseEventStream
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.replay import opening_events, stored_events
from llm_gateway.responses.store import ResponseStore, StoredResponse, TurnMessage
from llm_gateway.responses.translate import (
    chat_request,
    incomplete_details,
    input_messages,
    new_id,
    output_items,
    response_object,
    response_usage,
)
from llm_gateway.responses.translate import service_tier as translate_tier
from llm_gateway.upstream.aliases import ModelAlias

ORDERS = ("asc", "desc")


@dataclass
class PreparedResponse:
    """A validated Responses request, ready to run as a chat turn."""

    request: CreateResponse
    id: str
    created_at: int
    alias: ModelAlias
    input_items: list[dict[str, Any]]
    new_messages: list[TurnMessage]  # this turn's input as chat messages (instructions excluded)
    chat: ChatCompletionRequest  # the chat turn: instructions, history (of a chain), new messages
    ancestors: list[str]  # for the stored record: the chain its budget can reach, newest first

    @property
    def requested_tier(self) -> str | None:
        """The ``service_tier`` the request asked for, if the alias forwards it to the provider."""
        return self.request.service_tier if self.alias.pass_through.service_tier == "forward" else None

    def snapshot(self, *, service_tier: str | None = None, **fields: Any) -> dict[str, Any]:
        """The Response object of this request now (``service_tier``: what the upstream reported)."""
        tier = translate_tier(service_tier, self.requested_tier)
        return response_object(self.request, self.id, created_at=self.created_at, service_tier=tier, **fields)


class ResponseService:
    def __init__(self, chat: ChatService, store: ResponseStore, events: EventLog | None = None) -> None:
        self.chat = chat
        self.store = store
        self.events = events

    # ---- preparing ----------------------------------------------------------------
    def prepare(
        self,
        tenant: str,
        request: CreateResponse,
        report: TurnReport,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> PreparedResponse:
        """Everything before the upstream call: 4xx here means nothing was read past the
        parent, nothing was written and nothing was sent upstream. (``response_id`` and
        ``created_at``: those a background response was given when it was submitted.)"""
        request.check_supported()
        if isinstance(request.input, list):
            self.chat.check_count(len(request.input), "input")
        items, messages = input_messages(request)
        new = [TurnMessage(m, count_message(m)) for m in messages]
        history: list[TurnMessage] = []
        ancestors: list[str] = []
        if request.conversation_id is not None:
            # the conversation's history is the chat turn's to read, under its lease
            chat = chat_request(request, messages, conversation_id=request.conversation_id)
            alias = self.chat.validate(chat.with_instructions(request.instructions))
        else:
            system = [{"role": "system", "content": request.instructions}] if request.instructions else []
            probe = chat_request(request, system + messages)
            alias = self.chat.validate(probe)  # the model alias, sizes, sampling fields
            if request.previous_response_id is not None:
                fixed = sum(count_message(m) for m in system) + sum(m.tokens for m in new)
                room = self.chat.history_room(alias, probe, fixed, param="input")
                history, ancestors = self._chain_history(tenant, request, alias, room, report)
            chat = chat_request(request, system + [m.body for m in history] + messages)
        report.alias = alias.name
        return PreparedResponse(
            request,
            response_id or new_id("resp"),
            int(time.time()) if created_at is None else created_at,
            alias,
            items,
            new,
            chat,
            ancestors,
        )

    def _chain_history(
        self, tenant: str, request: CreateResponse, alias: ModelAlias, room: int, report: TurnReport
    ) -> tuple[list[TurnMessage], list[str]]:
        """The chain's newest messages that fit, oldest first; and the ancestors to record."""
        assert request.previous_response_id is not None
        chain = self.store.chain(tenant, request.previous_response_id)
        report.history_items_read = chain.items_read
        auto = request.truncation == "auto"
        limit = min(alias.history_max_tokens, room) if auto else alias.history_max_tokens
        kept: list[TurnMessage] = []
        tokens = 0
        newest_first = (m for link in chain.links for m in reversed(link.messages))
        for message in newest_first:
            if len(kept) >= alias.history_max_messages or tokens + message.tokens > limit:
                break
            kept.append(message)
            tokens += message.tokens
        if tokens > room:  # truncation 'disabled': the history must fit whole, or it is a 400
            raise ContextLengthExceeded(
                f"The conversation so far needs {tokens} tokens; the model's context window leaves {room} "
                "after this input and the output budget. Use truncation='auto' to drop the oldest turns.",
                param="input",
            )
        kept.reverse()
        kept = drop_orphans(kept)
        report.history_messages = len(kept)
        return kept, self._reach(chain.links)

    def _reach(self, links: list[Any]) -> list[str]:
        """The ids (newest first) of the chain links any alias's history budget can reach from
        the new response's children: those are all its descendants will ever read."""
        aliases = self.chat.routing.aliases.values()
        max_tokens = max(a.history_max_tokens for a in aliases)
        max_messages = max(a.history_max_messages for a in aliases)
        reach: list[str] = []
        tokens = messages = 0
        for link in links:
            if tokens >= max_tokens or messages >= max_messages:
                break
            reach.append(link.id)
            tokens += sum(m.tokens for m in link.messages)
            messages += len(link.messages)
        return reach

    # ---- creating -----------------------------------------------------------------
    def create(self, tenant: str, request: CreateResponse, deadline: Deadline, report: TurnReport) -> dict[str, Any]:
        with conversation_param():
            prepared = self.prepare(tenant, request, report)
            completion = self.chat.reply(tenant, prepared.chat, deadline, report)
        message = completion.message
        incomplete = incomplete_details(completion.finish_reason)
        output = output_items(message, status="incomplete" if incomplete else "completed")
        usage = Usage(report.prompt_tokens, report.completion_tokens)
        upstream = completion.upstream or {}
        response = prepared.snapshot(
            status="incomplete" if incomplete else "completed",
            output=output,
            usage=response_usage(usage, upstream.get("usage")),
            incomplete=incomplete,
            service_tier=upstream.get("service_tier"),
        )
        if request.store:
            self._put(tenant, prepared, response, stored_reply(completion), report.cost_usd)
        return response

    def _put(
        self,
        tenant: str,
        prepared: PreparedResponse,
        response: dict[str, Any],
        reply: NewMessage,
        cost_usd: float,
        *,
        replacing: tuple[str, ...] = (),
    ) -> bool:
        return self.store.put(
            StoredResponse(
                tenant=tenant,
                id=prepared.id,
                created_at=prepared.created_at,
                response=response,
                input_items=prepared.input_items,
                messages=[*prepared.new_messages, TurnMessage(reply.body, reply.tokens)],
                ancestors=prepared.ancestors,
                cost_usd=cost_usd,
            ),
            replacing=replacing,
        )

    def stream(
        self, tenant: str, request: CreateResponse, deadline: Deadline, report: TurnReport
    ) -> ResponseEventStream:
        """Everything up to the upstream's first chunk; errors here are ordinary HTTP errors."""
        with conversation_param():
            prepared = self.prepare(tenant, request, report)

        builder = EventBuilder(prepared.snapshot)
        commit = StreamCommit(self, tenant, prepared, builder)
        with conversation_param():
            chat = self.chat.stream(tenant, prepared.chat, deadline, report, turn=commit)
        return ResponseEventStream(chat, builder, prepared.id)

    # ---- stored responses -----------------------------------------------------------
    def get(self, tenant: str, response_id: str) -> dict[str, Any]:
        return self._stored(tenant, response_id).response

    def _stored(self, tenant: str, response_id: str) -> StoredResponse:
        return self.store.get(tenant, response_id)

    def replay(self, tenant: str, response_id: str, starting_after: int | None) -> EventFollower | StoredEvents:
        """The events of a stored response after ``starting_after`` (``GET …?stream=true``): a
        background response's persisted events, followed live until it ends; any other stored
        response's event sequence (:func:`stored_events`). 404 before anything is streamed."""
        stored = self._stored(tenant, response_id)
        after = -1 if starting_after is None else starting_after
        if not stored.response.get("background") or self.events is None:
            return StoredEvents([e for e in stored_events(stored.response) if e["sequence_number"] > after])

        def final() -> dict[str, Any] | None:
            try:
                response = self._stored(tenant, response_id).response
            except GatewayError:  # deleted while followed: the stream ends
                return {"status": "deleted"}
            return response if response.get("status") in FINAL_STATUSES else None

        settings = self.chat.settings
        return EventFollower(
            self.events,
            tenant,
            response_id,
            after,
            final,
            opening=opening_events(stored.response),
            poll_seconds=settings.response_events_poll_seconds,
        )

    def delete(self, tenant: str, response_id: str) -> dict[str, Any]:
        self.store.delete(tenant, response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    def input_items(
        self, tenant: str, response_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> dict[str, Any]:
        if order not in ORDERS:
            raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
        if not 1 <= limit <= 100:
            raise InvalidRequest("'limit' must be between 1 and 100.", param="limit")
        items = list(self._stored(tenant, response_id).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequest(f"'after' names no input item of response '{response_id}'.", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }


@contextmanager
def conversation_param() -> Iterator[None]:
    """The chat turn names its conversation ``conversation_id``; a Responses request, ``conversation``."""
    try:
        yield
    except GatewayError as exc:
        if exc.param == "conversation_id":
            exc.param = "conversation"
        raise


class Superseded(Exception):
    """A background response's commit found it no longer ``in_progress`` (it was cancelled)."""


class StreamCommit:
    """The commit of a streamed response (a :class:`StreamTurn`): build the final Response from
    the streamed items and, with ``store``, write it — before ``response.completed`` is sent.
    ``replacing``: a background response replaces its stored record while in one of these statuses."""

    def __init__(
        self,
        service: ResponseService,
        tenant: str,
        prepared: PreparedResponse,
        builder: EventBuilder,
        replacing: tuple[str, ...] = (),
    ):
        self.service = service
        self.tenant = tenant
        self.prepared = prepared
        self.builder = builder
        self.replacing = replacing

    def renew(self) -> None:  # no lease to renew: a chain has no in-flight turn to exclude
        return None

    def commit(self, reply: NewMessage, usage: Usage, cost_usd: float) -> None:
        finish_reason = reply.meta.get("finish_reason")
        response = self.builder.finish(response_usage(usage), finish_reason)
        if self.prepared.request.store:
            put = self.service._put
            if not put(self.tenant, self.prepared, response, reply, cost_usd, replacing=self.replacing):
                raise Superseded(self.prepared.id)

    def release(self) -> None:
        return None
