"""ConversationService: the conversation endpoints (create, list, retrieve, delete) over the store.

The rules a new conversation obeys (its model is a configured alias, its system prompt is
bounded like a message and counted once) live here, not in the HTTP routes.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.chat.models import CreateConversation
from llm_gateway.chat.service import ChatService
from llm_gateway.chat.tokens import count_message
from llm_gateway.conversations.store import ConversationStore, message_seq


class ConversationService:
    def __init__(self, store: ConversationStore, chat: ChatService) -> None:
        self.store = store
        self.chat = chat

    def create(self, tenant: str, request: CreateConversation) -> dict[str, Any]:
        if request.model is not None:
            self.chat.routing.resolve(request.model)
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
        )
        return conversation.public()

    def list(self, tenant: str, *, limit: int, after: str | None) -> dict[str, Any]:
        conversations, cursor = self.store.list(tenant, limit=limit, after=after)
        return {
            "object": "list",
            # GSI1 does not project the system prompt (template.yaml): retrieve the conversation for it.
            "data": [{k: v for k, v in c.public().items() if k != "system"} for c in conversations],
            "has_more": cursor is not None,
            "next_cursor": cursor,
        }

    def retrieve(self, tenant: str, conversation_id: str, *, limit: int, after: str | None) -> dict[str, Any]:
        """The conversation and a page of its messages, oldest first, after the message id ``after``."""
        after_seq = None if after is None else message_seq(after)
        conversation = self.store.get(tenant, conversation_id)
        messages, has_more = self.store.messages(tenant, conversation_id, limit=limit, after=after_seq)
        data = [m.public() for m in messages]
        out = conversation.public()
        out["messages"] = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
        return out

    def delete(self, tenant: str, conversation_id: str) -> dict[str, Any]:
        self.store.delete(tenant, conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
