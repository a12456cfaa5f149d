"""ChatService: one chat turn, stateless or on a server-side conversation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from llm_gateway.chat import metering
from llm_gateway.chat.metering import prompt_count
from llm_gateway.chat.models import ChatCompletionRequest, ChatMessage
from llm_gateway.chat.streaming import ChatStream, StreamTurn
from llm_gateway.chat.tokens import TOKENS_PER_REPLY, count_message, reply_tokens
from llm_gateway.conversations.items import check_representable
from llm_gateway.conversations.store import (
    ConversationStore,
    History,
    Lease,
    NewMessage,
    TurnAlreadyCommitted,
    TurnUsage,
)
from llm_gateway.deadline import Deadline
from llm_gateway.errors import ContextLengthExceeded, InvalidRequest, PayloadTooLarge
from llm_gateway.providers.base import Usage
from llm_gateway.quotas.service import QuotaService
from llm_gateway.reports import StreamReport, TurnReport
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import ModelAlias, Routing
from llm_gateway.upstream.router import RoutedReply, Router

SYSTEM_ROLES = ("system", "developer")


@dataclass
class PreparedTurn:
    """A validated turn: what goes upstream and what will be stored."""

    alias: ModelAlias
    upstream_messages: list[dict[str, Any]]
    new_messages: list[NewMessage]
    system: tuple[str, int] | None = None  # a new system prompt for the conversation
    prompt_tokens: int = 0  # our own count of what goes upstream (used when the upstream reports none)


def system_text(messages: list[ChatMessage]) -> str:
    return "\n\n".join(m.text() for m in messages)


def leading_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The system/developer messages a turn starts with: they set the conversation's prompt."""
    leading: list[ChatMessage] = []
    for message in messages:
        if message.role not in SYSTEM_ROLES:
            break
        leading.append(message)
    return leading


class ChatService:
    def __init__(
        self,
        store: ConversationStore,
        routing: Routing,
        router: Router,
        settings: Settings,
        quotas: QuotaService | None = None,
    ) -> None:
        self.store = store
        self.routing = routing
        self.router = router
        self.settings = settings
        self.quotas = quotas

    # ---- validation -------------------------------------------------------------
    def check_sizes(self, request: ChatCompletionRequest) -> None:
        limit = self.settings.max_message_bytes
        for index, message in enumerate(request.messages):
            size = len(json.dumps(message.wire(), ensure_ascii=False).encode())
            if size > limit:
                raise PayloadTooLarge(
                    f"Message {index} is {size} bytes; the limit is {limit} bytes per message.",
                    param=f"messages[{index}]",
                )

    def check_system_size(self, text: str, param: str) -> None:
        """A conversation's system prompt is stored on its head item: bound it like a message."""
        limit = self.settings.max_message_bytes
        size = len(text.encode())
        if size > limit:
            raise PayloadTooLarge(f"The system prompt is {size} bytes; the limit is {limit} bytes.", param=param)

    @staticmethod
    def check_caps(alias: ModelAlias, request: ChatCompletionRequest) -> None:
        """The alias's request caps: ``n`` and the output allowance."""
        if request.n is not None and request.n > alias.max_n:
            raise InvalidRequest(f"'n' may be at most {alias.max_n} for the model '{alias.name}'.", param="n")
        cap = alias.max_output_tokens or alias.context_window
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(request, name)
            if value is not None and value > cap:
                raise InvalidRequest(f"'{name}' may be at most {cap} for the model '{alias.name}'.", param=name)

    def validate(self, request: ChatCompletionRequest) -> ModelAlias:
        """Everything checkable without the store: a bad request never leases or writes."""
        alias = self.routing.resolve(request.model)
        self.check_sizes(request)
        self.check_caps(alias, request)
        if request.conversation_id is not None:
            if request.n not in (None, 1):
                raise InvalidRequest("'n' must be 1 when 'conversation_id' is given.", param="n")
            if len(request.messages) > self.settings.max_messages_per_turn:
                raise InvalidRequest(
                    f"A turn on a conversation may add at most {self.settings.max_messages_per_turn} messages.",
                    param="messages",
                )
            leading = leading_system(request.messages)
            if len(leading) == len(request.messages):
                raise InvalidRequest("A turn must add at least one non-system message.", param="messages")
            if len(leading) > 1:  # one message is bounded by check_sizes already
                self.check_system_size(system_text(leading), "messages")
            # the conversation is also shown as OpenAI items: what has no item form is refused, not dropped
            for index in range(len(leading), len(request.messages)):
                check_representable(request.messages[index].wire(), f"messages[{index}]")
        return alias

    # ---- turns ------------------------------------------------------------------
    def complete(
        self,
        tenant: str,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport | None = None,
        *,
        turn_id: str | None = None,
    ) -> dict[str, Any]:
        """One turn. With ``turn_id`` (jobs) a conversation turn is idempotent: if a turn with
        that id was committed before, its stored reply is returned and nothing is called or written.
        """
        report = report or TurnReport()
        alias = self.validate(request)
        report.alias = alias.name
        if request.conversation_id is None:
            messages = [m.wire() for m in request.messages]
            hold = metering.admit(self.quotas, tenant, alias, request, prompt_count(messages), deadline, report)
            try:
                routed = self._call(alias, request, messages, deadline, report)
            finally:
                metering.settle(hold, report)
            return self._response(routed, None)
        if turn_id is not None:
            replay = self.committed_turn(tenant, request.conversation_id, turn_id)
            if replay is not None:
                return replay
        return self._conversation_turn(tenant, alias, request, deadline, report, turn_id)

    def committed_turn(self, tenant: str, conversation_id: str, turn_id: str) -> dict[str, Any] | None:
        """The chat.completion of an already committed idempotent turn, rebuilt from its stored reply."""
        stored = self.store.turn_messages(tenant, conversation_id, turn_id)
        if not stored:
            return None
        reply = stored[-1]
        meta = reply.meta
        usage = meta.get("usage") or {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return {
            "id": meta.get("id") or f"chatcmpl-{turn_id}",
            "object": "chat.completion",
            "created": meta.get("created") or reply.created_at // 1000,
            "model": meta.get("model"),
            "choices": [{"index": 0, "message": reply.body, "finish_reason": meta.get("finish_reason")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "conversation_id": conversation_id,
        }

    def _call(
        self,
        alias: ModelAlias,
        request: ChatCompletionRequest,
        messages: list[dict[str, Any]],
        deadline: Deadline,
        report: TurnReport,
    ) -> RoutedReply:
        routed = self.router.complete(alias, request.upstream_body(alias.name, messages), deadline, report.stats)
        usage = routed.reply.usage
        report.deployment = routed.deployment.name
        report.provider = routed.deployment.provider
        report.prompt_tokens = usage.prompt_tokens
        report.completion_tokens = usage.completion_tokens
        report.cost_usd = routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
        return routed

    def _conversation_turn(
        self,
        tenant: str,
        alias: ModelAlias,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport,
        turn_id: str | None = None,
    ) -> dict[str, Any]:
        report.conversation = True
        conversation_id = request.conversation_id
        assert conversation_id is not None
        lease = self.store.acquire_lease(
            tenant, conversation_id, deadline.remaining() + self.settings.lease_grace_seconds
        )
        hold = None
        try:
            turn = self.prepare(tenant, alias, request, lease.conversation, report)
            hold = metering.admit(self.quotas, tenant, alias, request, turn.prompt_tokens, deadline, report)
            routed = self._call(alias, request, turn.upstream_messages, deadline, report)
            reply = self.reply_message(routed)
            self.store.commit_turn(
                lease,
                [*turn.new_messages, reply],
                system=turn.system,
                usage=TurnUsage(report.prompt_tokens, report.completion_tokens, report.cost_usd),
                turn_id=turn_id,
            )
        except TurnAlreadyCommitted:
            # A redelivered job whose earlier attempt committed while this one ran: that reply stands.
            self.store.release_lease(lease)
            replay = self.committed_turn(tenant, conversation_id, turn_id or "")
            if replay is None:  # pragma: no cover - the marker exists, so its messages do
                raise
            return replay
        except BaseException:
            self.store.release_lease(lease)
            raise
        finally:
            metering.settle(hold, report)
        return self._response(routed, conversation_id)

    def history_room(
        self, alias: ModelAlias, request: ChatCompletionRequest, fixed: int, param: str = "messages"
    ) -> int:
        """Tokens left for history once ``fixed`` (the new messages and system prompt) and the
        completion budget are in the context window; a 400 when even they do not fit."""
        hard_cap = alias.context_window - request.completion_budget(self.settings.completion_reserve_tokens)
        room = hard_cap - fixed - TOKENS_PER_REPLY
        if room < 0:
            raise ContextLengthExceeded(
                f"The new messages need {fixed} tokens; the model's context window leaves {hard_cap} "
                "after the completion budget.",
                param=param,
            )
        return room

    def prepare(
        self, tenant: str, alias: ModelAlias, request: ChatCompletionRequest, conversation: Any, report: TurnReport
    ) -> PreparedTurn:
        """Split the new messages, size the history budget, read the history that fits."""
        leading = leading_system(request.messages)
        rest = request.messages[len(leading) :]
        if leading:
            text = system_text(leading)
            system = (text, count_message({"role": "system", "content": text}))
        else:
            system = None
        system_prompt = system or ((conversation.system, conversation.system_tokens) if conversation.system else None)
        new_messages = [NewMessage(m.wire(), count_message(m.wire())) for m in rest]
        if not new_messages:
            raise InvalidRequest("A turn must add at least one non-system message.", param="messages")

        instructions = request.instructions
        instruction_tokens = count_message({"role": "system", "content": instructions}) if instructions else 0
        fixed = (system_prompt[1] if system_prompt else 0) + instruction_tokens + sum(m.tokens for m in new_messages)
        room = self.history_room(alias, request, fixed)
        history: History = History([], 0)
        if conversation.message_count:
            history = self.store.read_history(
                tenant,
                conversation.id,
                max_messages=alias.history_max_messages,
                max_tokens=min(alias.history_max_tokens, room),
            )
        kept = drop_orphans(history.messages)
        report.history_messages = len(kept)
        report.history_items_read = history.items_read
        upstream = []
        if instructions:
            upstream.append({"role": "system", "content": instructions})
        if system_prompt:
            upstream.append({"role": "system", "content": system_prompt[0]})
        upstream += [m.body for m in kept]
        upstream += [m.body for m in new_messages]
        prompt_tokens = fixed + sum(m.tokens for m in kept) + TOKENS_PER_REPLY
        return PreparedTurn(alias, upstream, new_messages, system, prompt_tokens)

    # ---- streamed turns ---------------------------------------------------------
    def stream(
        self,
        tenant: str,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport,
        *,
        turn: StreamTurn | None = None,
    ) -> ChatStream:
        """Everything up to the upstream's first chunk; errors here are ordinary HTTP errors.

        With ``conversation_id`` the turn lease is taken first (409 at once if another turn
        holds it), before any upstream call, and is held — renewed while chunks flow — until
        the stream commits or is closed. ``turn`` (a stored response) commits the completed
        reply too: on its own, or right after the conversation's commit.
        """
        if report.stream is None:
            report.stream = StreamReport(time.perf_counter())
        alias = self.validate(request)
        report.alias = alias.name
        if request.conversation_id is None:
            messages = [m.wire() for m in request.messages]
            hold = metering.admit(self.quotas, tenant, alias, request, prompt_count(messages), deadline, report)
            try:
                routed = self.router.stream(alias, request.upstream_body(alias.name, messages), deadline, report.stats)
            except BaseException:
                metering.settle(hold, report)
                raise
            report.deployment = routed.deployment.name
            return ChatStream(
                routed,
                report,
                deadline,
                conversation_id=None,
                turn=turn,
                estimate_prompt_tokens=lambda: prompt_count(messages),
                renew_every=self.settings.stream_lease_renew_seconds,
                quota=hold,
            )
        report.conversation = True
        # A short lease, renewed while chunks flow: a crashed stream blocks the conversation briefly.
        lease_seconds = self.settings.stream_lease_seconds + self.settings.lease_grace_seconds
        lease = self.store.acquire_lease(tenant, request.conversation_id, lease_seconds)
        hold = None
        try:
            prepared = self.prepare(tenant, alias, request, lease.conversation, report)
            hold = metering.admit(self.quotas, tenant, alias, request, prepared.prompt_tokens, deadline, report)
            routed = self.router.stream(
                alias, request.upstream_body(alias.name, prepared.upstream_messages), deadline, report.stats
            )
        except BaseException:
            self.store.release_lease(lease)
            metering.settle(hold, report)
            raise
        report.deployment = routed.deployment.name
        return ChatStream(
            routed,
            report,
            deadline,
            conversation_id=request.conversation_id,
            turn=_LeasedTurn(self.store, lease, prepared, lease_seconds, then=turn),
            estimate_prompt_tokens=lambda: prepared.prompt_tokens,
            renew_every=self.settings.stream_lease_renew_seconds,
            quota=hold,
        )

    @staticmethod
    def reply_message(routed: RoutedReply) -> NewMessage:
        choice = routed.reply.body["choices"][0]
        body = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
        body["role"] = "assistant"
        usage = routed.reply.usage
        cost = routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
        meta = {
            "id": routed.reply.body.get("id"),
            "created": routed.reply.body.get("created"),
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost_usd": round(cost, 10),
            },
            "model": routed.reply.body.get("model"),
            "deployment": routed.deployment.name,
            "finish_reason": choice.get("finish_reason"),
        }
        # as history the reply costs its tokens plus the per-message framing, like any message
        return NewMessage(body, reply_tokens(body, usage.completion_tokens), meta=meta)

    @staticmethod
    def _response(routed: RoutedReply, conversation_id: str | None) -> dict[str, Any]:
        body = dict(routed.reply.body)
        body.setdefault("object", "chat.completion")
        body.setdefault("created", int(time.time()))
        if conversation_id:
            body["conversation_id"] = conversation_id
        return body


class _LeasedTurn:
    """A streamed conversation turn's hold on its conversation (see streaming.StreamTurn)."""

    def __init__(
        self,
        store: ConversationStore,
        lease: Lease,
        turn: PreparedTurn,
        lease_seconds: float,
        *,
        then: StreamTurn | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.turn = turn
        self.lease_seconds = lease_seconds
        self.then = then  # committed after the conversation (a stored response)

    def renew(self) -> None:
        self.store.extend_lease(self.lease, self.lease_seconds)

    def commit(self, reply: NewMessage, usage: Usage, cost_usd: float) -> None:
        self.store.commit_turn(
            self.lease,
            [*self.turn.new_messages, reply],
            system=self.turn.system,
            usage=TurnUsage(usage.prompt_tokens, usage.completion_tokens, cost_usd),
        )
        if self.then is not None:
            self.then.commit(reply, usage, cost_usd)

    def release(self) -> None:
        self.store.release_lease(self.lease)


class _HasBody(Protocol):
    body: dict[str, Any]


M = TypeVar("M", bound=_HasBody)


def drop_orphans(messages: list[M]) -> list[M]:
    """Never send a tool result without the call it answers: trimming may cut a tool exchange in two,
    and deleting a conversation's function_call item leaves its output behind."""
    calls: set[str] = set()
    kept: list[M] = []
    for message in messages:
        if message.body.get("role") in ("tool", "function") and message.body.get("tool_call_id") not in calls:
            continue
        for call in message.body.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                calls.add(call["id"])
        kept.append(message)
    return kept
