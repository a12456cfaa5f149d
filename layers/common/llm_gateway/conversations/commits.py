"""Committing under the lease: one TransactWriteItems checked against the lease and the head's version."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import error_code as _code
from llm_gateway.aws.dynamo import n as _n
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.conversations.records import (
    TURN_PREFIX,
    Lease,
    NewMessage,
    StoredMessage,
    TurnAlreadyCommitted,
    TurnUsage,
)
from llm_gateway.conversations.table import Table, message_sk
from llm_gateway.deadline import now_ms
from llm_gateway.errors import ConversationBusy


class Commits(Table):
    """A turn's new items (and an idempotent turn's marker), or an item edit, with the head update."""

    def commit_turn(
        self,
        lease: Lease,
        messages: list[NewMessage],
        *,
        usage: TurnUsage,
        system: tuple[str, int] | None = None,
        turn_id: str | None = None,
        also: Sequence[dict[str, Any]] = (),
    ) -> list[StoredMessage]:
        """``also``: unconditional writes of the same table to make in the same transaction (the
        turn's quota settlement), so they cost no round trip of their own."""
        conv = lease.conversation
        key = self._key(conv.tenant, conv.id)
        now = now_ms()
        ttl = self._ttl(now)
        first = conv.message_count
        sets = [
            "version = version + :one",
            "message_count = :count",
            "updated_at = :now",
            "prompt_tokens = prompt_tokens + :pt",
            "completion_tokens = completion_tokens + :ct",
            "cost_usd = cost_usd + :cost",
        ]
        values: dict[str, Any] = {
            ":one": _n(1),
            ":count": _n(first + len(messages)),
            ":now": _n(now),
            ":pt": _n(usage.prompt_tokens),
            ":ct": _n(usage.completion_tokens),
            ":cost": _n(round(usage.cost_usd, 10)),
            ":l": _s(lease.lease_id),
            ":v": _n(conv.version),
        }
        if system is not None:
            sets += ["#system = :sys", "system_tokens = :st"]
            values.update({":sys": _s(system[0]), ":st": _n(system[1])})
        if ttl:
            sets.append("#ttl = :ttl")
            values[":ttl"] = ttl
        names = {}
        if system is not None:
            names["#system"] = "system"
        if ttl:
            names["#ttl"] = "ttl"
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE lease_id, lease_expires",
            "ConditionExpression": "lease_id = :l AND version = :v",
            "ExpressionAttributeValues": values,
        }
        if names:
            update["ExpressionAttributeNames"] = names
        stored: list[StoredMessage] = []
        # TransactWriteItemTypeDef, built as plain dicts; the turn marker stays last (see below)
        items: list[Any] = [{"Update": update}, *also]
        for offset, message in enumerate(messages):
            seq = first + offset
            item = self._message_item(key["PK"], seq, message, now, ttl)
            if turn_id:
                item["turn_id"] = _s(turn_id)
            items.append(
                {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
            )
            size = len(item["msg"]["S"]) + (len(item["meta"]["S"]) if "meta" in item else 0)
            expires = int(ttl["N"]) if ttl else 0
            stored.append(StoredMessage(seq, message.body, message.tokens, now, message.meta, expires, size))
        if turn_id:
            marker = {
                "PK": key["PK"],
                "SK": _s(TURN_PREFIX + turn_id),
                "first_seq": _n(first),
                "count": _n(len(messages)),
                "created_at": _n(now),
            }
            if ttl:
                marker["ttl"] = ttl
            items.append(
                {"Put": {"TableName": self.table, "Item": marker, "ConditionExpression": "attribute_not_exists(PK)"}}
            )
        try:
            # The token makes the commit idempotent for 10 minutes: when botocore retries a commit whose
            # response was lost (timeout, 5xx), DynamoDB answers the retry as the same transaction instead
            # of failing its conditions (version moved, lease gone) and the stored turn being reported 409.
            self.client.transact_write_items(TransactItems=items, ClientRequestToken=lease.lease_id)
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in err.response.get("CancellationReasons", [])]
                if turn_id and len(reasons) == len(items) and reasons[-1] == "ConditionalCheckFailed":
                    raise TurnAlreadyCommitted(turn_id) from err
                raise ConversationBusy("The conversation changed while this turn ran; nothing was stored.") from err
            raise
        conv.version += 1
        conv.message_count = first + len(messages)
        return stored

    def commit_edit(self, lease: Lease, seq: int, replacement: NewMessage | None) -> None:
        """Remove message ``seq`` (``replacement`` None) or rewrite its body and token count, and
        release the lease, in one transaction checked against the lease and the head's version."""
        conv = lease.conversation
        key = self._key(conv.tenant, conv.id)
        sets = "version = version + :one, updated_at = :now"
        values: dict[str, Any] = {":one": _n(1), ":now": _n(now_ms()), ":l": _s(lease.lease_id), ":v": _n(conv.version)}
        if replacement is None:
            sets += ", deleted_messages = if_not_exists(deleted_messages, :zero) + :one"
            values[":zero"] = _n(0)
        message_key = {"PK": key["PK"], "SK": _s(message_sk(seq))}
        edit: dict[str, Any]
        if replacement is None:
            edit = {
                "Delete": {"TableName": self.table, "Key": message_key, "ConditionExpression": "attribute_exists(PK)"}
            }
        else:
            edit = {
                "Update": {
                    "TableName": self.table,
                    "Key": message_key,
                    "UpdateExpression": "SET msg = :m, tokens = :t",
                    "ConditionExpression": "attribute_exists(PK)",
                    "ExpressionAttributeValues": {
                        ":m": _s(json.dumps(replacement.body, separators=(",", ":"), ensure_ascii=False)),
                        ":t": _n(replacement.tokens),
                    },
                }
            }
        head = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": f"SET {sets} REMOVE lease_id, lease_expires",
            "ConditionExpression": "lease_id = :l AND version = :v",
            "ExpressionAttributeValues": values,
        }
        try:
            transaction: list[Any] = [{"Update": head}, edit]
            self.client.transact_write_items(TransactItems=transaction, ClientRequestToken=lease.lease_id)
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                raise ConversationBusy("The conversation changed while the item was removed; retry.") from err
            raise
        conv.version += 1
        if replacement is None:
            conv.deleted_messages += 1
