"""Conversation heads in DynamoDB: create (with first items), get, list, update metadata, delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import TRANSACTION_CONFLICT, batch_delete
from llm_gateway.aws.dynamo import error_code as _code
from llm_gateway.aws.dynamo import n as _n
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.conversations.records import DELETED, META, Conversation, NewMessage, new_conversation_id
from llm_gateway.conversations.table import Table, conversation_pk
from llm_gateway.deadline import now_ms
from llm_gateway.errors import ConversationBusy, InvalidRequest, NotFound


class Heads(Table):
    """The conversation head items (``SK = META``) and the whole-conversation operations."""

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

    def get(self, tenant: str, conversation_id: str) -> Conversation:
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

    def delete(self, tenant: str, conversation_id: str) -> None:
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
