"""The admin surface: gateway keys, tenant limits and any tenant's usage, for admin keys only.

Every action is logged with who did it (the admin key's id) and what (action, tenant, target
key id); never a key, a hash or a prompt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from llm_gateway.errors import InvalidRequest, NotFound
from llm_gateway.quotas.counters import CounterStore
from llm_gateway.quotas.limits import UNLIMITED, Limits, LimitsStore
from llm_gateway.quotas.usage import date_range, usage_report


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: StrictStr = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: StrictStr = Field("", max_length=128)
    limits: Limits | None = None
    admin: StrictBool = False


class KeyRecord(Protocol):
    key_id: str
    tenant: str

    def public(self) -> dict[str, Any]: ...


class KeyStore(Protocol):
    def create(
        self, tenant: str, name: str = "", key: str | None = None, *, admin: bool = False
    ) -> tuple[str, Any]: ...

    def list(self, tenant: str | None = None) -> list[Any]: ...
    def revoke(self, key_id: str) -> Any: ...


def _log(admin_key_id: str, action: str, **what: Any) -> None:
    from llm_gateway.observability import logger  # observability imports chat, which imports quotas

    logger.info("admin action", extra={"admin_key_id": admin_key_id, "action": action, **what})


class AdminService:
    def __init__(
        self,
        keys: KeyStore,
        limits: LimitsStore,
        counters: CounterStore,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
        drain: Callable[[], object] = lambda: None,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.counters = counters
        self.today = today
        self.drain = drain  # waits for this process's pending usage writes (QuotaService.drain)

    def create_key(self, who: str, body: CreateKey) -> dict[str, Any]:
        key, record = self.keys.create(body.tenant, body.name, admin=body.admin)
        limits = body.limits or UNLIMITED
        if body.limits is not None:
            self.limits.put_key(record.tenant, record.key_id, limits)
        _log(who, "create_key", tenant=record.tenant, target_key_id=record.key_id, admin=body.admin)
        return {**record.public(), "key": key, "limits": limits.public()}

    def list_keys(self, who: str, tenant: str | None) -> dict[str, Any]:
        _log(who, "list_keys", tenant=tenant)
        return {"object": "list", "data": [k.public() for k in self.keys.list(tenant)]}

    def revoke_key(self, who: str, key_id: str) -> dict[str, Any]:
        record = self.keys.revoke(key_id)
        _log(who, "revoke_key", tenant=record.tenant, target_key_id=key_id)
        return {**record.public(), "deleted": True}

    def put_limits(self, who: str, tenant: str, limits: Limits) -> dict[str, Any]:
        self.limits.put_tenant(tenant, limits)
        _log(who, "put_tenant_limits", tenant=tenant)
        return {"tenant": tenant, "limits": limits.public()}

    def get_limits(self, who: str, tenant: str) -> dict[str, Any]:
        _log(who, "get_tenant_limits", tenant=tenant)
        return {"tenant": tenant, "limits": self.limits.tenant(tenant).public()}

    def usage(
        self, who: str | None, tenant: str | None, start: str | None, end: str | None, group_by: str
    ) -> dict[str, Any]:
        if not tenant:
            raise InvalidRequest("'tenant' is required.", param="tenant")
        first, last = date_range(start, end, self.today())
        key_ids = [k.key_id for k in self.keys.list(tenant)] if group_by == "key" else None
        if who is not None:
            _log(who, "get_usage", tenant=tenant)
        self.drain()  # what this instance served is in the report
        return usage_report(self.counters, tenant, first, last, group_by, key_ids)


def not_found_key(key_id: str) -> NotFound:
    return NotFound(f"No API key with id '{key_id}'.")
