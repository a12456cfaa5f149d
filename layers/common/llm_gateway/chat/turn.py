"""A prepared chat turn and the helpers that shape it: leading system messages, orphan tool results,
and the lease a streamed conversation turn holds until it commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from llm_gateway.chat.models import ChatMessage
from llm_gateway.chat.streaming import StreamTurn
from llm_gateway.conversations.records import ConversationStore, Lease, NewMessage, TurnUsage
from llm_gateway.providers.base import Usage
from llm_gateway.upstream.aliases import ModelAlias

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


class LeasedTurn:
    """A streamed conversation turn's hold on its conversation (see streaming.StreamTurn)."""

    def __init__(
        self,
        store: ConversationStore,
        lease: Lease,
        turn: PreparedTurn,
        lease_seconds: float,
        *,
        then: StreamTurn | None = None,
        turn_id: str | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.turn = turn
        self.lease_seconds = lease_seconds
        self.then = then  # committed after the conversation (a stored response)
        self.turn_id = turn_id  # an idempotent turn (a background response's id)

    def renew(self) -> None:
        self.store.extend_lease(self.lease, self.lease_seconds)

    def commit(self, reply: NewMessage, usage: Usage, cost_usd: float) -> None:
        self.store.commit_turn(
            self.lease,
            [*self.turn.new_messages, reply],
            system=self.turn.system,
            usage=TurnUsage(usage.prompt_tokens, usage.completion_tokens, cost_usd),
            turn_id=self.turn_id,
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
