"""A process-local cache of each conversation's newest history window, keyed by the head's ``version``.

Every change to a conversation's messages bumps its head's ``version`` in the same transaction
(``commit_turn`` and ``commit_edit`` under the lease, checked against the version they leased), and
a turn learns the head's version from its lease (``acquire_lease``'s ``ALL_NEW``). So a window this
process read or wrote at version *v* is exactly what ``read_history`` returns while the head is at
*v*, whichever process wrote it: a turn whose lease shows another version misses and reads again.
A turn this process commits advances its entry to *v + 1* with the messages it wrote; an edit, a
delete, a failed commit drop it. (A conversation's id is never reused, and a deleted one takes no
lease, so its entry is never read again.)

What the cache keeps per conversation: the window ``read_history`` returned for a budget
(``max_messages``, ``max_tokens``), and whether that window is the conversation's whole history.
The newest-first window for any smaller budget is a prefix of it, trimmed by the same rule
(:func:`newest_window`); a whole history answers any budget.

Expiry (``conversation_ttl_days``): DynamoDB's TTL deletes expired items in the background, some
time after they expire, without touching the head's version, and reads return expired items until
then. An entry is only used while every message in it is at least ``EXPIRY_MARGIN_SECONDS`` from
expiring, so DynamoDB still holds each of them and ``read_history`` returns the same window; a
window with a message closer to its expiry is always read from the table.

Bounded by one setting (``history_cache_bytes``): the stored JSON of the messages held plus a fixed
cost per message and per conversation, least recently used first out; 0 disables the cache.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_gateway.conversations.records import (
    Conversation,
    ConversationStore,
    History,
    HistoryBudget,
    Lease,
    NewMessage,
    StoredMessage,
    TurnUsage,
)

# A message that expires sooner than this is never served from the cache (clock skew between
# processes, and messages older than the window whose TTL deletion could change the window).
EXPIRY_MARGIN_SECONDS = 3600
# Python's overhead per cached message (the StoredMessage, its body dict and strings) and per
# conversation (the entry, its key and list), counted on top of the stored JSON's length: the total is
# within a few % of what tracemalloc traces for windows of 20- to 2,000-character messages.
MESSAGE_OVERHEAD_BYTES = 600
ENTRY_OVERHEAD_BYTES = 300


def newest_window(
    newest_last: Sequence[StoredMessage], max_messages: int, max_tokens: int
) -> tuple[list[StoredMessage], bool]:
    """The window of ``newest_last`` that ``read_history`` would answer (:class:`HistoryBudget`), oldest
    first; and whether the budget stopped it before ``newest_last`` ran out."""
    budget = HistoryBudget(max_messages, max_tokens)
    for message in reversed(newest_last):
        if not budget.take(message):
            return budget.window(), True
    return budget.window(), False


def _cost(message: StoredMessage) -> int:
    size = message.size or len(json.dumps(message.body, separators=(",", ":"), ensure_ascii=False))
    return MESSAGE_OVERHEAD_BYTES + size


@dataclass
class _Entry:
    version: int
    messages: list[StoredMessage]  # oldest first: read_history's answer at `version` for the budget below
    max_messages: int
    max_tokens: int
    whole: bool  # the conversation's whole history: it answers any budget
    expires: int  # the earliest expires_at of its messages (0: none expires)
    cost: int


def _expires(messages: Sequence[StoredMessage]) -> int:
    return min((m.expires_at for m in messages if m.expires_at), default=0)


class HistoryCache:
    """The LRU of windows (thread-safe: the API serves requests on several threads)."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, expires: int) -> bool:
        return not expires or expires > self.clock() + EXPIRY_MARGIN_SECONDS

    def window(self, conversation: Conversation, max_messages: int, max_tokens: int) -> list[StoredMessage] | None:
        """The history for this budget at the leased head's version, or None (a miss: read it)."""
        key = (conversation.tenant, conversation.id)
        with self._lock:
            entry = self._entries.get(key)
            usable = (
                entry is not None
                and entry.version == conversation.version
                and (entry.whole or (max_messages <= entry.max_messages and max_tokens <= entry.max_tokens))
                and self._fresh(entry.expires)
            )
            if entry is None or not usable:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            messages = entry.messages
        return newest_window(messages, max_messages, max_tokens)[0]

    def fill(self, conversation: Conversation, history: History, max_messages: int, max_tokens: int) -> None:
        """Keep what ``read_history`` returned for this budget at the leased head's version."""
        messages = history.messages
        # read_history counts the item that did not fit the tokens, so more read than kept is a budget stop
        whole = len(messages) < max_messages and history.items_read <= len(messages)
        self._put(
            (conversation.tenant, conversation.id),
            _Entry(conversation.version, list(messages), max_messages, max_tokens, whole, _expires(messages), 0),
        )

    def advance(self, conversation: Conversation, version: int, stored: Sequence[StoredMessage]) -> None:
        """A commit this process made on top of ``version`` stored ``stored`` (and the head is now at
        ``version + 1``): the entry at ``version`` moves on with them; any other is dropped."""
        key = (conversation.tenant, conversation.id)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry.cost
        if entry is None or entry.version != version:
            return
        # copies as a read would return them: the caller keeps using its own dicts (the reply it sends)
        added = [
            StoredMessage(
                m.seq,
                json.loads(json.dumps(m.body, ensure_ascii=False)),
                m.tokens,
                m.created_at,
                json.loads(json.dumps(m.meta, ensure_ascii=False)),
                m.expires_at,
                m.size,
            )
            for m in stored
        ]
        kept, stopped = newest_window([*entry.messages, *added], entry.max_messages, entry.max_tokens)
        expires = min((e for e in (entry.expires, _expires(added)) if e), default=0)
        self._put(
            key,
            _Entry(version + 1, kept, entry.max_messages, entry.max_tokens, entry.whole and not stopped, expires, 0),
        )

    def drop(self, tenant: str, conversation_id: str) -> None:
        with self._lock:
            entry = self._entries.pop((tenant, conversation_id), None)
            if entry is not None:
                self.bytes -= entry.cost

    def _put(self, key: tuple[str, str], entry: _Entry) -> None:
        entry.cost = ENTRY_OVERHEAD_BYTES + sum(_cost(m) for m in entry.messages)
        if entry.cost > self.max_bytes or not self._fresh(entry.expires):
            self.drop(*key)
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.cost
            self._entries[key] = entry
            self.bytes += entry.cost
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.cost


class CachedConversationStore:
    """A :class:`ConversationStore` whose turns read their history through a :class:`HistoryCache`;
    everything else goes to the store it wraps, and every write through it keeps the cache right."""

    def __init__(self, store: ConversationStore, cache: HistoryCache) -> None:
        self.store = store
        self.cache = cache

    # ---- what the cache changes ---------------------------------------------------------
    def turn_history(self, conversation: Conversation, *, max_messages: int, max_tokens: int) -> History:
        if not conversation.message_count:  # nothing to read (not a hit): the whole, empty, history to advance
            self.cache.fill(conversation, History([], 0), max_messages, max_tokens)
            return History([], 0)
        window = self.cache.window(conversation, max_messages, max_tokens)
        if window is not None:
            return History(window, 0, cache_hit=True)
        history = self.store.read_history(
            conversation.tenant, conversation.id, max_messages=max_messages, max_tokens=max_tokens
        )
        self.cache.fill(conversation, history, max_messages, max_tokens)
        history.cache_hit = False
        return history

    def commit_turn(
        self,
        lease: Lease,
        messages: list[NewMessage],
        *,
        usage: TurnUsage,
        system: tuple[str, int] | None = None,
        turn_id: str | None = None,
        also: Sequence[dict[str, Any]] = (),
    ) -> list[StoredMessage]:
        conv = lease.conversation
        version = conv.version
        try:
            stored = self.store.commit_turn(lease, messages, usage=usage, system=system, turn_id=turn_id, also=also)
        except BaseException:
            self.cache.drop(conv.tenant, conv.id)  # whatever happened (a lost response may have committed)
            raise
        self.cache.advance(conv, version, stored)
        return stored

    def commit_edit(self, lease: Lease, seq: int, replacement: NewMessage | None) -> None:
        conv = lease.conversation
        self.cache.drop(conv.tenant, conv.id)
        try:
            self.store.commit_edit(lease, seq, replacement)
        finally:
            self.cache.drop(conv.tenant, conv.id)

    def delete(self, tenant: str, conversation_id: str) -> None:
        self.cache.drop(tenant, conversation_id)
        try:
            self.store.delete(tenant, conversation_id)
        finally:
            self.cache.drop(tenant, conversation_id)

    # ---- the rest, as the wrapped store does it -----------------------------------------------
    def create(
        self,
        tenant: str,
        *,
        model: str | None = None,
        system: str | None = None,
        system_tokens: int = 0,
        metadata: dict[str, str] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> Conversation:
        return self.store.create(
            tenant, model=model, system=system, system_tokens=system_tokens, metadata=metadata, messages=messages
        )

    def get(self, tenant: str, conversation_id: str) -> Conversation:
        return self.store.get(tenant, conversation_id)

    def update_metadata(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> Conversation:
        return self.store.update_metadata(tenant, conversation_id, metadata)

    def list_conversations(
        self, tenant: str, *, limit: int, after: str | None, descending: bool = True
    ) -> tuple[list[Conversation], bool]:
        return self.store.list_conversations(tenant, limit=limit, after=after, descending=descending)

    def messages(
        self, tenant: str, conversation_id: str, *, limit: int, after: int | None
    ) -> tuple[list[StoredMessage], bool]:
        return self.store.messages(tenant, conversation_id, limit=limit, after=after)

    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        return self.store.messages_page(tenant, conversation_id, start=start, descending=descending, limit=limit)

    def message(self, tenant: str, conversation_id: str, seq: int) -> StoredMessage | None:
        return self.store.message(tenant, conversation_id, seq)

    def acquire_lease(self, tenant: str, conversation_id: str, ttl_seconds: float) -> Lease:
        return self.store.acquire_lease(tenant, conversation_id, ttl_seconds)

    def extend_lease(self, lease: Lease, ttl_seconds: float) -> None:
        self.store.extend_lease(lease, ttl_seconds)

    def release_lease(self, lease: Lease) -> None:
        self.store.release_lease(lease)

    def read_history(self, tenant: str, conversation_id: str, *, max_messages: int, max_tokens: int) -> History:
        return self.store.read_history(tenant, conversation_id, max_messages=max_messages, max_tokens=max_tokens)

    def turn_messages(self, tenant: str, conversation_id: str, turn_id: str) -> list[StoredMessage] | None:
        return self.store.turn_messages(tenant, conversation_id, turn_id)
