"""The usage and admin routes' success bodies as /openapi.json documents them (the services build the
bodies: :func:`llm_gateway.quotas.usage.usage_report`, :class:`llm_gateway.quotas.admin.AdminService`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.quotas.limits import Limits


class UsageTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(description="USD, as charged against the limits.")


class UsageRow(UsageTotals):
    """One group: exactly one of ``day`` (YYYY-MM-DD, UTC), ``model`` (alias) or ``key`` (key id)."""

    day: str | None = None
    model: str | None = None
    key: str | None = None


class UsageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["usage.report"]
    tenant: str
    start: str = Field(description="First day, YYYY-MM-DD (UTC), inclusive.")
    end: str = Field(description="Last day, YYYY-MM-DD (UTC), inclusive.")
    group_by: Literal["day", "model", "key"]
    data: list[UsageRow]
    total: UsageTotals


class ApiKeyObject(BaseModel):
    """A gateway key's record; never the key or its hash."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    name: str
    created_at: int = Field(description="Unix seconds.")
    revoked: bool
    admin: bool = Field(description="May call /v1/admin/....")


class CreatedApiKey(ApiKeyObject):
    key: str = Field(description="The gateway key itself: in this response only, never again.")
    limits: Limits


class ApiKeyList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[ApiKeyObject]


class RevokedApiKey(ApiKeyObject):
    deleted: bool


class TenantLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    limits: Limits
