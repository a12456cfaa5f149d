"""Model aliases as OpenAI's Models API."""

from typing import Annotated

from fastapi import APIRouter, Path

import openapi
from deps import CallerDep, ServicesDep
from llm_gateway.chat.catalog import Model, ModelList
from llm_gateway.errors import NotFound

router = APIRouter(tags=["models"])


@router.get("/v1/models", responses=openapi.errors())
def list_models(_: CallerDep, services: ServicesDep) -> ModelList:
    return services.models.list()


@router.get("/v1/models/{model}", responses=openapi.errors(NotFound))
def retrieve_model(model: Annotated[str, Path(max_length=256)], _: CallerDep, services: ServicesDep) -> Model:
    return services.models.retrieve(model)
