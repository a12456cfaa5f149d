"""Conversation records and the :class:`ConversationStore` Protocol the chat layer depends on.

The DynamoDB adapter is :mod:`llm_gateway.conversations.store`; tests use the in-memory fake in
``tests/fakes.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

META = "META"
MSG_PREFIX = "M#"
MSG_LAST = MSG_PREFIX + "9" * 10
TURN_PREFIX = "TURN#"
DELETED = "deleted_at"  # on a head being deleted (see DynamoConversationStore.delete): the conversation is gone
# DynamoDB's item limit is 400 KB; keep room for the key and the other attributes.
MAX_MESSAGE_ITEM_BYTES = 380_000


def new_conversation_id() -> str:
    return "conv_" + uuid.uuid4().hex


# --------------------------------------------------------------------------- records


@dataclass
class Conversation:
    id: str
    tenant: str
    created_at: int  # epoch ms
    updated_at: int
    version: int = 0
    message_count: int = 0
    model: str | None = None
    system: str | None = None
    system_tokens: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    deleted_messages: int = 0  # removed by item deletes; message_count stays the next sequence number

    def public(self) -> dict[str, Any]:
        """OpenAI's Conversation (id, object, created_at, metadata), then our extensions."""
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at // 1000,
            "metadata": self.metadata,
            "updated_at": self.updated_at // 1000,
            "model": self.model,
            "system": self.system,
            "message_count": self.message_count - self.deleted_messages,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cost_usd": round(self.cost_usd, 8),
            },
        }


@dataclass
class StoredMessage:
    seq: int
    body: dict[str, Any]  # the wire-format message (role, content, tool_calls, …)
    tokens: int
    created_at: int
    meta: dict[str, Any] = field(default_factory=dict)
    expires_at: int = 0  # the item's ``ttl`` (epoch seconds), 0 = never expires
    size: int = 0  # the stored JSON's length, 0 = not known (what the history cache accounts)

    @property
    def role(self) -> str:
        return self.body["role"]


@dataclass
class NewMessage:
    body: dict[str, Any]
    tokens: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lease:
    conversation: Conversation
    lease_id: str
    expires_at: int  # epoch ms


@dataclass
class History:
    messages: list[StoredMessage]  # oldest first
    items_read: int  # items the read returned, the one that did not fit the tokens included (conversations.cache)
    cache_hit: bool | None = None  # from the process's history cache (conversations.cache); None = no cache


@dataclass
class HistoryBudget:
    """What history a turn sends, the one rule for every reader (the store's Query, the process's
    cache, the tests' fake): the newest messages, taken newest first until ``max_messages`` are kept
    or the next one would pass ``max_tokens`` (then it and every older one stay out)."""

    max_messages: int
    max_tokens: int
    kept: list[StoredMessage] = field(default_factory=list)  # newest first
    tokens: int = 0

    def room(self) -> int:
        return self.max_messages - len(self.kept)

    def take(self, message: StoredMessage) -> bool:
        """Keep ``message``, the next older one, if it fits; False when the budget is full."""
        if len(self.kept) >= self.max_messages or self.tokens + message.tokens > self.max_tokens:
            return False
        self.kept.append(message)
        self.tokens += message.tokens
        return True

    def window(self) -> list[StoredMessage]:
        """The kept messages, oldest first (as a turn sends them)."""
        return self.kept[::-1]


@dataclass
class TurnUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class TurnAlreadyCommitted(Exception):
    """An idempotent turn (``turn_id``) was committed before; nothing was written."""


class ConversationStore(Protocol):
    def create(
        self,
        tenant: str,
        *,
        model: str | None = None,
        system: str | None = None,
        system_tokens: int = 0,
        metadata: dict[str, str] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> Conversation: ...
    def get(self, tenant: str, conversation_id: str) -> Conversation: ...
    def update_metadata(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> Conversation: ...
    def list_conversations(
        self, tenant: str, *, limit: int, after: str | None, descending: bool = True
    ) -> tuple[list[Conversation], bool]: ...
    def delete(self, tenant: str, conversation_id: str) -> None: ...
    def messages(
        self, tenant: str, conversation_id: str, *, limit: int, after: int | None
    ) -> tuple[list[StoredMessage], bool]: ...
    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[StoredMessage], bool]: ...
    def message(self, tenant: str, conversation_id: str, seq: int) -> StoredMessage | None: ...
    def commit_edit(self, lease: Lease, seq: int, replacement: NewMessage | None) -> None: ...
    def acquire_lease(self, tenant: str, conversation_id: str, ttl_seconds: float) -> Lease: ...
    def extend_lease(self, lease: Lease, ttl_seconds: float) -> None: ...
    def release_lease(self, lease: Lease) -> None: ...
    def read_history(self, tenant: str, conversation_id: str, *, max_messages: int, max_tokens: int) -> History: ...
    def turn_history(self, conversation: Conversation, *, max_messages: int, max_tokens: int) -> History:
        """:meth:`read_history` for a turn holding the lease on ``conversation`` (its head as leased):
        what a cache keyed by the head's version may answer (conversations.cache)."""
        ...

    def commit_turn(
        self,
        lease: Lease,
        messages: list[NewMessage],
        *,
        usage: TurnUsage,
        system: tuple[str, int] | None = None,
        turn_id: str | None = None,
        also: Sequence[dict[str, Any]] = (),
    ) -> list[StoredMessage]: ...
    def turn_messages(self, tenant: str, conversation_id: str, turn_id: str) -> list[StoredMessage] | None: ...
