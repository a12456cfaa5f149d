"""Server-side conversations (the gateway's extension; OpenAI's Conversations API comes next)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from deps import CallerDep, ServicesDep
from llm_gateway.chat.models import CreateConversation

router = APIRouter(tags=["conversations"])


@router.post("/v1/conversations", status_code=201)
def create_conversation(
    who: CallerDep, services: ServicesDep, body: CreateConversation | None = None
) -> dict[str, Any]:
    return services.conversation_service.create(who.tenant, body or CreateConversation())


@router.get("/v1/conversations")
def list_conversations(
    who: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    return services.conversation_service.list(who.tenant, limit=limit, after=after)


@router.get("/v1/conversations/{conversation_id}")
def get_conversation(
    conversation_id: str,
    who: CallerDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    return services.conversation_service.retrieve(who.tenant, conversation_id, limit=limit, after=after)


@router.delete("/v1/conversations/{conversation_id}")
def delete_conversation(conversation_id: str, who: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return services.conversation_service.delete(who.tenant, conversation_id)
