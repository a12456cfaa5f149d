"""The configured model aliases as OpenAI's Models API shows them (``GET /v1/models[/{id}]``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from llm_gateway.upstream.aliases import Routing

OWNER = "llm-gateway"


class Model(BaseModel):
    """OpenAI's Model object."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelCatalog:
    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    def list(self) -> ModelList:
        return ModelList(data=[Model(id=name) for name in self.routing.aliases])

    def retrieve(self, model_id: str) -> Model:
        return Model(id=self.routing.resolve(model_id).name)  # an unknown id: NotFound, model_not_found
