"""Idempotency-Key items: ``PK = T#<tenant>#IK#<sha256(key)>``, ``SK = IDEMPOTENCY`` — the body's
hash, the job ids it created, whether every message was enqueued; valid 24 h (``POST /v1/jobs``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import CONDITIONAL_CHECK_FAILED, error_code, n, s
from llm_gateway.deadline import now_ms

IK_SK = "IDEMPOTENCY"


class IdempotencyKeyItems:
    """The Idempotency-Key half of the job store (``table`` and ``client`` are the store's)."""

    table: str
    client: Any

    # ---- Idempotency-Key ----------------------------------------------------------------
    def _ik_key(self, tenant: str, key: str) -> dict:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return {"PK": s(f"T#{tenant}#IK#{digest}"), "SK": s(IK_SK)}

    def claim_key(
        self, tenant: str, key: str, body_hash: str, job_ids: list[str], ttl_seconds: int
    ) -> IdempotencyRecord | None:
        """Claim an Idempotency-Key for these jobs. None when claimed; the earlier record otherwise."""
        now = now_ms()
        item = {
            **self._ik_key(tenant, key),
            "body_hash": s(body_hash),
            "job_ids": s(json.dumps(job_ids)),
            "created_at": n(now),
            "expires_at": n(now + ttl_seconds * 1000),
            "enqueued": {"BOOL": False},
            "ttl": n(now // 1000 + ttl_seconds),
        }
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(PK) OR expires_at < :now",
                ExpressionAttributeValues={":now": n(now)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as err:
            if error_code(err) != CONDITIONAL_CHECK_FAILED:
                raise
            old: Any = err.response.get("Item")
            if not old:  # older botocore without the item: read it
                old = self.client.get_item(TableName=self.table, Key=self._ik_key(tenant, key), ConsistentRead=True)[
                    "Item"
                ]
            return IdempotencyRecord(
                old["body_hash"]["S"],
                json.loads(old["job_ids"]["S"]),
                int(old["created_at"]["N"]),
                old.get("enqueued", {}).get("BOOL", False),
            )

    def mark_enqueued(self, tenant: str, key: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key=self._ik_key(tenant, key),
            UpdateExpression="SET enqueued = :t",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )


@dataclass(frozen=True)
class IdempotencyRecord:
    body_hash: str
    job_ids: list[str]
    created_at: int
    enqueued: bool
