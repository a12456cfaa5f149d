"""OpenAI's Conversations API (``client.conversations`` / ``client.conversations.items``) and our
conversation list extension: thin translations to :class:`ConversationService`."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.chat.models import CreateConversation, CreateItems, UpdateConversation
from llm_gateway.conversations.items import Item
from llm_gateway.conversations.shapes import ConversationDeleted, ConversationList, ConversationObject, ItemList
from llm_gateway.errors import ConversationBusy, NotFound

router = APIRouter(tags=["conversations"])

Limit = Annotated[int, Query(description="1 to 100.")]
Order = Annotated[str, Query(description="'asc' or 'desc' (default 'desc', as OpenAI).")]
Include = Annotated[list[str] | None, Query(description="Accepted for compatibility; items carry every field.")]


@router.post(
    "/v1/conversations",
    response_model=None,
    responses={**openapi.body(ConversationObject), **openapi.errors(NotFound)},
)
def create_conversation(
    who: CallerDep, services: ServicesDep, body: CreateConversation | None = None
) -> dict[str, Any]:
    """A conversation, with up to 20 initial items stored atomically with it."""
    return services.conversation_service.create(who.tenant, body or CreateConversation())


@router.get(
    "/v1/conversations",
    response_model=None,
    responses={**openapi.body(ConversationList), **openapi.errors()},
)
def list_conversations(
    who: CallerDep,
    services: ServicesDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: Annotated[str | None, Query(max_length=128, description="A conversation id.")] = None,
) -> dict[str, Any]:
    """Extension (OpenAI has no list): the caller's conversations, in OpenAI's list shape."""
    return services.conversation_service.list_conversations(who.tenant, limit=limit, after=after, order=order)


@router.get(
    "/v1/conversations/{conversation_id}",
    response_model=None,
    responses={**openapi.body(ConversationObject), **openapi.errors(NotFound)},
)
def retrieve_conversation(conversation_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return services.conversation_service.retrieve(who.tenant, conversation_id)


@router.post(
    "/v1/conversations/{conversation_id}",
    response_model=None,
    responses={**openapi.body(ConversationObject), **openapi.errors(NotFound)},
)
def update_conversation(
    conversation_id: str, body: UpdateConversation, who: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    return services.conversation_service.update(who.tenant, conversation_id, body)


@router.delete(
    "/v1/conversations/{conversation_id}",
    response_model=None,
    responses={**openapi.body(ConversationDeleted), **openapi.errors(NotFound, ConversationBusy)},
)
def delete_conversation(conversation_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Deletes the conversation and its items (OpenAI keeps the items; this gateway does not)."""
    return services.conversation_service.delete(who.tenant, conversation_id)


@router.post(
    "/v1/conversations/{conversation_id}/items",
    response_model=None,
    responses={**openapi.body(ItemList), **openapi.errors(NotFound, ConversationBusy)},
)
def create_items(
    conversation_id: str, body: CreateItems, who: CallerDep, services: ServicesDep, include: Include = None
) -> dict[str, Any]:
    """Append up to 20 items atomically under the turn lease (409 while a turn is in flight)."""
    return services.conversation_service.add_items(who.tenant, conversation_id, body.items)


@router.get(
    "/v1/conversations/{conversation_id}/items",
    response_model=None,
    responses={**openapi.body(ItemList), **openapi.errors(NotFound)},
)
def list_items(
    conversation_id: str,
    who: CallerDep,
    services: ServicesDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: Annotated[str | None, Query(max_length=128, description="An item id.")] = None,
    include: Include = None,
) -> dict[str, Any]:
    return services.conversation_service.list_items(who.tenant, conversation_id, limit=limit, order=order, after=after)


@router.get(
    "/v1/conversations/{conversation_id}/items/{item_id}",
    response_model=None,
    responses={**openapi.body(Item), **openapi.errors(NotFound)},
)
def retrieve_item(
    conversation_id: str, item_id: str, who: CallerDep, services: ServicesDep, include: Include = None
) -> dict[str, Any]:
    return services.conversation_service.get_item(who.tenant, conversation_id, item_id)


@router.delete(
    "/v1/conversations/{conversation_id}/items/{item_id}",
    response_model=None,
    responses={**openapi.body(ConversationObject), **openapi.errors(NotFound, ConversationBusy)},
)
def delete_item(conversation_id: str, item_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Removes the item under the lease; returns the Conversation, as OpenAI does."""
    return services.conversation_service.delete_item(who.tenant, conversation_id, item_id)
