"""The Conversations API's wire shapes as /openapi.json documents them (the service builds the
bodies: ``Conversation.public`` and the items of :mod:`llm_gateway.conversations.items`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.conversations.items import Item


class ConversationObject(BaseModel):
    """OpenAI's Conversation (id, object, created_at, metadata), then the gateway's extensions."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, str]
    system: str | None = Field(None, description="Extension; absent from list pages.")


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: bool


class ConversationList(BaseModel):
    """Extension (OpenAI has no list): the caller's conversations in OpenAI's list shape."""

    object: Literal["list"]
    data: list[ConversationObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ItemList(BaseModel):
    object: Literal["list"]
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool
