"""Model aliases, in OpenAI's list format."""

from typing import Any

from fastapi import APIRouter

from deps import CallerDep, ServicesDep

router = APIRouter(tags=["models"])


@router.get("/v1/models")
def list_models(_: CallerDep, services: ServicesDep) -> dict[str, Any]:
    aliases = services.routing.aliases
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"} for name in aliases],
    }
