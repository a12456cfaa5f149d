"""ConversationService: OpenAI's Conversations API (and our list extension) over the conversation store.

One store, two views: the items of a conversation are its stored chat messages shown as OpenAI
items (``conversations.items``), so a chat-completions turn with ``conversation_id`` appears as
items and items added here are the history of the next turn. Writes that add or remove items
take the same short turn lease a chat turn takes (409 while a turn is in flight) and commit in
one transaction with the head; no model is called.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from llm_gateway.chat.models import CreateConversation, UpdateConversation
from llm_gateway.chat.service import ChatService
from llm_gateway.chat.tokens import count_message
from llm_gateway.conversations.ids import call_key, ids_for, item_position, parse_item_id
from llm_gateway.conversations.items import Item, items_to_messages, message_to_items, parse_items
from llm_gateway.conversations.records import Conversation, ConversationStore, NewMessage, StoredMessage, TurnUsage
from llm_gateway.errors import InvalidRequest, NotFound, PayloadTooLarge

Order = Literal["asc", "desc"]
# adding or removing items takes no model call: the lease only has to outlive a few DynamoDB writes
ITEMS_LEASE_SECONDS = 10.0


def _order(order: str) -> bool:
    """True for descending; a 400 for anything but ``asc`` / ``desc``."""
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid value for 'order': expected 'asc' or 'desc'.", param="order")
    return order == "desc"


def _limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid value for 'limit': expected an integer from 1 to 100.", param="limit")
    return limit


def item_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list envelope (``first_id``/``last_id`` are null for an empty page)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def message_items(conversation_id: str, message: StoredMessage) -> list[Item]:
    """The items a stored message is, oldest first (only complete replies are ever stored)."""
    return message_to_items(message.body, ids_for(conversation_id, message.seq), status="completed")


class ConversationService:
    def __init__(self, store: ConversationStore, chat: ChatService) -> None:
        self.store = store
        self.chat = chat

    # ---- conversations --------------------------------------------------------------
    def create(self, tenant: str, request: CreateConversation) -> dict[str, Any]:
        if request.model is not None:
            self.chat.routing.resolve(request.model)
        messages = self.new_messages(request.items, "items", allow_empty=True) if request.items is not None else []
        system_tokens = 0
        if request.system:
            self.chat.check_system_size(request.system, "system")
            system_tokens = count_message({"role": "system", "content": request.system})
        conversation = self.store.create(
            tenant,
            model=request.model,
            system=request.system,
            system_tokens=system_tokens,
            metadata=request.metadata,
            messages=messages,
        )
        return conversation.public()

    def retrieve(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        return self.store.get(tenant, conversation_id).public()

    def update(self, tenant: str, conversation_id: str, request: UpdateConversation) -> dict[str, Any]:
        return self.store.update_metadata(tenant, conversation_id, request.metadata).public()

    def delete(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        """Deletes the conversation and its items (OpenAI keeps the items; we keep nothing deleted)."""
        self.store.delete(tenant, conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    def list_conversations(
        self, tenant: str, *, limit: int = 20, after: str | None = None, order: str = "desc"
    ) -> dict[str, Any]:
        """Our extension: the caller's conversations, newest first by default, in OpenAI's list shape."""
        conversations, has_more = self.store.list_conversations(
            tenant, limit=_limit(limit), after=after, descending=_order(order)
        )
        # GSI1 does not project the system prompt (template.yaml): retrieve the conversation for it.
        return item_list([{k: v for k, v in c.public().items() if k != "system"} for c in conversations], has_more)

    # ---- items ------------------------------------------------------------------------
    def new_messages(self, raw: Any, param: str, *, allow_empty: bool = False) -> list[NewMessage]:
        """Validated input items as the chat messages the store keeps (400/413 naming the item)."""
        items = parse_items(raw, param)
        if not items and not allow_empty:
            raise InvalidRequest(f"'{param}' must hold at least one item.", param=param)
        limit = self.chat.settings.max_message_bytes
        out: list[NewMessage] = []
        for converted in items_to_messages(items, param):
            size = len(json.dumps(converted.body, ensure_ascii=False).encode())
            if size > limit:
                raise PayloadTooLarge(
                    f"Item {converted.first_item} is {size} bytes; the limit is {limit} bytes per item.",
                    param=f"{param}[{converted.first_item}]",
                )
            out.append(NewMessage(converted.body, count_message(converted.body)))
        return out

    def add_items(self, tenant: str, conversation_id: str, raw: Any) -> dict[str, Any]:
        """Append items atomically under the turn lease (409 if a turn is in flight); no model call."""
        messages = self.new_messages(raw, "items")
        lease = self.store.acquire_lease(tenant, conversation_id, ITEMS_LEASE_SECONDS + self._grace)
        try:
            stored = self.store.commit_turn(lease, messages, usage=TurnUsage())
        except BaseException:
            self.store.release_lease(lease)
            raise
        data = [item.model_dump() for message in stored for item in message_items(conversation_id, message)]
        return item_list(data, False)

    def list_items(
        self, tenant: str, conversation_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> dict[str, Any]:
        """A page of items in either order after the item id ``after``; ``has_more`` is exact.

        Every stored message is at least one item, so ``limit + 1`` messages (the one holding
        ``after``, then ``limit``) fill the page and the store's look-ahead of one more decides
        ``has_more``: the items read per call (``limit + 2``) do not grow with the conversation."""
        descending = _order(order)
        limit = _limit(limit)
        conversation = self.store.get(tenant, conversation_id)
        start = None
        if after is not None:
            ref = parse_item_id(conversation.id, after)
            if ref is None:
                raise InvalidRequest("'after' must be the id of an item of this conversation.", param="after")
            start = ref.seq
        # the message holding `after` (it may have no item left after it) and `limit` more
        messages, more = self.store.messages_page(
            tenant, conversation_id, start=start, descending=descending, limit=limit + 1
        )
        items: list[Item] = []
        for message in messages:
            expanded = message_items(conversation.id, message)
            if descending:
                expanded.reverse()
            if after is not None and message.seq == start:
                position = item_position(after, expanded)
                if position >= 0:
                    expanded = expanded[position + 1 :]
                elif descending or not after.startswith("msg_"):
                    expanded = []  # `after` is gone from its message: nothing there is known to follow it
            items += expanded
        return item_list([item.model_dump() for item in items[:limit]], len(items) > limit or more)

    def _find(self, conversation: Conversation, item_id: str) -> tuple[StoredMessage, list[Item], int]:
        ref = parse_item_id(conversation.id, item_id)
        message = self.store.message(conversation.tenant, conversation.id, ref.seq) if ref else None
        items = message_items(conversation.id, message) if message else []
        position = item_position(item_id, items)
        if message is None or position < 0:
            raise NotFound(f"No item found with id '{item_id[:64]}'.", param="item_id")
        return message, items, position

    def get_item(self, tenant: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        _, items, position = self._find(self.store.get(tenant, conversation_id), item_id)
        return items[position].model_dump()

    def delete_item(self, tenant: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        """Remove one item under the lease and return the Conversation (as OpenAI does).

        A message item that is the only item of its stored message removes that message; the text
        of an assistant message with tool calls, or one of its calls, is cut out of it and its
        stored token count recomputed, so later turns' history and budgets no longer contain it.
        """
        if parse_item_id(conversation_id, item_id) is None:  # not an id of this conversation: no lease taken
            self.store.get(tenant, conversation_id)  # an unknown conversation is the 404 to report
            raise NotFound(f"No item found with id '{item_id[:64]}'.", param="item_id")
        lease = self.store.acquire_lease(tenant, conversation_id, ITEMS_LEASE_SECONDS + self._grace)
        try:
            message, items, position = self._find(lease.conversation, item_id)
            replacement = None
            if len(items) > 1:
                body = dict(message.body)
                if items[position].type == "message":
                    body["content"] = None
                    body.pop("refusal", None)
                else:
                    key = item_id[-8:]
                    body["tool_calls"] = [c for c in body.get("tool_calls") or [] if call_key(c["id"]) != key]
                replacement = NewMessage(body, count_message(body))
            self.store.commit_edit(lease, message.seq, replacement)
        except BaseException:
            self.store.release_lease(lease)
            raise
        return self.store.get(tenant, conversation_id).public()

    @property
    def _grace(self) -> float:
        return self.chat.settings.lease_grace_seconds
