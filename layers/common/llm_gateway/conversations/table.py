"""The DynamoDB side of the conversation store: keys, the item codec, and the base its parts share.

:class:`DynamoConversationStore` (``store.py``) is this base plus its parts: heads (``heads.py``),
history reads (``history.py``), leases (``leases.py``) and commits (``commits.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llm_gateway.aws.dynamo import ID_RE as _ID_RE
from llm_gateway.aws.dynamo import n as _n
from llm_gateway.aws.dynamo import num as _num
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.aws.dynamo import text as _str
from llm_gateway.conversations.records import (
    MAX_MESSAGE_ITEM_BYTES,
    META,
    MSG_PREFIX,
    Conversation,
    NewMessage,
    StoredMessage,
)
from llm_gateway.errors import NotFound, ReplyTooLargeToStore

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient


# What a message read asks for: the attributes Table._message decodes (not PK, nor a job turn's turn_id),
# so botocore parses fewer attributes per item.
MESSAGE_PROJECTION: dict[str, Any] = {
    "ProjectionExpression": "SK, msg, tokens, created_at, meta, #ttl",
    "ExpressionAttributeNames": {"#ttl": "ttl"},
}


def conversation_pk(tenant: str, conversation_id: str) -> str:
    return f"T#{tenant}#C#{conversation_id}"


def message_sk(seq: int) -> str:
    return f"{MSG_PREFIX}{seq:010d}"


class Table:
    """What every part of the DynamoDB conversation store shares: the table, its client, keys and codec."""

    def __init__(self, table_name: str, client: DynamoDBClient | None = None, *, ttl_days: int = 0) -> None:
        if client is None:
            from llm_gateway.aws import client as aws_client

            client = aws_client("dynamodb")
        self.table = table_name
        self.client = client
        self.ttl_days = ttl_days

    # ---- helpers ------------------------------------------------------------------
    def _key(self, tenant: str, conversation_id: str, sk: str = META) -> dict:
        if not _ID_RE.match(conversation_id):
            raise NotFound(f"No conversation found with id '{conversation_id[:64]}'.", param="conversation_id")
        return {"PK": _s(conversation_pk(tenant, conversation_id)), "SK": _s(sk)}

    def _ttl(self, now: int) -> dict | None:
        return _n(now // 1000 + self.ttl_days * 86400) if self.ttl_days else None

    @staticmethod
    def _not_found(conversation_id: str) -> NotFound:
        return NotFound(f"No conversation found with id '{conversation_id[:64]}'.", param="conversation_id")

    @staticmethod
    def _conversation(item: dict) -> Conversation:
        metadata = _str(item, "metadata")
        return Conversation(
            id=item["conversation_id"]["S"],
            tenant=item["tenant"]["S"],
            created_at=_num(item, "created_at"),
            updated_at=_num(item, "updated_at"),
            version=_num(item, "version"),
            message_count=_num(item, "message_count"),
            model=_str(item, "model"),
            system=_str(item, "system"),
            system_tokens=_num(item, "system_tokens"),
            metadata=json.loads(metadata) if metadata else {},
            prompt_tokens=_num(item, "prompt_tokens"),
            completion_tokens=_num(item, "completion_tokens"),
            cost_usd=float(item["cost_usd"]["N"]) if "cost_usd" in item else 0.0,
            deleted_messages=_num(item, "deleted_messages"),
        )

    @staticmethod
    def _message(item: dict) -> StoredMessage:
        meta = _str(item, "meta")
        text = item["msg"]["S"]
        return StoredMessage(
            seq=int(item["SK"]["S"][len(MSG_PREFIX) :]),
            body=json.loads(text),
            tokens=_num(item, "tokens"),
            created_at=_num(item, "created_at"),
            meta=json.loads(meta) if meta else {},
            expires_at=_num(item, "ttl"),
            size=len(text) + (len(meta) if meta else 0),
        )

    def _query_page(self, params: dict[str, Any], limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` items and whether more remain: asks one more than that, so has_more is exact, and
        follows LastEvaluatedKey only when DynamoDB's 1 MB page limit cut a page short."""
        items: list[dict] = []
        while len(items) <= limit:
            params["Limit"] = limit + 1 - len(items)
            resp = self.client.query(**params)
            items += resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                break
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return items[:limit], len(items) > limit

    def _message_item(self, pk: dict, seq: int, message: NewMessage, now: int, ttl: dict | None) -> dict:
        item = {
            "PK": pk,
            "SK": _s(message_sk(seq)),
            # UTF-8 as is (ensure_ascii=False): \u-escaping would store a max-size CJK or emoji
            # message at 2-3x its size, past DynamoDB's 400 KB item limit
            "msg": _s(json.dumps(message.body, separators=(",", ":"), ensure_ascii=False)),
            "tokens": _n(message.tokens),
            "created_at": _n(now),
        }
        size = len(item["msg"]["S"].encode())
        if size > MAX_MESSAGE_ITEM_BYTES:
            # Requests are bounded before any upstream call (MAX_MESSAGE_BYTES); only a reply can be
            # this large. Say so plainly instead of letting DynamoDB refuse the transaction (a 500).
            raise ReplyTooLargeToStore(
                f"The upstream's reply ({size} bytes) is too large to store in a conversation; "
                "nothing was stored. Ask for a shorter reply (max_tokens) or send it without conversation_id.",
                code="reply_too_large_to_store",
            )
        if message.meta:
            item["meta"] = _s(json.dumps(message.meta, separators=(",", ":"), ensure_ascii=False))
        if ttl:
            item["ttl"] = ttl
        return item
