"""Limits on a tenant and, tighter, on a key; stored in the table, cached per container.

Limits are JSON with these names (the admin API and ``llm-gateway-admin limits`` use them)::

    {"rpm", "tpm", "max_concurrent", "usd_per_day", "usd_per_month", "tokens_per_day", "models"}

Unset (null) means unlimited. A tenant with no stored limits gets ``QUOTA_DEFAULT_LIMITS``.
Items: ``PK = T#<tenant>#LIMITS``, ``SK = TENANT`` or ``KEY#<key id>`` (under the ``T#`` prefix the
functions' IAM policies already allow).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from llm_gateway.aws.dynamo import batch_get

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

TENANT_SK = "TENANT"


def limits_pk(tenant: str) -> str:
    return f"T#{tenant}#LIMITS"


def key_sk(key_id: str) -> str:
    return f"KEY#{key_id}"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: StrictInt | None = Field(default=None, ge=0)
    tpm: StrictInt | None = Field(default=None, ge=0)
    max_concurrent: StrictInt | None = Field(default=None, ge=0, le=1000)
    usd_per_day: float | None = Field(default=None, ge=0)
    usd_per_month: float | None = Field(default=None, ge=0)
    tokens_per_day: StrictInt | None = Field(default=None, ge=0)
    models: list[str] | None = None  # aliases this tenant/key may use; None = every alias

    def allows(self, alias: str) -> bool:
        return self.models is None or alias in self.models

    @property
    def unlimited(self) -> bool:
        return all(v is None for v in self.model_dump().values())

    def public(self) -> dict[str, Any]:
        return self.model_dump()


UNLIMITED = Limits()


class LimitsStore(Protocol):
    def get(self, tenant: str, key_id: str | None) -> tuple[Limits, Limits]:
        """(tenant limits, key limits) for one request."""
        ...

    def put_tenant(self, tenant: str, limits: Limits) -> None: ...
    def put_key(self, tenant: str, key_id: str, limits: Limits) -> None: ...
    def tenant(self, tenant: str) -> Limits: ...


def parse_limits(text: str | None) -> Limits:
    return Limits.model_validate(json.loads(text)) if text else UNLIMITED


class DynamoLimitsStore:
    """Limits items, read with one BatchGetItem and cached for ``cache_seconds`` (like auth)."""

    def __init__(
        self,
        table: str,
        client: DynamoDBClient,
        defaults: Limits = UNLIMITED,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.client = client
        self.defaults = defaults
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str | None], tuple[float, tuple[Limits, Limits]]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, key_id: str | None) -> tuple[Limits, Limits]:
        now = self.clock()
        cached = self._cache.get((tenant, key_id))
        if cached and cached[0] > now:
            return cached[1]
        keys = [{"PK": {"S": limits_pk(tenant)}, "SK": {"S": TENANT_SK}}]
        if key_id:
            keys.append({"PK": {"S": limits_pk(tenant)}, "SK": {"S": key_sk(key_id)}})
        found: dict[str, Limits] = {
            item["SK"]["S"]: parse_limits(item["limits"]["S"])
            for item in batch_get(self.client, self.table, keys, what="reading limits")
        }
        result = (found.get(TENANT_SK, self.defaults), found.get(key_sk(key_id), UNLIMITED) if key_id else UNLIMITED)
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[(tenant, key_id)] = (now + self.cache_seconds, result)
        return result

    def _put(self, tenant: str, sk: str, limits: Limits) -> None:
        self.client.put_item(
            TableName=self.table,
            Item={
                "PK": {"S": limits_pk(tenant)},
                "SK": {"S": sk},
                "limits": {"S": limits.model_dump_json()},
                "updated_at": {"N": str(int(time.time()))},
            },
        )
        with self._lock:
            self._cache.clear()  # this container sees the change at once; others within cache_seconds

    def put_tenant(self, tenant: str, limits: Limits) -> None:
        self._put(tenant, TENANT_SK, limits)

    def put_key(self, tenant: str, key_id: str, limits: Limits) -> None:
        self._put(tenant, key_sk(key_id), limits)

    def tenant(self, tenant: str) -> Limits:
        item = self.client.get_item(
            TableName=self.table, Key={"PK": {"S": limits_pk(tenant)}, "SK": {"S": TENANT_SK}}, ConsistentRead=True
        ).get("Item")
        return parse_limits(item["limits"]["S"]) if item else self.defaults
