"""The write ceiling of one tenant's quota counters: write units per request on each counter item.

DynamoDB serves at most 1,000 write units per second on one item (one partition), and a write
costs one unit per KB of the larger of the item's old and new image, two in a transaction. Every
request of a tenant writes the same few counter items, so the hottest of them bounds the requests
per second one tenant (or key) can be admitted at before DynamoDB throttles its counters.

This drives the real QuotaService and DynamoCounterStore (moto in process, no sockets) for one
tenant with every limit set, with N requests in flight at a time (a concurrency limit of N, so the
slot set holds up to N holders), records every write each counter item receives, reads each item
back and sizes it by DynamoDB's rules (attribute names + values), and prints, per item kind:
writes per request, the item's size, write units per request, and the ceiling that gives
(1,000 / units per request). docs/quotas.md quotes these figures.

    .venv/bin/python bench/quota_hot_items.py [--quick]
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict, deque
from decimal import Decimal

QUICK = "--quick" in sys.argv
ITEM_WCU_PER_SECOND = 1_000  # DynamoDB's per-partition (so per-item) write throughput


def number_size(text: str) -> int:
    """DynamoDB's size of a number: about one byte per two significant digits, plus one."""
    digits = Decimal(text).normalize().as_tuple().digits
    return math.ceil(len(digits) / 2) + 1


def value_size(value: dict) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return number_size(inner)
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(number_size(v) for v in inner)
    raise ValueError(kind)


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def kind_of(sk: str) -> str:
    if sk.startswith("M#"):
        return "minute (rpm, tpm)"
    if sk.startswith("MO#"):
        return "month (usd_per_month)"
    if "#A#" in sk:
        return "day per model (usage)"
    if sk.startswith("D#"):
        return "day (usd/tokens per day)"
    return "slots (max_concurrent)"


def measure(in_flight: int, requests: int) -> list[tuple]:
    import boto3
    from moto import mock_aws

    from llm_gateway.quotas.counters import DynamoCounterStore
    from llm_gateway.quotas.limits import DynamoLimitsStore, Limits
    from llm_gateway.quotas.service import QuotaService
    from llm_gateway.upstream.aliases import Deployment, ModelAlias

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="t",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("PK", "SK")],
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        writes: dict[tuple[str, str], list[bool]] = defaultdict(list)  # item -> [transactional?] per write

        def record(params, **_):
            if "TransactItems" in params:
                for entry in params["TransactItems"]:
                    key = next(iter(entry.values()))["Key"]
                    writes[(key["PK"]["S"], key["SK"]["S"])].append(True)
            elif "UpdateExpression" in params:
                writes[(params["Key"]["PK"]["S"], params["Key"]["SK"]["S"])].append(False)

        ddb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", record)
        ddb.meta.events.register("provide-client-params.dynamodb.UpdateItem", record)
        limits = DynamoLimitsStore("t", ddb)
        every = {"rpm": 10**7, "tpm": 10**10, "usd_per_day": 10**6, "usd_per_month": 10**7, "tokens_per_day": 10**10}
        limits.put_tenant("hot", Limits(**every, max_concurrent=max(1, in_flight)))
        quotas = QuotaService(DynamoCounterStore("t", ddb), limits, clock=lambda: 1_800_000_000.0)
        alias = ModelAlias(
            name="default",
            deployments=[Deployment(name="d", model="m", input_price_per_1m=1.0, output_price_per_1m=2.0)],
        )
        largest: dict[tuple[str, str], int] = defaultdict(int)

        def sample() -> None:  # every item's size now (the slot set is largest while it is full)
            for key in writes:
                item = ddb.get_item(TableName="t", Key={"PK": {"S": key[0]}, "SK": {"S": key[1]}}).get("Item", {})
                largest[key] = max(largest[key], item_size(item))

        held: deque = deque()
        for i in range(requests):
            if len(held) >= in_flight:
                if i % 50 == 0:
                    sample()
                held.popleft().settle(120, 40, 0.0002)
            held.append(quotas.admit("hot", None, alias, 120, 256, 60.0))
        sample()
        while held:
            held.popleft().settle(120, 40, 0.0002)
        sample()
        rows = []
        for (pk, sk), kinds in sorted(writes.items(), key=lambda kv: kind_of(kv[0][1])):
            size = largest[(pk, sk)]
            units = sum((2 if txn else 1) * max(1, math.ceil(size / 1024)) for txn in kinds) / requests
            rows.append((kind_of(sk), len(kinds) / requests, size, units, ITEM_WCU_PER_SECOND / units))
        return rows


def main() -> None:
    requests = 200 if QUICK else 1_000
    print(f"== one tenant, every limit set, {requests} requests; per counter item:")
    for in_flight in (1, 20, 100, 400 if not QUICK else 150):
        print(f"\n  {in_flight} request(s) in flight (max_concurrent {in_flight})")
        print(f"  {'item':26s} {'writes/req':>10s} {'size B':>8s} {'WCU/req':>8s} {'ceiling req/s':>14s}")
        for kind, per_request, size, units, ceiling in measure(in_flight, requests):
            print(f"  {kind:26s} {per_request:10.2f} {size:8d} {units:8.2f} {ceiling:14,.0f}")


if __name__ == "__main__":
    main()
