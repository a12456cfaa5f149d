"""Quota counters on DynamoDB conditional writes.

One item per scope (a tenant, or one of its keys) per window, the window in the sort key,
so nothing is ever reset and TTL removes old windows::

    PK = T#<tenant>#Q            (tenant scope)      SK = M#<yyyymmddHHMM>   requests, tokens this minute
    PK = T#<tenant>#Q#K#<key>    (key scope)         SK = D#<yyyymmdd>       requests, tokens, in, out, cost
                                                     SK = D#<yyyymmdd>#A#<alias>  the same per model alias
                                                     SK = MO#<yyyymm>        cost this month
                                                     SK = SLOTS              concurrency slot holders

A reservation is one ``TransactWriteItems``: an ``ADD`` per counter whose condition says the
result stays within its limit, plus a slot claim (``ADD`` of the holder to a string set whose
size must stay below the limit). Either every counter moves or none does. The settlement after
the call is one more ``TransactWriteItems`` of unconditional ``ADD``s (the difference between
the estimate and the real usage) and the slot's release. Costs are integers in nano-USD, so
sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws import dynamo

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

NANO = 1_000_000_000  # nano-USD per USD


@dataclass(frozen=True)
class Cap:
    """After the ADD, ``attr`` must be at most ``limit_value``; ``limit`` names the limit (e.g. 'rpm')."""

    attr: str
    limit_value: int
    limit: str


@dataclass(frozen=True)
class Counter:
    pk: str
    sk: str
    add: dict[str, int]
    caps: tuple[Cap, ...] = ()
    ttl: int | None = None


@dataclass(frozen=True)
class SlotClaim:
    """Add ``holder`` ("<expires epoch>:<id>") to the slot set of (pk, sk) if fewer than ``max`` hold it."""

    pk: str
    sk: str
    holder: str
    max: int
    limit: str = "max_concurrent"


@dataclass
class Denied(Exception):
    """A reservation failed: the first counter or slot claim whose condition did not hold."""

    index: int  # position in counters + claims
    item: dict[str, Any] | None = field(default=None)  # its current attributes, when known

    def __str__(self) -> str:
        return f"quota condition failed at {self.index}"


class CounterStore(Protocol):
    def reserve(self, counters: list[Counter], claims: list[SlotClaim]) -> None:
        """All or nothing; raise :class:`Denied` naming the first failing position."""
        ...

    def settle(self, counters: list[Counter], releases: list[tuple[str, str, str]], token: str) -> None:
        """Unconditional ADDs and slot releases (pk, sk, holder), idempotent per ``token``."""
        ...

    def settlement_items(
        self, counters: list[Counter], releases: list[tuple[str, str, str]]
    ) -> list[dict[str, Any]] | None:
        """The same writes as TransactWriteItems entries, to ride on another transaction of the same
        table (a conversation turn's commit); None when this store cannot give them."""
        ...

    def read(self, pk: str, sk: str) -> dict[str, Any]:
        """One counter item as {attribute: int | set}; {} when absent."""
        ...

    def query(self, pk: str, sk_from: str, sk_to: str) -> list[dict[str, Any]]:
        """Counter items of ``pk`` with ``sk_from <= SK <= sk_to`` (with their 'SK')."""
        ...

    def purge(self, pk: str, sk: str, holders: list[str]) -> None:
        """Remove expired slot holders."""
        ...


def _names(attrs: list[str]) -> dict[str, str]:
    return {f"#{a}": a for a in attrs}


def counter_update(counter: Counter) -> dict[str, Any]:
    """The Update of one counter: ADD its deltas, conditions for its caps, TTL when new."""
    names = _names(list(counter.add))
    values: dict[str, Any] = {f":{a}": {"N": str(v)} for a, v in counter.add.items()}
    expression = "ADD " + ", ".join(f"#{a} :{a}" for a in counter.add)
    if counter.ttl is not None:
        names["#ttl"] = "ttl"
        values[":ttl"] = {"N": str(counter.ttl)}
        expression += " SET #ttl = if_not_exists(#ttl, :ttl)"
    update: dict[str, Any] = {
        "Key": {"PK": {"S": counter.pk}, "SK": {"S": counter.sk}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    conditions = []
    for cap in counter.caps:
        room = cap.limit_value - counter.add.get(cap.attr, 0)  # the value before the ADD may be at most this
        names[f"#{cap.attr}"] = cap.attr
        values[f":max_{cap.attr}"] = {"N": str(room)}
        conditions.append(f"(attribute_not_exists(#{cap.attr}) OR #{cap.attr} <= :max_{cap.attr})")
    if conditions:
        update["ConditionExpression"] = " AND ".join(conditions)
    return update


def claim_update(claim: SlotClaim) -> dict[str, Any]:
    return {
        "Key": {"PK": {"S": claim.pk}, "SK": {"S": claim.sk}},
        "UpdateExpression": "ADD #h :h",
        "ConditionExpression": "attribute_not_exists(#h) OR size(#h) < :max",
        "ExpressionAttributeNames": {"#h": "holders"},
        "ExpressionAttributeValues": {":h": {"SS": [claim.holder]}, ":max": {"N": str(claim.max)}},
    }


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A counter item as Python (numbers as int, the holders set as a set of str)."""
    return {name: dynamo.plain(value) for name, value in item.items()}


class DynamoCounterStore:
    def __init__(self, table: str, client: DynamoDBClient) -> None:
        self.table = table
        self.client = client

    def reserve(self, counters: list[Counter], claims: list[SlotClaim]) -> None:
        items: list[Any] = [{"Update": {"TableName": self.table, **counter_update(c)}} for c in counters]
        items += [{"Update": {"TableName": self.table, **claim_update(c)}} for c in claims]
        for item in items:
            item["Update"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            if len(items) == 1:  # one item: a plain conditional UpdateItem (half the write cost)
                self.client.update_item(**items[0]["Update"])
            else:
                self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            response: dict[str, Any] = dict(exc.response)
            error = response.get("Error", {}).get("Code")
            if error == "ConditionalCheckFailedException":
                raise Denied(0, plain(response["Item"]) if "Item" in response else None) from None
            if error != "TransactionCanceledException":
                raise
            reasons = response.get("CancellationReasons") or []
            for index, reason in enumerate(reasons):
                if reason.get("Code") == "ConditionalCheckFailed":
                    raise Denied(index, plain(reason["Item"]) if reason.get("Item") else None) from None
            raise  # cancelled for another reason (a conflicting transaction): the caller's error path

    def settlement_items(self, counters: list[Counter], releases: list[tuple[str, str, str]]) -> list[Any]:
        items: list[Any] = [  # TransactWriteItemTypeDef, built as plain dicts
            {"Update": {"TableName": self.table, **counter_update(c)}} for c in counters if any(c.add.values())
        ]
        for pk, sk, holder in releases:
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"PK": {"S": pk}, "SK": {"S": sk}},
                        "UpdateExpression": "DELETE #h :h",
                        "ExpressionAttributeNames": {"#h": "holders"},
                        "ExpressionAttributeValues": {":h": {"SS": [holder]}},
                    }
                }
            )
        return items

    def settle(self, counters: list[Counter], releases: list[tuple[str, str, str]], token: str) -> None:
        items = self.settlement_items(counters, releases)
        if not items:
            return
        if len(items) == 1:
            self.client.update_item(**items[0]["Update"])
        else:
            self.client.transact_write_items(TransactItems=items, ClientRequestToken=token[:36])

    def read(self, pk: str, sk: str) -> dict[str, Any]:
        item = self.client.get_item(
            TableName=self.table, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True
        ).get("Item")
        return plain(item) if item else {}

    def query(self, pk: str, sk_from: str, sk_to: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk AND SK BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":a": {"S": sk_from}, ":b": {"S": sk_to}},
        }
        out: list[dict[str, Any]] = []
        while True:
            resp = self.client.query(**params)
            out += [plain(item) for item in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return out
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def purge(self, pk: str, sk: str, holders: list[str]) -> None:
        if holders:
            self.client.update_item(
                TableName=self.table,
                Key={"PK": {"S": pk}, "SK": {"S": sk}},
                UpdateExpression="DELETE #h :h",
                ExpressionAttributeNames={"#h": "holders"},
                ExpressionAttributeValues={":h": {"SS": holders}},
            )
