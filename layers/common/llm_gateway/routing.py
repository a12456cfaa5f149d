"""Model aliases and the deployments behind them.

Clients name an alias (``default``, …); the alias names one or more upstream
deployments, tried in order. The ``default`` alias always exists and routes to the
configured OpenAI-compatible upstream (``OPENAI_BASE_URL`` / ``DEFAULT_MODEL`` /
``PROVIDER_KEY_CIPHERTEXT``). ``ROUTING_CONFIG`` (JSON) adds or replaces aliases.
The configuration is validated at cold start; errors name the offending entry.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigurationError, NotFound
from .settings import Settings

DEFAULT_ALIAS = "default"
DEFAULT_KEY_REF = "default"


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    provider: Literal["openai"] = "openai"
    model: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    key_ref: str | None = None
    context_window: int = Field(128_000, gt=0)
    connect_timeout: float | None = Field(None, gt=0)
    read_timeout: float | None = Field(None, gt=0)
    input_price_per_1m: float = Field(0.0, ge=0)
    output_price_per_1m: float = Field(0.0, ge=0)
    weight: int = Field(1, ge=1)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_1m + completion_tokens * self.output_price_per_1m) / 1e6


class ModelAlias(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    history_max_tokens: int = Field(8_000, gt=0)
    history_max_messages: int = Field(200, gt=0, le=1_000)

    @property
    def context_window(self) -> int:
        """The hard cap: the smallest window among the deployments that may answer."""
        return min(d.context_window for d in self.deployments)

    @model_validator(mode="after")
    def _unique_deployments(self) -> ModelAlias:
        names = [d.name for d in self.deployments]
        if len(names) != len(set(names)):
            raise ValueError(f"alias '{self.name}' lists a deployment twice")
        return self


class Routing:
    def __init__(self, aliases: dict[str, ModelAlias]) -> None:
        self.aliases = aliases

    def resolve(self, name: str) -> ModelAlias:
        alias = self.aliases.get(name)
        if alias is None:
            raise NotFound(
                f"The model '{name[:100]}' does not exist on this gateway; GET /v1/models lists them.",
                code="model_not_found",
                param="model",
            )
        return alias

    def key_refs(self) -> set[str]:
        return {d.key_ref for a in self.aliases.values() for d in a.deployments if d.key_ref}


def default_alias(settings: Settings) -> ModelAlias:
    return ModelAlias(
        name=DEFAULT_ALIAS,
        deployments=[
            Deployment(
                name=DEFAULT_ALIAS,
                model=settings.default_model,
                base_url=settings.openai_base_url,
                key_ref=DEFAULT_KEY_REF if settings.provider_key_ciphertext else None,
                context_window=settings.default_context_window,
            )
        ],
        history_max_tokens=settings.history_max_tokens,
        history_max_messages=settings.history_max_messages,
    )


def load_routing(settings: Settings) -> Routing:
    aliases = {DEFAULT_ALIAS: default_alias(settings)}
    if settings.routing_config:
        try:
            raw = json.loads(settings.routing_config)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"ROUTING_CONFIG is not valid JSON: {exc.msg} at {exc.pos}") from exc
        entries = raw.get("aliases", raw) if isinstance(raw, dict) else None
        if not isinstance(entries, dict):
            raise ConfigurationError("ROUTING_CONFIG must map alias names to alias definitions")
        for name, body in entries.items():
            try:
                aliases[name] = ModelAlias.model_validate({"name": name, **(body or {})})
            except (ValidationError, TypeError) as exc:
                raise ConfigurationError(f"ROUTING_CONFIG alias '{name}': {exc}") from exc
    return Routing(aliases)
