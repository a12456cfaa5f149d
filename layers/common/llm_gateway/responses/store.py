"""Stored responses in DynamoDB: one item per response, chains read with bounded cost.

Layout (the one table, see DESIGN.md): ``PK = T#<tenant>#R#<response id>``, ``SK = RESPONSE``.
The item holds the Response object and its input items (for GET and ``input_items``),
the turn's chat messages with their token counts (the history its descendants send
upstream), and ``ancestors``: the ids of the responses before it, newest first, as far
as a history budget can reach. A follow-up reads its parent (one GetItem) and those
ancestors (one BatchGetItem per 100), so the context costs the same at chain depth
1,000 as at depth 10, and forks are free: each response names only its own branch.

Large attributes are stored zlib-compressed (binary), keeping a response far below
DynamoDB's 400 KB item limit for any request the body limit admits.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import batch_get
from llm_gateway.errors import NotFound, ReplyTooLargeToStore

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

RESPONSE_SK = "RESPONSE"
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_ITEM_BYTES = 390_000  # DynamoDB's limit is 400 KB, keys and small attributes included
BATCH_GET_MAX = 100


@dataclass
class TurnMessage:
    """One chat message of a stored response's turn, as its descendants send it upstream."""

    body: dict[str, Any]
    tokens: int

    @property
    def role(self) -> str:
        return str(self.body.get("role"))


@dataclass
class StoredResponse:
    tenant: str
    id: str
    created_at: int  # epoch seconds
    response: dict[str, Any]  # the Response object as returned
    input_items: list[dict[str, Any]]
    messages: list[TurnMessage]  # this turn's new messages then its reply
    ancestors: list[str] = field(default_factory=list)  # newest first, bounded by a history budget
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.messages)


@dataclass
class ChainLink:
    id: str
    messages: list[TurnMessage]


@dataclass
class Chain:
    """A response and the ancestors it names, newest first (a deleted ancestor is absent)."""

    links: list[ChainLink]
    parent_ancestors: list[str]
    items_read: int


class ResponseStore(Protocol):
    def put(self, record: StoredResponse, *, replacing: tuple[str, ...] = ()) -> bool: ...
    def get(self, tenant: str, response_id: str) -> StoredResponse: ...
    def status(self, tenant: str, response_id: str) -> str | None: ...
    def delete(self, tenant: str, response_id: str) -> None: ...
    def chain(self, tenant: str, response_id: str) -> Chain: ...


def not_found(response_id: str, param: str = "response_id") -> NotFound:
    return NotFound(
        f"No response found with id '{response_id[:64]}' (it was never stored, was created with store=false, "
        "or was deleted).",
        param=param,
    )


def response_pk(tenant: str, response_id: str) -> str:
    return f"T#{tenant}#R#{response_id}"


def _pack(value: Any) -> dict[str, bytes]:
    return {"B": zlib.compress(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), 6)}


def _unpack(attr: Mapping[str, Any]) -> Any:
    return json.loads(zlib.decompress(bytes(attr["B"])))  # the low-level client returns bytes


def _messages(attr: Mapping[str, Any]) -> list[TurnMessage]:
    return [TurnMessage(body, tokens) for body, tokens in _unpack(attr)]


class DynamoResponseStore:
    """:class:`ResponseStore` on the one DynamoDB table, through a low-level client."""

    def __init__(self, table_name: str, client: DynamoDBClient, *, ttl_days: int = 0) -> None:
        self.table = table_name
        self.client = client
        self.ttl_days = ttl_days

    def _key(self, tenant: str, response_id: str, param: str = "response_id") -> dict[str, dict[str, str]]:
        if not _ID_RE.match(response_id):
            raise not_found(response_id, param)
        return {"PK": {"S": response_pk(tenant, response_id)}, "SK": {"S": RESPONSE_SK}}

    def put(self, record: StoredResponse, *, replacing: tuple[str, ...] = ()) -> bool:
        """Write a new response; or, with ``replacing``, overwrite the stored one (a background
        response's transition) only while its status is one of those — False when it is not."""
        item: dict[str, Any] = {
            **self._key(record.tenant, record.id),
            "response_id": {"S": record.id},
            "tenant": {"S": record.tenant},
            "created_at": {"N": str(record.created_at)},
            "status": {"S": str(record.response.get("status"))},
            "tokens": {"N": str(record.tokens)},
            "cost_usd": {"N": str(round(record.cost_usd, 10))},
            "messages": _pack([[m.body, m.tokens] for m in record.messages]),
            "body": _pack({"response": record.response, "input_items": record.input_items}),
        }
        if record.ancestors:
            item["ancestors"] = {"L": [{"S": a} for a in record.ancestors]}
        if self.ttl_days:
            item["ttl"] = {"N": str(int(time.time()) + self.ttl_days * 86400)}
        size = len(item["messages"]["B"]) + len(item["body"]["B"]) + 40 * len(record.ancestors)
        if size > MAX_ITEM_BYTES:
            raise ReplyTooLargeToStore(
                f"The response ({size} bytes compressed) is too large to store; nothing was stored. "
                "Ask for a shorter reply (max_output_tokens) or send it with store=false.",
                code="response_too_large_to_store",
            )
        if not replacing:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
            return True
        names = [f":s{i}" for i in range(len(replacing))]
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=f"#status IN ({', '.join(names)})",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={n: {"S": v} for n, v in zip(names, replacing, strict=True)},
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def status(self, tenant: str, response_id: str) -> str | None:
        """The stored status alone (a background run's cancel checkpoint); None when absent."""
        resp = self.client.get_item(
            TableName=self.table,
            Key=self._key(tenant, response_id),
            ConsistentRead=True,
            ProjectionExpression="#status",
            ExpressionAttributeNames={"#status": "status"},
        )
        item = resp.get("Item")
        return str(item["status"]["S"]) if item and "status" in item else None

    def get(self, tenant: str, response_id: str) -> StoredResponse:
        resp = self.client.get_item(TableName=self.table, Key=self._key(tenant, response_id), ConsistentRead=True)
        item = resp.get("Item")
        if item is None:
            raise not_found(response_id)
        body = _unpack(item["body"])
        return StoredResponse(
            tenant=tenant,
            id=response_id,
            created_at=int(item["created_at"]["N"]),
            response=body["response"],
            input_items=body["input_items"],
            messages=_messages(item["messages"]),
            ancestors=[a["S"] for a in item.get("ancestors", {}).get("L", [])],
            cost_usd=float(item.get("cost_usd", {}).get("N", 0)),
        )

    def delete(self, tenant: str, response_id: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=self._key(tenant, response_id),
                ConditionExpression="attribute_exists(PK)",
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise not_found(response_id) from err
            raise

    def chain(self, tenant: str, response_id: str) -> Chain:
        """The parent (consistent GetItem, 404 if absent) and its ancestors (BatchGetItem)."""
        resp = self.client.get_item(
            TableName=self.table,
            Key=self._key(tenant, response_id, "previous_response_id"),
            ConsistentRead=True,
            ProjectionExpression="messages, ancestors",
        )
        item = resp.get("Item")
        if item is None:
            raise not_found(response_id, "previous_response_id")
        ancestors = [a["S"] for a in item.get("ancestors", {}).get("L", [])]
        found = self._batch_messages(tenant, ancestors)
        links = [ChainLink(response_id, _messages(item["messages"]))]
        links += [ChainLink(a, found[a]) for a in ancestors if a in found]
        return Chain(links, ancestors, 1 + len(found))

    def _batch_messages(self, tenant: str, ids: list[str]) -> dict[str, list[TurnMessage]]:
        keys = [self._key(tenant, i) for i in dict.fromkeys(ids)]
        rows = batch_get(
            self.client, self.table, keys, what="reading a response chain", projection="response_id, messages"
        )
        return {row["response_id"]["S"]: _messages(row["messages"]) for row in rows}
