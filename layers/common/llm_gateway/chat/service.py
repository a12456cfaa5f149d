"""ChatService: one chat turn, stateless or on a server-side conversation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llm_gateway.aws.dynamo import TRANSACT_MAX_ITEMS
from llm_gateway.chat import metering
from llm_gateway.chat.metering import prompt_count
from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.replies import Completion, completion_body, from_routed, from_stored, stored_reply
from llm_gateway.chat.streaming import ChatStream, StreamTurn
from llm_gateway.chat.tokens import TOKENS_PER_REPLY, count_message
from llm_gateway.chat.turn import LeasedTurn, PreparedTurn, drop_orphans, leading_system, system_text
from llm_gateway.chat.usage import believed_reply
from llm_gateway.chat.validation import TurnChecks
from llm_gateway.conversations.records import ConversationStore, NewMessage, TurnAlreadyCommitted, TurnUsage
from llm_gateway.deadline import Deadline
from llm_gateway.errors import Cancelled
from llm_gateway.quotas.service import QuotaService
from llm_gateway.reports import StreamReport, TurnReport
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import ModelAlias, Routing
from llm_gateway.upstream.router import Router

__all__ = ["ChatService", "PreparedTurn", "TurnReport", "drop_orphans"]


class ChatService(TurnChecks):
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

    # ---- turns ------------------------------------------------------------------
    def complete(
        self,
        tenant: str,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport | None = None,
        *,
        turn_id: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """One turn, as the ``chat.completion`` the client receives (see :meth:`reply`)."""
        completion = self.reply(tenant, request, deadline, report, turn_id=turn_id, cancelled=cancelled)
        return completion_body(completion, request.conversation_id)

    def reply(
        self,
        tenant: str,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport | None = None,
        *,
        turn_id: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
        """One turn's completed reply. With ``turn_id`` (jobs) a conversation turn is idempotent: if a
        turn with that id was committed before, its stored reply is returned and nothing is called or written.
        ``cancelled()`` is checked before every upstream attempt and once the reply is here, before
        anything is stored: once it is true the turn raises ``Cancelled`` and commits nothing.
        """
        report = report or TurnReport()
        alias = self.validate(request)
        report.alias = alias.name
        if request.conversation_id is None:
            messages = [m.wire() for m in request.messages]
            prompt = prompt_count(messages)
            hold = metering.admit(self.quotas, tenant, alias, request, prompt, deadline, report)
            try:
                return self._call(tenant, alias, request, messages, prompt, deadline, report, cancelled)
            finally:
                metering.settle(hold, report)
        if turn_id is not None:
            replay = self.committed_turn(tenant, request.conversation_id, turn_id)
            if replay is not None:
                return replay
        return self._conversation_turn(tenant, alias, request, deadline, report, turn_id, cancelled)

    def committed_turn(self, tenant: str, conversation_id: str, turn_id: str) -> Completion | None:
        """The reply of an already committed idempotent turn, from the stored message."""
        stored = self.store.turn_messages(tenant, conversation_id, turn_id)
        return from_stored(stored[-1], turn_id) if stored else None

    def _call(
        self,
        tenant: str,
        alias: ModelAlias,
        request: ChatCompletionRequest,
        messages: list[dict[str, Any]],
        prompt_tokens: int,
        deadline: Deadline,
        report: TurnReport,
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
        """One upstream call; the reply carries the usage the gateway believes (chat.usage)."""
        body = request.upstream_body(alias, messages, tenant)
        routed = self.router.complete(alias, body, deadline, report.stats, cancelled=cancelled)
        report.deployment = routed.deployment.name
        report.provider = routed.deployment.provider
        completion = from_routed(believed_reply(routed, prompt_tokens, request.n or 1, report))
        if cancelled is not None and cancelled():  # the reply came, but the work was cancelled meanwhile
            raise Cancelled("The request was cancelled.")
        return completion

    def _conversation_turn(
        self,
        tenant: str,
        alias: ModelAlias,
        request: ChatCompletionRequest,
        deadline: Deadline,
        report: TurnReport,
        turn_id: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
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
            completion = self._call(
                tenant, alias, request, turn.upstream_messages, turn.prompt_tokens, deadline, report, cancelled
            )
            messages = [*turn.new_messages, stored_reply(completion)]
            # the quota settlement rides on the commit (one round trip, not two) when it fits
            usage_items = metering.settlement_items(hold, report)
            if usage_items is not None and len(usage_items) + len(messages) + 2 > TRANSACT_MAX_ITEMS:
                usage_items = None
            self.store.commit_turn(
                lease,
                messages,
                system=turn.system,
                usage=TurnUsage(report.prompt_tokens, report.completion_tokens, report.cost_usd),
                turn_id=turn_id,
                also=usage_items or (),
            )
            if hold is not None and usage_items is not None:
                hold.settled_elsewhere()
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
        return completion

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
        # validate() refused a turn that adds no non-system message
        new_messages = [NewMessage(m.wire(), count_message(m.wire())) for m in rest]

        instructions = request.instructions
        instruction_tokens = count_message({"role": "system", "content": instructions}) if instructions else 0
        fixed = (system_prompt[1] if system_prompt else 0) + instruction_tokens + sum(m.tokens for m in new_messages)
        room = self.history_room(alias, request, fixed)
        history = self.store.turn_history(
            conversation, max_messages=alias.history_max_messages, max_tokens=min(alias.history_max_tokens, room)
        )
        kept = drop_orphans(history.messages)
        report.history_messages = len(kept)
        report.history_items_read = history.items_read
        report.history_cache_hit = history.cache_hit
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
        turn_id: str | None = None,
    ) -> ChatStream:
        """Everything up to the upstream's first chunk; errors here are ordinary HTTP errors.
        (``turn_id``: as for :meth:`complete`, a conversation turn committed at most once — a second
        commit raises ``TurnAlreadyCommitted`` and writes nothing.)

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
            prompt = prompt_count(messages)
            hold = metering.admit(self.quotas, tenant, alias, request, prompt, deadline, report)
            try:
                body = request.upstream_body(alias, messages, tenant)
                routed = self.router.stream(alias, body, deadline, report.stats)
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
                estimate_prompt_tokens=lambda: prompt,
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
                alias, request.upstream_body(alias, prepared.upstream_messages, tenant), deadline, report.stats
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
            turn=LeasedTurn(self.store, lease, prepared, lease_seconds, then=turn, turn_id=turn_id),
            estimate_prompt_tokens=lambda: prepared.prompt_tokens,
            renew_every=self.settings.stream_lease_renew_seconds,
            quota=hold,
        )
