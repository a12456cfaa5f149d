"""Conversation state in DynamoDB: one head item and one item per message.

Layout (one table, see DESIGN.md):

* head      ``PK = T#<tenant>#C#<conversation>``, ``SK = META`` — version, message count,
  token totals, system prompt, lease, timestamps; ``GSI1`` lists a tenant's conversations.
* message   same PK, ``SK = M#<10-digit seq>`` — role, the wire message as JSON, its
  token count. Never one growing item per conversation (400 KB item limit).
* turn      same PK, ``SK = TURN#<turn id>`` — written with the messages of an idempotent
  turn (jobs), so a redelivered job can never store a second reply.

A turn leases the head with a conditional update (expiring, so a crashed turn blocks
nothing for long), reads the newest history that fits its budget with a descending
Query, and commits with one TransactWriteItems: head version + lease check, and the
new message items with ``attribute_not_exists``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import ID_RE as _ID_RE
from llm_gateway.aws.dynamo import TRANSACTION_CONFLICT, batch_delete, batch_get
from llm_gateway.aws.dynamo import error_code as _code
from llm_gateway.aws.dynamo import n as _n
from llm_gateway.aws.dynamo import num as _num
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.aws.dynamo import text as _str
from llm_gateway.deadline import now_ms as now_ms
from llm_gateway.errors import ConversationBusy, InvalidRequest, NotFound, ReplyTooLargeToStore

META = "META"
MSG_PREFIX = "M#"
MSG_LAST = MSG_PREFIX + "9" * 10
TURN_PREFIX = "TURN#"
DELETED = "deleted_at"  # on a head being deleted (see DynamoConversationStore.delete): the conversation is gone
# DynamoDB's item limit is 400 KB; keep room for the key and the other attributes.
MAX_MESSAGE_ITEM_BYTES = 380_000


def new_conversation_id() -> str:
    return "conv_" + uuid.uuid4().hex


# --------------------------------------------------------------------------- records


@dataclass
class Conversation:
    id: str
    tenant: str
    created_at: int  # epoch ms
    updated_at: int
    version: int = 0
    message_count: int = 0
    model: str | None = None
    system: str | None = None
    system_tokens: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    deleted_messages: int = 0  # removed by item deletes; message_count stays the next sequence number

    def public(self) -> dict[str, Any]:
        """OpenAI's Conversation (id, object, created_at, metadata), then our extensions."""
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at // 1000,
            "metadata": self.metadata,
            "updated_at": self.updated_at // 1000,
            "model": self.model,
            "system": self.system,
            "message_count": self.message_count - self.deleted_messages,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cost_usd": round(self.cost_usd, 8),
            },
        }


@dataclass
class StoredMessage:
    seq: int
    body: dict[str, Any]  # the wire-format message (role, content, tool_calls, …)
    tokens: int
    created_at: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.body["role"]


@dataclass
class NewMessage:
    body: dict[str, Any]
    tokens: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lease:
    conversation: Conversation
    lease_id: str
    expires_at: int  # epoch ms


@dataclass
class History:
    messages: list[StoredMessage]  # oldest first
    items_read: int


@dataclass
class TurnUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class TurnAlreadyCommitted(Exception):
    """An idempotent turn (``turn_id``) was committed before; nothing was written."""


class ConversationStore(Protocol):
    def create(
        self,
        tenant: str,
        *,
        model: str | None = None,
        system: str | None = None,
        system_tokens: int = 0,
        metadata: dict[str, str] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> Conversation: ...
    def get(self, tenant: str, conversation_id: str) -> Conversation: ...
    def update_metadata(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> Conversation: ...
    def list_conversations(
        self, tenant: str, *, limit: int, after: str | None, descending: bool = True
    ) -> tuple[list[Conversation], bool]: ...
    def delete(self, tenant: str, conversation_id: str) -> None: ...
    def messages(
        self, tenant: str, conversation_id: str, *, limit: int, after: int | None
    ) -> tuple[list[StoredMessage], bool]: ...
    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[StoredMessage], bool]: ...
    def message(self, tenant: str, conversation_id: str, seq: int) -> StoredMessage | None: ...
    def commit_edit(self, lease: Lease, seq: int, replacement: NewMessage | None) -> None: ...
    def acquire_lease(self, tenant: str, conversation_id: str, ttl_seconds: float) -> Lease: ...
    def extend_lease(self, lease: Lease, ttl_seconds: float) -> None: ...
    def release_lease(self, lease: Lease) -> None: ...
    def read_history(self, tenant: str, conversation_id: str, *, max_messages: int, max_tokens: int) -> History: ...
    def commit_turn(
        self,
        lease: Lease,
        messages: list[NewMessage],
        *,
        usage: TurnUsage,
        system: tuple[str, int] | None = None,
        turn_id: str | None = None,
    ) -> list[StoredMessage]: ...
    def turn_messages(self, tenant: str, conversation_id: str, turn_id: str) -> list[StoredMessage] | None: ...


# --------------------------------------------------------------------------- DynamoDB


def conversation_pk(tenant: str, conversation_id: str) -> str:
    return f"T#{tenant}#C#{conversation_id}"


def message_sk(seq: int) -> str:
    return f"{MSG_PREFIX}{seq:010d}"


class DynamoConversationStore:
    """:class:`ConversationStore` on one DynamoDB table, through a low-level client."""

    def __init__(self, table_name: str, client: Any = None, *, ttl_days: int = 0) -> None:
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
        return StoredMessage(
            seq=int(item["SK"]["S"][len(MSG_PREFIX) :]),
            body=json.loads(item["msg"]["S"]),
            tokens=_num(item, "tokens"),
            created_at=_num(item, "created_at"),
            meta=json.loads(meta) if meta else {},
        )

    # ---- conversations ------------------------------------------------------------
    def create(
        self,
        tenant: str,
        *,
        model: str | None = None,
        system: str | None = None,
        system_tokens: int = 0,
        metadata: dict[str, str] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> Conversation:
        """A new conversation; its first ``messages`` are written in the same transaction as its head."""
        now = now_ms()
        conv = Conversation(
            id=new_conversation_id(),
            tenant=tenant,
            created_at=now,
            updated_at=now,
            model=model,
            system=system,
            system_tokens=system_tokens if system else 0,
            metadata=metadata or {},
            message_count=len(messages),
        )
        item = {
            **self._key(tenant, conv.id),
            "conversation_id": _s(conv.id),
            "tenant": _s(tenant),
            "created_at": _n(now),
            "updated_at": _n(now),
            "version": _n(0),
            "message_count": _n(len(messages)),
            "prompt_tokens": _n(0),
            "completion_tokens": _n(0),
            "cost_usd": _n(0),
            "system_tokens": _n(conv.system_tokens),
            "metadata": _s(json.dumps(conv.metadata)),
            "GSI1PK": _s(f"T#{tenant}#CONV"),
            "GSI1SK": _s(f"{now:015d}#{conv.id}"),
        }
        if model:
            item["model"] = _s(model)
        if system:
            item["system"] = _s(system)
        ttl = self._ttl(now)
        if ttl:
            item["ttl"] = ttl
        if not messages:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
            return conv
        puts = [item] + [self._message_item(item["PK"], seq, m, now, ttl) for seq, m in enumerate(messages)]
        self.client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table, "Item": put, "ConditionExpression": "attribute_not_exists(PK)"}}
                for put in puts
            ]
        )
        return conv

    def get(self, tenant, conversation_id) -> Conversation:
        resp = self.client.get_item(TableName=self.table, Key=self._key(tenant, conversation_id), ConsistentRead=True)
        if "Item" not in resp or DELETED in resp["Item"]:  # a head marked deleted is gone (see delete)
            raise self._not_found(conversation_id)
        return self._conversation(resp["Item"])

    def list_conversations(
        self, tenant: str, *, limit: int, after: str | None, descending: bool = True
    ) -> tuple[list[Conversation], bool]:
        """A page of the tenant's conversations by creation time, after the conversation id ``after``."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk",
            "ExpressionAttributeValues": {":pk": _s(f"T#{tenant}#CONV")},
            "ScanIndexForward": not descending,
        }
        if after:
            try:
                start = self.get(tenant, after)
            except NotFound:
                raise InvalidRequest("'after' must be the id of one of your conversations.", param="after") from None
            params["ExclusiveStartKey"] = {
                "GSI1PK": _s(f"T#{tenant}#CONV"),
                "GSI1SK": _s(f"{start.created_at:015d}#{start.id}"),
                "PK": _s(conversation_pk(tenant, start.id)),
                "SK": _s(META),
            }
        items, has_more = self._query_page(params, limit)
        return [self._conversation(item) for item in items], has_more

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

    def delete(self, tenant, conversation_id) -> None:
        """Delete a conversation in three idempotent steps, so a failure part-way is finished by a retry:

        1. mark the head deleted (``deleted_at``; off GSI1, lease dropped) unless a live turn holds it —
           from here every read, turn and write treats the conversation as gone (404);
        2. delete every other item of the conversation (messages, turn markers);
        3. delete the head.

        A DELETE of a head already marked (an earlier DELETE failed after step 1) resumes at step 2 and
        succeeds; once the head is gone the conversation is unknown (404, as OpenAI answers)."""
        key = self._key(tenant, conversation_id)
        try:
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression=(
                    "SET #deleted = if_not_exists(#deleted, :now) REMOVE GSI1PK, GSI1SK, lease_id, lease_expires"
                ),
                ConditionExpression=(
                    "attribute_exists(PK) AND (attribute_exists(#deleted) OR attribute_not_exists(lease_id)"
                    " OR lease_expires < :now)"
                ),
                ExpressionAttributeNames={"#deleted": DELETED},
                ExpressionAttributeValues={":now": _n(now_ms())},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                if err.response.get("Item"):
                    raise ConversationBusy("A turn is in progress on this conversation; retry later.") from err
                raise self._not_found(conversation_id) from err
            if _code(err) == TRANSACTION_CONFLICT:
                raise ConversationBusy("A turn is in progress on this conversation; retry later.") from err
            raise
        # Marked: the conversation is invisible and no turn can start; remove its other items, then the head.
        self._delete_items(key["PK"])
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=key,
                ConditionExpression="attribute_exists(#deleted)",
                ExpressionAttributeNames={"#deleted": DELETED},
            )
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":  # a concurrent DELETE finished first
                raise

    def _delete_items(self, pk: dict) -> None:
        """Delete every item of the conversation but its head."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": pk},
            "ProjectionExpression": "PK, SK",
        }
        while True:
            resp = self.client.query(**params)
            keys = [{"PK": item["PK"], "SK": item["SK"]} for item in resp.get("Items", []) if item["SK"]["S"] != META]
            batch_delete(self.client, self.table, keys, what="deleting a conversation")
            if "LastEvaluatedKey" not in resp:
                return
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # ---- messages -------------------------------------------------------------------
    def messages(
        self, tenant: str, conversation_id: str, *, limit: int, after: int | None
    ) -> tuple[list[StoredMessage], bool]:
        """Messages oldest first after the sequence number ``after`` (exclusive)."""
        return self.messages_page(
            tenant, conversation_id, start=0 if after is None else after + 1, descending=False, limit=limit
        )

    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Up to ``limit`` messages from sequence number ``start`` (inclusive) in either direction, and
        whether more follow. Reads ``limit + 1`` items (more round trips only when DynamoDB's 1 MB page
        limit cuts a page short), however long the conversation is."""
        key = self._key(tenant, conversation_id)
        if start is None:
            condition, values = "PK = :pk AND begins_with(SK, :m)", {":pk": key["PK"], ":m": _s(MSG_PREFIX)}
        else:
            low, high = (message_sk(0), message_sk(start)) if descending else (message_sk(start), MSG_LAST)
            condition, values = (
                "PK = :pk AND SK BETWEEN :lo AND :hi",
                {":pk": key["PK"], ":lo": _s(low), ":hi": _s(high)},
            )
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not descending,
            "ConsistentRead": True,
        }
        items, has_more = self._query_page(params, limit)
        return [self._message(item) for item in items], has_more

    def message(self, tenant: str, conversation_id: str, seq: int) -> StoredMessage | None:
        key = self._key(tenant, conversation_id)
        resp = self.client.get_item(
            TableName=self.table, Key={"PK": key["PK"], "SK": _s(message_sk(seq))}, ConsistentRead=True
        )
        return self._message(resp["Item"]) if "Item" in resp else None

    def update_metadata(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> Conversation:
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._key(tenant, conversation_id),
                UpdateExpression="SET metadata = :m, updated_at = :now",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(#deleted)",
                ExpressionAttributeNames={"#deleted": DELETED},
                ExpressionAttributeValues={":m": _s(json.dumps(metadata)), ":now": _n(now_ms())},
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                raise self._not_found(conversation_id) from err
            if _code(err) == TRANSACTION_CONFLICT:
                raise ConversationBusy("A turn is committing on this conversation; retry.") from err
            raise
        return self._conversation(resp["Attributes"])

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
            self.client.transact_write_items(TransactItems=[{"Update": head}, edit], ClientRequestToken=lease.lease_id)
        except ClientError as err:
            if _code(err) == "TransactionCanceledException":
                raise ConversationBusy("The conversation changed while the item was removed; retry.") from err
            raise
        conv.version += 1
        if replacement is None:
            conv.deleted_messages += 1

    def read_history(self, tenant, conversation_id, *, max_messages, max_tokens) -> History:
        """The newest complete messages that fit both budgets, oldest first.

        One descending Query with ``Limit = max_messages`` (more pages only when
        DynamoDB's 1 MB page limit cuts it short), so the items read are bounded by the
        budget however long the conversation is, in one round trip.
        """
        key = self._key(tenant, conversation_id)
        kept: list[StoredMessage] = []
        tokens = 0
        items_read = 0
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :m)",
            "ExpressionAttributeValues": {":pk": key["PK"], ":m": _s(MSG_PREFIX)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        while len(kept) < max_messages:
            params["Limit"] = max_messages - len(kept)
            resp = self.client.query(**params)
            full = False
            for item in resp.get("Items", []):
                items_read += 1
                message = self._message(item)
                if tokens + message.tokens > max_tokens:
                    full = True
                    break
                kept.append(message)
                tokens += message.tokens
            if full or "LastEvaluatedKey" not in resp:
                break
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        kept.reverse()
        return History(kept, items_read)

    # ---- turns ----------------------------------------------------------------------
    def acquire_lease(self, tenant, conversation_id, ttl_seconds) -> Lease:
        key = self._key(tenant, conversation_id)
        now = now_ms()
        lease_id = uuid.uuid4().hex
        expires = now + int(ttl_seconds * 1000)
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET lease_id = :l, lease_expires = :exp",
                ConditionExpression=(
                    "attribute_exists(PK) AND attribute_not_exists(#deleted)"
                    " AND (attribute_not_exists(lease_id) OR lease_expires < :now)"
                ),
                ExpressionAttributeNames={"#deleted": DELETED},
                ExpressionAttributeValues={":l": _s(lease_id), ":exp": _n(expires), ":now": _n(now)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                old: Any = err.response.get("Item")
                if old and DELETED not in old:
                    raise ConversationBusy(
                        "Another turn is in progress on this conversation; retry when it completes."
                    ) from err
                raise self._not_found(conversation_id) from err
            if _code(err) == TRANSACTION_CONFLICT:  # another turn is committing this very head
                raise ConversationBusy(
                    "Another turn is in progress on this conversation; retry when it completes."
                ) from err
            raise
        return Lease(self._conversation(resp["Attributes"]), lease_id, expires)

    def extend_lease(self, lease: Lease, ttl_seconds: float) -> None:
        expires = now_ms() + int(ttl_seconds * 1000)
        if not self._update_held(lease, "SET lease_expires = :exp", {":exp": _n(expires)}):
            raise ConversationBusy("The turn lost its lease on the conversation.")
        lease.expires_at = expires

    def release_lease(self, lease: Lease) -> None:
        # Not held (ours expired and someone else holds it now): nothing to release.
        self._update_held(lease, "REMOVE lease_id, lease_expires", {})

    def _update_held(self, lease: Lease, update: str, values: dict) -> bool:
        """Update the conversation head if ``lease`` still holds it; False if it does not."""
        conv = lease.conversation
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(conv.tenant, conv.id),
                UpdateExpression=update,
                ConditionExpression="lease_id = :l",
                ExpressionAttributeValues={":l": _s(lease.lease_id), **values},
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                return False
            raise
        return True

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

    def commit_turn(self, lease, messages, *, usage, system=None, turn_id=None) -> list[StoredMessage]:
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
        items: list[dict] = [{"Update": update}]
        for offset, message in enumerate(messages):
            seq = first + offset
            item = self._message_item(key["PK"], seq, message, now, ttl)
            if turn_id:
                item["turn_id"] = _s(turn_id)
            items.append(
                {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
            )
            stored.append(StoredMessage(seq, message.body, message.tokens, now, message.meta))
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

    def turn_messages(self, tenant, conversation_id, turn_id) -> list[StoredMessage] | None:
        key = self._key(tenant, conversation_id)
        resp = self.client.get_item(
            TableName=self.table, Key={"PK": key["PK"], "SK": _s(TURN_PREFIX + turn_id)}, ConsistentRead=True
        )
        marker = resp.get("Item")
        if not marker:
            return None
        first, count = _num(marker, "first_seq"), _num(marker, "count")
        keys = [{"PK": key["PK"], "SK": _s(message_sk(seq))} for seq in range(first, first + count)]
        found = [self._message(item) for item in batch_get(self.client, self.table, keys, what="reading a turn")]
        if len(found) != count:
            raise RuntimeError(f"turn '{turn_id}' is missing {count - len(found)} of its messages")
        return sorted(found, key=lambda m: m.seq)
