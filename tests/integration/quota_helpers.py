"""Shared set-up for the quota tests: a gateway over moto and the fake upstream, a settable clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_gateway.quotas.limits import Limits
from tests.integration.conftest import TENANT_KEY, Gateway, make_gateway

# a priced default alias: $1 per 1M prompt tokens, $2 per 1M completion tokens
PRICES = {"default_input_price_per_1m": 1.0, "default_output_price_per_1m": 2.0}


@dataclass
class Clock:
    now: float = 1_800_000_000.0  # 2027-01-15T08:00:00Z, the start of a minute

    def __call__(self) -> float:
        return self.now


def quota_gateway(aws: Any, fake: Any, **overrides: Any) -> tuple[Gateway, Clock]:
    gw = make_gateway(aws, upstream_url=fake.url, **{**PRICES, **overrides})
    clock = Clock()
    gw.services.quotas.clock = clock
    return gw, clock


def key_id(gw: Gateway, key: str = TENANT_KEY) -> str:
    record = gw.services.auth.keys.lookup(key)
    assert record is not None
    return record.key_id


def limit_key(gw: Gateway, key: str = TENANT_KEY, **limits: Any) -> None:
    record = gw.services.auth.keys.lookup(key)
    gw.services.quotas.limits.put_key(record.tenant, record.key_id, Limits(**limits))


def limit_tenant(gw: Gateway, tenant: str = "tenant-a", **limits: Any) -> None:
    gw.services.quotas.limits.put_tenant(tenant, Limits(**limits))


def day_counter(gw: Gateway, pk: str, clock: Clock) -> dict[str, Any]:
    from llm_gateway.quotas.service import Windows

    assert gw.services.quotas.drain(10)  # unlimited usage is written behind the reply (quotas.writer)
    return gw.services.quotas.counters.read(pk, f"D#{Windows.at(clock.now).day}")
